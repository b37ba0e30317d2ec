"""Attacks on exporter.exposition (the cached /metrics): what the cache sends must be what a
fresh rendering gives, whatever the Accept headers, targets, labels and timing; no scrape may
wait for a rendering that never comes; the cache must keep working for real scrapers."""

from __future__ import annotations

import gzip as gzip_module
import http.client
import random
import shutil
import subprocess
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from types import SimpleNamespace

import pytest
import requests
from exposing import FixedSource
from exposition_world import (
    OPENMETRICS,
    TEXT,
    TIMEOUT,
    Clock,
    Counted,
    Source,
    body,
    fresh,
    in_thread,
    inflate,
    made,
    response,
    target,
    until,
    waiting_for_a_rendering,
)
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as text_families

from exporter.api_stats import ApiStats
from exporter.board import Board
from exporter.collector import snapshot_families, target_families
from exporter.exposition import WANTED_FOR, Expositions
from exporter.server import ExporterServer
from exporter.snapshot import (
    ReloadStatus,
    Snapshot,
    TargetSnapshot,
)

# What real scrapers send (Prometheus 2 and 3 defaults, Prometheus 3 with a text-only
# scrape_protocols, an agent that names no version, curl).
PROMETHEUS_2 = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)
PROMETHEUS_3_TEXT = "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.5,*/*;q=0.1"
AGENT = "application/openmetrics-text"
CURL = "*/*"

ACCEPTS = {
    "empty": "",
    "curl": CURL,
    "prometheus2": PROMETHEUS_2,
    "prometheus3": PROMETHEUS_3,
    "prometheus3-text": PROMETHEUS_3_TEXT,
    "agent-om": AGENT,
    "text-1.0.0": "text/plain;version=1.0.0",
    "text-1.0.0-dots": "text/plain;version=1.0.0;escaping=dots",
    "text-1.0.0-values": "text/plain;version=1.0.0;escaping=values",
    "om-underscores": "application/openmetrics-text;version=1.0.0;escaping=underscores",
    "om-utf8": "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
    "weird-q": "text/plain;q=0.0001,application/openmetrics-text;version=1.0.0;q=1.5",
    "om-0.0.1": "application/openmetrics-text;version=0.0.1",
}


# -- snapshots ----------------------------------------------------------------------------


@pytest.fixture
def stats() -> ApiStats:
    stats = ApiStats()
    stats.record("alpha-1250000000", "ap-guangzhou", "DescribeMediaQueues", "200", None, 0.2)
    return stats


# == defects ==============================================================================


def test_a_waiting_scrape_is_answered_when_its_format_would_expire_meanwhile(
    stats: ApiStats,
) -> None:
    """A format nobody asked for in WANTED_FOR is dropped, with its rendering; one a scrape
    waits for must not be, or the render thread never renders it and the scrape (and its HTTP
    worker) waits until stop()."""
    source = Source("alpha-1250000000")
    counted = Counted()
    clock = Clock()
    expositions = made(source, stats, counted, clock)
    expositions.start()
    waiter: list[bytes] = []
    threads: list[threading.Thread] = []
    try:
        counted.held = True
        threads.append(in_thread(lambda: body(expositions, OPENMETRICS), []))
        assert counted.entered.wait(TIMEOUT)  # the render thread renders OpenMetrics, held
        threads.append(in_thread(lambda: body(expositions, TEXT), waiter))
        until(lambda: waiting_for_a_rendering(threads[-1]))
        clock.now += WANTED_FOR + 1  # text was asked for "long ago" when its turn comes
        counted.let_go()
        for thread in threads:
            thread.join(TIMEOUT)
            assert not thread.is_alive(), "a scrape waits for a format that was dropped"
        assert len(waiter) == 1 and b"tencent_ci_jobs" in waiter[0]
    finally:
        counted.let_go()
        expositions.stop()
        for thread in threads:
            thread.join(TIMEOUT)


class PausingSource(Source):
    """A source that holds the thread named "slow-scrape" just after its first read of the
    snapshot, when it reads it without holding the expositions' lock (`atomic` when it does:
    then nothing can be published between its read and its look at the rendering)."""

    def __init__(self, *buckets: str) -> None:
        super().__init__(*buckets)
        self.read = threading.Event()
        self.go = threading.Event()
        self.atomic = False
        self.under_lock: Callable[[], bool] = lambda: False

    def snapshot(self) -> Snapshot:
        current = self.current
        if threading.current_thread().name == "slow-scrape" and not self.read.is_set():
            self.atomic = self.under_lock()
            self.read.set()
            if not self.atomic:
                assert self.go.wait(TIMEOUT)
        return current


