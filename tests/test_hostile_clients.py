"""Hostile clients of the exporter's own server and files, over real loopback sockets (OS-chosen
ports): slow and silent connections, more of them than allowed, readers that take nothing,
request smuggling, auth bypass tricks, and hostile state files, configs and exemplars.

Issue 11, items 4, 8 (state file), 11 and 3 (config), and the attacks the exporter already
survived (200 concurrent scrapes, smuggling, auth bypass), kept so that no change regresses.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from exposing import exporter_metrics, only
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from test_server import USER, FakeReload, FakeSource, snapshot, web_config
from test_state import KEY, STREAM, TARGET, changed, load
from test_webconfig import PASSWORD, Pki, make_pki

from exporter.api_stats import ApiStats
from exporter.collector import CICollector
from exporter.config import ConfigError, parse_config
from exporter.exposition import Expositions
from exporter.httpserver import BoundedHTTPServer, ConnectionLimits
from exporter.server import ExporterServer
from exporter.snapshot import Snapshot

TIMEOUT = 5.0
BOUND = 2.0  # seconds a real scrape may take while the server is under attack
SECRET_ID = "AKIDh0st1le5ecret1d000000000000000000"
SECRET_KEY = "h0St1lEkEy-7a6b5c4d3e2f10011f2e3d4c5b6a"
TOKEN = "h0St1lEt0kEn-0123456789abcdefFEDCBA9876543210"
SLOWLORIS = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Wait: "


def assert_no_secret(text: str, where: str) -> None:
    """Not one 16-character piece of the key, the token or the secret id."""
    for secret in (SECRET_ID, SECRET_KEY, TOKEN):
        for start in range(len(secret) - 15):
            assert secret[start : start + 16] not in text, f"{where} holds a piece of a secret"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def serve(
    *,
    limits: ConnectionLimits | None = None,
    tls: Pki | None = None,
    users: bool = False,
    metrics: Expositions | None = None,
    reload: FakeReload | None = None,
) -> ExporterServer:
    source = FakeSource()
    source.is_ready = True
    if metrics is None:
        metrics = exporter_metrics(source)
    web = None
    if tls is not None:
        web = web_config(tls, users=users)
    server = ExporterServer(
        ("127.0.0.1", 0), source, metrics, web_config=web, reload=reload, limits=limits
    )
    server.start()
    return server


@pytest.fixture
def server() -> Iterator[ExporterServer]:
    server = serve()
    yield server
    server.stop()


def base_url(server: ExporterServer) -> str:
    return f"{server.scheme}://127.0.0.1:{server.port}"


def scrape(server: ExporterServer, path: str, pki: Pki | None = None) -> requests.Response:
    """A real scrape, timed: it must be answered within BOUND."""
    began = time.monotonic()
    response = requests.get(
        base_url(server) + path,
        timeout=TIMEOUT,
        verify=str(pki.ca) if pki else True,
        auth=(USER, PASSWORD) if pki else None,
    )
    assert time.monotonic() - began < BOUND, f"{path} took {time.monotonic() - began:.2f}s"
    return response


def connections(port: int, count: int, first_bytes: bytes = b"") -> list[socket.socket]:
    opened = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), TIMEOUT)
        if first_bytes:
            sock.sendall(first_bytes)
        opened.append(sock)
    return opened


def closed_by_server(socks: list[socket.socket], wanted: int, timeout: float) -> int:
    """Waits until `wanted` of `socks` have been closed by the server (EOF or reset) or the
    timeout passes; how many were."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    closed = 0
    deadline = time.monotonic() + timeout
    while closed < wanted and time.monotonic() < deadline:
        for key, _ in selector.select(deadline - time.monotonic()):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                selector.unregister(sock)
                closed += 1
    selector.close()
    return closed


def rss_kib(pid: int | str = "self") -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


# --- item 4: connections are bounded ---------------------------------------------------------


