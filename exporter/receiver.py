"""The callback receiver: CI's TaskFinish and WorkflowFinish callbacks, on a port of their own.

Threads: exporter.httpserver's loop owns the connections and its workers serve one request each
(`_serve`); a worker reads the body, parses it (exporter.ci.callback) and hands the event to
`deliver` (the Poller's, which queues it for the target's poll thread and wakes it). Nothing
here is shared but the config (replaced whole) and CallbackStats (locked).

What a request must be, checked in this order, each refusal counted by reason and answered at
once, before anything in the body is trusted:
- from an address in `allow` when the list is given (403);
- `POST /callback/<secret>` or `POST /callback/<secret>/<bucket>`: the secret is compared in
  constant time, and a wrong one is answered as any unknown path is (404), so the answer does
  not tell a guess from a typo; the bucket (BucketName-APPID) routes a callback about a queue
  the exporter does not poll (a job type with no listing) to its target;
- with one Content-Length (411 without one, with two, or chunked) of at most `max_body_bytes`
  (413, answered without reading the body);
- whole within `body_timeout` of its head (408: a slow body holds a worker that long at most);
- exactly as long as it says (400 when the client closes its side before the end, or more has
  come by the time the body is read: a second request, or junk);
- a body CI sends, XML or JSON (400).
A client that breaks the connection off mid-body is counted as malformed and not answered.
A callback that passes is acknowledged with 200 whatever becomes of it (an unknown event, a
bucket not polled): CI retries what it sees fail, and those would fail forever. An unknown
event is counted here (unknown_event) and not handed on: it holds nothing a target could apply.
Only a target whose queue of callbacks to apply is full answers 503, for CI to retry later.

No secret reaches a log line: the request line (which holds the path) is never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from exporter.callback_stats import CallbackStats
from exporter.ci.buckets import is_bucket_id
from exporter.ci.callback import CallbackEvent, parse_callback
from exporter.ci.models import CIError
from exporter.config import CallbacksConfig
from exporter.httpserver import BoundedHTTPServer, ConnectionLimits
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


class CallbackReceiver:
    """Listens on the config's address (bound in the constructor: OSError when it cannot be)."""

    def __init__(
        self,
        config: CallbacksConfig,
        deliver: Deliver,
        stats: CallbackStats,
        *,
        limits: ConnectionLimits = RECEIVER_LIMITS,
    ) -> None:
        self.config = config
        self._deliver = deliver
        self._stats = stats
        address = parse_listen_address(config.listen_address)
        try:
            self._http = BoundedHTTPServer(
                address, self._serve, lambda: None, limits, with_body=True
            )
        except OSError as exc:
            host, port = address
            reason = exc.strerror or str(exc)
            raise OSError(f"cannot listen for callbacks on {host}:{port}: {reason}") from None

    @property
    def port(self) -> int:
        return int(self._http.address[1])

    def start(self) -> None:
        self._stats.enabled = True
        self._http.start()
        log.info("receiving callbacks", extra={"port": self.port})

    def stop(self) -> None:
        self._http.stop()

    # -- one request, on a worker -----------------------------------------------------------

    def _serve(self, connection: socket.socket, client: Any, head: bytes) -> bool:
        started = time.monotonic()
        config = self.config
        try:
            status, body = self._answer(connection, client, head, config, started)
        except Refused as refused:
            self._stats.rejected(refused.reason)
            log.debug("callback refused", extra={"client": client[0], "reason": refused.reason})
            status, body = refused.status, f"{_STATUS_TEXT[refused.status].lower()}\n"
        except OSError as error:  # the client broke the connection off mid-body
            self._stats.rejected("malformed")
            log.debug("callback connection broke off: %s", error)
            return False
        _respond(connection, status, body)
        return False

    def _answer(
        self,
        connection: socket.socket,
        client: Any,
        head: bytes,
        config: CallbacksConfig,
        started: float,
    ) -> tuple[int, str]:
        if config.allow and not _allowed(client[0], config.allow):
            raise Refused(403, "network")
        head, _, start = head.partition(b"\r\n\r\n")
        method, path, headers = _parse_head(head)
        bucket = _route(path, config.secret)
        if method != "POST":
            raise Refused(405, "method")
        length = _content_length(headers)
        if length > config.max_body_bytes:
            raise Refused(413, "too_large")
        if len(start) > length:
            raise Refused(400, "malformed")  # more than it said: a second request, or junk
        body = start + _read_body(connection, length - len(start), started + config.body_timeout)
        if _more_waiting(connection):
            raise Refused(400, "malformed")  # more than it said, come with the body
        try:
            event = parse_callback(body, headers.get("content-type", ""))
        except (CIError, ValueError):
            raise Refused(400, "malformed") from None
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


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """The method, path and headers (lower-case names) of a request head."""
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
    return parts[0], parts[1], headers


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
        remaining = deadline - time.monotonic()
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
        connection.settimeout(2.0)
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
        in service, if any, is kept."""
        running = self.receiver
        if running is not None and config is not None and _same_address(running, config):
            running.config = config  # secret, allow-list and limits: read per request
            return
        if config is not None:
            receiver = CallbackReceiver(config, self._deliver, self._stats)
            receiver.start()
            self.receiver = receiver
        else:
            self.receiver = None
            self._stats.enabled = False  # no receiver: no callback families
        if running is not None:
            running.stop()

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()
            self.receiver = None


def _same_address(receiver: CallbackReceiver, config: CallbacksConfig) -> bool:
    return receiver.config.listen_address == config.listen_address
