"""Attacks on bucket discovery (issue 16): hostile service hosts, reloads and stops racing a
listing, restarts with saved discovered targets, grace and exactly-once accounting.

Tests that fail name a defect in their docstring (what is wrong, what is right); the others
are regression tests for attacks the code handles. Everything runs over loopback HTTP: the
seeded simulator for buckets and their listings, a small stub for hostile service hosts.
Waits are bounded and wait for something (a board swap, a request, a thread), never a guess.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.api_stats import ApiStats
from exporter.ci.client import CIClient
from exporter.ci.discovery import service_endpoint
from exporter.collector import CICollector
from exporter.config import (
    Config,
    ConfigError,
    DiscoveryConfig,
    RateLimitConfig,
    RetryConfig,
    ServiceConfig,
    TargetConfig,
    parse_config,
)
from exporter.credentials import Credentials
from exporter.poll.clients import build_client
from exporter.poller import Poller
from exporter.sharding import ALL, Shard
from exporter.simulator import Fault, Simulator

SID, KEY = "AKIDattack00000000000000000000000000", "attack-key-0000000000000000000000"
SID2, KEY2 = "AKIDrotated0000000000000000000000000", "rotated-key-000000000000000000000"
GZ, SH = "ap-guangzhou", "ap-shanghai"
MEDIA = ServiceConfig("media", ("Transcode",))
PIC = ServiceConfig("pic", ("PicProcess",))
WAIT = 5.0  # the longest any bounded wait here waits for what it waits for


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator({SID: KEY, SID2: KEY2}, seed=1616)
    for region in (GZ, SH):
        simulator.add_region(region)
    with simulator:
        yield simulator


def entry(**changes: object) -> DiscoveryConfig:
    settings: dict[str, object] = {
        "regions": (GZ,),
        "credentials": Credentials(SID, KEY),
        "services": (MEDIA,),
        "interval": 0.0,  # every discover() lists again (the file's minimum is 1m)
        "grace": 600.0,
        **changes,
    }
    return DiscoveryConfig(**settings)  # type: ignore[arg-type]


def config(*entries: DiscoveryConfig, **changes: object) -> Config:
    settings: dict[str, object] = {
        "discovery": entries,
        "request_timeout": 5,
        "idle_tag_backoff": 0,
        **changes,
    }
    return Config(**settings)  # type: ignore[arg-type]


def make_poller(
    sim: Simulator,
    cfg: Config,
    *,
    shard: Shard = ALL,
    client_factory: Callable[[TargetConfig, Config, ApiStats], CIClient] | None = None,
) -> Poller:
    return Poller(
        cfg,
        ApiStats(),
        shard=shard,
        client_factory=client_factory,
        bucket_endpoint=lambda bucket, region: sim.endpoint(bucket),
        service_endpoint=sim.service_endpoint,
    )


def polled(p: Poller) -> list[str]:
    return sorted(t.name for t in p.targets)


def value(p: Poller, name: str, **labels: str) -> float | None:
    registry = CollectorRegistry()
    registry.register(CICollector(p, p.stats, "test"))
    return registry.get_sample_value(name, labels)


def finished(p: Poller, bucket: str, region: str, service: str, queue: str, tag: str) -> float:
    labels = {"bucket": bucket, "region": region, "service": service, "queue_id": queue}
    found = value(p, "tencent_ci_jobs_finished_total", **labels, tag=tag, state="Success")
    assert found is not None, f"no jobs_finished_total for {bucket}/{region} {service}"
    return found


class Watch:
    """Board swaps, to wait for what /metrics shows without sleeping on a guess."""

    def __init__(self, p: Poller) -> None:
        self.poller = p
        self.changed = threading.Condition()
        p.board.on_swap = self.notify

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def shows(self, bucket: str) -> bool:
        return any(t.bucket == bucket and t.polled for t in self.poller.board.current.targets)


def poll_thread(name: str) -> threading.Thread | None:
    return next((t for t in threading.enumerate() if t.name == f"poll-{name}"), None)


# -- a hostile service host ------------------------------------------------------------------

Answer = tuple[int, bytes]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per answer (headers and body together): no Nagle / delayed-ACK stalls.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server: Stub

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self.server.lock:
            self.server.received.append((parts.path, params, dict(self.headers)))
        status, body = self.server.answer(parts.path, params)
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Stub(ThreadingHTTPServer):
    """A service host answering with `answer(path, params)`."""

    daemon_threads = True

    def __init__(self, answer: Callable[[str, dict[str, str]], Answer]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        self.lock = threading.Lock()
        self.received: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a call cut short by stop() leaves a broken pipe: that is the point

    def calls(self, path: str | None = None) -> int:
        with self.lock:
            return sum(1 for p, _, _ in self.received if path is None or p == path)

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(WAIT)


@pytest.fixture
def stubs() -> Iterator[list[Stub]]:
    made: list[Stub] = []
    yield made
    for stub in made:
        stub.close()


def bucket_page(
    buckets: list[str],
    total: int,
    *,
    region: str = GZ,
    element: str = "MediaBucketList",
    names: list[str] | None = None,
) -> bytes:
    items = "".join(
        f"<{element}><BucketId>{b}</BucketId><Name>{n}</Name><Region>{region}</Region>"
        f"<CreateTime>2026-01-01T00:00:00Z</CreateTime></{element}>"
        for b, n in zip(buckets, names or buckets, strict=True)
    )
    return (
        f"<Response><RequestId>r</RequestId><TotalCount>{total}</TotalCount>"
        f"<PageNumber>1</PageNumber><PageSize>100</PageSize>{items}</Response>"
    ).encode()


def stub_poller(stub: Stub, *entries: DiscoveryConfig) -> Poller:
    """A Poller listing on the stub; its targets are never polled here (discover() only)."""
    cfg = config(
        *entries,
        rate_limit=RateLimitConfig(1000.0, 1000, 4),
        retry=RetryConfig(attempts=1),
    )
    return Poller(
        cfg,
        ApiStats(),
        bucket_endpoint=lambda bucket, region: "http://127.0.0.1:9",
        service_endpoint=lambda region: stub.url,
    )


# ============================================================================================
# Defects: these fail today.
# ============================================================================================


def test_a_reload_changing_an_entry_keeps_its_targets_and_their_counts(sim: Simulator) -> None:
    """DEFECT. A reload that changes anything in a discovery entry (here its keys are rotated,
    the usual SIGHUP after a ${VAR} changes; also grace, interval, tags, a prefix added) makes
    Discoverer.reconfigure build a new _Entry with no listings, so TargetSet.apply drops every
    target that entry found, at once: they leave /metrics and the state file, and come back
    only when the new entry has listed, as new TargetPollers from a fresh baseline. The
    counters reset and the jobs that finished in between are never counted.

    Right: a bucket the changed entry still lists stays the same target (as a named target
    whose settings change keeps the accounting of the streams it still polls); until the new
    entry has listed, what the old one found is kept."""
    bucket = sim.add_bucket("rotates-1250000000", GZ, services=["media"])
    queue = bucket.add_queue("media", name="q")
    cfg = config(entry())
    p = make_poller(sim, cfg)
    p.poll_once()  # baseline
    first = bucket.create_job(queue, "Transcode")
    bucket.finish_job(first, "Success")
    p.poll_once()
    name = f"rotates-1250000000/{GZ}"
    assert finished(p, "rotates-1250000000", GZ, "media", queue, "Transcode") == 1
    before = p.targets[0]

    p.reload(dataclasses.replace(cfg, discovery=(entry(credentials=Credentials(SID2, KEY2)),)))
    still = polled(p)
    second = bucket.create_job(queue, "Transcode")
    bucket.finish_job(second, "Success")
    p.poll_once()
    count = finished(p, "rotates-1250000000", GZ, "media", queue, "Transcode")
    assert (still, p.targets[0] is before, count) == ([name], True, 2)


def test_a_reload_adding_discovery_is_listed_without_waiting_for_the_old_schedule(
    sim: Simulator,
) -> None:
    """DEFECT. The discovery thread sleeps on `_stop.wait(delay)` with the delay it computed
    before the reload (Poller._run_discovery), and nothing wakes it: a reload adding a discovery
    entry (or a new one replacing a changed entry) is listed only when that old delay runs out,
    up to the old interval (10m by default), or MAX_WAIT (a day) when the running configuration
    had no discovery at all.

    Right: reload() wakes the discovery thread (an Event set by _take_up), so the new entry is
    listed within about a second, as its next_round (0) says."""
    sim.add_bucket("named-1250000000", GZ, services=["media"])
    sim.add_bucket("found-1250000000", SH, services=["media"])
    named = TargetConfig(
        "named-1250000000", GZ, sim.endpoint("named-1250000000"), Credentials(SID, KEY), (MEDIA,)
    )
    cfg = config(targets=(named,))  # no discovery yet: the thread sleeps MAX_WAIT
    p = make_poller(sim, cfg)
    sleeping = threading.Event()

    class StopEvent(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            if threading.current_thread().name == "discovery":
                sleeping.set()
            return super().wait(timeout)

    p._stop = StopEvent()  # to know when the discovery thread has gone to sleep
    watch = Watch(p)
    p.start()
    try:
        sleeping.wait(WAIT)  # not asserted: a fixed loop may sleep on another event
        p.reload(dataclasses.replace(cfg, discovery=(entry(regions=(SH,), interval=600.0),)))
        assert watch.until(lambda: watch.shows("found-1250000000"), timeout=4.0), polled(p)
    finally:
        p.stop()


def test_stop_is_not_held_up_while_discovery_builds_targets(sim: Simulator) -> None:
    """DEFECT. Poller.discover() builds every newly found target (TargetPoller.__init__ builds
    its client, a requests session each) and starts its thread inside _take_up, holding
    `_reload_lock`; stop() takes that lock first, so SIGTERM waits for the whole batch, and a
    SIGHUP reload too. Measured here: 6.2 s under the lock for the 10,000 buckets one listing
    may hold (MAX_BUCKETS), before their 10,000 threads are started, far past STOP_TIMEOUT.
    Here one client build that takes a while stands for that batch.

    Right: stop() returns within its timeout (1.5 s) whatever discovery is doing: build the
    targets (or their clients) outside the lock, or on their own threads, or check `_stop`
    between them."""
    for i in range(3):
        sim.add_bucket(f"many{i}-1250000000", GZ, services=["media"])
    building, release = threading.Event(), threading.Event()

    def slow_build(target: TargetConfig, cfg: Config, stats: ApiStats) -> CIClient:
        building.set()
        release.wait(WAIT)  # one slow build: the batch of clients a big listing needs
        return build_client(target, cfg, stats)

    p = make_poller(sim, config(entry()), client_factory=slow_build)
    p.start()
    stopper = threading.Thread(target=p.stop, name="stopper")
    try:
        assert building.wait(WAIT)
        started = time.monotonic()
        stopper.start()
        stopper.join(2.5)
        took = time.monotonic() - started
        assert not stopper.is_alive(), f"stop() still waiting after {took:.1f}s"
    finally:
        release.set()
        if stopper.is_alive():
            stopper.join(WAIT)
        else:
            p.stop()


def test_a_restart_keeps_the_saved_streams_of_a_service_not_listed_yet(
    sim: Simulator, tmp_path: Path
) -> None:
    """DEFECT. After a restart, the first listing that finds a saved discovered target claims
    it (TargetSet._new_target pops it from `unclaimed`) with only the services found so far;
    TargetPoller.restore keeps only those services' streams. When the other service's listing
    (failing at startup) finds the bucket later, that service starts from a fresh baseline:
    a pic job that finished while the exporter was down is never counted (and the pic streams
    are gone from the state file at the target's first save).

    Right: the saved streams of a service the bucket may still be found enabled on are kept
    (in `unclaimed` or the state file) until that service's listing has succeeded, and are
    restored when the service is added; the job is counted once."""
    bucket = sim.add_bucket("both-1250000000", GZ, services=["media", "pic"])
    media_q, pic_q = bucket.add_queue("media", name="m"), bucket.add_queue("pic", name="p")
    media_job, pic_job = bucket.create_job(media_q, "Transcode"), bucket.create_job(pic_q, "Pic")
    bucket.start_job(media_job)
    bucket.start_job(pic_job)
    state = str(tmp_path / "state.json")
    pic = ServiceConfig("pic", ("Pic",))
    cfg = config(entry(services=(MEDIA, pic)), state_file=state)
    first = make_poller(sim, cfg)
    first.poll_once()
    first.stop()
    bucket.finish_job(media_job, "Success")  # both while no exporter runs
    bucket.finish_job(pic_job, "Success")

    second = make_poller(sim, cfg)
    failing = sim.faults.add(Fault("http_500", bucket=f"ci.{GZ}", path="/picbucket"))
    second.poll_once()  # found by media only: pic's listing fails
    sim.faults.remove(failing)
    second.poll_once()  # pic's listing finds it too
    second.poll_once()
    assert [s.name for s in second.targets[0].target.services] == ["media", "pic"]
    media = finished(second, "both-1250000000", GZ, "media", media_q, "Transcode")
    pic_count = finished(second, "both-1250000000", GZ, "pic", pic_q, "Pic")
    assert (media, pic_count) == (1, 1)


def test_a_restart_keeps_a_saved_target_missing_from_one_listing_within_grace(
    sim: Simulator, tmp_path: Path
) -> None:
    """DEFECT. In a running exporter a bucket missing from one listing is kept for `grace`
    (30m by default) with its accounting. After a restart the saved target gets no grace:
    the first listings that settle discovery without it clear `unclaimed` (TargetSet.apply)
    and it leaves the state file at once; listed again a minute later it starts from a fresh
    baseline, and the job that finished while the exporter was down is lost.

    Right: a saved discovered target stays unclaimed (in the file, not polled) until it has
    been missing from successful listings for the entry's grace, as a running one would; found
    within that time it is restored and the job is counted once."""
    bucket = sim.add_bucket("blip-1250000000", GZ, services=["media"])
    queue = bucket.add_queue("media", name="q")
    job = bucket.create_job(queue, "Transcode")
    bucket.start_job(job)
    state = tmp_path / "state.json"
    cfg = config(entry(grace=600.0), state_file=str(state))
    first = make_poller(sim, cfg)
    first.poll_once()
    first.stop()
    bucket.finish_job(job, "Success")  # while no exporter runs

    second = make_poller(sim, cfg)
    bucket.services = frozenset()  # one listing misses it (CI's answer, or a lagging replica)
    second.poll_once()
    kept = f"blip-1250000000/{GZ}" in json.loads(state.read_text())["targets"]
    bucket.services = frozenset({"media"})  # listed again well within the grace (10m)
    second.poll_once()
    second.poll_once()
    count = finished(second, "blip-1250000000", GZ, "media", queue, "Transcode")
    assert (kept, count) == (True, 1)


def test_a_dropped_discovered_target_is_released(sim: Simulator) -> None:
    """DEFECT (a leak discovery turns into a steady one). Poller._threads maps every target
    ever started to its (TargetPoller, Thread) and nothing removes an entry when the target is
    dropped: each bucket discovery ever found keeps its whole TargetPoller (streams, trackers,
    recent failures, client) for the life of the process. Buckets come and go (grace expiry,
    a flapping or hostile service host listing 10,000 new names a round), so memory grows
    without bound.

    Right: once a dropped target's thread has ended, nothing holds its TargetPoller (drop the
    `_threads` entry in _take_up, or when the thread ends)."""
    sim.add_bucket("stays-1250000000", GZ, services=["media"])
    sim.add_bucket("churns-1250000000", GZ, services=["media"])
    p = make_poller(sim, config(entry(grace=0.0)))  # interval 0: the thread lists every 1s
    watch = Watch(p)
    p.start()
    try:
        assert watch.until(lambda: watch.shows("churns-1250000000"))
        dropped = weakref.ref(next(t for t in p.targets if t.target.bucket.startswith("churns")))
        thread = poll_thread(f"churns-1250000000/{GZ}")
        assert thread is not None
        sim.remove_bucket("churns-1250000000")
        assert watch.until(
            lambda: all(t.bucket != "churns-1250000000" for t in p.board.current.targets)
        )
        thread.join(WAIT)
        assert not thread.is_alive()
        gc.collect()
        assert dropped() is None, "the dropped target's TargetPoller is still referenced"
    finally:
        p.stop()


def test_a_reload_removing_discovery_removes_its_metrics(sim: Simulator) -> None:
    """DEFECT. The discovery statuses reach the board only in Poller.discover()
    (board.set_discovery); reload() recomputes them in the Discoverer but never hands them to
    the board. After a reload removing a discovery entry (or one of its regions or services),
    /metrics goes on showing tencent_ci_discovery_buckets and _last_successful for what is no
    longer listed: until the sleeping discovery thread next wakes (up to the old interval),
    and for good with --once (poll_once skips discover() without discovery entries).

    Right: a reload publishes the Discoverer's statuses with the new targets."""
    sim.add_bucket("found-1250000000", GZ, services=["media"])
    sim.add_bucket("named-1250000000", SH, services=["media"])
    named = TargetConfig(
        "named-1250000000", SH, sim.endpoint("named-1250000000"), Credentials(SID, KEY), (MEDIA,)
    )
    cfg = config(entry(), targets=(named,))
    p = make_poller(sim, cfg)
    p.poll_once()
    assert value(p, "tencent_ci_discovery_buckets", region=GZ, service="media") == 1
    p.reload(dataclasses.replace(cfg, discovery=()))
    p.poll_once()
    assert polled(p) == [f"named-1250000000/{SH}"]
    assert value(p, "tencent_ci_discovery_buckets", region=GZ, service="media") is None
    assert value(p, "tencent_ci_discovery_last_successful", region=GZ, service="media") is None


