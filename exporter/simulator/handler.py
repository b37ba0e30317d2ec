"""The simulator's HTTP side: a listener (a bucket's host, or a region's service host) and
its request handler, which picks faults, accounts each request and answers through the Api.

Thread ownership: a BucketServer's set of open connections is shared by its handler threads
under `_conn_lock`; each Handler's state (the request being answered) is its own thread's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from exporter.ci.services import endpoint_family
from exporter.signing import TOKEN_HEADER
from exporter.simulator import render
from exporter.simulator.api import LISTING_PATHS, Api, ApiError, Reply, error_reply
from exporter.simulator.faults import Fault, FaultSet
from exporter.simulator.model import SimBucket
from exporter.simulator.params import bad_request

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    bucket: str
    method: str
    path: str
    params: Mapping[str, str]
    status: int  # 0 when the connection was closed without an answer
    fault: str = ""


class Backend(Protocol):
    """What a listener needs of the Simulator that serves it (exporter.simulator.server, which
    imports this module): its Api, faults, buckets, clock and request accounting."""

    api: Api
    faults: FaultSet
    buckets: dict[str, SimBucket]
    latency: float
    on_request: Callable[[], None] | None

    def now(self) -> float: ...

    def hold(self, seconds: float) -> bool: ...

    def record(self, entry: RequestRecord) -> None: ...


class BucketServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sim: Backend, bucket: SimBucket | None, region: str) -> None:
        """`bucket` None: the region's service host."""
        self.sim = sim
        self.bucket = bucket
        self.region = region
        # What the request log and the faults call it: the bucket, or the service host.
        self.label = bucket.name if bucket is not None else f"ci.{region}"
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # socketserver prints a traceback to stderr; a client that hung up (the exporter
        # stopping, a test cutting a connection) is a debug line here, in the demo too.
        log.debug("simulator: a request from %s broke off", client_address, exc_info=True)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        """Wake handler threads parked on idle keep-alive connections."""
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tencent-ci"
    # Headers and body go out in separate writes; with Nagle's algorithm the body then waits
    # for the client's delayed ACK, 40 ms on every keep-alive answer.
    disable_nagle_algorithm = True
    timeout = 60  # idle keep-alive connections
    server: BucketServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.track(self.connection, False)

    def version_string(self) -> str:
        return self.server_version

    def date_time_string(self, timestamp: float | None = None) -> str:
        if timestamp is None:
            timestamp = self.server.sim.now() + getattr(self, "_skew", 0.0)
        return formatdate(timestamp, usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        sim, label = self.server.sim, self.server.label
        self._discard_body()
        split = urlsplit(self.path)
        path = unquote(split.path)
        pairs = parse_qsl(split.query, keep_blank_values=True)
        params = dict(pairs)
        family = endpoint_family(path)
        listing, jobs = path in LISTING_PATHS, family in LISTING_PATHS
        fault = sim.faults.pick(label, family, listing=listing, jobs=jobs)
        kind = fault.kind if fault else ""
        self._skew = fault.offset if fault is not None and kind == "skew" else 0.0
        self._entry = RequestRecord(label, self.command, path, params, 0, kind)
        if sim.latency > 0 and sim.hold(sim.latency):
            self._reset()
            return
        if sim.on_request is not None:
            sim.on_request()
        self._respond(path, params, len(pairs) != len(params), fault)

    def _discard_body(self) -> None:
        # CI's listings take no body; read any sent so the keep-alive connection stays usable.
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > 0:
            self.rfile.read(min(int(length), 1 << 20))

    def _account(self, status: int) -> None:
        # Before the answer leaves: a client that has its answer finds the request counted.
        self.server.sim.record(dataclasses.replace(self._entry, status=status))

    def _respond(
        self, path: str, params: dict[str, str], duplicated: bool, fault: Fault | None
    ) -> None:
        """Answer one request, faults included."""
        request_id = render.new_request_id()
        kind = fault.kind if fault else ""
        if fault is not None and kind == "slow" and self.server.sim.hold(fault.delay):
            self._reset()
            return
        if fault is not None and self._early_fault(fault, request_id):
            return
        reply = self._reply(path, params, duplicated, request_id, kind == "repeat_token")
        if fault is not None:
            reply.body = self._damage(reply.body, fault)
        self._send(reply, request_id, truncate=kind == "truncated")

    @staticmethod
    def _damage(body: bytes, fault: Fault) -> bytes:
        """A good answer's body as the fault spoils it."""
        if fault.kind == "malformed":
            return render.malform(body)
        if fault.kind == "oversized":
            return render.oversize(body, fault.size)
        if fault.kind == "missing_field":
            return render.drop_job_field(body, fault.job_field)
        if fault.kind == "unknown_state":
            return render.set_job_state(body, fault.state)
        return body

    def _early_fault(self, fault: Fault, request_id: str) -> bool:
        """Answer instead of the API when the fault says so: whether it did."""
        if fault.kind == "reset":
            self._reset()
            return True
        status = fault.status if fault.status is not None else 500
        if fault.kind == "html":
            self._send(Reply(status, render.html_page(), "text/html"), request_id)
            return True
        error = self._fault_error(fault, status)
        if error is not None:
            self._send(error_reply(error, request_id), request_id)
            return True
        return False

    def _fault_error(self, fault: Fault, status: int) -> ApiError | None:
        slow_down = "frequency control, slow down"
        if fault.kind == "http_500":
            return ApiError(500, "InternalError", "internal error")
        if fault.kind == "http_503":
            return ApiError(503, "SlowDown", slow_down)
        if fault.kind == "slow_down":
            return ApiError(status, "SlowDown", slow_down)
        if fault.kind == "http_429":
            return ApiError(429, "SlowDown", slow_down, {"Retry-After": self._retry_after(fault)})
        if fault.kind == "auth":
            # As a careless proxy might: the refusal quotes what it was sent.
            token = self.headers.get(TOKEN_HEADER)
            sent = f" (security token {token!r})" if token else ""
            return ApiError(status, fault.code, f"request refused{sent}")
        return None

    def _retry_after(self, fault: Fault) -> str:
        if fault.retry_after_as_date:
            return self.date_time_string(self.server.sim.now() + self._skew + fault.retry_after)
        return f"{fault.retry_after:g}"

    def _reply(
        self, path: str, params: dict[str, str], duplicated: bool, request_id: str, repeat: bool
    ) -> Reply:
        sim, bucket = self.server.sim, self.server.bucket
        try:
            if duplicated:
                raise bad_request("a query parameter is repeated")
            if bucket is None:
                buckets = list(sim.buckets.values())
                return sim.api.answer_service(
                    self.server.region,
                    buckets,
                    self.command,
                    path,
                    params,
                    self.headers,
                    request_id,
                    self._skew,
                )
            return sim.api.answer(
                bucket, self.command, path, params, self.headers, request_id, repeat, self._skew
            )
        except ApiError as err:
            return error_reply(err, request_id)

    def _send(self, reply: Reply, request_id: str, truncate: bool = False) -> None:
        self._account(reply.status)
        body = reply.body
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("x-ci-request-id", request_id)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            # A truncated answer promises more than it sends, then hangs up.
            self.send_header("Content-Length", str(len(body) + (64 if truncate else 0)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if truncate else body)
            self.wfile.flush()
        except OSError:  # the client went away; nothing to answer
            self.close_connection = True
            return
        if truncate:
            self._hang_up(reset=False)

    def _reset(self) -> None:
        self._account(0)
        self._hang_up(reset=True)

    def _hang_up(self, reset: bool) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            if reset:
                # Linger 0: close() sends RST instead of FIN.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            else:
                self.connection.shutdown(socket.SHUT_WR)
            self.connection.close()