def still_open(socks: list[socket.socket]) -> bool:
    """Whether none of `socks` has been closed by the server (nor sent anything)."""
    for sock in socks:
        sock.setblocking(False)
        try:
            sock.recv(1)  # TLS: takes the session tickets sent after the handshake
        except (BlockingIOError, ssl.SSLWantReadError):
            continue
        except OSError:
            return False
        return False  # end of file, or an answer to a request never sent
    return True


def tls_slowloris(port: int, pki: Pki, count: int) -> list[socket.socket]:
    """Connections that finish the TLS handshake, then send half a request head."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    opened = []
    for sock in connections(port, count):
        wrapped = context.wrap_socket(sock, server_hostname="127.0.0.1")
        wrapped.sendall(SLOWLORIS)
        opened.append(wrapped)
    return opened


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_scrape_is_served_while_300_slow_clients_hang_on(pki: Pki, tls: bool) -> None:
    server = serve(tls=pki if tls else None, users=tls)
    port = server.port
    threads = threading.active_count()
    rss = rss_kib()
    hanging: list[socket.socket] = []
    try:
        hanging += connections(port, 100)  # silent
        if tls:
            hanging += connections(port, 100, b"\x16\x03\x01\x00")  # half a ClientHello
            hanging += tls_slowloris(port, pki, 100)
        else:
            hanging += connections(port, 100, b"G")
            hanging += connections(port, 100, SLOWLORIS)  # a head that never ends
        for path in ("/metrics", "/healthz", "/metrics"):
            assert scrape(server, path, pki if tls else None).status_code == 200
        # No thread per connection, no spinning loop, little memory.
        assert threading.active_count() == threads
        cpu = time.process_time()
        threading.Event().wait(0.5)
        assert time.process_time() - cpu < 0.2
        assert rss_kib() - rss < 32 * 1024
        assert still_open(hanging)  # 300 is under the limit: none was closed
    finally:
        server.stop()
        for sock in hanging:
            sock.close()


def test_at_the_connection_limit_the_oldest_silent_ones_go_and_it_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve(limits=ConnectionLimits(max_connections=20))
    caplog.set_level(logging.INFO, logger="exporter.httpserver")
    try:
        hanging = connections(server.port, 300, SLOWLORIS)
        # The 280 oldest are closed to make room, the newest 20 stay.
        assert closed_by_server(hanging[:280], 280, TIMEOUT) == 280
        assert scrape(server, "/metrics").status_code == 200
        assert scrape(server, "/healthz").status_code == 200
    finally:
        server.stop()
        for sock in hanging:
            sock.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "connection limit reached: closing the oldest connections without a request"
    ]
    assert warnings[0].__dict__["max_connections"] == 20


def test_a_head_not_complete_within_the_header_timeout_is_dropped() -> None:
    server = serve(limits=ConnectionLimits(header_timeout=0.3))
    try:
        began = time.monotonic()
        silent, trickling = connections(server.port, 2)
        # A byte every 50 ms: progress does not buy time, the whole head has 0.3 s.
        trickled = b""
        for byte in SLOWLORIS:
            try:
                trickling.sendall(bytes([byte]))
            except OSError:
                break
            trickled += bytes([byte])
            if closed_by_server([trickling], 1, 0.05):
                break
        assert closed_by_server([silent, trickling], 2, TIMEOUT) == 2
        assert 0.3 <= time.monotonic() - began < 0.3 + BOUND
        assert len(trickled) < len(SLOWLORIS)
        assert scrape(server, "/healthz").status_code == 200
    finally:
        server.stop()


def test_idle_keep_alive_connections_hold_no_worker() -> None:
    server = serve(limits=ConnectionLimits(max_requests=2))
    sessions = [requests.Session() for _ in range(10)]
    try:
        for session in sessions:  # each keeps its connection open afterwards
            assert session.get(base_url(server) + "/healthz", timeout=TIMEOUT).status_code == 200
        assert scrape(server, "/metrics").status_code == 200
        # And the kept connections serve again.
        assert all(s.get(base_url(server) + "/readyz").status_code == 200 for s in sessions)
    finally:
        for session in sessions:
            session.close()
        server.stop()


class HugeCollector:
    """An exposition larger than every socket buffer on the way."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("huge", "x" * (32 << 20), value=1)