def test_identical_discovery_entries_do_not_double_the_listings(sim: Simulator) -> None:
    """DEFECT. Nothing refuses two identical `discovery:` entries (targets: has _distinct;
    discovery has no such check), and Discoverer.reconfigure maps both to one _Entry
    (`kept = {e.config: e}`), which run_due then lists twice a round: every bucket listing
    (and its CAM-checked, rate-limited calls) is made twice, for nothing.

    Right: the configuration refuses a duplicate discovery entry (as it does a duplicate
    target), or each distinct entry is listed once a round."""
    sim.add_bucket("dup-1250000000", GZ, services=["media"])
    text = """
discovery:
  - {regions: [ap-guangzhou], services: {media: {tags: [Transcode]}}}
  - {regions: [ap-guangzhou], services: {media: {tags: [Transcode]}}}
"""
    environ = {"TENCENTCLOUD_SECRET_ID": SID, "TENCENTCLOUD_SECRET_KEY": KEY}
    try:
        parsed = parse_config(text, "c.yml", environ)
    except ConfigError as refused:
        assert "discovery[1]" in str(refused)
        return
    p = make_poller(sim, dataclasses.replace(parsed, request_timeout=5))
    for _ in range(2):  # the first round, and one after a reconfigure
        sim.reset_requests()
        p.discover()
        assert sim.request_count(f"ci.{GZ}", "/mediabucket") == 1


