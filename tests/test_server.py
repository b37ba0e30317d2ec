"""ExporterServer over real loopback HTTP and HTTPS (real TLS clients, certificates made at
test time by test_webconfig.make_pki), the reload page, and parse_listen_address."""

from __future__ import annotations

import base64
import http.client
import logging
import socket
import ssl
import struct
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from exposing import exporter_metrics, only, steady
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from test_webconfig import PASSWORD, PASSWORD_HASH, Pki, make_pki

from exporter.ci.models import Queue
from exporter.exposition import Expositions
from exporter.httpserver import ConnectionLimits
from exporter.listen import DEFAULT_PORT, parse_listen_address
from exporter.server import ExporterServer
from exporter.snapshot import (
    FailedJob,
    QueueSnapshot,
    Snapshot,
    StreamSnapshot,
    TargetSnapshot,
)
from exporter.webconfig import WebConfig, load_web_config

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
    stream = StreamSnapshot(
        service="media",
        queue_id="q1",
        tag="Transcode",
        active={"Running": 1},
        finished={"Failed": 1},
        failures={"InternalError": 1},
        run_duration={},
        queue_wait=None,
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


def start(source: FakeSource, metrics: Expositions, path: str = "/metrics") -> ExporterServer:
    server = ExporterServer(("127.0.0.1", 0), source, metrics, telemetry_path=path, version="9.9")
    server.start()
    return server


@pytest.fixture
def url(source: FakeSource) -> Iterator[str]:
    server = start(source, exporter_metrics(source))
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


def test_metrics_in_the_text_format_by_default(url: str, source: FakeSource) -> None:
    response = requests.get(f"{url}/metrics", timeout=TIMEOUT)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert 'tencent_ci_up{bucket="alpha-1250000000",region="ap-guangzhou"} 1.0' in response.text
    assert "# EOF" not in response.text
    # The page reads the snapshot only: no readiness check, no API.
    assert source.snapshot_calls >= 1
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
    assert steady(zipped.text) == steady(plain.text)  # requests decompressed it


class StaticCollector:
    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("static", "the same on every scrape", value=1)


def test_head_sends_headers_without_body(source: FakeSource) -> None:
    # Without process_* metrics, whose values (and so lengths) change between two scrapes.
    server = start(source, only(StaticCollector()))
    url = f"http://127.0.0.1:{server.port}/metrics"
    headers = {"Accept-Encoding": "identity"}
    try:
        get = requests.get(url, headers=headers, timeout=TIMEOUT)
        head = requests.head(url, headers=headers, timeout=TIMEOUT)
    finally:
        server.stop()

    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Length"] == str(len(get.content))


def test_custom_telemetry_path(source: FakeSource) -> None:
    server = start(source, exporter_metrics(source), path="/custom/metrics")
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert requests.get(f"{base}/custom/metrics", timeout=TIMEOUT).status_code == 200
        assert requests.get(f"{base}/metrics", timeout=TIMEOUT).status_code == 404
        landing = requests.get(base, timeout=TIMEOUT).text
        assert '<a href="/custom/metrics">' in landing
    finally:
        server.stop()


def test_render_failure_is_a_500_not_a_dropped_connection(source: FakeSource) -> None:
    server = start(source, only(BrokenCollector()))
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
    server = start(source, only(CollectorRegistry()))
    port = server.port
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT).status_code == 200

    server.stop()
    server.stop()  # idempotent

    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass


def test_stop_without_start(source: FakeSource) -> None:
    server = ExporterServer(("127.0.0.1", 0), source, only(CollectorRegistry()))

    server.stop()

    with pytest.raises(RuntimeError):
        server.start()


def test_port_in_use_is_one_clear_error(source: FakeSource) -> None:
    first = ExporterServer(("127.0.0.1", 0), source, only(CollectorRegistry()))
    try:
        with pytest.raises(OSError, match=rf"^cannot listen on 127\.0\.0\.1:{first.port}: "):
            ExporterServer(("127.0.0.1", first.port), source, only(CollectorRegistry()))
    finally:
        first.stop()