def test_a_scrape_that_read_an_older_snapshot_than_the_one_just_rendered_is_answered(
    stats: ApiStats,
) -> None:
    """`_cached` reads the snapshot before taking the lock. When, in between, a newer snapshot
    is published and rendered, the scrape finds a rendering that is not of *its* snapshot and
    waits for the next rendering; but the render thread has nothing to do (its rendering is of
    the current snapshot), so the scrape waits until some later publish, or for ever once the
    polls stop (a poll interval of minutes, a paused target...)."""
    source = PausingSource("alpha-1250000000")
    expositions = made(source, stats, clock=Clock())
    condition = getattr(expositions, "_changed", None)
    source.under_lock = getattr(condition, "_is_owned", lambda: False)
    expositions.start()
    results: list[bytes] = []
    scrape: threading.Thread | None = None
    try:
        body(expositions, TEXT)  # text in demand, snapshot 1 rendered
        source.change(0, finished=20)  # snapshot 2 (its publish not yet told)
        scrape = in_thread(lambda: body(expositions, TEXT), results, name="slow-scrape")
        assert source.read.wait(TIMEOUT)  # the scrape read snapshot 2
        source.change(0, finished=30)  # snapshot 3 published
        expositions.published()
        if not source.atomic:  # ... and rendered, while the scrape is between read and look
            until(lambda: [c.renders for c in expositions.costs()] == [2])
        source.go.set()
        scrape.join(TIMEOUT)
        assert not scrape.is_alive(), "the scrape waits for a rendering that never comes"
        assert b'state="Success",tag="Transcode"} 30.0' in results[0] or source.atomic
    finally:
        source.go.set()
        expositions.stop()
        if scrape is not None:
            scrape.join(TIMEOUT)


def test_the_content_types_of_a_few_real_scrapers_stay_cached(stats: ApiStats) -> None:
    """Five ordinary scrapers (curl, Prometheus 2, Prometheus 3, Prometheus 3 text-only, an
    agent that names no OpenMetrics version) make five content types: a cache keyed by content
    type and capped at four would evict one at each scrape, so every scrape of an unchanged
    snapshot would render every target again and the cache would do nothing. (And as the
    version in the Accept header is echoed into the content type, one client alone can do it:
    version=1.0.1, 1.0.2, ...)"""
    source = Source("alpha-1250000000", "beta-1250000000")
    counted = Counted()
    clock = Clock()
    expositions = made(source, stats, counted, clock)
    scrapers = [CURL, PROMETHEUS_2, PROMETHEUS_3, PROMETHEUS_3_TEXT, AGENT]
    assert len({choose_encoder(a)[1] for a in scrapers}) == 5
    for accept in scrapers:  # the first round renders each format once
        clock.now += 1
        body(expositions, accept)
    first_round = len(counted.rendered)

    for accept in scrapers * 2:  # the snapshot has not changed
        clock.now += 1
        body(expositions, accept)

    assert len(counted.rendered) == first_round, (
        f"{len(counted.rendered) - first_round} targets rendered again for an unchanged snapshot"
    )


def test_a_clients_accept_header_does_not_become_a_label_value(stats: ApiStats) -> None:
    """The rendering-cost self-metrics carry the content type as a label, and the content type
    echoes the version the client put in its Accept header: any client (no auth needed by
    default) mints series in the user's Prometheus at will, e.g. one per request with
    version=1.0.<n>; and a 4-format cap does not bound the series over time."""
    source = Source("alpha-1250000000")
    expositions = made(source, stats)
    for n in range(3):
        body(expositions, f"application/openmetrics-text;version=1.0.{31337 + n}")

    scraped = body(expositions, PROMETHEUS_3).decode()

    values = {
        value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if family.name.startswith("tencent_ci_exposition")
        for value in sample.labels.values()
    }
    assert values == {"openmetrics"}, f"series labelled with client-chosen text: {values}"


def test_a_malformed_accept_version_gets_an_http_answer(stats: ApiStats) -> None:
    """`Accept: application/openmetrics-text;version=abc` (or `version=1.0.x`) makes
    prometheus_client's choose_encoder raise TypeError in `_Handler._metrics`; the worker logs
    a traceback at ERROR and the client gets the connection closed with no answer. (Older than
    this change, but on the /metrics path it rewrote: any client can fill the log.)"""
    source = Source("alpha-1250000000")
    server = ExporterServer(("127.0.0.1", 0), source, made(source, stats))
    server.start()
    try:
        response = requests.get(
            f"http://127.0.0.1:{server.port}/metrics",
            headers={"Accept": "application/openmetrics-text;version=abc"},
            timeout=TIMEOUT,
        )
        status: int | str = response.status_code
    except requests.ConnectionError as error:
        status = f"no answer: {error}"
    finally:
        server.stop()
    assert status in (200, 406), status