@pytest.mark.parametrize(
    ("settings", "good"),
    [
        # Config's _REGION_RE takes it; exporter.ci.buckets.REGION_RE does not.
        ("regions: [guangzhou]", None),
        # Config's _BUCKET_RE has no length limit; BUCKET_ID_RE (COS: 50) refuses 51.
        (f"regions: [ap-guangzhou], buckets: [good-1250000000, {'a' * 51}-1250000000]", "good"),
    ],
    ids=["region", "bucket-name"],
)
def test_a_setting_the_client_refuses_is_refused_by_the_configuration(
    sim: Simulator, caplog: pytest.LogCaptureFixture, settings: str, good: str | None
) -> None:
    """DEFECT. The configuration takes discovery regions and bucket names the discovery client
    refuses (config._REGION_RE and _BUCKET_RE are looser than exporter.ci.buckets'). A region
    such as `guangzhou` makes service_endpoint() raise in the client factory: a traceback
    logged as a bug every round, and no tencent_ci_discovery_* series at all, so nothing on
    /metrics says the region is never listed. A 51-character bucket name makes list_buckets
    raise ValueError for the whole `buckets:` listing: the valid names beside it are never
    found.

    Right: `parse_config` refuses what the client would refuse, naming the key."""
    sim.add_bucket("good-1250000000", GZ, services=["media"])
    text = f"discovery:\n  - {{{settings}, services: {{media: {{tags: [Transcode]}}}}}}\n"
    environ = {"TENCENTCLOUD_SECRET_ID": SID, "TENCENTCLOUD_SECRET_KEY": KEY}
    try:
        parsed = parse_config(text, "c.yml", environ)
    except ConfigError as refused:
        assert "discovery[0]" in str(refused)
        return
    endpoints = {GZ: sim.service_endpoint(GZ)}
    with caplog.at_level(logging.ERROR):
        p = Poller(
            dataclasses.replace(parsed, request_timeout=5),
            ApiStats(),
            bucket_endpoint=lambda bucket, region: sim.endpoint(bucket),
            # The simulator's listener where there is one, else the real host's name
            # (which service_endpoint() refuses to make for a region it does not take).
            service_endpoint=lambda region: endpoints.get(region) or service_endpoint(region),
        )
        p.discover()
    if good is None:  # the region is reported as not listed
        shows = {(s.region, s.successful) for s in p.board.current.discovery}
        assert shows == {("guangzhou", False)}
    else:  # the valid name beside the bad one is found
        assert polled(p) == [f"{good}-1250000000/{GZ}"]