@pytest.mark.parametrize(
    "path",
    [
        "metrics",
        "/healthz",
        "/readyz",
        "/-/reload",
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
        ExporterServer(("127.0.0.1", 0), source, only(CollectorRegistry()), telemetry_path=path)


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


# --- reload ---------------------------------------------------------------------------------


class FakeReload:
    def __init__(self, *results: tuple[bool, str] | Exception) -> None:
        self.results = list(results)
        self.calls = 0

    def __call__(self) -> tuple[bool, str]:
        result = self.results[min(self.calls, len(self.results) - 1)]
        self.calls += 1
        if isinstance(result, Exception):
            raise result
        return result


def serve(
    source: FakeSource,
    *,
    web_config: WebConfig | None = None,
    reload: FakeReload | None = None,
    limits: ConnectionLimits | None = None,
) -> ExporterServer:
    server = ExporterServer(
        ("127.0.0.1", 0),
        source,
        exporter_metrics(source),
        version="9.9",
        web_config=web_config,
        reload=reload,
        limits=limits,
    )
    server.start()
    return server


@pytest.fixture
def reloading(source: FakeSource) -> Iterator[tuple[str, FakeReload]]:
    reload = FakeReload((True, "ignored"), (False, "config.yml: targets: must list\nat least one"))
    server = serve(source, reload=reload)
    yield f"http://127.0.0.1:{server.port}", reload
    server.stop()


def test_reload_by_post_and_put(reloading: tuple[str, FakeReload]) -> None:
    url, reload = reloading

    ok = requests.post(f"{url}/-/reload", timeout=TIMEOUT)
    failed = requests.put(f"{url}/-/reload", timeout=TIMEOUT)

    assert (ok.status_code, ok.text) == (200, "config reloaded\n")
    # The callback's message, on one line whatever it held.
    assert (failed.status_code, failed.text) == (
        500,
        "config.yml: targets: must list at least one\n",
    )
    assert reload.calls == 2


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "OPTIONS"])
def test_reload_only_by_post_or_put(reloading: tuple[str, FakeReload], method: str) -> None:
    url, reload = reloading

    response = requests.request(method, f"{url}/-/reload", timeout=TIMEOUT)

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST, PUT"
    assert reload.calls == 0


