"""The secret key and the session token never show: not in logs (any level, any format, with
stacks), not on /metrics or the landing page, not in error messages, reprs or tracebacks,
whatever fails: every simulator fault, refused keys (one fault even echoes the token back, as
a careless proxy might), expired keys, and a bad configuration. In process, and as a real
process at debug level."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from exporter.api_stats import ApiStats
from exporter.ci.client import CIClient
from exporter.ci.models import CIError
from exporter.ci.services import SERVICES
from exporter.config import Config, ConfigError, ServiceConfig, TargetConfig, load_config
from exporter.credentials import Credentials, StaticCredentials
from exporter.exposition import exporter_expositions
from exporter.logs import JsonFormatter, LogfmtFormatter
from exporter.poller import Poller
from exporter.ratelimit import Pacer, RequestGate, RetryPolicy
from exporter.server import ExporterServer
from exporter.simulator import Fault, Simulator

SECRET_ID = "AKIDsecrets000000000000000000000000"
SECRET_KEY = "sEcReTkEy-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
TOKEN = "ToKeN-9a8b7c6d5e4f30211203f4e5d6c7b8a9"
# Pieces too, so that a secret cut short (a message truncated to fit a line) is still caught.
SECRETS = (SECRET_KEY, TOKEN, "0f1e2d3c4b5a6978", "9a8b7c6d5e4f3021")
BUCKET = "secrets-1250000000"
TAGS = ("Transcode", "Snapshot", "Animation", "Concat", "SmartCover", "Segment")
REGION = "ap-beijing"
WAIT = 60.0

# Every fault the simulator has, as the tests of test_faults.py use them.
FAULTS = (
    Fault("http_500"),
    Fault("http_503"),
    Fault("http_429", retry_after=3),
    Fault("http_429", retry_after=3, retry_after_as_date=True),
    Fault("slow_down"),
    Fault("slow", path="/queue", delay=1.0),
    Fault("reset"),
    Fault("truncated"),
    Fault("malformed"),
    Fault("html", status=502),
    Fault("html", status=200),
    Fault("oversized", size=2 << 20),
    Fault("repeat_token"),
    Fault("missing_field", job_field="JobId"),
    Fault("missing_field", job_field="CreationTime"),
    Fault("unknown_state"),
    Fault("skew", offset=3600),
    Fault("auth", code="AccessDenied"),  # quotes the token it was sent
    Fault("auth", status=401, code="SignatureExpired"),
)


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} holds {secret[:6]}..."


def fresh(fault: Fault) -> Fault:
    """A copy with no hits yet (the module's FAULTS are shared by the tests)."""
    return Fault(**{k: v for k, v in vars(fault).items() if k != "hits"})


def make_simulator() -> Simulator:
    sim = Simulator({SECRET_ID: SECRET_KEY}, tokens={SECRET_ID: TOKEN}, seed=5)
    ci = sim.add_bucket(BUCKET, REGION)
    queue = ci.add_queue("media", name="secrets-q")
    for n in range(150):  # more than a page, so that listings follow NextToken
        job = ci.create_job(queue, "Transcode")
        if n % 3:
            ci.start_job(job)
        if n % 5 == 0:
            ci.finish_job(job, "Failed", code="E_SECRET", message="it failed")
    return sim.start()


class Switchable:
    """Keys that a test can let expire."""

    def __init__(self) -> None:
        self.current = StaticCredentials(Credentials(SECRET_ID, SECRET_KEY, TOKEN))

    def get(self) -> Credentials:
        return self.current.get()


class NoSleep:
    def __call__(self, stopping: threading.Event, seconds: float) -> bool:
        return stopping.is_set()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = make_simulator()
    yield simulator
    simulator.stop()


def test_in_process_nothing_leaks(sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    texts: dict[str, str] = {}
    credentials = Switchable()
    stopping = threading.Event()

    def build(target: TargetConfig, config: Config, stats: ApiStats) -> CIClient:
        return CIClient(
            bucket=target.bucket,
            region=target.region,
            endpoint=target.endpoint,
            credentials=credentials,
            timeout=config.request_timeout,
            stats=stats,
            max_body_bytes=1 << 20,
            retry=RetryPolicy(2, 0.1, 0.2),
            gate=RequestGate(1000, 100, 4),
            stopping=stopping,
            sleep=NoSleep(),
            pacer=Pacer(clock=lambda: 0.0),
        )

    target = TargetConfig(
        BUCKET,
        REGION,
        sim.endpoint(BUCKET),
        Credentials(SECRET_ID, SECRET_KEY, TOKEN),
        (ServiceConfig("media", ("Transcode",)),),
    )
    config = Config((target,), poll_interval=60, request_timeout=0.5)
    stats = ApiStats()
    poller = Poller(config, stats, client_factory=build)
    server = ExporterServer(("127.0.0.1", 0), poller, exporter_expositions(poller, stats, "test"))
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    client = poller.targets[0].client
    (queue_id,) = [q.queue_id for q in sim.bucket(BUCKET).queues()]
    try:

        def observe(name: str) -> None:
            poller.poll_once()
            texts[f"{name} /metrics"] = requests.get(f"{base}/metrics", timeout=10).text
            texts[f"{name} /"] = requests.get(f"{base}/", timeout=10).text
            texts[f"{name} last_error"] = poller.snapshot().targets[0].last_error
            texts[f"{name} snapshot"] = repr(poller.snapshot())
            try:
                client.list_queues(SERVICES["media"])
                client.list_jobs(SERVICES["media"], queue_id, "Transcode", ["Running"])
            except CIError as error:
                texts[f"{name} error"] = (
                    str(error)
                    + repr(error)
                    + "".join(traceback.format_exception(type(error), error, error.__traceback__))
                )

        observe("healthy")
        for fault in FAULTS:
            sim.faults.add(fresh(fault))
            observe(fault.kind)
            sim.faults.clear()
        # Refused keys: a rotated key, a wrong token, keys that expired.
        sim.api.credentials[SECRET_ID] = "rotated"
        observe("rotated key")
        sim.api.credentials[SECRET_ID] = SECRET_KEY
        sim.api.tokens[SECRET_ID] = "another-token"
        observe("wrong token")
        sim.api.tokens[SECRET_ID] = TOKEN
        credentials.current = StaticCredentials(
            Credentials(SECRET_ID, SECRET_KEY, TOKEN, expiration=1.0)
        )
        observe("expired keys")
        credentials.current = StaticCredentials(Credentials(SECRET_ID, SECRET_KEY, TOKEN))
        observe("recovered")
    finally:
        stopping.set()
        poller.stop()
        server.stop()

    assert "healthy error" not in texts and "recovered error" not in texts
    assert "AccessDenied" in texts["wrong token error"]  # the failures did happen
    assert "<redacted>" in texts["auth error"]  # the echoed token was caught
    assert "expired" in texts["expired keys error"]
    assert poller.snapshot().targets[0].up
    texts["reprs"] = " ".join(
        repr(x)
        for x in (
            client,
            vars(client),
            poller.targets[0],
            config,
            target,
            credentials,
            stats.snapshot(),
            sim,
        )
    )
    formatters = (LogfmtFormatter(with_stack=True), JsonFormatter(with_stack=True))
    texts["logs"] = "\n".join(f.format(r) for r in caplog.records for f in formatters)
    assert len(caplog.records) > 50  # debug logging was on and said things
    for where, text in texts.items():
        assert_no_secret(text, where)


# -- a real process --------------------------------------------------------------------------


def write_config(path: Path, endpoint: str, extra: str = "") -> Path:
    path.write_text(
        "poll_interval: 1s\n"
        "request_timeout: 500ms\n"
        "retry: {attempts: 2, initial_backoff: 50ms, max_backoff: 100ms}\n"
        f"{extra}"
        "targets:\n"
        f"  - bucket: {BUCKET}\n"
        f"    region: {REGION}\n"
        f"    endpoint: {endpoint}\n"
        "    credentials:\n"
        f"      secret_id: {SECRET_ID}\n"
        f"      secret_key: {SECRET_KEY}\n"
        f"      token: {TOKEN}\n"
        f"    services: {{media: {{tags: [{', '.join(TAGS)}]}}}}\n"
    )
    return path


class Process:
    """The exporter as a child process; every line of its stderr kept."""

    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "exporter", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line)

    def wait_for(self, text: str) -> str:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            assert self.popen.poll() is None, "".join(self.lines)
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never logged:\n{''.join(self.lines)}")

    def stop(self) -> str:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(10)
        finally:
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.wait(5)
        self._reader.join(5)
        assert self.popen.stdout is not None
        return self.popen.stdout.read() + "".join(self.lines)


def test_a_debug_run_through_every_fault_logs_no_secret(sim: Simulator, tmp_path: Path) -> None:
    """logfmt with stacks at debug level (the JSON formatter is checked in process)."""
    config = write_config(tmp_path / "config.yml", sim.endpoint(BUCKET))
    # Every fault at once, one hit each: requests use them up one after the other.
    faults = []
    for fault in FAULTS:
        copy = fresh(fault)
        copy.times = 1
        copy.retry_after = min(copy.retry_after, 1)
        # On the job listings: the queue listing works, so every stream of a poll fails anew.
        copy.path = "/jobs"
        faults.append(sim.faults.add(copy))
    process = Process(
        "--config.file", str(config), "--log.level", "debug", "--web.listen-address", "127.0.0.1:0"
    )
    pages: list[str] = []
    try:
        announced = process.wait_for("/metrics")
        url = "http://" + announced.split("http://", 1)[1].split()[0].strip("\"',}")
        base = url.rsplit("/", 1)[0]
        deadline = time.monotonic() + WAIT
        while not all(f.exhausted for f in faults):
            assert time.monotonic() < deadline, [f.kind for f in faults if not f.exhausted]
            pages.append(requests.get(url, timeout=10).text)
            pages.append(requests.get(f"{base}/", timeout=10).text)
            time.sleep(0.2)
        # Keys refused for a while: the log must name the Code, and only the Code.
        sim.api.credentials[SECRET_ID] = "rotated"
        process.wait_for("InvalidAuthorization")
        sim.api.credentials[SECRET_ID] = SECRET_KEY
        pages.append(requests.get(url, timeout=10).text)
        pages.append(requests.get(f"{base}/", timeout=10).text)
    finally:
        output = process.stop()
    # The failures happened and were told: counted by Code, and logged.
    for code in ("AccessDenied", "SignatureExpired", "invalid_response", "timeout"):
        assert f'error="{code}"' in pages[-2], code
    assert "target poll failed" in output and "level=debug" in output
    assert_no_secret(output, "the process's output")
    for page in pages:
        assert_no_secret(page, "a page")


BAD_CONFIGS = {
    "bad poll interval": "poll_interval: soon\n",
    "unknown key": "polling: 1s\n",
    "bad rate limit": "rate_limit: {requests_per_second: -1}\n",
}
WRONG_PLACES = {
    "key-list": f"      secret_id: {SECRET_ID}\n      secret_key: [{SECRET_KEY}]\n",
    "key-map": f"      secret_id: {SECRET_ID}\n      secret_key: {{k: {SECRET_KEY}}}\n",
    "token-list": f"      secret_id: {SECRET_ID}\n      secret_key: {SECRET_KEY}\n"
    f"      token: [{TOKEN}]\n",
    "key-newline": f'      secret_id: {SECRET_ID}\n      secret_key: "{SECRET_KEY}\\n"\n',
    "token-tab": f"      secret_id: {SECRET_ID}\n      secret_key: {SECRET_KEY}\n"
    f'      token: "{TOKEN}\\t"\n',
    "yaml-colon": f"      secret_id: {SECRET_ID}\n      secret_key: {SECRET_KEY}: more\n",
    "yaml-quote": f"      secret_id: {SECRET_ID}\n      secret_key: '{SECRET_KEY}\n",
    "yaml-tab": f"      secret_id: {SECRET_ID}\n\tsecret_key: {SECRET_KEY}\n",
    "misspelt-token": f"      secret_id: {SECRET_ID}\n      secret_key: {SECRET_KEY}\n"
    f"      tokn: {TOKEN}\n",
    "no-secret-id": f"      secret_key: {SECRET_KEY}\n      token: {TOKEN}\n",
    "key-as-id": f"      secret_id: {SECRET_KEY}\n",
}


def wrong_place_config(path: Path, credentials: str) -> Path:
    path.write_text(
        f"targets:\n  - bucket: {BUCKET}\n    region: {REGION}\n    credentials:\n" + credentials
    )
    return path


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_bad_config_next_to_secrets_is_refused_without_them(tmp_path: Path, case: str) -> None:
    config = write_config(tmp_path / "config.yml", "http://127.0.0.1:9", BAD_CONFIGS[case])
    with pytest.raises(ConfigError) as info:
        load_config(str(config))
    assert_no_secret(error_text(info.value), case)


@pytest.mark.parametrize("case", sorted(WRONG_PLACES))
def test_secrets_in_a_wrong_place_are_not_quoted_back(tmp_path: Path, case: str) -> None:
    config = wrong_place_config(tmp_path / "config.yml", WRONG_PLACES[case])
    with pytest.raises(ConfigError) as info:
        load_config(str(config))
    assert_no_secret(error_text(info.value), case)


def error_text(error: BaseException) -> str:
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    return str(error) + repr(error) + "".join(lines)


def test_the_cli_refuses_a_bad_config_in_one_line_without_secrets(tmp_path: Path) -> None:
    config = wrong_place_config(tmp_path / "config.yml", WRONG_PLACES["yaml-colon"])
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(config), "--log.level", "debug"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert_no_secret(result.stdout + result.stderr, "the error")