def test_not_ready_before_discovery_has_listed(stubs: list[Stub]) -> None:
    """DEFECT. /readyz answers Poller.ready(): `all(t.polled for t in targets)`. With only
    discovery configured there is no target before the first listing ends, so a new pod is
    ready at once (a rolling update then kills the old pod while the new one's /metrics
    holds no bucket at all), for as long as the first listing takes (up to 100 pages, each
    with its retries and timeouts).

    Right: not ready until every discovery entry has finished its first round (and what it
    found has been polled once)."""
    arrived, release = threading.Event(), threading.Event()

    def answer(path: str, params: dict[str, str]) -> Answer:
        arrived.set()
        release.wait(WAIT)
        return 200, bucket_page(["slow-1250000000"], 1)

    stub = Stub(answer)
    stubs.append(stub)
    p = stub_poller(stub, entry())
    p.start()
    try:
        assert arrived.wait(WAIT)
        assert not p.ready(), "ready while the first bucket listing is still under way"
    finally:
        release.set()
        p.stop()


# ============================================================================================
# Regression tests: attacks handled today.
# ============================================================================================


def _hostile_answers() -> dict[str, Callable[[str, dict[str, str]], Answer]]:
    """After a first good page (kept-1250000000), what a hostile service host answers."""

    def injected(bucket: str, region: str = GZ, name: str | None = None) -> Answer:
        return 200, bucket_page([bucket], 1, region=region, names=[name or bucket])

    def endless(path: str, params: dict[str, str]) -> Answer:
        number = int(params["pageNumber"])
        return 200, bucket_page([f"e{number:05d}-1250000000"], 10_000)

    return {
        "host-injection": lambda path, params: injected("evil.com#-1250000000"),
        "path-injection": lambda path, params: injected("a/../../x-1250000000"),
        "dotted": lambda path, params: injected("a-1250000000.evil.com"),
        "uppercase": lambda path, params: injected("Evil-1250000000"),
        "bad-name": lambda path, params: injected("ok-1250000000", name="e@vil-1"),
        "other-region": lambda path, params: injected("far-1250000000", region=SH),
        "bad-region": lambda path, params: injected("far-1250000000", region="evil.com:443"),
        "huge-total": lambda path, params: (200, bucket_page(["x-1250000000"], 10**15)),
        "same-page-again": lambda path, params: (
            200,
            bucket_page(["kept-1250000000"], 2),
        ),
        "endless": endless,
        "oversized-page": lambda path, params: (
            200,
            bucket_page([f"o{i:04d}-1250000000" for i in range(101)], 101),
        ),
    }


