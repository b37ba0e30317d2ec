"""The command a user runs, as a real process: flags, one-line errors, the demo, signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from test_webconfig import make_pki, tls_section

from exporter.demo import DEMO_POLL_INTERVAL
from exporter.simulator import Simulator
from exporter.state import load_state
from exporter.stream_counts import CodeLimiter

FAMILIES = (
    "tencent_ci_queue_info",
    "tencent_ci_queue_paused",
    "tencent_ci_queue_max_concurrent",
    "tencent_ci_queue_max_size",
    "tencent_ci_queue_notify_enabled",
    "tencent_ci_jobs",
    "tencent_ci_jobs_finished",
    "tencent_ci_job_failures",
    "tencent_ci_job_run_duration_seconds",
    "tencent_ci_job_queue_wait_seconds",
    "tencent_ci_oldest_job_timestamp_seconds",
    "tencent_ci_up",
    "tencent_ci_last_successful_poll_timestamp_seconds",
    "tencent_ci_poll_duration_seconds",
    "tencent_ci_api_requests",
    "tencent_ci_api_errors",
    "tencent_ci_api_request_duration_seconds",
    "tencent_ci_tracked_jobs",
    "tencent_ci_exporter_build_info",
)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_no_config_says_what_to_do() -> None:
    line = one_line_error(run_cli())
    assert "--config.file" in line and "--demo" in line


def test_bad_config_is_one_line_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("targets:\n  - bucket: nobucketid\n    region: ap-beijing\n")
    line = one_line_error(run_cli("--config.file", str(config)))
    assert "targets[0].bucket" in line and str(config) in line


def test_missing_config_file(tmp_path: Path) -> None:
    line = one_line_error(run_cli("--config.file", str(tmp_path / "absent.yml")))
    assert "absent.yml" in line


def test_check_config_validates_and_exits(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        "poll_interval: 30s\ntargets:\n  - bucket: examplebucket-1250000000\n"
        "    region: ap-chongqing\n    services:\n      speech: {}\n"
    )
    env = {"TENCENTCLOUD_SECRET_ID": "AKIDcheck", "TENCENTCLOUD_SECRET_KEY": "s3cr3t-check"}
    result = run_cli("--config.file", str(config), "--check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "s3cr3t-check" not in result.stdout + result.stderr


def test_deeply_nested_config_is_one_line_even_when_only_checked(tmp_path: Path) -> None:
    config = tmp_path / "deep.yml"
    config.write_text("[" * 20000)
    for extra in ([], ["--check-config"]):
        line = one_line_error(run_cli("--config.file", str(config), *extra))
        assert line == f"tencent-ci-exporter: {config}: YAML nested too deeply"


@pytest.mark.parametrize("flags", [["--check-config"], ["--demo", "--check-config"]])
def test_check_config_without_a_file_is_a_usage_error(flags: list[str]) -> None:
    line = one_line_error(run_cli(*flags))
    assert line == "tencent-ci-exporter: --check-config needs --config.file"


def test_port_in_use_is_one_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli("--demo", "--web.listen-address", f"127.0.0.1:{port}")
    line = one_line_error(result)
    assert line.startswith(
        f"tencent-ci-exporter: --web.listen-address: cannot listen on 127.0.0.1:{port}: "
    )
    assert "in use" in line


def test_a_callback_port_in_use_is_one_line(tmp_path: Path) -> None:
    """The receiver cannot listen at start: exit 2 naming the setting, the /metrics port freed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = tmp_path / "config.yml"
        config.write_text(
            "targets:\n  - bucket: b-1250000000\n    region: ap-guangzhou\n"
            "    credentials: {secret_id: AKIDtest, secret_key: test-key}\n"
            f"callbacks:\n  listen_address: 127.0.0.1:{port}\n"
            "  secret: abcdefghijklmnopqrstuvwxyz\n"
        )
        result = run_cli("--config.file", str(config), "--web.listen-address", "127.0.0.1:0")
    line = one_line_error(result)
    assert line.startswith(
        "tencent-ci-exporter: callbacks.listen_address: cannot listen for callbacks on "
        f"127.0.0.1:{port}: "
    )


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--web.listen-address", "nonsense"], "--web.listen-address"),
        (["--web.telemetry-path", "metrics"], "--web.telemetry-path"),
        (["--web.telemetry-path", "/metrics?x=1"], "--web.telemetry-path"),
        (["--log.level", "loud"], "--log.level"),
        (["--log.format", "xml"], "--log.format"),
        (["--shard.count", "0"], "--shard.count"),
        (["--shard.count", "many"], "--shard.count"),
        (["--shard.count", "3", "--shard.index", "3"], "--shard.index"),
    ],
)
def test_bad_flags_are_one_line(flags: list[str], named: str) -> None:
    assert named in one_line_error(run_cli("--demo", *flags))


@pytest.fixture
def demo() -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--demo", "--web.listen-address", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        failed = process.stderr.read() if process.poll() and process.stderr else ""
        assert "http://" in line, line + failed
        url = line[line.index("http://") :].split()[0]
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(5)