def test_a_reload_that_raises_is_a_500_and_a_log_line(
    source: FakeSource, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(source, reload=FakeReload(RuntimeError("bug")))
    try:
        with caplog.at_level(logging.ERROR, logger="exporter.server"):
            response = requests.post(f"http://127.0.0.1:{server.port}/-/reload", timeout=TIMEOUT)
    finally:
        server.stop()

    assert (response.status_code, response.text) == (
        500,
        "reload failed: internal error (see the log)\n",
    )
    assert [r.getMessage() for r in caplog.records] == ["reload failed"]


@pytest.mark.parametrize("method", ["POST", "PUT", "GET"])
def test_without_a_reload_callback_there_is_no_reload_page(url: str, method: str) -> None:
    response = requests.request(method, f"{url}/-/reload", timeout=TIMEOUT)

    assert response.status_code == 404
    assert response.text == "not found: this exporter has nothing to reload\n"


# --- TLS and basic auth ---------------------------------------------------------------------

USER = "prometheus"
HEADERS = (
    "http_server_config:\n  headers: {X-Frame-Options: deny, X-Content-Type-Options: nosniff}\n"
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def web_config(pki: Pki, tls: str | None = "", users: bool = True, extra: str = "") -> WebConfig:
    """A loaded web config: TLS with the test server certificate plus `tls` lines (None: no
    TLS), the user USER with PASSWORD, and `extra` sections."""
    text = extra
    if tls is not None:
        text += (
            "tls_server_config:\n"
            f"  cert_file: {pki.server_cert}\n"
            f"  key_file: {pki.server_key}\n"
            f"{tls}"
        )
    if users:
        text += f"basic_auth_users:\n  {USER}: '{PASSWORD_HASH}'\n"
    path = pki.directory / f"web-{uuid.uuid4().hex}.yml"
    path.write_text(text)
    return load_web_config(str(path))


@pytest.fixture
def secure(pki: Pki, source: FakeSource) -> Iterator[tuple[str, ExporterServer]]:
    """TLS and one user, serving the loopback address its certificate names."""
    reload = FakeReload((True, ""))
    server = serve(source, web_config=web_config(pki, extra=HEADERS), reload=reload)
    yield f"https://127.0.0.1:{server.port}", server
    server.stop()


def get(pki: Pki, url: str, **kwargs: Any) -> requests.Response:
    return requests.get(url, verify=str(pki.ca), timeout=TIMEOUT, **kwargs)


def test_tls_with_the_right_password(pki: Pki, secure: tuple[str, ExporterServer]) -> None:
    url, server = secure

    response = get(pki, f"{url}/metrics", auth=(USER, PASSWORD))

    assert response.status_code == 200
    assert 'tencent_ci_up{bucket="alpha-1250000000",region="ap-guangzhou"} 1.0' in response.text
    assert server.scheme == "https"


def test_tls_keeps_the_connection_for_the_next_scrape(
    pki: Pki, secure: tuple[str, ExporterServer]
) -> None:
    _, server = secure
    context = ssl.create_default_context(cafile=str(pki.ca))
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context)
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    statuses, sockets = [], []
    try:
        for _ in range(3):
            connection.request("GET", "/metrics", headers={"Authorization": f"Basic {token}"})
            response = connection.getresponse()
            response.read()
            statuses.append((response.status, response.will_close))
            sockets.append(connection.sock)
    finally:
        connection.close()

    assert statuses == [(200, False)] * 3
    assert sockets[0] is sockets[1] is sockets[2]


@pytest.mark.parametrize(
    "auth",
    [None, (USER, "wrong"), ("grafana", PASSWORD), (USER, ""), (f"{USER}x", PASSWORD)],
    ids=["no header", "wrong password", "unknown user", "empty password", "near user"],
)
@pytest.mark.parametrize("path", ["/metrics", "/", "/nowhere", "/-/reload"])
def test_tls_without_the_right_password_is_401(
    pki: Pki, secure: tuple[str, ExporterServer], auth: tuple[str, str] | None, path: str
) -> None:
    url, _ = secure

    response = get(pki, f"{url}{path}", auth=auth)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        'Basic realm="tencent-ci-exporter", charset="UTF-8"'
    )
    assert response.text == "unauthorized\n"
    # The headers of the web config go out on refusals too.
    assert response.headers["X-Frame-Options"] == "deny"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer abc",
        "Basic",
        "Basic !!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:" + PASSWORD.encode()).decode(),
    ],
)
def test_a_malformed_authorization_header_is_401(
    pki: Pki, secure: tuple[str, ExporterServer], header: str
) -> None:
    url, _ = secure

    response = get(pki, f"{url}/metrics", headers={"Authorization": header})

    assert response.status_code == 401


def test_probes_need_no_password(
    pki: Pki, secure: tuple[str, ExporterServer], source: FakeSource
) -> None:
    url, _ = secure

    health = get(pki, f"{url}/healthz")
    not_ready = get(pki, f"{url}/readyz")
    source.is_ready = True
    ready = get(pki, f"{url}/readyz")

    assert (health.status_code, health.text) == (200, "ok\n")
    assert (not_ready.status_code, ready.status_code) == (503, 200)
    assert health.headers["X-Content-Type-Options"] == "nosniff"


def test_reload_needs_the_password(pki: Pki, secure: tuple[str, ExporterServer]) -> None:
    url, _ = secure

    refused = requests.post(f"{url}/-/reload", verify=str(pki.ca), timeout=TIMEOUT)
    accepted = requests.post(
        f"{url}/-/reload", verify=str(pki.ca), auth=(USER, PASSWORD), timeout=TIMEOUT
    )

    assert (refused.status_code, accepted.status_code) == (401, 200)