# == behaviour that holds (kept: not covered by tests/test_exposition.py) =================


@pytest.mark.parametrize("zipped", [False, True], ids=["identity", "gzip"])
@pytest.mark.parametrize("accept", list(ACCEPTS.values()), ids=list(ACCEPTS))
def test_every_accept_header_gets_a_fresh_rendering(
    stats: ApiStats, accept: str, zipped: bool
) -> None:
    source = Source("alpha-1250000000", "beta-1250000000")
    expositions = made(source, stats)
    first = body(expositions, accept, zipped)
    assert first == fresh(source, stats, expositions, accept)
    source.change(0, finished=77)
    second = body(expositions, accept, zipped)
    assert second == fresh(source, stats, expositions, accept)
    _, content_type = choose_encoder(accept)
    if content_type.startswith("application/openmetrics-text"):
        assert second.count(b"# EOF\n") == 1 and second.endswith(b"# EOF\n")
        list(text_string_to_metric_families(second.decode()))
    else:
        list(text_families(second.decode()))


def test_targets_added_removed_reordered_and_reload_changes_render_freshly(
    stats: ApiStats,
) -> None:
    source = Source("alpha-1250000000", "beta-1250000000", "gamma-1250000000")
    counted = Counted()
    expositions = made(source, stats, counted)
    a, b, c = source.current.targets
    steps = [
        (c, a, b),  # reordered
        (c, a),  # removed
        (),  # none
        (b, target("delta-1250000000"), a),  # added back, and a new one
        (a, target("epsilon-1250000000"), b),
    ]
    for accept in (TEXT, OPENMETRICS):
        assert body(expositions, accept) == fresh(source, stats, expositions, accept)
    for targets in steps:
        source.current = replace(source.current, targets=targets)
        for accept, zipped in ((TEXT, False), (OPENMETRICS, True)):
            assert body(expositions, accept, zipped) == fresh(source, stats, expositions, accept)
    counted.rendered.clear()
    source.current = replace(source.current, reload=ReloadStatus(False, 5.0))
    for accept in (TEXT, OPENMETRICS):
        got = body(expositions, accept)
        assert got == fresh(source, stats, expositions, accept)
        assert b"tencent_ci_config_last_reload_successful 0.0" in got
    assert counted.rendered == []  # the reload status alone re-renders no target


def test_label_values_with_quotes_backslashes_newlines_and_utf8_render_freshly(
    stats: ApiStats,
) -> None:
    odd = 'we"ird\\buck\net-é中-1250000000'
    source = FixedSource(
        Snapshot(
            (
                target(odd, tag='t"a\\g\nä', queue_name='名前 "q"\n\\'),
                target("plain-1250000000"),
            ),
            ReloadStatus(True, 1.0),
        )
    )
    expositions = made(source, stats)
    for accept in ACCEPTS.values():
        for zipped in (False, True):
            assert body(expositions, accept, zipped) == fresh(source, stats, expositions, accept)


def test_concurrent_gzip_scrapes_of_one_rendering_all_decode_to_the_same_body(
    stats: ApiStats,
) -> None:
    source = Source(*(f"b{i}-1250000000" for i in range(20)))
    expositions = made(source, stats)
    expected = body(expositions, OPENMETRICS)
    encoder, content_type = choose_encoder(OPENMETRICS)
    start = threading.Barrier(16)
    results: list[bytes] = []

    def scrape() -> bytes:
        start.wait(TIMEOUT)
        got = []
        for _ in range(20):
            response = expositions.scrape(encoder, content_type, True)
            got.append(b"".join(response.chunks))
        return b"".join(inflate(g) for g in got)

    threads = [in_thread(scrape, results) for _ in range(16)]
    for thread in threads:
        thread.join(TIMEOUT * 4)
    assert len(results) == 16
    assert all(r == expected * 20 for r in results)
    assert (
        gzip_module.decompress(b"".join(expositions.scrape(encoder, content_type, True).chunks))
        == expected
    )


class Nothing:
    def collect(self) -> Iterator[Metric]:
        return iter(())


