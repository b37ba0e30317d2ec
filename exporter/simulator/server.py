"""The fake CI over HTTP: one loopback listener per bucket (the bucket cannot be read from
a loopback Host header) and one per region for its service host (`ci.<Region>.myqcloud.com`:
bucket listings, `service_endpoint`), request accounting, fault injection, and the life cycle.

Thread ownership: the Simulator's listeners and threads are set up and torn down by the thread
that owns it (add_bucket, start, stop); the request log and counts are shared with the handler
threads under `_lock`; each handler's state is its own thread's.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType

from exporter.ci.services import SERVICES, endpoint_family
from exporter.simulator.api import BOUNDS, Api
from exporter.simulator.callbacks import CallbackSender
from exporter.simulator.faults import FaultSet
from exporter.simulator.handler import BucketServer, RequestRecord
from exporter.simulator.model import SimBucket
from exporter.simulator.records import Clock, ClockView
from exporter.simulator.streams import Workload

__all__ = ["RequestRecord", "Simulator"]

log = logging.getLogger(__name__)


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
        self._servers: dict[str, BucketServer] = {}
        self._regions: set[str] = set()  # regions with a service host beyond the buckets'
        self._region_servers: dict[str, BucketServer] = {}
        self._running = False  # between start() and stop(): what is added listens at once
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
        # CI's callbacks of every bucket's finished jobs and runs (send_callbacks).
        self.callbacks: CallbackSender | None = None

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
        self,
        name: str,
        region: str = "ap-guangzhou",
        seed: int | str | None = None,
        *,
        services: Iterable[str] | None = None,
        created: float | None = None,
    ) -> SimBucket:
        """A bucket with every service enabled, or only `services` (its bucket listings);
        `created`: when it was bound to CI (now when None)."""
        if name in self.buckets:
            raise ValueError(f"bucket {name} exists")
        bucket = SimBucket(
            name,
            region,
            clock=self.clock,
            seed=f"{self.seed}:{name}" if seed is None else seed,
            services=frozenset(SERVICES if services is None else services),
            created=created,
        )
        self.buckets[name] = bucket
        if self.callbacks is not None:
            self.callbacks.attach(bucket)
        if self._running:
            self._listen(bucket)
            self._listen_region(region)
        return bucket

    def remove_bucket(self, name: str) -> None:
        """Gone from the bucket listings; its own listener answers until stop()."""
        del self.buckets[name]

    def add_region(self, region: str) -> None:
        """A service host for a region that may have no bucket (listings answer empty)."""
        self._regions.add(region)
        if self._running:
            self._listen_region(region)

    def bucket(self, name: str) -> SimBucket:
        return self.buckets[name]

    def add_credentials(self, secret_id: str, secret_key: str, token: str | None = None) -> None:
        """A key pair; with a token it is temporary and every request must carry the token."""
        self.api.credentials[secret_id] = secret_key
        if token is not None:
            self.api.tokens[secret_id] = token

    def send_callbacks(self, sender: CallbackSender) -> CallbackSender:
        """`sender` POSTs the callbacks of every bucket's jobs and runs as they finish (buckets
        added later too), from now until stop() (and again after start())."""
        self.callbacks = sender
        for bucket in self.buckets.values():
            sender.attach(bucket)
        return sender.start()

    def add_workload(self, workload: Workload) -> Workload:
        self.workloads.append(workload)
        return workload

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> Simulator:
        self._stopping.clear()
        self._running = True
        if self.callbacks is not None:
            self.callbacks.start()
        for bucket in self.buckets.values():
            if bucket.name not in self._servers:
                self._listen(bucket)
        for region in self._regions.union(b.region for b in self.buckets.values()):
            self._listen_region(region)
        return self

    def _listen(self, bucket: SimBucket) -> None:
        self._servers[bucket.name] = self._serve_on(BucketServer(self, bucket, bucket.region))

    def _listen_region(self, region: str) -> None:
        if region not in self._region_servers:
            self._region_servers[region] = self._serve_on(BucketServer(self, None, region))

    def _serve_on(self, server: BucketServer) -> BucketServer:
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ci-sim-{server.label}",
            daemon=True,
        )
        self._threads.append(thread)
        thread.start()
        return server

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
        self._running = False
        if self.callbacks is not None:
            self.callbacks.stop()
        for server in [*self._servers.values(), *self._region_servers.values()]:
            server.shutdown()
            server.close_connections()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=1.0)
        if self._workload_thread is not None:
            self._workload_thread.join(timeout=1.0)
        self._servers.clear()
        self._region_servers.clear()
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

    def service_endpoint(self, region: str) -> str:
        """The listener standing for `ci.<region>.myqcloud.com` (bucket listings)."""
        try:
            host, port = self._region_servers[region].server_address[:2]
        except KeyError:
            raise KeyError(f"region {region} has no listener; add a bucket or region") from None
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