def test_plain_http_to_the_tls_port_is_told_so(
    pki: Pki, secure: tuple[str, ExporterServer]
) -> None:
    url, _ = secure

    response = requests.get(url.replace("https:", "http:") + "/metrics", timeout=TIMEOUT)

    assert response.status_code == 400
    assert response.text == "Client sent an HTTP request to an HTTPS server.\n"
    assert get(pki, f"{url}/healthz").status_code == 200


@pytest.mark.parametrize("first_bytes", [b"", b"\x00\x01garbage", b"\x16\x03\x01\x00"])
def test_a_silent_or_stalled_tls_client_delays_no_one(
    pki: Pki, secure: tuple[str, ExporterServer], first_bytes: bytes
) -> None:
    url, server = secure
    with socket.create_connection(("127.0.0.1", server.port), TIMEOUT) as stalled:
        stalled.sendall(first_bytes)

        response = get(pki, f"{url}/metrics", auth=(USER, PASSWORD))

    assert response.status_code == 200


def test_a_stalled_handshake_is_dropped_after_the_timeout(pki: Pki, source: FakeSource) -> None:
    server = serve(source, web_config=web_config(pki), limits=ConnectionLimits(header_timeout=0.2))
    try:
        with socket.create_connection(("127.0.0.1", server.port), TIMEOUT) as stalled:
            stalled.sendall(b"\x16\x03\x01\x00")  # half a ClientHello, then nothing

            closed = stalled.recv(1)  # waits for the server to give up
    finally:
        server.stop()

    assert closed == b""


def test_a_tls_version_below_min_version_is_refused(pki: Pki, source: FakeSource) -> None:
    server = serve(source, web_config=web_config(pki, tls="  min_version: TLS13\n"))
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        with (
            socket.create_connection(("127.0.0.1", server.port), TIMEOUT) as raw,
            pytest.raises(ssl.SSLError),
        ):
            context.wrap_socket(raw, server_hostname="127.0.0.1")
        assert get(pki, f"https://127.0.0.1:{server.port}/healthz").status_code == 200
    finally:
        server.stop()


def test_tls_without_users_serves_everyone(pki: Pki, source: FakeSource) -> None:
    server = serve(source, web_config=web_config(pki, users=False))
    try:
        response = get(pki, f"https://127.0.0.1:{server.port}/metrics")
    finally:
        server.stop()

    assert response.status_code == 200


def test_basic_auth_without_tls(pki: Pki, source: FakeSource) -> None:
    server = serve(source, web_config=web_config(pki, tls=None))
    base = f"http://127.0.0.1:{server.port}"
    try:
        refused = requests.get(f"{base}/metrics", timeout=TIMEOUT)
        accepted = requests.get(f"{base}/metrics", auth=(USER, PASSWORD), timeout=TIMEOUT)
        scheme = server.scheme
    finally:
        server.stop()

    assert (refused.status_code, accepted.status_code) == (401, 200)
    assert scheme == "http"


MTLS = "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca}\n"


@pytest.fixture
def mtls(pki: Pki, source: FakeSource) -> Iterator[str]:
    tls = MTLS.format(ca=pki.ca) + "  client_allowed_sans: [prometheus.example]\n"
    server = serve(source, web_config=web_config(pki, tls=tls, users=False))
    yield f"https://127.0.0.1:{server.port}"
    server.stop()


def test_mtls_with_an_allowed_client_certificate(pki: Pki, mtls: str) -> None:
    response = get(pki, f"{mtls}/metrics", cert=(str(pki.client_cert), str(pki.client_key)))

    assert response.status_code == 200


@pytest.mark.parametrize("client", ["none", "other", "rogue"])
def test_mtls_refuses_other_clients(pki: Pki, mtls: str, client: str) -> None:
    certs = {
        "none": None,
        "other": (str(pki.other_client_cert), str(pki.other_client_key)),  # wrong SAN
        "rogue": (str(pki.rogue_client_cert), str(pki.rogue_client_key)),  # not from the CA
    }

    with pytest.raises(requests.exceptions.ConnectionError):
        get(pki, f"{mtls}/metrics", cert=certs[client])

    # The server is unharmed.
    assert get(pki, f"{mtls}/healthz", cert=(str(pki.client_cert), str(pki.client_key))).ok