def nonzero_families(text: str) -> set[str]:
    found = set()
    for family in text_string_to_metric_families(text):
        if any(sample.value > 0 for sample in family.samples):
            found.add(family.name)
    return found


def test_demo_serves_every_family_with_values_within_two_poll_intervals(
    demo: tuple[subprocess.Popen[str], str],
) -> None:
    process, url = demo
    started = time.monotonic()
    # Two poll intervals, plus the process's own start-up (imports, first listings).
    deadline = started + 2 * DEMO_POLL_INTERVAL + 5
    missing: set[str] = set(FAMILIES)
    while time.monotonic() < deadline:
        body = requests.get(url, timeout=5).text
        missing = set(FAMILIES) - nonzero_families(body)
        if not missing:
            break
        time.sleep(0.5)
    assert not missing, f"families still zero or absent: {sorted(missing)}"
    base = url.rsplit("/", 1)[0]
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{base}/readyz", timeout=5).status_code == 200
    landing = requests.get(f"{base}/", timeout=5).text
    assert "demo-1250000000" in landing

    process.send_signal(signal.SIGTERM)
    began = time.monotonic()
    assert process.wait(5) == 0
    assert time.monotonic() - began < 2.0
    assert process.stderr is not None
    assert "Traceback" not in process.stderr.read()


def test_sigint_stops_the_demo_within_two_seconds(
    demo: tuple[subprocess.Popen[str], str],
) -> None:
    process, _ = demo
    process.send_signal(signal.SIGINT)
    began = time.monotonic()
    assert process.wait(5) == 0
    assert time.monotonic() - began < 2.0


# -- reload -----------------------------------------------------------------------------------

RELOAD_ID, RELOAD_KEY = "AKIDreload0000000000000000000000000", "reload-key-00000000000000000000"


def _config_text(sim: Simulator, buckets: list[str]) -> str:
    lines = ["poll_interval: 1s", "targets:"]
    for bucket in buckets:
        lines += [
            f"  - bucket: {bucket}",
            "    region: ap-beijing",
            f"    endpoint: {sim.endpoint(bucket)}",
            "    services: {speech: {}}",
        ]
    return "\n".join(lines) + "\n"


def _wait_for(
    url: str,
    predicate: Callable[[str], bool],
    timeout: float = 20.0,
    get: Callable[..., requests.Response] = requests.get,
) -> str:
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        body = get(url, timeout=5).text
        if predicate(body):
            return body
        time.sleep(0.1)
    raise AssertionError(f"condition not met; last body:\n{body}")