def test_a_client_that_reads_nothing_frees_its_worker_after_the_send_timeout() -> None:
    server = serve(
        metrics=only(HugeCollector()), limits=ConnectionLimits(max_requests=1, send_timeout=0.3)
    )
    try:
        with socket.create_connection(("127.0.0.1", server.port), TIMEOUT) as reader:
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert reader.recv(12) == b"HTTP/1.1 200"  # the only worker is writing to it
            # It is freed after 0.3 s, and answers the next one.
            assert scrape(server, "/healthz").status_code == 200
    finally:
        server.stop()


def test_200_concurrent_scrapes_are_all_served(server: ExporterServer) -> None:
    start = threading.Barrier(200)
    statuses: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        start.wait(TIMEOUT)
        status = requests.get(base_url(server) + "/metrics", timeout=4 * TIMEOUT).status_code
        with lock:
            statuses.append(status)

    scrapers = [threading.Thread(target=one) for _ in range(200)]
    for thread in scrapers:
        thread.start()
    for thread in scrapers:
        thread.join(6 * TIMEOUT)
    assert statuses == [200] * 200


def test_sigterm_stops_the_process_within_2s_under_attack(tmp_path: Path, pki: Pki) -> None:
    """The CLI as a real process, its open-file limit at 128 (so at most 64 connections), basic
    auth, debug logs: 300 slow clients do not starve a scrape, do not spin a core, and SIGTERM
    ends it within 2 s; no piece of a secret shows anywhere."""
    config = tmp_path / "config.yml"
    config.write_text(
        "targets:\n  - bucket: hostile-1250000000\n    region: ap-beijing\n"
        "    endpoint: http://127.0.0.1:9\n    services: {speech: {}}\n"
    )
    web = tmp_path / "web.yml"
    web.write_text(web_config_text(pki))
    env = {
        **os.environ,
        "TENCENTCLOUD_SECRET_ID": SECRET_ID,
        "TENCENTCLOUD_SECRET_KEY": SECRET_KEY,
        "TENCENTCLOUD_SESSION_TOKEN": TOKEN,
    }

    flags = ["--config.file", str(config), "--web.config.file", str(web)]
    flags += ["--log.level", "debug", "--web.listen-address", "127.0.0.1:0"]
    process = subprocess.Popen(
        # The shell lowers the open-file limit, then becomes the exporter.
        ["sh", "-c", 'ulimit -n 128 && exec "$0" "$@"', sys.executable, "-m", "exporter", *flags],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    hanging: list[socket.socket] = []
    try:
        assert process.stderr is not None
        line = ""
        while "serving metrics" not in line:
            line = process.stderr.readline()
            assert line, "the exporter exited before serving:\n" + "".join(lines)
            lines.append(line)
        reader = threading.Thread(target=lambda: lines.extend(process.stderr or ()), daemon=True)
        reader.start()
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
        url = f"https://127.0.0.1:{port}"
        idle = rss_kib(process.pid)
        hanging = connections(port, 150) + connections(port, 150, b"\x16\x03\x01\x00")
        try:
            pages = [scrape_url(url + path, pki) for path in ("/metrics", "/healthz", "/")]
        except requests.RequestException as error:  # the exporter's log says why
            raise AssertionError(f"{error}\n" + "".join(lines)[-20000:]) from error
        assert [p.status_code for p in pages] == [200, 200, 200]
        assert rss_kib(process.pid) < max(2 * idle, idle + 32 * 1024)
        cpu = cpu_seconds(process.pid)
        threading.Event().wait(0.5)
        assert cpu_seconds(process.pid) - cpu < 0.2  # no accept loop spinning
        process.send_signal(signal.SIGTERM)
        began = time.monotonic()
        assert process.wait(TIMEOUT) == 0
        assert time.monotonic() - began <= 2.0
        reader.join(TIMEOUT)
    finally:
        for sock in hanging:
            sock.close()
        if process.poll() is None:
            process.kill()
            process.wait(TIMEOUT)
    output = "".join(lines)
    assert "Traceback" not in output
    assert "connection limit lowered" in output and "connection limit reached" in output
    assert output.count("connection limit reached") == 1
    for text in [output, *(p.text for p in pages)]:
        assert_no_secret(text, "the process's log or pages")


# The server in a process of its own whose open-file limit is below its connection limit (the
# share of the limit it takes is not looked at): accept() meets EMFILE.
NO_FILES_LEFT = """
import resource, sys
from exporter import httpserver
from exporter.exposition import Expositions
from exporter.httpserver import ConnectionLimits
from exporter.logs import setup_logging
from exporter.server import ExporterServer
from exporter.snapshot import Snapshot

class Source:
    def collect(self): return iter(())
    def snapshot(self): return Snapshot(())
    def ready(self): return True

setup_logging("info", "logfmt")
httpserver._file_limit_share = lambda wanted: wanted
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
limits = ConnectionLimits(max_connections=1000)
empty = Snapshot(())
metrics = Expositions(lambda: empty, lambda t: iter(()), lambda s: iter(()), Source())
server = ExporterServer(("127.0.0.1", 0), Source(), metrics, limits=limits)
server.start()
print(server.port, flush=True)
sys.stdin.read()
server.stop()
"""


def test_out_of_file_descriptors_the_oldest_go_and_the_loop_does_not_spin() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", NO_FILES_LEFT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    hanging: list[socket.socket] = []
    try:
        assert process.stdout is not None and process.stdin is not None
        port = int(process.stdout.readline())
        hanging = connections(port, 200)
        assert closed_by_server(hanging[:100], 100, TIMEOUT) == 100  # the oldest made room
        began = time.monotonic()
        response = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT)
        assert response.status_code == 200 and time.monotonic() - began < BOUND
        cpu = cpu_seconds(process.pid)
        threading.Event().wait(0.5)
        assert cpu_seconds(process.pid) - cpu < 0.2
        process.stdin.close()
        assert process.wait(TIMEOUT) == 0
    finally:
        for sock in hanging:
            sock.close()
        if process.poll() is None:
            process.kill()
            process.wait(TIMEOUT)
    assert process.stderr is not None
    output = process.stderr.read()
    assert output.count("connection limit reached") == 1, output
    assert "Too many open files" in output and "Traceback" not in output