@pytest.mark.parametrize("attack", sorted(_hostile_answers()))
def test_a_hostile_listing_is_refused_and_the_last_list_kept(
    stubs: list[Stub], attack: str
) -> None:
    """A service host answering names that are not COS buckets (host or path injection into
    `https://<bucket>.ci.<region>...`), buckets of a region not asked for, an absurd
    TotalCount, a page repeating the last, pages without end or too long: the listing fails
    (status 0, at most 100 page calls), nothing new is polled, the last good list is kept."""
    hostile = _hostile_answers()[attack]
    good = {"served": False}

    def answer(path: str, params: dict[str, str]) -> Answer:
        if not good["served"]:
            good["served"] = True
            return 200, bucket_page(["kept-1250000000"], 1)
        return hostile(path, params)

    stub = Stub(answer)
    stubs.append(stub)
    p = stub_poller(stub, entry())
    p.discover()
    assert polled(p) == [f"kept-1250000000/{GZ}"]
    before = stub.calls()
    p.discover()
    assert polled(p) == [f"kept-1250000000/{GZ}"]
    assert stub.calls() - before <= 100
    assert value(p, "tencent_ci_discovery_last_successful", region=GZ, service="media") == 0
    assert value(p, "tencent_ci_discovery_buckets", region=GZ, service="media") == 1