def _value(body: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None


@contextmanager
def exporter_process(config: Path, *flags: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The exporter as a real process on an OS-chosen port, with the reload tests' keys; yields
    it once it serves, with its metrics URL. Killed at the end if still running."""
    env = {**os.environ, "TENCENTCLOUD_SECRET_ID": RELOAD_ID, "TENCENTCLOUD_SECRET_KEY": RELOAD_KEY}
    command = [sys.executable, "-m", "exporter", "--config.file", str(config), *flags]
    process = subprocess.Popen(
        [*command, "--web.listen-address", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        line = ""
        while "serving metrics" not in line:
            line = process.stderr.readline()
            assert line, "the exporter exited before serving"
        url = line[line.index("url=") + 4 :].split()[0].strip('"')
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(5)


def two_buckets() -> Simulator:
    sim = Simulator({RELOAD_ID: RELOAD_KEY})
    for name in ("first-1250000000", "second-1250000000"):
        sim.add_bucket(name, "ap-beijing").add_queue("speech", name="asr")
    return sim


def test_sighup_reloads_a_valid_config_and_refuses_a_bad_one(tmp_path: Path) -> None:
    sim = two_buckets()
    config = tmp_path / "config.yml"
    both = ["first-1250000000", "second-1250000000"]
    with sim.start():
        config.write_text(_config_text(sim, ["first-1250000000"]))
        with exporter_process(config) as (process, url):
            _wait_for(url, lambda b: _value(b, "tencent_ci_up", bucket="first-1250000000") == 1)

            config.write_text(_config_text(sim, both))
            process.send_signal(signal.SIGHUP)
            body = _wait_for(
                url, lambda b: _value(b, "tencent_ci_up", bucket="second-1250000000") == 1
            )
            assert _value(body, "tencent_ci_config_last_reload_successful") == 1

            config.write_text(
                _config_text(sim, both).replace("poll_interval: 1s", "poll_interval: soon")
            )
            process.send_signal(signal.SIGHUP)
            body = _wait_for(
                url, lambda b: _value(b, "tencent_ci_config_last_reload_successful") == 0
            )
            # The running configuration stays.
            assert _value(body, "tencent_ci_up", bucket="second-1250000000") == 1
            assert process.stderr is not None
            error = ""
            while "reload failed" not in error:
                error = process.stderr.readline()
                assert error
            assert "poll_interval" in error and "Traceback" not in error

            process.send_signal(signal.SIGTERM)
            assert process.wait(5) == 0


def test_sigterm_mid_poll_exits_fast_and_leaves_the_state_file_whole(tmp_path: Path) -> None:
    sim = Simulator({RELOAD_ID: RELOAD_KEY})
    bucket = sim.add_bucket("first-1250000000", "ap-beijing")
    for n in range(6):
        queue = bucket.add_queue("speech", name=f"asr-{n}")
        bucket.start_job(bucket.create_job(queue, "SpeechRecognition"))
    state = tmp_path / "state.json"
    config = tmp_path / "config.yml"
    with sim.start():
        config.write_text(
            _config_text(sim, ["first-1250000000"]) + f"state_file: {state}\n"
            "rate_limit: {concurrency: 1}\n"
        )
        with exporter_process(config) as (process, _):
            deadline = time.monotonic() + 30
            while not state.exists():  # the first poll is done and saved
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.05)
            saved = state.read_bytes()
            # Every answer now takes a second: the next poll (13 calls, one at a time) is
            # surely in progress when the signal comes.
            sim.latency = 1.0
            sim.reset_requests()
            while sim.request_count() < 2:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            began = time.monotonic()
            assert process.wait(10) == 0
            assert time.monotonic() - began < 5.0
            assert process.stderr is not None
            assert "Traceback" not in process.stderr.read()

    # The poll cut short committed nothing: the file holds what the last whole poll saved
    # (but for its time stamp), and loads.
    def content(data: bytes) -> dict[str, object]:
        document = json.loads(data)
        document.pop("saved_at")
        return dict(document)

    assert content(state.read_bytes()) == content(saved)
    loaded = load_state(state, CodeLimiter(50), lambda name: deque(maxlen=50))
    (target,) = loaded.values()
    assert sum(t.tracked_jobs for t in target.trackers.values()) == 6


def test_bad_web_config_is_one_line(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  prometheus: hunter2-in-clear\n")
    line = one_line_error(run_cli("--demo", "--web.config.file", str(web)))
    assert line.startswith(f"tencent-ci-exporter: --web.config.file: {web}: ")
    assert "hunter2" not in line


def test_tls_basic_auth_and_reload_endpoint_in_the_real_process(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    password = "scrape-password-31337"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(tls_section(pki) + f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    sim = two_buckets()
    config = tmp_path / "config.yml"
    with sim.start():
        config.write_text(_config_text(sim, ["first-1250000000", "second-1250000000"]))
        with exporter_process(config, "--web.config.file", str(web)) as (process, url):
            assert url.startswith("https://")
            base = url.rsplit("/", 1)[0]
            session = requests.Session()
            session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides session.verify
            session.verify = str(pki.ca)
            assert session.get(url, timeout=5).status_code == 401
            assert session.get(url, auth=("prometheus", "wrong"), timeout=5).status_code == 401
            assert session.get(f"{base}/healthz", timeout=5).status_code == 200
            session.auth = ("prometheus", password)
            _wait_for(
                url,
                lambda b: _value(b, "tencent_ci_up", bucket="second-1250000000") == 1,
                get=session.get,
            )

            config.write_text(_config_text(sim, ["first-1250000000"]))
            answer = session.post(f"{base}/-/reload", timeout=10)
            assert answer.status_code == 200, answer.text
            body = session.get(url, timeout=5).text
            assert _value(body, "tencent_ci_up", bucket="second-1250000000") is None

            config.write_text("targets: nonsense\n")
            answer = session.post(f"{base}/-/reload", timeout=10)
            assert answer.status_code == 500 and "targets" in answer.text
            body = session.get(url, timeout=5).text
            assert _value(body, "tencent_ci_config_last_reload_successful") == 0
            assert _value(body, "tencent_ci_up", bucket="first-1250000000") is not None
            process.terminate()
            process.wait(5)
            assert process.stderr is not None
            assert password not in process.stderr.read()


def test_a_reload_that_loses_the_callback_receiver_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A move of the receiver whose old port was taken meanwhile leaves none: the reload's
    log line must not claim the running configuration is kept whole."""
    from exporter.app import RELOAD_FAILED, RELOAD_FAILED_NO_RECEIVER, App
    from exporter.config import load_config
    from exporter.sharding import Shard

    path = tmp_path / "config.yml"
    path.write_text(
        "targets:\n  - bucket: b-1250000000\n    region: ap-guangzhou\n"
        "    credentials: {secret_id: AKIDtest, secret_key: test-key}\n"
        "callbacks:\n  listen_address: 127.0.0.1:0\n  secret: abcdefghijklmnopqrstuvwxyz\n"
    )
    config = load_config(str(path))
    app = App(config, ("127.0.0.1", 0), "/metrics", Shard(0, 1), config_file=str(path))
    app.callbacks.configure(app.config.callbacks)
    try:

        def fails(config: object, lose: bool) -> None:
            if lose:
                app.callbacks.stop()
            raise OSError("cannot listen")

        for lose, said in ((False, RELOAD_FAILED), (True, RELOAD_FAILED_NO_RECEIVER)):
            monkeypatch.setattr(app.callbacks, "configure", lambda c, lose=lose: fails(c, lose))
            caplog.clear()
            assert app.reload() == (False, "callbacks.listen_address: cannot listen")
            assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [said]
    finally:
        app.callbacks.stop()
