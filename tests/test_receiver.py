"""The callback receiver (exporter.receiver) over real loopback HTTP, raw sockets where a client
must misbehave: CI's callbacks are delivered and answered at once; every forged or broken
request is refused with its status, counted by its reason, and delivers nothing; slow clients
do not keep a callback out; a client that expects 100-continue is told to send its body, or
refused without sending it; the secret is in no log line, metric or error message; and the
Callbacks holder starts, replaces, swaps, moves (to another host on the same port) and stops
receivers as reloads ask, delivering no callback twice.

Every wait is bounded (a socket timeout, select, or a condition polled up to WAIT); no test
sleeps for a guessed time. Ports are the OS's."""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

import exporter.receiver as receiver_module
from exporter.callback_stats import REASONS, CallbackStats
from exporter.ci.callback import CallbackEvent
from exporter.collector_callbacks import callback_families
from exporter.config import CallbacksConfig
from exporter.receiver import RECEIVER_LIMITS, CallbackReceiver, Callbacks
from exporter.simulator.callback_bodies import (
    CONTENT_TYPES,
    task_finish_body,
    workflow_finish_body,
)
from exporter.simulator.records import SimJob, SimStep

SECRET = "cb-Secret_0123456789abcdefXYZ"
SECRET2 = "second_secret-ABCDEFGHIJ0123"
# A log line or a metric holding any of these holds (most of) a secret: a forged path quoted
# back would hold them too, since the forged secrets are near-copies of the right one.
SECRET_CORES = (SECRET[3:-3], SECRET2[3:-3])
BUCKET, REGION = "media-1250000000", "ap-guangzhou"
WAIT = 10.0  # the bound of every wait; a passing test never waits it out
FAST = 1.0  # "answered at once": far below any timeout in play
T0 = 1_700_000_000

JOB = SimJob(
    "j7b0dfbe2f86b11ec995acf5cffaf6664",
    "p09d709939fef48a0a5c247ef39d90cec",
    "media",
    "Transcode",
    "Success",
    T0,
    T0 + 1,
    T0 + 10,
)
RUN = SimJob(
    "ic90edd59f84f11ec9d4f525400a3c59f",
    "web6ac56c1ef54dbfa44d7f4103203be9",
    "workflow",
    "Workflow",
    "Success",
    T0,
    T0 + 1,
    T0 + 20,
)
STEPS = (
    SimStep(
        "Transcode",
        "Transcode_1581665960537",
        "j168668b217b011ed8efb27bb229e2d11",
        "Success",
        T0 + 1,
        T0 + 20,
    ),
)


def task_body(fmt: str = "XML") -> bytes:
    return task_finish_body(JOB, BUCKET, REGION, fmt)


def run_body(fmt: str = "XML") -> bytes:
    return workflow_finish_body(RUN, "workflow-3", STEPS, BUCKET, fmt)


VALID = task_body("XML")


def request(
    body: bytes = VALID,
    *,
    path: str | bytes = f"/callback/{SECRET}",
    method: str = "POST",
    length: int | None = -1,  # -1: the body's; None: no Content-Length
    headers: tuple[str, ...] = (),
    content_type: str = "application/xml",
) -> bytes:
    raw_path = path if isinstance(path, bytes) else path.encode("latin-1")
    lines = ["Host: 127.0.0.1", f"Content-Type: {content_type}", *headers]
    if length is not None:
        lines.append(f"Content-Length: {len(body) if length == -1 else length}")
    head = method.encode() + b" " + raw_path + b" HTTP/1.1\r\n"
    return head + "".join(f"{line}\r\n" for line in lines).encode() + b"\r\n" + body


@dataclass(frozen=True)
class Answer:
    status: int
    text: str
    seconds: float  # from the last byte sent to the end of the answer


def read_answer(sock: socket.socket, sent: float) -> Answer:
    """The whole answer: the receiver closes its side after it (Connection: close)."""
    sock.settimeout(WAIT)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    seconds = time.monotonic() - sent
    assert data.startswith(b"HTTP/1.1 "), data[:200]
    head, _, body = data.partition(b"\r\n\r\n")
    return Answer(int(head.split(b" ")[1]), body.decode(), seconds)


def connect(port: int, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection((host, port), timeout=WAIT)
    return sock


def exchange(port: int, data: bytes, host: str = "127.0.0.1") -> Answer:
    with connect(port, host) as sock:
        sock.sendall(data)
        return read_answer(sock, time.monotonic())


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT}s: {what}"
        time.sleep(0.005)


@dataclass
class Recorder:
    """A deliver that records what it is given and answers `outcome`."""

    outcome: str = "queued"
    calls: list[tuple[str | None, CallbackEvent]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, bucket: str | None, event: CallbackEvent) -> str:
        with self.lock:
            self.calls.append((bucket, event))
        return self.outcome

    def delivered(self) -> list[tuple[str | None, CallbackEvent]]:
        with self.lock:
            return list(self.calls)