def web_config_text(pki: Pki) -> str:
    from test_webconfig import PASSWORD_HASH

    return (
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
        f"basic_auth_users:\n  {USER}: '{PASSWORD_HASH}'\n"
    )


def scrape_url(url: str, pki: Pki) -> requests.Response:
    began = time.monotonic()
    response = requests.get(url, timeout=TIMEOUT, verify=str(pki.ca), auth=(USER, PASSWORD))
    assert time.monotonic() - began < BOUND, f"{url} took {time.monotonic() - began:.2f}s"
    return response


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- attacks already survived: smuggling and auth bypass -------------------------------------


def exchange(port: int, request: bytes, pki: Pki | None = None) -> bytes:
    """Everything the server sends back for `request`, until it closes the connection."""
    sock = socket.create_connection(("127.0.0.1", port), TIMEOUT)
    if pki is not None:
        context = ssl.create_default_context(cafile=str(pki.ca))
        sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
    with sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


SMUGGLED = b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
SMUGGLING = {
    "CL.TE": b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "TE.CL": b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 3\r\n\r\n" + f"{len(SMUGGLED):x}\r\n".encode() + SMUGGLED + b"\r\n0\r\n\r\n",
    "two lengths": b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
    b"Content-Length: " + str(len(SMUGGLED)).encode() + b"\r\n\r\n" + SMUGGLED,
    "spaced TE": b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"
    + f"{len(SMUGGLED):x}\r\n".encode()
    + SMUGGLED
    + b"\r\n0\r\n\r\n",
    "signed length": b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: +0\r\n\r\n" + SMUGGLED,
}