def test_a_prefix_or_name_not_asked_for_is_refused(stubs: list[Stub]) -> None:
    """Buckets outside the entry's prefix or exact names are refused, not polled."""
    stub = Stub(
        lambda path, params: (200, bucket_page(["media-1250000000", "other-1250000000"], 2))
    )
    stubs.append(stub)
    p = stub_poller(stub, entry(prefixes=("media-",)), entry(buckets=("media-1250000000",)))
    p.discover()
    assert p.targets == []
    statuses = p.board.current.discovery
    assert [(s.region, s.service, s.successful) for s in statuses] == [(GZ, "media", False)]


def test_no_secret_reaches_a_log_line_or_a_metric(
    stubs: list[Stub], caplog: pytest.LogCaptureFixture
) -> None:
    """A service host echoing the key, the token and the Authorization header in a Code, a
    Message, a RequestId, a BucketId and a Region: no log line (message, extras or traceback)
    and no metric carries the secret key, the token, the secret id or a signature."""
    secret_key, token = "SecretKeyAttack0123456789abcdefgh", "TokenAttack0123456789abcdefghijkl"
    signatures: list[str] = []
    calls = {"/mediabucket": 0, "/picbucket": 0}

    def answer(path: str, params: dict[str, str]) -> Answer:
        with stub.lock:
            auth = stub.received[-1][2].get("Authorization", "")
        signatures.append(auth.split("q-signature=")[-1].split("&")[0])
        calls[path] += 1
        if path == "/mediabucket":
            return 500, (
                f"<Error><Code>{secret_key}</Code><Message>{auth} {token} {secret_key}"
                f"</Message><RequestId>{token}</RequestId></Error>"
            ).encode()
        if calls[path] == 1:  # the first round: a BucketId that is the key, a Region the token
            items = f"<BucketId>{secret_key}</BucketId><Region>{token}</Region>"
            body = f"<Response><TotalCount>1</TotalCount><PicBucketList>{items}</PicBucketList>"
            return 200, f"{body}</Response>".encode()
        return 403, f"<Error><Code>{token}</Code><Message>{auth}</Message></Error>".encode()

    stub = Stub(answer)
    stubs.append(stub)
    creds = Credentials(SID, secret_key, token)
    p = stub_poller(stub, entry(credentials=creds, services=(MEDIA, PIC)))
    with caplog.at_level(logging.DEBUG):
        p.discover()
        p.discover()
    assert calls == {"/mediabucket": 2, "/picbucket": 2}
    assert all(len(signature) >= 16 for signature in signatures)
    logged = caplog.text + "\n".join(str(record.__dict__) for record in caplog.records)
    registry = CollectorRegistry()
    registry.register(CICollector(p, p.stats, "test"))
    exposed = generate_latest(registry).decode()
    assert "<redacted>" in logged  # the echoes were read, and cleaned
    for secret in (secret_key, token, SID, *signatures):
        assert secret not in logged
        assert secret not in exposed
    assert value(p, "tencent_ci_discovery_last_successful", region=GZ, service="pic") == 0
    assert value(p, "tencent_ci_discovery_last_successful", region=GZ, service="media") == 0


