"""ExporterServer over real loopback HTTP, and parse_listen_address."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from exporter.api_stats import ApiStats
from exporter.ci.models import Queue
from exporter.collector import CICollector
from exporter.server import DEFAULT_PORT, ExporterServer, parse_listen_address
from exporter.snapshot import (
    DURATION_BUCKETS,
    FailedJob,
    Histogram,
    QueueSnapshot,
    Snapshot,
    StreamSnapshot,
    TargetSnapshot,
)

TIMEOUT = 5.0
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def failure(index: int, message: str = "boom") -> FailedJob:
    return FailedJob(
        time=1_700_000_000.0 + index,
        service="media",
        queue_id="q1",
        tag="Transcode",
        job_id=f"job-{index:03d}",
        code="InternalError",
        message=message,
    )


def snapshot() -> Snapshot:
    empty = Histogram(DURATION_BUCKETS, (0,) * len(DURATION_BUCKETS), 0.0, 0)
    stream = StreamSnapshot(
        service="media",
        queue_id="q1",
        tag="Transcode",
        active={"Running": 1},
        finished={"Failed": 1},
        failures={"InternalError": 1},
        run_duration={},
        queue_wait=empty,
        oldest={},
        last_failed_job="job-latest",
        last_failed_code="InternalError",
    )
    queue = QueueSnapshot("media", Queue("q1", "queue one", "Active", 100, 2, "CateAll", True))
    up = TargetSnapshot(
        bucket="alpha-1250000000",
        region="ap-guangzhou",
        up=True,
        polled=True,
        last_poll_time=1_700_000_100.0,
        last_success_time=1_700_000_100.0,
        last_poll_duration=0.5,
        last_error="",
        queues=(queue,),
        streams=(stream,),
        tracked_jobs=1,
        recent_failures=(
            *(failure(i) for i in range(59)),
            failure(59, "<script>alert('x')</script> & more"),
        ),
    )
    waiting = TargetSnapshot(
        bucket="beta-1250000000",
        region="ap-shanghai",
        up=False,
        polled=False,
        last_poll_time=None,
        last_success_time=None,
        last_poll_duration=None,
        last_error="",
        queues=(),
        streams=(),
        tracked_jobs=0,
    )
    return Snapshot((up, waiting))


class FakeSource:
    def __init__(self) -> None:
        self.is_ready = False
        self.snapshot_calls = 0
        self.ready_calls = 0
        self.current = snapshot()

    def snapshot(self) -> Snapshot:
        self.snapshot_calls += 1
        return self.current

    def ready(self) -> bool:
        self.ready_calls += 1
        return self.is_ready


class BrokenCollector:
    def collect(self) -> Iterator[Metric]:
        raise RuntimeError("broken")


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


def start(
    source: FakeSource, registry: CollectorRegistry, path: str = "/metrics"
) -> ExporterServer:
    server = ExporterServer(("127.0.0.1", 0), source, registry, telemetry_path=path, version="9.9")
    server.start()
    return server


@pytest.fixture
def url(source: FakeSource) -> Iterator[str]:
    registry = CollectorRegistry()
    registry.register(CICollector(source, ApiStats(), "9.9"))
    server = start(source, registry)
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


def test_metrics_in_the_text_format_by_default(url: str, source: FakeSource) -> None:
    response = requests.get(f"{url}/metrics", timeout=TIMEOUT)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert 'tencent_ci_up{bucket="alpha-1250000000",region="ap-guangzhou"} 1.0' in response.text
    assert "# EOF" not in response.text
    # The page reads the snapshot through collect() only: no readiness check, no API.
    assert source.snapshot_calls == 1
    assert source.ready_calls == 0


def test_metrics_in_openmetrics_when_asked(url: str) -> None:
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"

    response = requests.get(f"{url}/metrics", headers={"Accept": accept}, timeout=TIMEOUT)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert "version=1.0.0" in response.headers["Content-Type"]
    assert response.text.endswith("# EOF\n")
    assert '# {job_id="job-latest"} 1.0' in response.text


def test_metrics_gzip_only_when_accepted(url: str) -> None:
    zipped = requests.get(f"{url}/metrics", headers={"Accept-Encoding": "gzip"}, timeout=TIMEOUT)
    plain = requests.get(f"{url}/metrics", headers={"Accept-Encoding": "identity"}, timeout=TIMEOUT)
    refused = requests.get(
        f"{url}/metrics", headers={"Accept-Encoding": "gzip;q=0"}, timeout=TIMEOUT
    )

    assert zipped.headers["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in plain.headers
    assert "Content-Encoding" not in refused.headers
    assert zipped.text == plain.text  # requests decompressed it


def test_head_sends_headers_without_body(url: str) -> None:
    headers = {"Accept-Encoding": "identity"}
    get = requests.get(f"{url}/metrics", headers=headers, timeout=TIMEOUT)

    head = requests.head(f"{url}/metrics", headers=headers, timeout=TIMEOUT)

    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Length"] == str(len(get.content))


def test_custom_telemetry_path(source: FakeSource) -> None:
    registry = CollectorRegistry()
    registry.register(CICollector(source, ApiStats(), "9.9"))
    server = start(source, registry, path="/custom/metrics")
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert requests.get(f"{base}/custom/metrics", timeout=TIMEOUT).status_code == 200
        assert requests.get(f"{base}/metrics", timeout=TIMEOUT).status_code == 404
        landing = requests.get(base, timeout=TIMEOUT).text
        assert '<a href="/custom/metrics">' in landing
    finally:
        server.stop()


def test_render_failure_is_a_500_not_a_dropped_connection(source: FakeSource) -> None:
    registry = CollectorRegistry()
    registry.register(BrokenCollector())
    server = start(source, registry)
    try:
        response = requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=TIMEOUT)
    finally:
        server.stop()

    assert response.status_code == 500
    assert response.text == "error rendering metrics, see log\n"


def test_healthz(url: str) -> None:
    response = requests.get(f"{url}/healthz", timeout=TIMEOUT)

    assert response.status_code == 200
    assert response.text == "ok\n"
    assert response.headers["Content-Type"].startswith("text/plain")


def test_readyz_flips_when_the_source_is_ready(url: str, source: FakeSource) -> None:
    assert requests.get(f"{url}/readyz", timeout=TIMEOUT).status_code == 503

    source.is_ready = True

    response = requests.get(f"{url}/readyz", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.text == "ready\n"


def test_landing_page_lists_targets_and_escapes_messages(url: str) -> None:
    response = requests.get(f"{url}/", timeout=TIMEOUT)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    page = response.text
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert '<a href="/metrics">/metrics</a>' in page
    for text in (
        "alpha-1250000000",
        "ap-guangzhou",
        "beta-1250000000",
        "ap-shanghai",
        "<td>up</td>",
        "<td>not polled yet</td>",
        "2023-11-14T22:15:00+00:00",
        "<td>queue one (media/q1)</td>",
        "Transcode",
        "InternalError",
    ):
        assert text in page, text


def test_landing_page_shows_the_latest_50_failures(url: str) -> None:
    page = requests.get(f"{url}/", timeout=TIMEOUT).text

    shown = {f"job-{i:03d}" for i in range(60) if f"<td>job-{i:03d}</td>" in page}
    assert shown == {f"job-{i:03d}" for i in range(10, 60)}
    # Newest first.
    assert page.index("<td>job-059</td>") < page.index("<td>job-010</td>")


def test_landing_page_shows_a_down_target_and_its_error(url: str, source: FakeSource) -> None:
    down = TargetSnapshot(
        bucket="gamma",
        region="ap-beijing",
        up=False,
        polled=True,
        last_poll_time=0.0,
        last_success_time=None,
        last_poll_duration=1.0,
        last_error="HTTP 403 <AccessDenied>",
        queues=(),
        streams=(),
        tracked_jobs=0,
    )
    source.current = Snapshot((down,))

    page = requests.get(f"{url}/", timeout=TIMEOUT).text

    assert "<td>down</td>" in page
    assert "<td>1970-01-01T00:00:00+00:00</td>" in page
    assert "<td>never</td>" in page
    assert "HTTP 403 &lt;AccessDenied&gt;" in page


def test_unknown_path_is_404(url: str) -> None:
    response = requests.get(f"{url}/metrics/extra", timeout=TIMEOUT)

    assert response.status_code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_other_methods_are_405(url: str, method: str) -> None:
    response = requests.request(method, f"{url}/metrics", data=b"x=1", timeout=TIMEOUT)

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"


def test_requests_are_logged_at_debug_not_on_stderr(
    url: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.DEBUG, logger="exporter.server"):
        requests.get(f"{url}/healthz", timeout=TIMEOUT)

    assert any(
        "GET /healthz" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records
    )
    assert capsys.readouterr().err == ""


def test_stop_closes_the_port(source: FakeSource) -> None:
    server = start(source, CollectorRegistry())
    port = server.port
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT).status_code == 200

    server.stop()
    server.stop()  # idempotent

    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass


def test_stop_without_start(source: FakeSource) -> None:
    server = ExporterServer(("127.0.0.1", 0), source, CollectorRegistry())

    server.stop()

    with pytest.raises(RuntimeError):
        server.start()


def test_port_in_use_is_one_clear_error(source: FakeSource) -> None:
    first = ExporterServer(("127.0.0.1", 0), source, CollectorRegistry())
    try:
        with pytest.raises(OSError, match=rf"^cannot listen on 127\.0\.0\.1:{first.port}: "):
            ExporterServer(("127.0.0.1", first.port), source, CollectorRegistry())
    finally:
        first.stop()


@pytest.mark.parametrize(
    "path",
    [
        "metrics",
        "/healthz",
        "/readyz",
        "/",
        "",
        "/metrics?x=1",
        "/metrics#f",
        "/a b",
        "/m\u00e9trics",
        "/a%20b",
    ],
)
def test_bad_telemetry_path(source: FakeSource, path: str) -> None:
    """Paths no request could reach, or that hide another page, are refused up front."""
    with pytest.raises(ValueError, match=r"path starting with /|taken by another page"):
        ExporterServer(("127.0.0.1", 0), source, CollectorRegistry(), telemetry_path=path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9101", ("127.0.0.1", 9101)),
        (":9873", ("0.0.0.0", 9873)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:9101", ("::1", 9101)),
        ("[::]:65535", ("::", 65535)),
        (" exporter.local:9873 ", ("exporter.local", 9873)),
    ],
)
def test_parse_listen_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "9101",
        "host",
        "host:",
        "host:abc",
        "host:65536",
        "host:-1",
        "host:+80",
        "host:٣",
        "::1:9101",
        "[::1]9101",
        "[::1]:",
        "[::1",
        "[]:80",
        "[example.com]:80",
        "a b:80",
    ],
)
def test_parse_listen_address_rejects(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_listen_address(text)

    message = str(caught.value)
    assert message.startswith(f"invalid listen address {text!r}: ")
    assert "\n" not in message


def test_default_port() -> None:
    assert DEFAULT_PORT == 9873
    assert parse_listen_address(f":{DEFAULT_PORT}") == ("0.0.0.0", DEFAULT_PORT)