@pytest.mark.parametrize("case", sorted(SMUGGLING))
def test_a_smuggled_request_is_never_served(case: str) -> None:
    reload = FakeReload((True, ""))
    server = serve(reload=reload)
    try:
        answer = exchange(server.port, SMUGGLING[case])
        assert scrape(server, "/healthz").status_code == 200
    finally:
        server.stop()
    statuses = re.findall(rb"^HTTP/1\.1 (\d{3})", answer, re.M)
    assert len(statuses) == 1, answer
    assert b"\r\nConnection: close\r\n" in answer
    assert reload.calls == 0


BYPASS_PATHS = [
    "/metrics", "//metrics", "/%2Fmetrics", "/%6Detrics", "/metrics/", "/./metrics",
    "/healthz/../metrics", "/healthz%2F..%2Fmetrics", "/healthz/", "/HEALTHZ", "/", "//",
    "/-/reload", "/-/reload/", "http://127.0.0.1/metrics", "*", "/metrics?/healthz",
]  # fmt: skip
BYPASS_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "BREW"]


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_no_path_or_method_trick_gets_past_basic_auth(pki: Pki, tls: bool) -> None:
    reload = FakeReload((True, ""))
    server = ExporterServer(
        ("127.0.0.1", 0),
        FakeSource(),
        only(CollectorRegistry()),
        web_config=web_config(pki, tls="" if tls else None),
        reload=reload,
    )
    server.start()
    wrong = "Authorization: Basic cHJvbWV0aGV1czp3cm9uZw==\r\n"  # prometheus:wrong
    try:
        for method in BYPASS_METHODS:
            for path in BYPASS_PATHS:
                for auth in ("", wrong, "Authorization: Basic\r\n", "Authorization: Bearer x\r\n"):
                    request = (
                        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
                        "Connection: close\r\n\r\n"
                    )
                    answer = exchange(server.port, request.encode(), pki if tls else None)
                    status = answer[9:12]
                    assert status in (b"401", b"400"), (method, path, auth, answer[:80])
    finally:
        server.stop()
    assert reload.calls == 0


# --- item 8 (state part) and item 11: hostile state files and exemplars ----------------------


def test_one_bad_id_skips_its_record_not_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(changed(f"{STREAM}.active.0.0", "j\u0085" + "x" * 2000))
    caplog.set_level(logging.INFO, logger="exporter.state")
    loaded = load(path)
    assert KEY in loaded[TARGET].trackers and len(loaded[TARGET].retired) == 1
    [warning] = caplog.records
    assert warning.levelno == logging.WARNING and "x" * 16 not in warning.__dict__["error"]


def test_a_state_file_over_the_cap_is_refused_unread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    with path.open("wb") as handle:  # 300 MB, sparse: nothing to write, all of it to read
        handle.truncate(300 * 1024 * 1024)
    caplog.set_level(logging.INFO, logger="exporter.state")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert load(path) == {}
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 16 * 1024  # KiB
    [warning] = caplog.records
    assert "larger than 16 MiB" in warning.__dict__["error"]


@pytest.mark.parametrize(
    "content",
    [
        f"[default]\nsecret_id = {SECRET_ID}\nsecret_key = {SECRET_KEY}\n",
        json.dumps({"format": "tencent-ci-exporter-state", "version": SECRET_KEY}),
        json.dumps({SECRET_KEY: TOKEN}),
        f"\xff{SECRET_KEY}",
    ],
    ids=["ini", "state-shaped", "json", "binary"],
)
def test_a_symlinked_state_file_is_not_followed_and_nothing_of_it_is_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    secret = tmp_path / "credentials"
    secret.write_bytes(content.encode("utf-8", "surrogateescape"))
    path = tmp_path / "state.json"
    path.symlink_to(secret)
    caplog.set_level(logging.DEBUG, logger="exporter.state")
    assert load(path) == {}
    [warning] = caplog.records
    assert "symbolic link" in warning.__dict__["error"]
    assert_no_secret(caplog.text + repr(warning.__dict__), "the warning")


