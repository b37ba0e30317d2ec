"""The callback receiver: CI's TaskFinish and WorkflowFinish callbacks, on a port of their own.

Threads: exporter.httpserver's loop owns the connections and its workers serve one request each
(`_serve`); a worker reads the body, parses it (exporter.ci.callback) and hands the event to
`deliver` (the Poller's, which queues it for the target's poll thread and wakes it). Nothing
here is shared but the config (replaced whole), CallbackStats (locked), and what stop() (the
reload or main thread) and the workers share under `_settled`: whether the receiver is stopping,
and how many callbacks are being handed on and answered. stop() waits for those to be answered
before it cuts the connections, and a callback read after it began is answered 503 and not
handed on: one in flight when a reload moves the receiver is delivered and acknowledged, or
refused for CI to send again; never both, so never delivered twice.

What a request must be, checked in this order, each refusal counted by reason and answered at
once, before anything in the body is trusted:
- from an address in `allow` when the list is given (403);
- `POST /callback/<secret>` or `POST /callback/<secret>/<bucket>`: the secret is compared in
  constant time, and a wrong one is answered as any unknown path is (404), so the answer does
  not tell a guess from a typo; the bucket (BucketName-APPID) routes a callback about a queue
  the exporter does not poll (a job type with no listing) to its target;
- with one Content-Length (411 without one, with two, or chunked) of at most `max_body_bytes`
  (413, answered without reading the body);
- a client that waits to be told to send its body (`Expect: 100-continue`, as curl does past
  1 KiB) is told (100 Continue) once its head has passed the checks above; a refusal is its
  final answer, the body never sent;
- whole within `body_timeout` of its head (408: a slow body holds a worker that long at most);
- exactly as long as it says (400 when the client closes its side before the end, or more has
  come by the time the body is read: a second request, or junk);
- a body CI sends, XML or JSON (400).
A client that breaks the connection off mid-body is counted as malformed and not answered.
A callback that passes is acknowledged with 200 whatever becomes of it (an unknown event, a
bucket not polled): CI retries what it sees fail, and those would fail forever. An unknown
event is counted here (unknown_event) and not handed on: it holds nothing a target could apply.
503, for CI to retry later, is answered only when the target's queue of callbacks to apply is
full, and for a callback read as its receiver stops (not counted: CI sends it again, to the new
one; a body still coming then is cut off, and counted as any broken off).

No secret reaches a log line: the request line (which holds the path) is never logged.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from exporter.callback_stats import CallbackStats
from exporter.ci.buckets import is_bucket_id
from exporter.ci.callback import CallbackEvent, parse_callback
from exporter.ci.models import CIError
from exporter.config import CallbacksConfig
from exporter.httpserver import BoundedHTTPServer, ConnectionLimits, server_clock
from exporter.listen import parse_listen_address

log = logging.getLogger(__name__)

PATH_PREFIX = "/callback/"
MAX_HEAD_LINES = 100
# What the Poller answers for a TaskFinish or WorkflowFinish: "queued" (its target will apply
# it), or an outcome counted here (unknown_target, overloaded; unknown_event if it were given
# another event, which the receiver counts itself and does not deliver).
Deliver = Callable[[str | None, CallbackEvent], str]
# Requests served at once, connections held: CI's callbacks are small and few at a time.
RECEIVER_LIMITS = ConnectionLimits(max_requests=8, max_connections=64)
ANSWER_TIMEOUT = 2.0  # an answer the client does not take within this is dropped
# What stop() waits for the callbacks being handed on to be answered: a queue put and a send.
STOP_WAIT = ANSWER_TIMEOUT + 1.0
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    503: "Service Unavailable",
}


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Head:
    method: str
    path: str
    version: str
    headers: dict[str, str]  # lower-case names


class CallbackReceiver:
    """Listens on the config's address (bound in the constructor: OSError when it cannot be).
    `address` listens elsewhere: where a stopped receiver listened (its config's port may be
    0), for the Callbacks holder to take it back."""

    def __init__(
        self,
        config: CallbacksConfig,
        deliver: Deliver,
        stats: CallbackStats,
        *,
        limits: ConnectionLimits = RECEIVER_LIMITS,
        address: tuple[str, int] | None = None,
    ) -> None:
        self.config = config
        self._deliver = deliver
        self._stats = stats
        self._settled = threading.Condition()
        self._stopping = False  # under _settled
        self._handing_on = 0  # under _settled: callbacks being handed on and answered
        address = address or parse_listen_address(config.listen_address)
        try:
            self._http = BoundedHTTPServer(
                address, self._serve, lambda: None, limits, with_body=True
            )
        except OSError as exc:
            host, port = address
            reason = exc.strerror or str(exc)
            raise OSError(f"cannot listen for callbacks on {host}:{port}: {reason}") from None
        self.address = (address[0], int(self._http.address[1]))  # the port the OS gave

    @property
    def port(self) -> int:
        return self.address[1]

    def start(self) -> None:
        self._stats.enabled = True
        self._http.start()
        log.info("receiving callbacks", extra={"port": self.port})

    def stop(self) -> None:
        """Stops listening and cuts the connections off, once the callbacks being handed on
        are answered (each would be sent again, and delivered twice, were its answer lost)."""
        with self._settled:
            self._stopping = True
            self._settled.wait_for(lambda: self._handing_on == 0, STOP_WAIT)
        self._http.stop()

    # -- one request, on a worker -----------------------------------------------------------

    def _serve(self, connection: socket.socket, client: Any, head: bytes) -> bool:
        started = server_clock()
        config = self.config
        try:
            bucket, event = self._read(connection, client, head, config, started)
            with self._handing_on_slot() as admitted:
                if admitted:
                    _respond(connection, *self._hand_on(bucket, event))
                    return False
            # Read as the receiver stops (a reload moved it): CI sends it again, to the new one.
            _respond(connection, 503, "service unavailable\n")
        except Refused as refused:
            self._stats.rejected(refused.reason)
            log.debug("callback refused", extra={"client": client[0], "reason": refused.reason})
            _respond(connection, refused.status, f"{_STATUS_TEXT[refused.status].lower()}\n")
        except OSError as error:  # the client broke the connection off mid-body
            self._stats.rejected("malformed")
            log.debug("callback connection broke off: %s", error)
        return False

    @contextlib.contextmanager
    def _handing_on_slot(self) -> Iterator[bool]:
        """Whether a callback may be handed on (not once stop() began); stop() waits for it."""
        with self._settled:
            admitted = not self._stopping
            self._handing_on += admitted
        try:
            yield admitted
        finally:
            if admitted:
                with self._settled:
                    self._handing_on -= 1
                    self._settled.notify_all()

    def _read(
        self,
        connection: socket.socket,
        client: Any,
        data: bytes,
        config: CallbacksConfig,
        started: float,
    ) -> tuple[str | None, CallbackEvent]:
        """The bucket the path names and the callback in the body; Refused unless it passes."""
        if config.allow and not _allowed(client[0], config.allow):
            raise Refused(403, "network")
        raw, _, start = data.partition(b"\r\n\r\n")
        head = _parse_head(raw)
        bucket = _route(head.path, config.secret)
        if head.method != "POST":
            raise Refused(405, "method")
        length = _content_length(head.headers)
        if length > config.max_body_bytes:
            raise Refused(413, "too_large")
        if len(start) > length:
            raise Refused(400, "malformed")  # more than it said: a second request, or junk
        if length and not start and _expects_continue(head):
            connection.sendall(CONTINUE)  # it waits for this to send the body
        body = start + _read_body(connection, length - len(start), started + config.body_timeout)
        if _more_waiting(connection):
            raise Refused(400, "malformed")  # more than it said, come with the body
        try:
            event = parse_callback(body, head.headers.get("content-type", ""))
        except (CIError, ValueError):
            raise Refused(400, "malformed") from None
        return bucket, event

    def _hand_on(self, bucket: str | None, event: CallbackEvent) -> tuple[int, str]:
        if not event.known:  # nothing in it a target could apply: acknowledged, counted
            self._stats.received(event.event, "unknown_event")
            return 200, "ok\n"
        outcome = self._deliver(bucket, event)
        if outcome == "overloaded":
            raise Refused(503, "overloaded")
        if outcome != "queued":
            self._stats.received(event.event, outcome)
        return 200, "ok\n"


def _allowed(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return any((mapped or ip) in ipaddress.ip_network(net) for net in networks)


def _parse_head(head: bytes) -> Head:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or len(lines) > MAX_HEAD_LINES:
        raise Refused(400, "malformed")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or name != name.strip() or not name:
            raise Refused(400, "malformed")
        key, value = name.lower(), value.strip()
        # A repeated field is one list (RFC 9110 5.3): two Content-Lengths are no length.
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return Head(parts[0], parts[1], parts[2], headers)


def _expects_continue(head: Head) -> bool:
    """RFC 9110 10.1.1; an HTTP/1.0 client's expectation is ignored, it waits for nothing."""
    expect = head.headers.get("expect", "").lower()
    return head.version == "HTTP/1.1" and expect == "100-continue"