def test_stop_and_reload_are_not_held_by_a_stuck_listing(stubs: list[Stub]) -> None:
    """A service host that never answers: reload() and /metrics go on meanwhile, and stop()
    ends the discovery thread within STOP_TIMEOUT (the call is cut short by `_stop`)."""
    arrived, release = threading.Event(), threading.Event()

    def answer(path: str, params: dict[str, str]) -> Answer:
        arrived.set()
        release.wait(30)
        return 200, bucket_page([], 0)

    stub = Stub(answer)
    stubs.append(stub)
    p = stub_poller(stub, entry())
    p.start()
    try:
        assert arrived.wait(WAIT)
        started = time.monotonic()
        p.reload(dataclasses.replace(p.config, poll_interval=30.0))
        assert p.board.current.reload.successful
        assert value(p, "tencent_ci_discovery_buckets", region=GZ, service="media") is None
        assert time.monotonic() - started < 1.0
        started = time.monotonic()
        p.stop()
        assert time.monotonic() - started < 1.6
        discovery = [t for t in threading.enumerate() if t.name == "discovery"]
        assert all(not t.is_alive() for t in discovery)
    finally:
        release.set()
        p.stop()


def test_an_entry_removed_mid_listing_does_not_come_back(stubs: list[Stub]) -> None:
    """A reload removing the discovery entry while its listing is in flight: when the listing
    ends, what it found is not polled (the round's results go to an entry no longer
    configured)."""
    arrived, release = threading.Event(), threading.Event()

    def answer(path: str, params: dict[str, str]) -> Answer:
        arrived.set()
        release.wait(WAIT)
        return 200, bucket_page(["late-1250000000"], 1)

    stub = Stub(answer)
    stubs.append(stub)
    p = stub_poller(stub, entry(interval=600.0))
    discover = p.discover
    discovered = threading.Event()

    def observed(stopping: threading.Event | None = None) -> None:
        try:
            discover(stopping)
        finally:
            discovered.set()  # the round listed and what it found taken up

    p.discover = observed  # type: ignore[method-assign]
    p.start()
    try:
        assert arrived.wait(WAIT)
        p.reload(dataclasses.replace(p.config, discovery=()))
        release.set()
        assert discovered.wait(WAIT)
        assert p.targets == []
        assert stub.calls() == 1
    finally:
        release.set()
        p.stop()


def test_a_bucket_named_by_a_reload_while_discovery_lists_it_is_polled_once(
    stubs: list[Stub],
) -> None:
    """Discovery is listing a bucket when a reload names it as a target: once the listing
    ends there is one target for it, the named one (its services), and one poll thread."""
    arrived, release = threading.Event(), threading.Event()

    def answer(path: str, params: dict[str, str]) -> Answer:
        arrived.set()
        release.wait(WAIT)
        return 200, bucket_page(["raced-1250000000"], 1)

    stub = Stub(answer)
    stubs.append(stub)
    p = stub_poller(stub, entry(interval=600.0))
    discover = p.discover
    discovered = threading.Event()

    def observed(stopping: threading.Event | None = None) -> None:
        try:
            discover(stopping)
        finally:
            discovered.set()  # the round listed and what it found taken up

    p.discover = observed  # type: ignore[method-assign]
    named = TargetConfig(
        "raced-1250000000", GZ, "http://127.0.0.1:9", Credentials(SID, KEY), (PIC,)
    )
    p.start()
    try:
        assert arrived.wait(WAIT)
        p.reload(dataclasses.replace(p.config, targets=(named,)))
        release.set()
        assert discovered.wait(WAIT)
        assert [(t.name, t.target.services) for t in p.targets] == [
            (f"raced-1250000000/{GZ}", (PIC,))
        ]
        threads = [t for t in threading.enumerate() if t.name == f"poll-raced-1250000000/{GZ}"]
        assert len([t for t in threads if t.is_alive()]) == 1
    finally:
        release.set()
        p.stop()


def test_a_bucket_named_by_a_reload_is_one_target_and_keeps_its_counts(
    sim: Simulator,
) -> None:
    """Discovery finds a bucket; a reload names it as a target (same address); a later reload
    removes the name: always one poller for it, the same one, its counts never reset."""
    bucket = sim.add_bucket("both-ways-1250000000", GZ, services=["media"])
    queue = bucket.add_queue("media", name="q")
    cfg = config(entry())
    p = make_poller(sim, cfg)
    p.poll_once()
    job = bucket.create_job(queue, "Transcode")
    bucket.finish_job(job, "Success")
    p.poll_once()
    one = p.targets[0]
    named = TargetConfig(
        "both-ways-1250000000",
        GZ,
        sim.endpoint("both-ways-1250000000"),
        Credentials(SID, KEY),
        (MEDIA,),
    )
    p.reload(dataclasses.replace(cfg, targets=(named,)))
    p.poll_once()
    assert len(p.targets) == 1 and p.targets[0] is one
    p.reload(cfg)
    p.poll_once()
    assert len(p.targets) == 1 and p.targets[0] is one
    assert finished(p, "both-ways-1250000000", GZ, "media", queue, "Transcode") == 1