def test_scrapes_during_rapid_publishes_each_get_a_published_snapshot_whole() -> None:
    """Every scrape, identity or gzip, text or OpenMetrics, is exactly the rendering of one of
    the published snapshots (live part empty here), and none hangs."""
    source = Source(*(f"b{i}-1250000000" for i in range(5)))
    rng = random.Random(7)

    def rest(snapshot: Snapshot) -> Iterator[Metric]:
        return snapshot_families(snapshot, "9.9")

    expositions = Expositions(source.snapshot, target_families, rest, Nothing())
    expositions.start()
    published = [source.current]
    stop = threading.Event()
    results: list[list[tuple[str, bytes]]] = []

    def publisher() -> None:
        for n in range(150):
            source.change(rng.randrange(5), finished=100 + n)
            published.append(source.current)
            expositions.published()
        stop.set()

    def scraper(seed: int) -> list[tuple[str, bytes]]:
        local = random.Random(seed)
        got: list[tuple[str, bytes]] = []
        while not stop.is_set() or len(got) < 5:
            accept = local.choice([TEXT, OPENMETRICS, PROMETHEUS_3])
            got.append((accept, body(expositions, accept, local.random() < 0.5)))
        return got

    try:
        scrapers = [in_thread(lambda s=s: scraper(s), results) for s in range(4)]
        pub = in_thread(publisher, [])
        pub.join(TIMEOUT * 6)
        for thread in scrapers:
            thread.join(TIMEOUT * 6)
        assert not pub.is_alive() and not any(t.is_alive() for t in scrapers)
    finally:
        stop.set()
        expositions.stop()

    def render(snapshot: Snapshot, accept: str) -> bytes:
        registry = CollectorRegistry(auto_describe=False)

        class One:
            def collect(self) -> Iterator[Metric]:
                yield from target_families(snapshot.targets)
                yield from snapshot_families(snapshot, "9.9")

        registry.register(One())
        return choose_encoder(accept)[0](registry)

    scraped = [item for group in results for item in group]
    assert len(scraped) >= 20
    for accept in {a for a, _ in scraped}:
        allowed = {render(s, accept) for s in published}
        for a, data in scraped:
            if a == accept:
                assert data in allowed


def test_stop_releases_scrapes_waiting_for_a_rendering(stats: ApiStats) -> None:
    source = Source("alpha-1250000000")
    counted = Counted()
    expositions = made(source, stats, counted)
    expositions.start()
    results: list[object] = []
    threads: list[threading.Thread] = []
    try:
        counted.held = True
        threads = [in_thread(lambda: response(expositions, TEXT), results) for _ in range(3)]
        assert counted.entered.wait(TIMEOUT)
        until(lambda: expositions.waiting() == 3)

        expositions.stop()
        for thread in threads:
            thread.join(TIMEOUT)
        assert not any(t.is_alive() for t in threads)
        assert len(results) == 3  # answered (an error: nothing was rendered yet), not hung
    finally:
        counted.let_go()
        expositions.stop()
        for thread in threads:
            thread.join(TIMEOUT)


def test_the_render_thread_survives_a_failed_rendering(stats: ApiStats) -> None:
    source = Source("alpha-1250000000")
    broken = {"on": True}

    def families(targets: tuple[TargetSnapshot, ...]) -> Iterator[Metric]:
        if targets and broken["on"]:
            raise RuntimeError("broken")
        return target_families(targets)

    expositions = made(source, stats, families)
    expositions.start()
    encoder, content_type = choose_encoder(TEXT)
    try:
        assert not expositions.scrape(encoder, content_type, True).ok
        broken["on"] = False
        source.change(0, finished=9)
        expositions.published()
        response = expositions.scrape(encoder, content_type, True)
        assert response.ok
        assert b"} 9.0" in inflate(b"".join(response.chunks))
    finally:
        expositions.stop()


class FakePoller:
    def __init__(self, bucket: str) -> None:
        self.target = SimpleNamespace(bucket=bucket, region="ap-guangzhou")
        self.finished = 0

    def snapshot(self) -> TargetSnapshot:
        self.finished += 1
        return target(self.target.bucket, self.finished)


class BoardSource:
    def __init__(self, board: Board) -> None:
        self.board = board

    def snapshot(self) -> Snapshot:
        return self.board.current

    def ready(self) -> bool:
        return True