def test_a_long_job_id_gets_no_exemplar_and_the_exposition_parses() -> None:
    source = FakeSource()
    long_id = "j" * 1500
    target = snapshot().targets[0]
    streams = tuple(replace(stream, last_failed_job=long_id) for stream in target.streams)
    source.current = Snapshot((replace(target, streams=streams),))
    registry = CollectorRegistry()
    registry.register(CICollector(source, ApiStats(), "9.9"))
    text = openmetrics(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}  # a strict parser
    assert all(s.exemplar is None for s in families["tencent_ci_job_failures"].samples)
    assert long_id not in text


# --- item 3 (config part): a secret in a wrong credentials field -----------------------------

WRONG_FIELDS = {
    "as a key": f"      {SECRET_KEY}: x\n",
    "key glued to its name": f"      secret_key:{SECRET_KEY}\n",
    "under a misspelt key": f"      secret_id: a\n      secretkey: {SECRET_KEY}\n",
    "in expiration": f"      secret_id: a\n      secret_key: b\n      expiration: {TOKEN}\n",
    "in profile": f"      file: /dev/null\n      profile: '[{SECRET_KEY}]'\n",
    "in file": f"      file: /nonexistent/{SECRET_KEY}\n",
    "in cvm_role": f"      cvm_role: '{SECRET_KEY}!'\n",
    "in metadata_endpoint": f"      cvm_role: auto\n      metadata_endpoint: {TOKEN}\n",
    "as a variable": f"      secret_id: a\n      secret_key: '${{{SECRET_KEY}}}'\n",
    "id as a variable": f"      secret_id: '${{{SECRET_ID}}}'\n      secret_key: b\n",
    "after a star": f"      secret_id: a\n      secret_key: *{SECRET_KEY}\n",
    "a list": f"      secret_id: a\n      secret_key: [{SECRET_KEY}]\n",
    "a number": "      secret_id: a\n      secret_key: 12345678901234567890123\n",
}


@pytest.mark.parametrize("case", sorted(WRONG_FIELDS))
def test_a_config_error_never_echoes_a_credentials_value(case: str) -> None:
    text = (
        "targets:\n  - bucket: b-1250000000\n    region: ap-beijing\n    credentials:\n"
        + WRONG_FIELDS[case]
    )
    with pytest.raises(ConfigError) as error:
        parse_config(text, "config.yml", {})
    message = str(error.value)
    assert "\n" not in message and message.startswith("config.yml: ")
    assert_no_secret(message, "the config error")
    assert "1234567890123456" not in message


def test_an_event_of_a_connection_closed_earlier_in_the_round_leaves_its_fd_alone() -> None:
    """One round of the loop: an accept makes room by closing connection A, the OS gives A's fd
    to the connection it accepts (B), then A's event of the same round comes up. Handling it, or
    closing A again, must not unregister B (B would never be served: a scrape under attack
    timed out so)."""
    server = BoundedHTTPServer(
        ("127.0.0.1", 0), lambda *args: False, lambda: None, ConnectionLimits()
    )
    opened: list[socket.socket] = []
    try:
        a_client, a_server = socket.socketpair()
        opened += [a_client, a_server]
        server._opened(a_server, ("127.0.0.1", 1))
        stale = server._selector.get_key(a_server.fileno())
        a_client.sendall(b"GET / HTTP/1.1\r\n")  # A's event of the round
        server._close(stale.data)  # the room made
        pair = socket.socketpair()
        opened += pair
        (b_server,) = [s for s in pair if s.fileno() == stale.fd]  # the lowest free fd: A's
        server._opened(b_server, ("127.0.0.1", 2))
        b = server._selector.get_key(stale.fd).data
        assert b is not stale.data
        server._dispatch(stale)
        server._close(stale.data)
        assert server._selector.get_key(stale.fd).data is b
    finally:
        for sock in opened:
            sock.close()
        server.stop()