def test_set_web_config_swaps_users_and_certificates(pki: Pki, source: FakeSource) -> None:
    server = serve(source, web_config=web_config(pki))
    url = f"https://127.0.0.1:{server.port}/metrics"
    other_hash = "$2b$04$ZkTw99HBjLEylDUw1MEzkeqghRGfX17w81Q9bbh5jmyjRkYfWU41C"  # "other"
    other = pki.directory / f"web-{uuid.uuid4().hex}.yml"
    other.write_text(
        f"tls_server_config: {{cert_file: {pki.server_cert}, key_file: {pki.server_key}}}\n"
        f"basic_auth_users: {{grafana: '{other_hash}'}}\n"
    )
    try:
        before = get(pki, url, auth=(USER, PASSWORD)).status_code
        server.set_web_config(load_web_config(str(other)))
        after = [
            get(pki, url, auth=auth).status_code
            for auth in [(USER, PASSWORD), ("grafana", "other")]
        ]
        server.set_web_config(None)
        plain = requests.get(url.replace("https:", "http:"), timeout=TIMEOUT).status_code
    finally:
        server.stop()

    assert (before, after, plain) == (200, [401, 200], 200)


def test_passwords_never_reach_the_log(
    pki: Pki, secure: tuple[str, ExporterServer], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = secure
    secrets = [
        PASSWORD,
        "wrong-secret-guess",
        base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    ]

    with caplog.at_level(logging.DEBUG, logger="exporter"):
        get(pki, f"{url}/metrics", auth=(USER, PASSWORD))
        get(pki, f"{url}/metrics", auth=(USER, "wrong-secret-guess"))
        get(pki, f"{url}/metrics", auth=("wrong-secret-guess", PASSWORD))

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "GET /metrics" in logged
    assert "wrong user or password" in logged
    for secret in secrets:
        assert secret not in logged
    assert "Authorization" not in logged


class _Recorded(logging.Handler):
    """Sets `seen` when a record whose message starts with `prefix` is emitted."""

    def __init__(self, prefix: str) -> None:
        super().__init__(logging.DEBUG)
        self.prefix = prefix
        self.seen = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if record.getMessage().startswith(self.prefix):
            self.seen.set()


class HugeCollector:
    """One metric whose help text is larger than every socket buffer on the way: the server is
    still writing it when the client goes."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("huge", "x" * (32 << 20), value=1)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_client_resetting_mid_answer_is_a_debug_line_not_a_traceback(
    pki: Pki, source: FakeSource, capsys: pytest.CaptureFixture[str], tls: bool
) -> None:
    server = ExporterServer(
        ("127.0.0.1", 0),
        source,
        only(HugeCollector()),
        web_config=web_config(pki, users=False) if tls else None,
    )
    server.start()
    recorded = _Recorded("connection from 127.0.0.1 broke off")
    server_logger = logging.getLogger("exporter.server")
    server_logger.addHandler(recorded)
    level = server_logger.level
    server_logger.setLevel(logging.DEBUG)
    try:
        client = socket.create_connection(("127.0.0.1", server.port), TIMEOUT)
        if tls:
            context = ssl.create_default_context(cafile=str(pki.ca))
            client = context.wrap_socket(client, server_hostname="127.0.0.1")
        client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.recv(1024).startswith(b"HTTP/1.1 200")  # the answer is on its way
        # Linger 0: close() sends a reset, not a FIN.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        assert recorded.seen.wait(TIMEOUT), recorded.messages
        assert get(pki, f"{server.scheme}://127.0.0.1:{server.port}/healthz").status_code == 200
    finally:
        server_logger.removeHandler(recorded)
        server_logger.setLevel(level)
        server.stop()

    assert capsys.readouterr().err == ""
