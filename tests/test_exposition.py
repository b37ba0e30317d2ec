"""/metrics rendered once per published snapshot and format (exporter.exposition): scrapes of an
unchanged snapshot send the cached bytes, and what they send is byte for byte what a fresh
rendering of the same snapshot gives (text and OpenMetrics, identity and gzip)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from exposition_world import (
    OPENMETRICS,
    TEXT,
    TIMEOUT,
    Clock,
    Counted,
    Source,
    body,
    fresh,
    made,
    renders,
    until,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from exporter.api_stats import ApiStats
from exporter.collector import target_families
from exporter.exposition import WANTED_FOR, Expositions, exporter_expositions
from exporter.self_metrics import LiveCollector
from exporter.server import ExporterServer
from exporter.snapshot import TargetSnapshot


@pytest.fixture
def stats() -> ApiStats:
    stats = ApiStats()
    stats.record("alpha-1250000000", "ap-guangzhou", "DescribeMediaQueues", "200", None, 0.2)
    return stats


@pytest.mark.parametrize("accept", [TEXT, OPENMETRICS], ids=["text", "openmetrics"])
@pytest.mark.parametrize("zipped", [False, True], ids=["identity", "gzip"])
def test_what_a_scrape_sends_is_a_fresh_rendering_of_the_same_snapshot(
    stats: ApiStats, accept: str, zipped: bool
) -> None:
    source = Source("alpha-1250000000", "beta-1250000000", "gamma-1250000000")
    expositions = made(source, stats, Counted())

    first = body(expositions, accept, zipped)
    assert first == fresh(source, stats, expositions, accept)
    source.change(1, finished=40)  # one target polled again: its part is rendered anew
    second = body(expositions, accept, zipped)

    assert second == fresh(source, stats, expositions, accept)
    assert b'tencent_ci_jobs_finished_total{bucket="beta-1250000000"' in second
    assert first != second
    if accept == OPENMETRICS:
        assert second.count(b"# EOF") == 1 and second.endswith(b"# EOF\n")
        list(text_string_to_metric_families(second.decode()))  # a strict parser


def test_a_scrape_of_an_unchanged_snapshot_does_not_render(stats: ApiStats) -> None:
    source = Source("alpha-1250000000", "beta-1250000000")
    counted = Counted()
    expositions = made(source, stats, counted)

    bodies = {body(expositions, OPENMETRICS, zipped) for zipped in (False, True) * 5}

    assert counted.rendered == ["alpha-1250000000", "beta-1250000000"]
    assert list(renders(expositions).values()) == [1]
    assert len(bodies) == 1


def test_a_poll_of_one_target_renders_that_target_only(stats: ApiStats) -> None:
    source = Source("alpha-1250000000", "beta-1250000000", "gamma-1250000000")
    counted = Counted()
    expositions = made(source, stats, counted)
    body(expositions, TEXT)

    source.change(2, finished=7)
    text = body(expositions, TEXT)

    assert counted.rendered[3:] == ["gamma-1250000000"]
    assert b'bucket="gamma-1250000000",queue_id="q1",region="ap-guangzhou",service="media"' in text


def test_a_publish_makes_the_next_scrape_show_the_new_values(stats: ApiStats) -> None:
    source = Source("alpha-1250000000")
    counted = Counted()
    expositions = made(source, stats, counted)
    expositions.start()
    try:
        before = body(expositions, TEXT)
        source.change(0, finished=123)
        expositions.published()
        after = body(expositions, TEXT)
        again = body(expositions, TEXT)
    finally:
        expositions.stop()

    line = b'tencent_ci_jobs_finished_total{bucket="alpha-1250000000",queue_id="q1",region='
    assert line in before
    assert b'state="Success",tag="Transcode"} 123.0' in after
    assert b'state="Success",tag="Transcode"} 123.0' not in before
    assert again == after
    assert list(renders(expositions).values()) == [2]


def test_the_render_thread_renders_a_published_snapshot_before_anyone_scrapes(
    stats: ApiStats,
) -> None:
    source = Source("alpha-1250000000")
    counted = Counted()
    expositions = made(source, stats, counted)
    expositions.start()
    try:
        body(expositions, OPENMETRICS)
        body(expositions, OPENMETRICS)  # asked for again: a scraper's format, now in demand
        counted.entered.clear()
        source.change(0, finished=9)
        expositions.published()
        assert counted.entered.wait(TIMEOUT)  # rendered at publish time, nobody asking
        body(expositions, OPENMETRICS)
    finally:
        expositions.stop()

    assert counted.rendered == ["alpha-1250000000", "alpha-1250000000"]


def test_a_format_asked_for_once_is_rendered_when_asked_not_at_every_publish(
    stats: ApiStats,
) -> None:
    """A person's curl asks for text once: text is not rendered again at each publish for the
    next WANTED_FOR seconds (only a scraper's format, asked for again, is)."""
    source = Source("alpha-1250000000")
    counted = Counted()
    expositions = made(source, stats, counted)
    expositions.start()
    try:
        body(expositions, TEXT)  # a curl
        body(expositions, OPENMETRICS)
        body(expositions, OPENMETRICS)  # a scraper
        source.change(0, finished=21)
        expositions.published()
        until(lambda: renders(expositions).get("openmetrics") == 2)
        until(lambda: render_thread_idle())
        assert renders(expositions) == {"text": 1, "openmetrics": 2}
        later = body(expositions, TEXT)  # asked again: rendered now, on demand
    finally:
        expositions.stop()

    assert b'state="Success",tag="Transcode"} 21.0' in later
    assert renders(expositions) == {"text": 2, "openmetrics": 2}


def render_thread_idle() -> bool:
    """Whether the render thread waits for work (its innermost frame: Condition.wait in _run)."""
    (thread,) = [t for t in threading.enumerate() if t.name == "render"]
    frame = sys._current_frames().get(thread.ident or -1)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return bool(names) and names[0] == "wait" and "_run" in names


def test_a_scrape_waits_for_one_rendering_at_most(stats: ApiStats) -> None:
    """A scrape arriving while an older snapshot is being rendered takes that rendering rather
    than wait for a second one; the next scrape has the newer snapshot."""
    source = Source("alpha-1250000000")
    counted = Counted()
    expositions = made(source, stats, counted)
    expositions.start()
    results: list[bytes] = []
    try:
        body(expositions, TEXT)
        body(expositions, TEXT)  # asked for again: rendered at every publish
        counted.held = True
        counted.entered.clear()
        source.change(0, finished=50)
        expositions.published()
        assert counted.entered.wait(TIMEOUT)  # rendering finished=50, held
        source.change(0, finished=60)  # published while that rendering is under way
        scrape = threading.Thread(target=lambda: results.append(body(expositions, TEXT)))
        scrape.start()
        until(lambda: expositions.waiting() == 1)
        counted.entered.clear()
        counted.gate.release()  # finished=50 completes; finished=60 begins, and is held
        assert counted.entered.wait(TIMEOUT)
        scrape.join(TIMEOUT)
        assert not scrape.is_alive()  # it did not wait for the second rendering
        counted.held = False
        counted.gate.release()
        latest = body(expositions, TEXT)
    finally:
        counted.held = False
        counted.gate.release()
        expositions.stop()

    assert b'state="Success",tag="Transcode"} 50.0' in results[0]
    assert b'state="Success",tag="Transcode"} 60.0' in latest


def test_a_failed_rendering_is_an_error_and_the_next_snapshot_renders_again(
    stats: ApiStats, caplog: pytest.LogCaptureFixture
) -> None:
    source = Source("alpha-1250000000")
    broken = {"on": True}

    def families(targets: tuple[TargetSnapshot, ...]) -> Iterator[Metric]:
        if targets and broken["on"]:
            raise RuntimeError("broken")
        return target_families(targets)

    expositions = Expositions(source.snapshot, families, lambda s: iter(()), LiveCollector(stats))
    encoder, content_type = choose_encoder(TEXT)

    failed = expositions.scrape(encoder, content_type, False)
    broken["on"] = False
    again = expositions.scrape(encoder, content_type, False)  # same snapshot: not retried
    source.change(0, finished=5)
    recovered = expositions.scrape(encoder, content_type, False)

    assert (failed.ok, again.ok, recovered.ok) == (False, False, True)
    assert "rendering text failed" in caplog.text


def test_a_format_nobody_asks_for_is_dropped_and_no_longer_rendered(stats: ApiStats) -> None:
    source = Source("alpha-1250000000")
    counted = Counted()
    clock = Clock()
    expositions = made(source, stats, counted, clock)
    expositions.start()
    try:
        body(expositions, TEXT)  # a person's curl, once
        body(expositions, OPENMETRICS)  # Prometheus, every scrape
        clock.now += WANTED_FOR / 2
        body(expositions, OPENMETRICS)
        clock.now += WANTED_FOR / 2 + 1
        counted.entered.clear()
        source.change(0, finished=8)
        expositions.published()
        assert counted.entered.wait(TIMEOUT)
        body(expositions, OPENMETRICS)
    finally:
        expositions.stop()

    assert list(renders(expositions)) == ["openmetrics"]
    assert counted.rendered.count("alpha-1250000000") == 3  # text once, OpenMetrics twice


def test_formats_are_what_changes_the_bytes_not_what_clients_send(stats: ApiStats) -> None:
    """Versions, escapings and parameters are the client's choice; the cache keeps one
    rendering per format that changes a byte, so no client makes it render again (or makes
    a label value of its text)."""
    source = Source("alpha-1250000000")
    counted = Counted()
    expositions = made(source, stats, counted)
    accepts = [
        "",
        "*/*",
        "text/plain;version=0.0.4",
        "text/plain;version=1.0.0;escaping=underscores",
        "application/openmetrics-text",
        "application/openmetrics-text;version=1.0.0",
        "application/openmetrics-text;version=1.0.7;escaping=allow-utf-8",
        "application/openmetrics-text;version=1.0.0;escaping=dots",
    ]
    for accept in accepts * 2:
        body(expositions, accept)

    assert renders(expositions) == {"text": 1, "openmetrics": 1, "openmetrics-dots": 1}
    assert len(counted.rendered) == 3


def test_the_exporter_adds_process_and_python_metrics_per_scrape(stats: ApiStats) -> None:
    source = Source("alpha-1250000000")
    expositions = exporter_expositions(source, stats, "9.9")

    text = body(expositions, OPENMETRICS).decode()

    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= families
    assert {"tencent_ci_exposition_render_seconds", "tencent_ci_exposition_bytes"} <= families
    assert text.count("# EOF") == 1


def test_the_render_cost_is_a_self_metric(stats: ApiStats) -> None:
    source = Source("alpha-1250000000")
    expositions = made(source, stats, Counted())
    body(expositions, TEXT)
    source.change(0, finished=11)

    text = body(expositions, TEXT).decode()

    cost = expositions.costs()[0]
    assert 'tencent_ci_exposition_renders_total{format="text"} 2.0' in text
    assert f'tencent_ci_exposition_bytes{{format="text"}} {float(cost.size)}' in text
    assert cost.size > 1000 and 0 < cost.seconds < TIMEOUT


def test_promtool_check_metrics_finds_nothing_wrong_in_a_scrape(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (Debian package prometheus)"
    source = Source("alpha-1250000000", "beta-1250000000")
    stats = ApiStats()
    stats.record("alpha-1250000000", "ap-guangzhou", "DescribeMediaQueues", "200", None, 0.2)
    server = ExporterServer(("127.0.0.1", 0), source, exporter_expositions(source, stats, "9.9"))
    server.start()
    try:
        response = requests.get(
            f"http://127.0.0.1:{server.port}/metrics",
            headers={"Accept-Encoding": "gzip"},
            timeout=TIMEOUT,
        )
    finally:
        server.stop()
    assert response.headers["Content-Encoding"] == "gzip"
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=response.content,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert result.stdout + result.stderr == b""


def test_a_scrape_takes_the_previous_rendering_when_the_new_one_outlasts_its_patience(
    stats: ApiStats,
) -> None:
    """A full rendering of a large deployment (startup, a reload) can take seconds: a scrape
    waits half its scrape timeout for it, then sends the snapshot before rather than time out.
    Over HTTP, Prometheus's X-Prometheus-Scrape-Timeout-Seconds sets the patience."""
    source = Source("alpha-1250000000")
    counted = Counted()
    expositions = made(source, stats, counted)
    server = ExporterServer(("127.0.0.1", 0), source, expositions)
    server.start()
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        requests.get(url, timeout=TIMEOUT)
        before = requests.get(url, timeout=TIMEOUT).content  # asked again: rendered at publish
        counted.held = True
        counted.entered.clear()
        source.change(0, finished=77)
        expositions.published()
        assert counted.entered.wait(TIMEOUT)  # the new snapshot is being rendered, held
        hurried = requests.get(
            url, headers={"X-Prometheus-Scrape-Timeout-Seconds": "0.2"}, timeout=TIMEOUT
        )
        counted.held = False
        counted.gate.release()
        after = requests.get(url, timeout=TIMEOUT).content
    finally:
        counted.held = False
        counted.gate.release()
        server.stop()

    line = b'state="Success",tag="Transcode"}'
    assert hurried.status_code == 200
    assert hurried.content.split(line)[1][:5] == before.split(line)[1][:5] == b" 3.0\n"
    assert b'state="Success",tag="Transcode"} 77.0' in after


def test_one_target_snapshot_listed_twice_renders_twice(stats: ApiStats) -> None:
    source = Source("alpha-1250000000")
    alpha = source.current.targets[0]
    source.current = replace(source.current, targets=(alpha, alpha))
    expositions = made(source, stats, Counted())

    assert body(expositions, TEXT) == fresh(source, stats, expositions, TEXT)
