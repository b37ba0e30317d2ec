"""A deliberately hostile CI endpoint for tests: a raw TCP server on 127.0.0.1 (port chosen by
the OS) that reads each HTTP request and hands it, with the connection, to whatever the test
scripted. Nothing here is HTTP-correct unless the script makes it so: trickled status lines,
endless bodies, lying lengths and encodings are the point.

Thread ownership: the accept loop and one thread per connection are the server's; `received`
is appended to under `lock`; `release` (set by close) ends every stall and trickle.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_REQUEST_HEAD = 64 * 1024


@dataclass
class Request:
    method: str
    path: str  # decoded
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names


@dataclass
class Peer:
    """The server's side of one connection, as a script sees it."""

    sock: socket.socket
    release: threading.Event
    started: threading.Event = field(default_factory=threading.Event)

    def send(self, data: bytes) -> bool:
        """False once the client has gone."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def respond(
        self, body: bytes, status: int = 200, headers: dict[str, str] | None = None
    ) -> bool:
        head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return self.send(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    def head(self, status: int = 200, headers: dict[str, str] | None = None) -> bool:
        """A status line and headers only: the script sends the body (or does not)."""
        lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        return self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    def trickle(self, data: bytes, every: float = 0.05) -> bool:
        """`data` a byte at a time, `every` seconds apart (the adversary's pace), until sent,
        the client goes, or the test ends."""
        self.started.set()
        for i in range(len(data)):
            if not self.send(data[i : i + 1]):
                return False
            if self.release.wait(every):
                return False
        return True

    def chunks_forever(self, chunk: bytes) -> None:
        """A chunked body that never ends: `chunk` again and again until the client goes."""
        self.started.set()
        frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
        while not self.release.is_set() and self.send(frame):
            pass

    def stall(self) -> None:
        self.started.set()
        self.release.wait(30)


Script = Callable[[Request, Peer], None]


def _read_head(sock: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            piece = sock.recv(4096)
        except OSError:
            return None
        if not piece or len(data) > MAX_REQUEST_HEAD:
            return None
        data += piece
    return data


def _parse(head: bytes) -> Request:
    lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    parts = urlsplit(target)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return Request(method, unquote(parts.path), query, headers)


class HostileCI:
    def __init__(self, script: Script | None = None) -> None:
        self.script: Script = script or (lambda request, peer: peer.respond(b"<Response/>"))
        # When set, each connection is handed over as it is accepted, before any request is
        # read: for peers that do not speak HTTP at all (a TLS handshake, say).
        self.raw: Callable[[Peer], None] | None = None
        self.received: list[Request] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.peers: list[Peer] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def requests(self) -> list[Request]:
        with self.lock:
            return list(self.received)

    def first_peer_started(self, timeout: float = 5.0) -> bool:
        """Waits (on events, not time) until a script has begun its misbehaviour."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                peers = list(self.peers)
            for peer in peers:
                if peer.started.wait(0.01):
                    return True
        return False

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            with self.lock:
                self._threads.append(thread)
                self._sockets.append(sock)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            if self.raw is not None:
                peer = Peer(sock, self.release)
                with self.lock:
                    self.peers.append(peer)
                with contextlib.suppress(OSError):
                    self.raw(peer)
                return
            while not self.release.is_set():
                head = _read_head(sock)
                if head is None:
                    return
                request = _parse(head)
                peer = Peer(sock, self.release)
                with self.lock:
                    self.received.append(request)
                    self.peers.append(peer)
                try:
                    self.script(request, peer)
                except OSError:
                    return

    def close(self) -> None:
        self.release.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept loop
        self._listener.close()
        self._accepting.join(5)
        with self.lock:
            threads = list(self._threads)
            for sock in self._sockets:  # wakes a thread waiting for a kept-alive request
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(5)
