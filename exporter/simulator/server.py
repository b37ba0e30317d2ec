"""The fake CI over HTTP: one loopback listener per bucket (the bucket cannot be read from
a loopback Host header), request accounting, fault injection, and the life cycle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import struct
import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from exporter.ci.services import endpoint_family
from exporter.signing import TOKEN_HEADER
from exporter.simulator import render
from exporter.simulator.api import (
    BOUNDS,
    JOB_PATHS,
    Api,
    ApiError,
    Reply,
    bad_request,
    error_reply,
)
from exporter.simulator.faults import Fault, FaultSet
from exporter.simulator.model import Clock, ClockView, SimBucket

if TYPE_CHECKING:
    from exporter.simulator.workload import Workload

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    bucket: str
    method: str
    path: str
    params: Mapping[str, str]
    status: int  # 0 when the connection was closed without an answer
    fault: str = ""


class Simulator(ClockView):
    """Fake CI for a set of buckets, each on its own loopback port.

    The bucket cannot be read from a loopback Host header, hence one listener per bucket.
    """

    def __init__(
        self,
        credentials: Mapping[str, str] | None = None,
        *,
        tokens: Mapping[str, str] | None = None,
        creation_bounds: str = "exclusive",
        seed: int = 0,
        max_cursors: int = 100_000,
        log_size: int = 100_000,
    ) -> None:
        self.seed = seed
        self.clock = Clock()
        self.api = Api(self.clock, credentials, tokens, creation_bounds, max_cursors)
        self.faults = FaultSet(seed)
        self.buckets: dict[str, SimBucket] = {}
        self.workloads: list[Workload] = []
        self._servers: dict[str, _BucketServer] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._log: deque[RequestRecord] = deque(maxlen=log_size)
        self._counts: Counter[tuple[str, str]] = Counter()
        self._workload_thread: threading.Thread | None = None
        # Seconds every answer waits before it is sent (benchmarks: a remote CI's round trip).
        self.latency = 0.0
        # Called on the handler's thread before each answer is made (tests: move the clock and
        # the workload while a poll is in flight). Must be thread-safe.
        self.on_request: Callable[[], None] | None = None

    def __repr__(self) -> str:
        # No keys or tokens here: reprs end up in logs.
        return f"Simulator(buckets={sorted(self.buckets)}, {self.api!r})"

    @property
    def creation_bounds(self) -> str:
        return self.api.creation_bounds

    @creation_bounds.setter
    def creation_bounds(self, value: str) -> None:
        if value not in BOUNDS:
            raise ValueError(f"creation_bounds must be one of {BOUNDS}, not {value!r}")
        self.api.creation_bounds = value

    # -- setup ---------------------------------------------------------------------------

    def add_bucket(
        self, name: str, region: str = "ap-guangzhou", seed: int | str | None = None
    ) -> SimBucket:
        if name in self.buckets:
            raise ValueError(f"bucket {name} exists")
        bucket = SimBucket(
            name, region, clock=self.clock, seed=f"{self.seed}:{name}" if seed is None else seed
        )
        self.buckets[name] = bucket
        if self._servers:
            self._listen(bucket)
        return bucket

    def bucket(self, name: str) -> SimBucket:
        return self.buckets[name]

    def add_credentials(self, secret_id: str, secret_key: str, token: str | None = None) -> None:
        """A key pair; with a token it is temporary and every request must carry the token."""
        self.api.credentials[secret_id] = secret_key
        if token is not None:
            self.api.tokens[secret_id] = token

    def add_workload(self, workload: Workload) -> Workload:
        self.workloads.append(workload)
        return workload

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> Simulator:
        self._stopping.clear()
        for bucket in self.buckets.values():
            if bucket.name not in self._servers:
                self._listen(bucket)
        return self

    def _listen(self, bucket: SimBucket) -> None:
        server = _BucketServer(self, bucket)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ci-sim-{bucket.name}",
            daemon=True,
        )
        self._servers[bucket.name] = server
        self._threads.append(thread)
        thread.start()

    def hold(self, seconds: float) -> bool:
        """Wait `seconds`, or less when stop() comes first: whether it came."""
        return self._stopping.wait(seconds)

    def start_workload(self, interval: float = 0.5) -> None:
        """Advance every workload to now() every `interval` seconds until stop()."""
        if self._workload_thread is not None:
            return
        self._stopping.clear()
        thread = threading.Thread(
            target=self._run_workloads, args=(interval,), name="ci-sim-workload", daemon=True
        )
        self._workload_thread = thread
        thread.start()

    def _run_workloads(self, interval: float) -> None:
        while not self._stopping.wait(interval):
            for workload in self.workloads:
                try:
                    workload.advance(workload.bucket.now())
                except Exception:  # a broken workload must not kill the demo
                    log.exception("simulator workload for %s failed", workload.bucket.name)

    def stop(self) -> None:
        self._stopping.set()
        for server in self._servers.values():
            server.shutdown()
            server.close_connections()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=1.0)
        if self._workload_thread is not None:
            self._workload_thread.join(timeout=1.0)
        self._servers.clear()
        self._threads.clear()
        self._workload_thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def endpoint(self, bucket: str) -> str:
        try:
            host, port = self._servers[bucket].server_address[:2]
        except KeyError:
            raise KeyError(f"bucket {bucket} has no listener; add it and start()") from None
        return f"http://{host!s}:{port}"

    # -- accounting ----------------------------------------------------------------------

    def record(self, entry: RequestRecord) -> None:
        with self._lock:
            self._log.append(entry)
            self._counts[(entry.bucket, endpoint_family(entry.path))] += 1

    def request_count(self, bucket: str | None = None, path_family: str | None = None) -> int:
        """Requests served since start (or reset); exact even when the log has rolled over."""
        with self._lock:
            return sum(
                n
                for (b, fam), n in self._counts.items()
                if (bucket is None or b == bucket) and (path_family is None or fam == path_family)
            )

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def reset_requests(self) -> None:
        with self._lock:
            self._log.clear()
            self._counts.clear()


class _BucketServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sim: Simulator, bucket: SimBucket) -> None:
        self.sim = sim
        self.bucket = bucket
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tencent-ci"
    # Headers and body go out in separate writes; with Nagle's algorithm the body then waits
    # for the client's delayed ACK, 40 ms on every keep-alive answer.
    disable_nagle_algorithm = True
    timeout = 60  # idle keep-alive connections
    server: _BucketServer

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
        sim, bucket = self.server.sim, self.server.bucket
        self._discard_body()
        split = urlsplit(self.path)
        path = unquote(split.path)
        pairs = parse_qsl(split.query, keep_blank_values=True)
        params = dict(pairs)
        family = endpoint_family(path)
        fault = sim.faults.pick(
            bucket.name, family, listing=path in JOB_PATHS, jobs=family in JOB_PATHS
        )
        kind = fault.kind if fault else ""
        self._skew = fault.offset if fault is not None and kind == "skew" else 0.0
        self._entry = RequestRecord(bucket.name, self.command, path, params, 0, kind)
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
