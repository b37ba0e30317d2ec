"""One client connection as exporter.httpserver's loop sees it: its TLS handshake, its request
head, its closing. Every step reads or writes without blocking and says what is to happen next;
the loop does the waiting, the timing and the counting.

Threads: a Connection belongs to the loop thread, or to the one worker serving its request from
the loop's hand-over to the hand-back; never to two at once.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import re
import socket
import ssl
from collections import OrderedDict
from typing import Any

from exporter.webconfig import TLSServerConfig

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 32 * 1024  # a request line and headers; a scrape's take a few hundred bytes
_LINGER_BYTES = 1 << 20  # what a closing connection may still send before it is cut
_RECV_BYTES = 16 * 1024
_TLS_HANDSHAKE_RECORD = 0x16  # the first byte of every TLS ClientHello
_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")


def _answer(status: str, text: str) -> bytes:
    body = f"{text}\n".encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


PLAIN_HTTP_ANSWER = _answer("400 Bad Request", "Client sent an HTTP request to an HTTPS server.")
HEAD_TOO_LARGE = _answer(
    "431 Request Header Fields Too Large",
    f"request line and headers over {MAX_HEAD_BYTES // 1024} KiB",
)


class Step(enum.Enum):
    """What the loop does with a connection after one of its steps."""

    READ = "wait until it can be read"
    WRITE = "wait until it can be written (a TLS handshake)"
    SERVE = "a complete request head is in: take_head() and hand it to a worker"
    LINGER = "an answer of the loop's own went out: half_close() and drain()"
    CLOSE = "close it: the client went, broke off, or failed its handshake"


def head_end(buffer: bytearray, scanned: int) -> int | None:
    """Where the request head in `buffer` ends (after its blank line), or None if it has not;
    `scanned`: how much of the buffer was searched before."""
    if buffer[:1] == b"\n" or buffer[:2] == b"\r\n":
        return buffer.index(b"\n") + 1  # an empty request line: the handler refuses it
    match = _HEAD_END_RE.search(buffer, max(0, scanned - 3))
    return match.end() if match else None


class Connection:
    """A client connection. `fd` stays the same through the TLS handshake (the loop's selector
    knows it by that); `where` is the loop's table it is in, None while with a worker."""

    __slots__ = ("address", "buffer", "drained", "fd", "scanned", "since", "sock", "tls", "where")

    def __init__(self, sock: socket.socket, address: Any, tls: TLSServerConfig | None) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.address = address
        self.tls = tls  # the TLS settings of a handshake still to be done
        self.buffer = bytearray()  # what came in and is not yet a complete request head
        self.scanned = 0
        self.drained = 0
        self.since = 0.0  # when it entered the table it is in (the loop's clock)
        self.where: OrderedDict[Connection, None] | None = None

    @property
    def client(self) -> str:
        return str(self.address[0]) if self.address else "?"

    def step(self) -> Step:
        """The next step when the socket is ready: the handshake first, then the head."""
        return self._handshake(self.tls) if self.tls is not None else self.read()

    def _handshake(self, tls: TLSServerConfig) -> Step:
        sock = self.sock
        if not isinstance(sock, ssl.SSLSocket):
            try:
                first = sock.recv(1, socket.MSG_PEEK)
                if first and first[0] != _TLS_HANDSHAKE_RECORD:
                    self.tls = None
                    return self.refuse(PLAIN_HTTP_ANSWER)  # as Go's servers do
                if not first:
                    return Step.CLOSE
                sock = self.sock = tls.context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
            except BlockingIOError:
                return Step.READ
            except (OSError, ValueError) as error:
                logger.debug("TLS connection from %s failed: %s", self.client, error)
                return Step.CLOSE
        try:
            sock.do_handshake()
            allowed = tls.client_allowed(sock.getpeercert())
        except ssl.SSLWantReadError:
            return Step.READ
        except ssl.SSLWantWriteError:
            return Step.WRITE
        except (OSError, ValueError) as error:  # ssl.SSLError among them
            logger.debug("TLS handshake with %s failed: %s", self.client, error)
            return Step.CLOSE
        if not allowed:
            logger.debug("TLS client %s refused: no SAN in client_allowed_sans", self.client)
            return Step.CLOSE
        self.tls = None
        return self.read()  # the request may have come with the handshake's last flight

    def read(self) -> Step:
        """Take what has come in; SERVE once the request head is complete."""
        sock = self.sock
        try:
            while len(self.buffer) <= MAX_HEAD_BYTES:
                data = sock.recv(_RECV_BYTES)
                if not data:
                    return Step.CLOSE
                self.buffer += data
                # TLS may hold decrypted bytes that no readiness event will announce.
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    break
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except OSError as error:
            logger.debug("connection from %s broke off: %s", self.client, error)
            return Step.CLOSE
        return self.look_for_head()

    def look_for_head(self) -> Step:
        end = head_end(self.buffer, self.scanned)
        if end is not None and end <= MAX_HEAD_BYTES:
            return Step.SERVE
        self.scanned = len(self.buffer)
        return self.refuse(HEAD_TOO_LARGE) if self.scanned > MAX_HEAD_BYTES else Step.READ

    def take_head(self) -> bytes:
        """The complete request head; a pipelined request after it stays in the buffer."""
        end = head_end(self.buffer, self.scanned)
        if end is None:
            raise ValueError("no complete request head")
        head = bytes(self.buffer[:end])
        del self.buffer[:end]
        self.scanned = 0
        return head

    def pending(self) -> bool:
        """Whether TLS holds decrypted bytes not read yet (no readiness event will say so)."""
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0

    def refuse(self, answer: bytes) -> Step:
        with contextlib.suppress(OSError):  # a few hundred bytes: an empty socket takes them
            self.sock.send(answer)
        return Step.LINGER

    def half_close(self) -> None:
        """Closing with unread input would send a reset, and the client could lose the answer
        it has not read yet: the write side is closed, and drain() reads what still comes."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)  # TLS: leaves the TLS layer, as intended
        self.buffer = bytearray()
        self.drained = 0

    def drain(self) -> bool:
        """Read and drop what the client still sends; False once it is done (or sent too much)."""
        try:
            data = self.sock.recv(_RECV_BYTES)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True
        except OSError:
            return False
        self.drained += len(data)
        return bool(data) and self.drained <= _LINGER_BYTES

    def close(self) -> None:
        self.sock.close()