def test_a_bucket_back_within_grace_keeps_its_accounting(sim: Simulator) -> None:
    """Missing from a listing, listed again within the grace: the same target, no new
    baseline, its jobs counted once (not again, not lost)."""
    bucket = sim.add_bucket("flaps-1250000000", GZ, services=["media"])
    queue = bucket.add_queue("media", name="q")
    p = make_poller(sim, config(entry(grace=600.0)))
    p.poll_once()
    one = p.targets[0]
    first = bucket.create_job(queue, "Transcode")
    bucket.finish_job(first, "Success")
    bucket.services = frozenset()
    p.poll_once()  # missing: still polled, the job counted
    bucket.services = frozenset({"media"})
    second = bucket.create_job(queue, "Transcode")
    bucket.finish_job(second, "Success")
    p.poll_once()
    p.poll_once()
    assert p.targets == [one]
    assert finished(p, "flaps-1250000000", GZ, "media", queue, "Transcode") == 2


def test_a_service_lost_after_grace_leaves_the_other_services_counts(sim: Simulator) -> None:
    """A bucket still listed for media but no longer for pic: after the grace it is polled for
    media only, as the same target, media's counts kept."""
    bucket = sim.add_bucket("halves-1250000000", GZ, services=["media", "pic"])
    queue = bucket.add_queue("media", name="q")
    p = make_poller(sim, config(entry(services=(MEDIA, PIC), grace=0.0)))
    p.poll_once()
    one = p.targets[0]
    job = bucket.create_job(queue, "Transcode")
    bucket.finish_job(job, "Success")
    p.poll_once()
    bucket.services = frozenset({"media"})  # grace 0: gone for pic at once
    p.poll_once()
    p.poll_once()
    assert p.targets == [one]
    assert [s.name for s in one.target.services] == ["media"]
    assert finished(p, "halves-1250000000", GZ, "media", queue, "Transcode") == 1


def test_a_restart_with_discovery_failing_past_the_grace_keeps_the_saved_target(
    sim: Simulator, tmp_path: Path
) -> None:
    """After a restart discovery fails for longer than the grace: the saved target stays in
    the state file; found once discovery works, it is restored and the job that finished
    while the exporter was down is counted once."""
    bucket = sim.add_bucket("patient-1250000000", GZ, services=["media"])
    queue = bucket.add_queue("media", name="q")
    job = bucket.create_job(queue, "Transcode")
    bucket.start_job(job)
    state = tmp_path / "state.json"
    cfg = config(entry(grace=0.0), state_file=str(state))  # every failed round is past it
    first = make_poller(sim, cfg)
    first.poll_once()
    first.stop()
    bucket.finish_job(job, "Success")

    second = make_poller(sim, cfg)
    failing = sim.faults.add(Fault("http_500", bucket=f"ci.{GZ}"))
    for _ in range(2):
        second.poll_once()
        assert second.targets == []
        assert f"patient-1250000000/{GZ}" in json.loads(state.read_text())["targets"]
    sim.faults.remove(failing)
    second.poll_once()
    second.poll_once()
    assert finished(second, "patient-1250000000", GZ, "media", queue, "Transcode") == 1


def test_a_saved_discovered_target_named_after_a_restart_is_restored(
    sim: Simulator, tmp_path: Path
) -> None:
    """Discovered before a restart, named by the new configuration: the named target takes up
    the saved state (the job finished while down counted once), and discovery leaves it."""
    bucket = sim.add_bucket("promoted-1250000000", GZ, services=["media"])
    queue = bucket.add_queue("media", name="q")
    job = bucket.create_job(queue, "Transcode")
    bucket.start_job(job)
    state = str(tmp_path / "state.json")
    first = make_poller(sim, config(entry(), state_file=state))
    first.poll_once()
    first.stop()
    bucket.finish_job(job, "Success")
    named = TargetConfig(
        "promoted-1250000000",
        GZ,
        sim.endpoint("promoted-1250000000"),
        Credentials(SID, KEY),
        (MEDIA,),
    )
    second = make_poller(sim, config(entry(), targets=(named,), state_file=state))
    second.poll_once()
    second.poll_once()
    assert polled(second) == [f"promoted-1250000000/{GZ}"]
    assert finished(second, "promoted-1250000000", GZ, "media", queue, "Transcode") == 1


def test_shards_with_different_listings_never_poll_a_bucket_twice(sim: Simulator) -> None:
    """Shards whose listings disagree (one sees buckets the other does not yet): each bucket is
    polled by its own shard at most, never by two."""
    names = [f"sh{i:02d}-1250000000" for i in range(12)]
    buckets = [sim.add_bucket(n, GZ, services=["media"]) for n in names]
    shards = [make_poller(sim, config(entry()), shard=Shard(i, 2)) for i in range(2)]
    shards[0].poll_once()
    for b in buckets[6:]:
        b.services = frozenset()  # shard 1 lists while half are not enabled
    shards[1].poll_once()
    owned = [set(polled(p)) for p in shards]
    assert not owned[0] & owned[1]
    assert owned[0] | owned[1] <= {f"{n}/{GZ}" for n in names}