class _Families(Collector):
    def __init__(self, stats: CallbackStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        yield from callback_families(self.stats.snapshot())


def metrics(stats: CallbackStats) -> tuple[CollectorRegistry, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(stats))
    return registry, generate_latest(registry).decode()


@dataclass
class Server:
    receiver: CallbackReceiver
    deliver: Recorder
    stats: CallbackStats

    @property
    def port(self) -> int:
        return self.receiver.port

    def send(self, data: bytes) -> Answer:
        return exchange(self.port, data)

    def rejected(self) -> dict[str, int]:
        return {r: n for r, n in self.stats.snapshot().rejected.items() if n}

    def received(self) -> dict[tuple[str, str], int]:
        return {k: n for k, n in self.stats.snapshot().received.items() if n}


Make = Callable[..., Server]


@pytest.fixture(autouse=True)
def no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every record of the test, at DEBUG, with its extra fields and traceback."""
    caplog.set_level(logging.DEBUG)
    yield
    formatter = logging.Formatter()
    for record in caplog.records:
        text = repr(vars(record)) + record.getMessage()
        if record.exc_info:
            text += formatter.formatException(record.exc_info)
        for core in SECRET_CORES:
            assert core not in text, f"a secret in a log line: {record.getMessage()!r}"


@pytest.fixture
def make() -> Iterator[Make]:
    servers: list[Server] = []

    def start(
        outcome: str = "queued",
        secret: str = SECRET,
        **options: Any,
    ) -> Server:
        config = CallbacksConfig("127.0.0.1:0", secret, **options)
        deliver, stats = Recorder(outcome), CallbackStats()
        receiver = CallbackReceiver(config, deliver, stats)
        receiver.start()
        server = Server(receiver, deliver, stats)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.receiver.stop()
        _, text = metrics(server.stats)
        for core in SECRET_CORES:
            assert core not in text


# -- callbacks CI sends ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "fmt", "bucket"),
    [
        ("TaskFinish", "XML", None),
        ("TaskFinish", "JSON", None),
        ("TaskFinish", "XML", BUCKET),
        ("TaskFinish", "JSON", BUCKET),
        ("WorkflowFinish", "XML", None),
        ("WorkflowFinish", "JSON", BUCKET),
    ],
)
def test_a_callback_is_delivered_and_answered_at_once(
    make: Make, kind: str, fmt: str, bucket: str | None
) -> None:
    server = make()
    body = task_body(fmt) if kind == "TaskFinish" else run_body(fmt)
    path = f"/callback/{SECRET}" + (f"/{bucket}" if bucket else "")
    answer = server.send(request(body, path=path, content_type=CONTENT_TYPES[fmt]))
    assert (answer.status, answer.text) == (200, "ok\n")
    assert answer.seconds < FAST
    [(given_bucket, event)] = server.deliver.delivered()
    assert given_bucket == bucket
    assert (event.event, event.format) == (kind, fmt)
    assert event.job is not None
    assert event.job.job_id == (JOB.job_id if kind == "TaskFinish" else RUN.job_id)
    assert server.rejected() == {}
    # "queued": the target counts it when it applies it, not the receiver.
    assert server.received() == {}


def test_a_callback_whose_body_comes_after_its_head_is_delivered(make: Make) -> None:
    server = make(body_timeout=2.0)
    with connect(server.port) as sock:
        data = request(VALID)
        head_end = data.index(b"\r\n\r\n") + 4
        sock.sendall(data[:head_end])
        for start in range(head_end, len(data), 100):  # in pieces, well within the timeout
            sock.sendall(data[start : start + 100])
        answer = read_answer(sock, time.monotonic())
    assert answer.status == 200
    assert len(server.deliver.delivered()) == 1


def test_outcomes_other_than_queued_are_counted_and_acknowledged(make: Make) -> None:
    server = make(outcome="unknown_target")
    assert server.send(request(run_body("JSON"), path=f"/callback/{SECRET}/{BUCKET}")).status == 200
    assert server.received() == {("WorkflowFinish", "unknown_target"): 1}
    assert server.rejected() == {}


def test_a_full_target_queue_is_answered_503_for_ci_to_retry(make: Make) -> None:
    server = make(outcome="overloaded")
    assert server.send(request(VALID)).status == 503
    assert server.rejected() == {"overloaded": 1}
    assert server.received() == {}


@pytest.mark.parametrize(
    "body",
    [
        b"<Response><EventName>ObjectCreated</EventName></Response>",
        b'{"EventName": "ObjectCreated", "Object": "a.mp4"}',
        b"<Response><EventName>Weird event!</EventName></Response>",
    ],
    ids=["xml", "json", "unlabelled-name"],
)
def test_an_unknown_event_is_acknowledged_counted_and_not_handed_on(
    make: Make, body: bytes
) -> None:
    server = make()
    answer = server.send(request(body))
    assert answer.status == 200  # CI would retry a failure forever
    assert server.received() == {("other", "unknown_event"): 1}
    assert server.deliver.delivered() == []  # nothing in it a target could apply
    assert server.rejected() == {}


# -- forged and broken requests ----------------------------------------------------------------


WRONG_PATHS: dict[str, bytes] = {
    "wrong": b"/callback/" + b"x" * len(SECRET),
    "prefix": f"/callback/{SECRET[:-1]}".encode(),
    "suffix": f"/callback/{SECRET[1:]}".encode(),
    "longer": f"/callback/{SECRET}0".encode(),
    "shorter": b"/callback/short",
    "empty": b"/callback/",
    "case": f"/callback/{SECRET.upper()}".encode(),
    "non-ascii-utf8": f"/callback/{SECRET[:-1]}é".encode(),
    "non-ascii-latin1": f"/callback/{SECRET[:-1]}".encode() + b"\xff",
    "percent-encoded": f"/callback/%{ord(SECRET[0]):02X}{SECRET[1:]}".encode(),
    "percent-all": ("/callback/" + "".join(f"%{ord(c):02x}" for c in SECRET)).encode(),
    "double-slash": f"/callback//{SECRET}".encode(),
    "prefix-path": f"/x/callback/{SECRET}".encode(),
    "upper-prefix": f"/CALLBACK/{SECRET}".encode(),
    "absolute-form": f"http://127.0.0.1/callback/{SECRET}x".encode(),
    "root": b"/",
    "metrics": b"/metrics",
    # a bucket segment that names no bucket
    "bucket-empty": f"/callback/{SECRET}/".encode(),
    "bucket-upper": f"/callback/{SECRET}/Media-1250000000".encode(),
    "bucket-no-appid": f"/callback/{SECRET}/media".encode(),
    "bucket-dotdot": f"/callback/{SECRET}/..".encode(),
    "bucket-extra": f"/callback/{SECRET}/{BUCKET}/x".encode(),
    "bucket-encoded": f"/callback/{SECRET}/media%2D1250000000".encode(),
}


@pytest.mark.parametrize("name", list(WRONG_PATHS))
def test_a_wrong_secret_or_path_is_404_counted_and_delivers_nothing(make: Make, name: str) -> None:
    server = make()
    answer = server.send(request(VALID, path=WRONG_PATHS[name]))
    assert (answer.status, answer.text) == (404, "not found\n")
    assert answer.seconds < FAST
    assert server.rejected() == {"secret": 1}
    assert server.deliver.delivered() == []


def test_a_wrong_secret_is_refused_before_the_method_or_body_is_looked_at(make: Make) -> None:
    """A guess learns nothing from the status: the same 404 whatever else is wrong."""
    server = make()
    wrong = f"/callback/{SECRET[:-1]}"
    for data in (
        request(VALID, path=wrong, method="GET"),
        request(VALID, path=wrong, length=None),
        request(VALID, path=wrong, length=10**9),
        request(b"junk", path=wrong),
    ):
        assert server.send(data).status == 404
    assert server.rejected() == {"secret": 4}
    assert server.deliver.delivered() == []


@pytest.mark.parametrize("method", ["GET", "PUT", "HEAD", "DELETE", "OPTIONS", "post"])
def test_a_method_other_than_post_is_405(make: Make, method: str) -> None:
    server = make()
    answer = server.send(request(VALID, method=method))
    assert answer.status == 405
    assert server.rejected() == {"method": 1}
    assert server.deliver.delivered() == []


@pytest.mark.parametrize(
    ("length", "headers"),
    [
        (None, ()),
        (None, ("Transfer-Encoding: chunked",)),
        (-1, ("Transfer-Encoding: chunked",)),  # both: chunked wins elsewhere; refused here
        (None, ("Content-Length: -5",)),
        (None, ("Content-Length: +5",)),
        (None, ("Content-Length: 1e3",)),
        (None, ("Content-Length: 0x10",)),
        (None, ("Content-Length: ١٢",)),  # Arabic-Indic digits: str.isdigit() says yes
        (None, ("Content-Length: 5, 5",)),
        (None, ("Content-Length: 0000000000005",)),  # 13 digits
        (None, ("Content-Length:",)),
    ],
    ids=[
        "none",
        "chunked",
        "chunked-and-length",
        "negative",
        "plus",
        "exponent",
        "hex",
        "unicode-digits",
        "list",
        "too-many-digits",
        "empty",
    ],
)
def test_a_body_without_a_plain_length_is_411(
    make: Make, length: int | None, headers: tuple[str, ...]
) -> None:
    server = make()
    data = request(VALID, length=length, headers=headers)
    if "Transfer-Encoding: chunked" in headers:  # the body as chunks, as such a client sends it
        head = data.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
        data = head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(VALID), VALID)
    answer = server.send(data)
    assert answer.status == 411
    assert server.rejected() == {"length": 1}
    assert server.deliver.delivered() == []


def test_two_content_lengths_are_no_length(make: Make) -> None:
    """Which of the two frames the body would be a guess (RFC 9112 6.3): neither is taken."""
    server = make()
    # The last of the two is the body's length: a receiver that takes the last would deliver.
    data = request(VALID, headers=("Content-Length: 11",))
    answer = server.send(data)
    assert answer.status == 411
    assert server.rejected() == {"length": 1}
    assert server.deliver.delivered() == []


@pytest.mark.parametrize("length", [1025, 10**6, 10**12 - 1])
def test_a_length_over_the_cap_is_413_without_reading_the_body(make: Make, length: int) -> None:
    # body_timeout long: were the body waited for, the answer would be 408 after it.
    server = make(max_body_bytes=1024, body_timeout=30.0)
    with connect(server.port) as sock:
        sock.sendall(request(b"", length=length))  # the head alone: no body ever comes
        answer = read_answer(sock, time.monotonic())
    assert answer.status == 413
    assert answer.seconds < FAST
    assert server.rejected() == {"too_large": 1}
    assert server.deliver.delivered() == []


def test_a_body_of_exactly_the_cap_is_read(make: Make) -> None:
    server = make(max_body_bytes=len(VALID))
    assert server.send(request(VALID)).status == 200
    server2 = make(max_body_bytes=len(VALID) - 1)
    assert server2.send(request(VALID)).status == 413


def _trickle_until_answered(sock: socket.socket, rest: bytes, pace: float) -> Answer:
    """Send `rest` a byte per `pace` seconds until the receiver answers (bounded by WAIT)."""
    started = time.monotonic()
    deadline = started + WAIT
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], pace)
        if readable:
            answer = read_answer(sock, started)
            return Answer(answer.status, answer.text, time.monotonic() - started)
        if rest:
            with contextlib.suppress(OSError):
                sock.sendall(rest[:1])
            rest = rest[1:]
    raise AssertionError(f"no answer within {WAIT}s")


@pytest.mark.parametrize("pace", [0.05, None], ids=["trickling", "silent"])
def test_a_body_slower_than_body_timeout_is_408_in_time(make: Make, pace: float | None) -> None:
    body_timeout = 0.5
    server = make(body_timeout=body_timeout)
    with connect(server.port) as sock:
        data = request(VALID)
        head_end = data.index(b"\r\n\r\n") + 4
        sock.sendall(data[: head_end + 10])
        if pace is None:
            answer = read_answer(sock, time.monotonic())
        else:  # 20 bytes a second: the body would take over a minute
            answer = _trickle_until_answered(sock, data[head_end + 10 :], pace)
    assert answer.status == 408
    # The clock runs from the head's arrival, a moment before `sent`.
    assert body_timeout - 0.1 <= answer.seconds <= body_timeout + 0.5, answer.seconds
    assert server.rejected() == {"slow": 1}
    assert server.deliver.delivered() == []


@pytest.mark.parametrize("close", ["half", "full", "reset"])
def test_a_client_that_closes_mid_body_is_counted_and_delivers_nothing(
    make: Make, close: str
) -> None:
    server = make(body_timeout=WAIT)
    sock = connect(server.port)
    data = request(VALID)
    sock.sendall(data[: len(data) - 50])
    if close == "half":  # it still reads: it is told why
        sock.shutdown(socket.SHUT_WR)
        answer = read_answer(sock, time.monotonic())
        assert answer.status == 400
        assert answer.seconds < FAST
    elif close == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
    wait_until(lambda: server.rejected() == {"malformed": 1}, "the broken request counted")
    assert server.deliver.delivered() == []


def test_a_body_longer_than_its_content_length_is_refused(make: Make) -> None:
    """The extra bytes arrive with the head, or with the body: refused either way."""
    server = make()
    data = request(VALID) + b"<Response/>"
    assert server.send(data).status == 400
    assert server.rejected() == {"malformed": 1}
    assert server.deliver.delivered() == []


def test_a_body_longer_than_its_content_length_after_the_head_is_refused(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head alone reaches the worker, the body and more come while it reads."""
    server = make()
    reading = threading.Event()
    read_body = receiver_module._read_body

    def observed(connection: socket.socket, length: int, deadline: float) -> bytes:
        reading.set()
        return read_body(connection, length, deadline)

    monkeypatch.setattr(receiver_module, "_read_body", observed)
    data = request(VALID) + b"GET / HTTP/1.1\r\n\r\n"
    head_end = data.index(b"\r\n\r\n") + 4
    with connect(server.port) as sock:
        sock.sendall(data[:head_end])
        assert reading.wait(WAIT)
        sock.sendall(data[head_end:])
        answer = read_answer(sock, time.monotonic())
    assert answer.status == 400
    assert server.rejected() == {"malformed": 1}
    assert server.deliver.delivered() == []


DEEP_JSON = b'{"EventName": "TaskFinish", "JobsDetail": ' + b"[" * 40 + b"{}" + b"]" * 40 + b"}"
VERY_DEEP_JSON = b'{"EventName": "TaskFinish", "JobsDetail": ' + b"[" * 30000 + b"]" * 30000 + b"}"
MALFORMED: dict[str, bytes] = {
    "xml-truncated": VALID[: len(VALID) // 2],
    "xml-two-roots": VALID + b"<Response/>",
    "xml-doctype-entity": (
        b'<?xml version="1.0"?><!DOCTYPE Response [<!ENTITY x "TaskFinish">]>'
        b"<Response><EventName>&x;</EventName></Response>"
    ),
    "xml-billion-laughs": (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b"<Response><EventName>&c;</EventName></Response>"
    ),
    "xml-external-entity": (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b"<Response><EventName>TaskFinish</EventName><JobsDetail><Message>&e;</Message>"
        b"</JobsDetail></Response>"
    ),
    "json-truncated": task_body("JSON")[:-20],
    "json-trailing-comma": b'{"EventName": "TaskFinish",}',
    "json-deep": DEEP_JSON,
    "json-very-deep": VERY_DEEP_JSON,
    "json-not-utf8": b'{"EventName": "\xff\xfe"}',
    "json-nan": b'{"EventName": "TaskFinish", "JobsDetail": {"JobId": NaN}}',
    "json-duplicate-key": b'{"EventName": "TaskFinish", "EventName": "TaskFinish"}',
    "job-not-finished": task_body("XML").replace(b">Success</State>", b">Running</State>"),
    "neither": b"hello",
    "empty": b"",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_body_ci_does_not_send_is_400(make: Make, name: str) -> None:
    server = make()
    body = MALFORMED[name]
    assert len(body) <= 64 * 1024
    answer = server.send(request(body))
    assert (answer.status, answer.text) == (400, "bad request\n")
    assert server.rejected() == {"malformed": 1}
    assert server.deliver.delivered() == []


@pytest.mark.parametrize(
    "data",
    [
        b"POST /callback/" + SECRET.encode() + b"\r\nContent-Length: 5\r\n\r\nhello",
        b"POST  /callback/" + SECRET.encode() + b" HTTP/1.1\r\n\r\n",
        request(VALID, headers=(" Folded: header",)),
        request(VALID, headers=("No colon here",)),
        request(VALID, headers=tuple(f"X-{n}: {n}" for n in range(120))),
    ],
    ids=["no-version", "two-spaces", "folded", "no-colon", "too-many-headers"],
)
def test_a_malformed_head_is_400(make: Make, data: bytes) -> None:
    server = make()
    assert server.send(data).status == 400
    assert server.rejected() == {"malformed": 1}
    assert server.deliver.delivered() == []


def test_a_source_outside_allow_is_403_whatever_it_sends(make: Make) -> None:
    server = make(allow=("10.0.0.0/8",))
    for data in (
        request(VALID),  # the right secret, a valid body
        request(VALID, path=f"/callback/{SECRET}/{BUCKET}"),
        request(VALID, path="/callback/wrong-secret-0000000000"),
        request(VALID, method="GET"),
        request(VALID, length=10**9),
    ):
        assert server.send(data).status == 403
    assert server.rejected() == {"network": 5}
    assert server.deliver.delivered() == []
    allowed = make(allow=("10.0.0.0/8", "127.0.0.0/8"))
    assert allowed.send(request(VALID)).status == 200


def test_every_reason_is_counted_and_rendered(make: Make) -> None:
    """One forged request of each kind on one receiver: each counted once, under its reason,
    in the rendered family; nothing delivered but the one good callback."""
    server = make(max_body_bytes=1024, body_timeout=0.3)
    head_only = request(VALID, length=len(VALID))
    statuses = [
        server.send(request(VALID, path=f"/callback/{SECRET}x")),
        server.send(request(VALID, method="PUT")),
        server.send(request(VALID, length=None)),
        server.send(request(VALID, length=2000)),
        server.send(head_only[: head_only.index(b"\r\n\r\n") + 4]),
        server.send(request(b"<oops")),
        server.send(request(b"<Response><EventName>E1</EventName></Response>")),
    ]
    assert [a.status for a in statuses] == [404, 405, 411, 413, 408, 400, 200]
    assert server.rejected() == {
        "secret": 1,
        "method": 1,
        "length": 1,
        "too_large": 1,
        "slow": 1,
        "malformed": 1,
    }
    registry, text = metrics(server.stats)
    for reason in REASONS:
        expected = server.rejected().get(reason, 0)
        value = registry.get_sample_value(
            "tencent_ci_callback_requests_rejected_total", {"reason": reason}
        )
        assert value == expected, reason
    assert (
        registry.get_sample_value(
            "tencent_ci_callbacks_received_total", {"event": "other", "outcome": "unknown_event"}
        )
        == 1
    )
    assert SECRET not in text
    assert server.deliver.delivered() == []


# -- Expect: 100-continue ----------------------------------------------------------------------


def head_of(data: bytes) -> bytes:
    return data[: data.index(b"\r\n\r\n") + 4]


def read_head(sock: socket.socket) -> bytes:
    """One answer's head, byte by byte: nothing after it is taken from the socket."""
    sock.settimeout(WAIT)
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, f"closed after {data!r}"
        data += byte
    return data


def test_a_client_that_expects_100_continue_is_told_to_send_its_body(make: Make) -> None:
    """As curl sends a body over 1 KiB: the head, then the body only once told (it would
    otherwise wait a second, or give up)."""
    server = make()
    padded = VALID + b" " * 2048  # still a valid body (spaces after the root)
    data = request(padded, headers=("Expect: 100-continue",))
    with connect(server.port) as sock:
        sock.sendall(head_of(data))
        assert read_head(sock) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(data[len(head_of(data)) :])
        answer = read_answer(sock, time.monotonic())
    assert (answer.status, answer.text) == (200, "ok\n")
    assert len(server.deliver.delivered()) == 1
    assert server.rejected() == {}


def test_a_body_sent_without_waiting_for_100_continue_is_taken_as_it_comes(make: Make) -> None:
    """A client may send its body before it is told (RFC 9110 10.1.1): it is not told then."""
    server = make()
    answer = server.send(request(VALID, headers=("Expect: 100-continue",)))
    assert (answer.status, answer.text) == (200, "ok\n")
    assert len(server.deliver.delivered()) == 1


@pytest.mark.parametrize(
    ("options", "path", "length", "status", "reason"),
    [
        ({}, f"/callback/{SECRET}", 10**6, 413, "too_large"),
        ({}, "/callback/not-the-secret-000000", -1, 404, "secret"),
        ({"allow": ("10.0.0.0/8",)}, f"/callback/{SECRET}", -1, 403, "network"),
    ],
    ids=["too-large", "wrong-secret", "not-allowed"],
)
def test_a_head_refused_with_expect_is_answered_without_its_body(
    make: Make, options: dict[str, Any], path: str, length: int, status: int, reason: str
) -> None:
    """The refusal is the first and final answer: no 100 Continue, and no body sent."""
    server = make(**options)
    data = request(VALID, path=path, length=length, headers=("Expect: 100-continue",))
    with connect(server.port) as sock:
        sock.sendall(head_of(data))
        answer = read_answer(sock, time.monotonic())
    assert answer.status == status
    assert answer.seconds < FAST
    assert server.rejected() == {reason: 1}
    assert server.deliver.delivered() == []


# -- slow clients ------------------------------------------------------------------------------


def test_many_slow_clients_do_not_keep_a_callback_out(make: Make) -> None:
    """Silent connections and heads that trickle in are the loop's, never a worker's: more of
    them than max_connections, and a callback is still served at once (the oldest of them are
    closed to make room)."""
    server = make()
    held: list[socket.socket] = []
    slow = 3 * RECEIVER_LIMITS.max_connections
    try:
        for n in range(slow):
            sock = connect(server.port)
            if n % 2:  # half of them start a head and stop
                sock.sendall(f"POST /callback/{SECRET} HTTP/1.1\r\nHost: x\r\n".encode())
            held.append(sock)
        answer = server.send(request(VALID))
        assert answer.status == 200
        assert answer.seconds < FAST
        assert len(server.deliver.delivered()) == 1
        # The receiver held at most max_connections of them: the rest were closed.
        wait_until(
            lambda: sum(_closed_by_peer(s) for s in held) >= slow - RECEIVER_LIMITS.max_connections,
            "the oldest slow connections closed",
        )
    finally:
        for sock in held:
            sock.close()
    assert server.rejected() == {}


def _closed_by_peer(sock: socket.socket) -> bool:
    if sock.fileno() == -1:
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


def test_slow_bodies_on_every_worker_hold_a_callback_back_body_timeout_at_most(
    make: Make,
) -> None:
    """Slow bodies (with the secret: without it they are answered at once) take the workers,
    each for body_timeout at most: a callback behind them waits that long, no longer."""
    body_timeout = 1.0
    server = make(body_timeout=body_timeout)
    workers = RECEIVER_LIMITS.max_requests
    data = request(VALID)
    head_end = data.index(b"\r\n\r\n") + 4
    slow = [connect(server.port) for _ in range(workers)]
    forged = [connect(server.port) for _ in range(3 * workers)]
    try:
        for sock in slow:
            sock.sendall(data[: head_end + 10])
        for sock in forged:  # wrong secret, slow body: refused at once, hold no worker
            sock.sendall(request(VALID, path="/callback/not-the-secret-000000")[: head_end + 10])
        answer = server.send(data)
        assert answer.status == 200
        assert answer.seconds < body_timeout + 1.0, answer.seconds
        assert len(server.deliver.delivered()) == 1
        statuses = [read_answer(sock, time.monotonic()).status for sock in slow + forged]
        assert statuses == [408] * workers + [404] * (3 * workers)
    finally:
        for sock in slow + forged:
            sock.close()
    assert server.rejected() == {"slow": workers, "secret": 3 * workers}


# -- no secret anywhere ------------------------------------------------------------------------


def test_the_secret_is_in_no_log_line_metric_or_message(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """Forged requests of every kind (the autouse fixture checks every record of every test;
    this one makes sure there are records to check)."""
    server = make(body_timeout=0.3)
    for path in WRONG_PATHS.values():
        server.send(request(VALID, path=path))
    for body in MALFORMED.values():
        server.send(request(body))
    server.send(request(VALID, method="GET"))
    server.send(request(VALID, length=None))
    server.send(request(VALID, length=10**9))
    server.send(request(VALID)[:-5])  # slow: 408
    refused = [r for r in caplog.records if r.name == "exporter.receiver"]
    assert len(refused) >= len(WRONG_PATHS) + len(MALFORMED) + 4
    _, text = metrics(server.stats)
    assert "tencent_ci_callback_requests_rejected_total" in text
    for core in SECRET_CORES:
        assert core not in text
    for answer in (server.send(request(VALID, path=p)) for p in WRONG_PATHS.values()):
        assert SECRET_CORES[0] not in answer.text
    config = CallbacksConfig("127.0.0.1:0", SECRET)
    assert SECRET not in repr(config) and SECRET not in str(config)
    with pytest.raises(OSError) as error:
        CallbackReceiver(
            CallbacksConfig(f"127.0.0.1:{server.port}", SECRET), Recorder(), CallbackStats()
        )
    assert str(server.port) in str(error.value)
    assert SECRET_CORES[0] not in str(error.value)


# -- the Callbacks holder ----------------------------------------------------------------------


@pytest.fixture
def callbacks() -> Iterator[tuple[Callbacks, Recorder, CallbackStats]]:
    deliver, stats = Recorder(), CallbackStats()
    holder = Callbacks(deliver, stats)
    yield holder, deliver, stats
    holder.stop()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
    except ConnectionRefusedError:
        return True
    return False


def _families_served(stats: CallbackStats) -> bool:
    return stats.enabled  # exporter.self_metrics renders the families only then


def test_configure_none_stops_the_receiver(
    callbacks: tuple[Callbacks, Recorder, CallbackStats],
) -> None:
    holder, deliver, stats = callbacks
    holder.configure(None)  # none running: nothing to stop
    assert holder.receiver is None
    holder.configure(CallbacksConfig("127.0.0.1:0", SECRET))
    receiver: CallbackReceiver | None = holder.receiver
    assert receiver is not None and _families_served(stats)
    port = receiver.port
    assert exchange(port, request(VALID)).status == 200
    holder.configure(None)
    assert holder.receiver is None
    assert _refused(port)
    assert not _families_served(stats)  # no receiver: no callback families
    holder.configure(None)
    assert len(deliver.delivered()) == 1


def test_a_new_address_replaces_the_receiver(
    callbacks: tuple[Callbacks, Recorder, CallbackStats],
) -> None:
    holder, deliver, stats = callbacks
    holder.configure(CallbacksConfig("127.0.0.1:0", SECRET))
    old = holder.receiver
    assert old is not None
    old_port = old.port
    holder.configure(CallbacksConfig("localhost:0", SECRET2))
    new = holder.receiver
    assert new is not None and new is not old
    assert _refused(old_port)
    assert exchange(new.port, request(VALID, path=f"/callback/{SECRET2}")).status == 200
    assert len(deliver.delivered()) == 1
    assert stats.enabled


def test_the_same_address_swaps_the_config_in_place(
    callbacks: tuple[Callbacks, Recorder, CallbackStats],
) -> None:
    holder, deliver, _ = callbacks
    running = _listening(holder)
    port = running.port
    padded = VALID + b" " * 1024  # still a valid body (spaces after the root), over 1024 bytes
    assert exchange(port, request(padded)).status == 200
    holder.configure(CallbacksConfig("127.0.0.1:0", SECRET2, max_body_bytes=1024))
    assert holder.receiver is running and running.port == port
    # The next request is read with the new config: the old secret refused, the new cap applied.
    assert exchange(port, request(padded)).status == 404
    assert exchange(port, request(padded, path=f"/callback/{SECRET2}")).status == 413
    assert exchange(port, request(VALID, path=f"/callback/{SECRET2}")).status == 200
    holder.configure(CallbacksConfig("127.0.0.1:0", SECRET2, allow=("10.0.0.0/8",)))
    assert exchange(port, request(VALID, path=f"/callback/{SECRET2}")).status == 403
    assert len(deliver.delivered()) == 2


def test_a_port_in_use_raises_and_keeps_the_running_receiver(
    callbacks: tuple[Callbacks, Recorder, CallbackStats],
) -> None:
    holder, deliver, _ = callbacks
    running = _listening(holder)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen for callbacks on 127.0.0.1:{busy}"):
            holder.configure(CallbacksConfig(f"127.0.0.1:{busy}", SECRET2))
        assert holder.receiver is running
        # Still the old config too: nothing of the failed one was taken up.
        assert exchange(running.port, request(VALID)).status == 200
        assert exchange(running.port, request(VALID, path=f"/callback/{SECRET2}")).status == 404
    assert len(deliver.delivered()) == 1


# -- moving to another host on the same port ---------------------------------------------------


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


MOVES = [
    pytest.param("0.0.0.0", "127.0.0.1", "127.0.0.1", id="any-to-loopback"),
    pytest.param("127.0.0.1", "0.0.0.0", "127.0.0.1", id="loopback-to-any"),
    pytest.param(
        "[::]",
        "0.0.0.0",
        "::1",
        id="any-ipv6-to-any-ipv4",
        marks=pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback"),
    ),
]


@pytest.mark.parametrize(("first", "second", "client"), MOVES)
def test_a_new_host_on_the_same_port_replaces_the_receiver(
    callbacks: tuple[Callbacks, Recorder, CallbackStats], first: str, second: str, client: str
) -> None:
    """Two of them could not listen at once (EADDRINUSE): the running one makes way."""
    holder, deliver, stats = callbacks
    holder.configure(CallbacksConfig(f"{first}:0", SECRET))
    old = holder.receiver
    assert old is not None
    port = old.port
    assert exchange(port, request(VALID), client).status == 200
    holder.configure(CallbacksConfig(f"{second}:{port}", SECRET2))
    new = holder.receiver
    assert new is not None and new is not old and new.port == port
    assert exchange(port, request(VALID, path=f"/callback/{SECRET2}")).status == 200
    assert exchange(port, request(VALID)).status == 404  # the old secret went with the old one
    assert len(deliver.delivered()) == 2
    assert stats.enabled


UNLISTENABLE = {
    # TEST-NET-1 (RFC 5737): an address of no host, so of none of this one's interfaces.
    "not-an-address-here": "192.0.2.1",
    # Any address, with another program on one of them (127.0.0.2) on that port.
    "port-taken-elsewhere": "0.0.0.0",
}


@pytest.mark.parametrize("name", list(UNLISTENABLE))
def test_a_new_host_on_the_same_port_that_cannot_listen_keeps_the_receiver_in_service(
    callbacks: tuple[Callbacks, Recorder, CallbackStats], name: str
) -> None:
    holder, deliver, stats = callbacks
    running = _listening(holder)
    port, host = running.port, UNLISTENABLE[name]
    with contextlib.ExitStack() as stack:
        if name == "port-taken-elsewhere":
            other = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            other.bind(("127.0.0.2", port))
            other.listen(1)
        with pytest.raises(OSError, match=f"cannot listen for callbacks on {host}:{port}"):
            holder.configure(CallbacksConfig(f"{host}:{port}", SECRET2))
    kept = holder.receiver
    assert kept is not None and kept.port == port and kept.config is running.config
    assert exchange(port, request(VALID)).status == 200
    assert exchange(port, request(VALID, path=f"/callback/{SECRET2}")).status == 404
    assert len(deliver.delivered()) == 1
    assert stats.enabled


def test_a_move_whose_old_port_is_taken_meanwhile_says_no_callbacks_are_received(
    callbacks: tuple[Callbacks, Recorder, CallbackStats], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another program takes the port in the moment it is free: neither address can listen."""
    holder, _, stats = callbacks
    running = _listening(holder)
    port, stop = running.port, running.stop
    thief = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def stop_and_lose_the_port() -> None:
        stop()
        thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        thief.bind(("127.0.0.1", port))
        thief.listen(1)

    monkeypatch.setattr(running, "stop", stop_and_lose_the_port)
    with thief, pytest.raises(OSError, match="no longer receiving callbacks") as error:
        holder.configure(CallbacksConfig(f"192.0.2.1:{port}", SECRET2))
    assert f"192.0.2.1:{port}" in str(error.value) and f"127.0.0.1:{port}" in str(error.value)
    assert holder.receiver is None
    assert not _families_served(stats)


def _listening(holder: Callbacks) -> CallbackReceiver:
    """The holder's receiver, started on a loopback port of the OS's choice."""
    holder.configure(CallbacksConfig("127.0.0.1:0", SECRET))
    assert holder.receiver is not None
    return holder.receiver


@dataclass
class Gate(Recorder):
    """A deliver that holds each callback until released."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def __call__(self, bucket: str | None, event: CallbackEvent) -> str:
        self.entered.set()
        assert self.release.wait(WAIT)
        return super().__call__(bucket, event)


def _stopping(receiver: CallbackReceiver) -> bool:
    with receiver._settled:
        return receiver._stopping


def _move_in_background(holder: Callbacks, config: CallbacksConfig) -> threading.Thread:
    mover = threading.Thread(target=holder.configure, args=(config,), daemon=True)
    mover.start()
    return mover


def test_a_callback_being_handed_on_as_the_receiver_moves_is_answered_once() -> None:
    """The old receiver is stopped only once the callback it handed on is answered: its answer
    is not cut off, so CI does not send it again."""
    gate, stats = Gate(), CallbackStats()
    holder = Callbacks(gate, stats)
    try:
        holder.configure(CallbacksConfig("127.0.0.1:0", SECRET))
        running = holder.receiver
        assert running is not None
        port = running.port
        with connect(port) as sock:
            sock.sendall(request(VALID))
            assert gate.entered.wait(WAIT)
            mover = _move_in_background(holder, CallbacksConfig(f"0.0.0.0:{port}", SECRET2))
            wait_until(lambda: _stopping(running), "the old receiver stopping")
            gate.release.set()
            answer = read_answer(sock, time.monotonic())
        mover.join(WAIT)
        assert not mover.is_alive()
        assert (answer.status, answer.text) == (200, "ok\n")
        assert len(gate.delivered()) == 1
        moved = holder.receiver
        assert moved is not None and moved is not running and moved.port == port
        assert exchange(port, request(VALID, path=f"/callback/{SECRET2}")).status == 200
        assert len(gate.delivered()) == 2
    finally:
        gate.release.set()
        holder.stop()


def test_a_callback_read_as_the_receiver_moves_is_not_handed_on(
    callbacks: tuple[Callbacks, Recorder, CallbackStats], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its answer could be cut off by the stop: refused (503, or no answer), CI sends it again."""
    holder, deliver, _ = callbacks
    running = _listening(holder)
    port = running.port
    read, read_body = threading.Event(), receiver_module._read_body

    def read_until_stopping(connection: socket.socket, length: int, deadline: float) -> bytes:
        body = read_body(connection, length, deadline)
        read.set()
        wait_until(lambda: _stopping(running), "the old receiver stopping")
        return body

    monkeypatch.setattr(receiver_module, "_read_body", read_until_stopping)
    with connect(port) as sock:
        sock.sendall(request(VALID))
        assert read.wait(WAIT)
        mover = _move_in_background(holder, CallbacksConfig(f"0.0.0.0:{port}", SECRET2))
        mover.join(WAIT)
        assert not mover.is_alive()
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                data += chunk
    assert data == b"" or data.startswith(b"HTTP/1.1 503 "), data[:100]
    assert deliver.delivered() == []
    monkeypatch.undo()
    assert exchange(port, request(VALID, path=f"/callback/{SECRET2}")).status == 200
    assert len(deliver.delivered()) == 1