def _route(path: str, secret: str) -> str | None:
    """The bucket the path names (None when it names none); Refused unless the secret fits."""
    rest = path.partition("?")[0]
    if not rest.startswith(PATH_PREFIX):
        raise Refused(404, "secret")
    given, slash, bucket = rest[len(PATH_PREFIX) :].partition("/")
    if not hmac.compare_digest(given.encode("utf-8", "replace"), secret.encode()):
        raise Refused(404, "secret")
    if slash and not is_bucket_id(bucket):
        raise Refused(404, "secret")
    return bucket or None


def _content_length(headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise Refused(411, "length")
    text = headers.get("content-length", "")
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise Refused(411, "length")
    return int(text)


def _read_body(connection: socket.socket, length: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    left = length
    while left > 0:
        remaining = deadline - server_clock()
        if remaining <= 0:
            raise Refused(408, "slow")
        connection.settimeout(remaining)
        try:
            chunk = connection.recv(min(left, 65536))
        except TimeoutError:
            raise Refused(408, "slow") from None
        if not chunk:  # it closed its side: it may still read the answer
            raise Refused(400, "malformed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _more_waiting(connection: socket.socket) -> bool:
    """Whether bytes beyond the body have come (peeked, not taken). Those still on their way
    when it looks are after the request as far as it can tell: answered past, then drained."""
    connection.settimeout(0.0)
    try:
        return bool(connection.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False


def _respond(connection: socket.socket, status: int, body: str) -> None:
    data = body.encode()
    head = (
        f"HTTP/1.1 {status} {_STATUS_TEXT[status]}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    try:
        connection.settimeout(ANSWER_TIMEOUT)
        connection.sendall(head.encode() + data)
    except OSError as error:
        log.debug("callback answer not sent: %s", error)


class Callbacks:
    """The receiver of the running configuration: started, replaced or stopped as reloads
    change `callbacks:` (the reload thread's; `receiver` is read by no other thread)."""

    def __init__(self, deliver: Deliver, stats: CallbackStats) -> None:
        self._deliver = deliver
        self._stats = stats
        self.receiver: CallbackReceiver | None = None

    def configure(self, config: CallbacksConfig | None) -> None:
        """Take up `config`. OSError when a new address cannot be listened on: the receiver
        in service, if any, is kept (on its port, and listening anew when the new address had
        the same port)."""
        running = self.receiver
        if running is not None and config is not None and _same_address(running, config):
            running.config = config  # secret, allow-list and limits: read per request
            return
        if running is not None and config is not None and _same_port(running, config):
            self._move(running, config)
            return
        if config is not None:
            self.receiver = self._start(config)
        else:
            self.receiver = None
            self._stats.enabled = False  # no receiver: no callback families
        if running is not None:
            running.stop()

    def _start(
        self, config: CallbacksConfig, address: tuple[str, int] | None = None
    ) -> CallbackReceiver:
        receiver = CallbackReceiver(config, self._deliver, self._stats, address=address)
        receiver.start()
        return receiver

    def _move(self, running: CallbackReceiver, config: CallbacksConfig) -> None:
        """To another host on the same port: one of the two could not listen while the other
        does (0.0.0.0:P and 127.0.0.1:P, [::]:P and 0.0.0.0:P), so the running one is stopped
        first. Callbacks sent in between are refused (CI sends them again)."""
        running.stop()
        try:
            self.receiver = self._start(config)
        except OSError as error:
            self.receiver = None  # and so it stays if the old address is lost too
            self.receiver = self._take_back(running, error)
            raise

    def _take_back(self, stopped: CallbackReceiver, error: OSError) -> CallbackReceiver:
        """A receiver where `stopped` listened, with its config; OSError when there is none."""
        try:
            return self._start(stopped.config, stopped.address)
        except OSError as again:
            self._stats.enabled = False  # no receiver: no callback families
            raise OSError(f"{error}; and no longer receiving callbacks: {again}") from None

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()
            self.receiver = None


def _same_address(receiver: CallbackReceiver, config: CallbacksConfig) -> bool:
    return receiver.config.listen_address == config.listen_address


def _same_port(receiver: CallbackReceiver, config: CallbacksConfig) -> bool:
    port = parse_listen_address(config.listen_address)[1]
    return port != 0 and port == receiver.port  # 0: a port of the OS's choice, a free one