def test_publishes_through_the_board_and_scrapes_do_not_deadlock(stats: ApiStats) -> None:
    """Board calls on_swap (published) under its lock while the render thread reads the board
    and scrapes wait on the exposition's condition: a burst of polls, reloads and scrapes ends,
    and the last scrape shows the last publish."""
    board = Board(lambda: 1.0)
    pollers = {(f"b{i}", "ap-guangzhou"): FakePoller(f"b{i}") for i in range(3)}
    source = BoardSource(board)
    expositions = made(source, stats)  # type: ignore[arg-type]
    board.on_swap = expositions.published
    board.set_targets(pollers)  # type: ignore[arg-type]
    expositions.start()
    done = threading.Event()
    results: list[object] = []

    def polls() -> None:
        for n in range(200):
            board.publish(list(pollers.values())[n % 3])  # type: ignore[arg-type]
            if n % 50 == 0:
                board.set_reload(ReloadStatus(n % 100 == 0, float(n)))
        done.set()

    def scrapes() -> int:
        count = 0
        while not done.is_set():
            body(expositions, OPENMETRICS, count % 2 == 0)
            count += 1
        return count

    try:
        threads = [in_thread(polls, results)] + [in_thread(scrapes, results) for _ in range(3)]
        for thread in threads:
            thread.join(TIMEOUT * 4)
        assert not any(t.is_alive() for t in threads)
        last = body(expositions, OPENMETRICS)
        assert last == fresh(source, stats, expositions, OPENMETRICS)  # type: ignore[arg-type]
    finally:
        expositions.stop()


@pytest.fixture
def served(stats: ApiStats) -> Iterator[tuple[ExporterServer, Source, Expositions]]:
    source = Source("alpha-1250000000", "beta-1250000000")
    expositions = made(source, stats)
    server = ExporterServer(("127.0.0.1", 0), source, expositions)
    server.start()
    try:
        yield server, source, expositions
    finally:
        server.stop()


def test_http_gzip_decodes_with_gzip_zlib_and_curl(
    served: tuple[ExporterServer, Source, Expositions], stats: ApiStats
) -> None:
    server, source, expositions = served
    url = f"http://127.0.0.1:{server.port}/metrics"
    for accept in (TEXT, PROMETHEUS_3):
        plain = requests.get(
            url, headers={"Accept": accept, "Accept-Encoding": "identity"}, timeout=TIMEOUT
        )
        raw = requests.get(
            url, headers={"Accept": accept, "Accept-Encoding": "gzip"}, timeout=TIMEOUT, stream=True
        )
        compressed = raw.raw.read(decode_content=False)
        assert raw.headers["Content-Encoding"] == "gzip"
        assert int(raw.headers["Content-Length"]) == len(compressed)
        assert plain.content == fresh(source, stats, expositions, accept)
        assert gzip_module.decompress(compressed) == plain.content
        assert inflate(compressed) == plain.content
        trailer = compressed[-8:]
        assert int.from_bytes(trailer[:4], "little") == zlib.crc32(plain.content)
        assert int.from_bytes(trailer[4:], "little") == len(plain.content) % 2**32
        curl = shutil.which("curl")
        if curl:
            out = subprocess.run(
                [curl, "-sS", "--compressed", "-H", f"Accept: {accept}", url],
                capture_output=True,
                timeout=30,
                check=True,
            )
            assert out.stdout == plain.content


def test_http_head_and_keep_alive_after_a_gzip_answer(
    served: tuple[ExporterServer, Source, Expositions],
) -> None:
    server, _, _ = served
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        lengths = {}
        for method, encoding in (
            ("GET", "gzip"),
            ("HEAD", "gzip"),
            ("GET", "identity"),
            ("HEAD", "identity"),
            ("GET", "gzip"),
        ):
            connection.request(
                method, "/metrics", headers={"Accept": OPENMETRICS, "Accept-Encoding": encoding}
            )
            response = connection.getresponse()
            data = response.read()
            assert response.status == 200
            length = int(response.headers["Content-Length"])
            if method == "GET":
                assert len(data) == length
                lengths[encoding] = length
            else:
                assert data == b""
                assert length == lengths[encoding]
            assert (response.headers.get("Content-Encoding") == "gzip") == (encoding == "gzip")
            assert response.headers["Vary"] == "Accept, Accept-Encoding"
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() == b"ok\n"  # the same connection, still in step
    finally:
        connection.close()


def test_a_scrape_after_server_stop_is_refused_and_does_not_hang(stats: ApiStats) -> None:
    source = Source("alpha-1250000000")
    expositions = made(source, stats)
    server = ExporterServer(("127.0.0.1", 0), source, expositions)
    server.start()
    port = server.port
    assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT).status_code == 200
    server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT)
    # The expositions, stopped, still answer a direct scrape on the caller's thread.
    source.change(0, finished=4)
    assert b"} 4.0" in body(expositions, TEXT)
