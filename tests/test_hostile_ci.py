"""The CI client against a hostile CI endpoint (tests/hostile_ci.py), over real sockets on
loopback: every attack of issue 11 that concerns the client, and the ones it already survived,
kept as a permanent suite.

Each test asserts: no crash (one CIError, one line), the right error kind in the self-metrics,
memory bounded where memory is the attack (tracemalloc, with the cycle collector off so that
only what is freed at once counts), the call ended within its timeout plus a generous margin
where time is the attack (a bound, not a speed claim), and no piece of a secret (any 16
characters of the key, the token or the secret id) in the error's str or repr or in a label.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from exporter.api_stats import ApiStats
from exporter.ci.client import CIClient
from exporter.ci.listing import MAX_EMPTY_PAGES, MAX_QUEUES
from exporter.ci.models import (
    CIAuthError,
    CIError,
    CIInvalidResponse,
    CIStopped,
    CITimeout,
    Job,
)
from exporter.ci.parse import MAX_MARKUP
from exporter.ci.services import SERVICES
from exporter.credentials import Credentials, StaticCredentials
from exporter.ratelimit import RetryPolicy
from tests.hostile_ci import HostileCI, Peer, Request

SECRET_ID = "AKIDhostile0123456789abcdefghijklmn"
SECRET_KEY = "hostileKey-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
# A session token as long as the one that leaked 249 of its 326 characters.
TOKEN = ("tok-" + "".join(hashlib.sha256(b"%d" % i).hexdigest() for i in range(6)))[:326]
SECRETS = (SECRET_ID, SECRET_KEY, TOKEN)
BUCKET, REGION = "hostile-1250000000", "ap-guangzhou"
MEDIA = SERVICES["media"]
MiB = 1 << 20
CREATED = "2024-05-06T07:08:09+0800"
CREATED_EPOCH = 1714950489
MARGIN = 2.0  # seconds allowed past a timeout: a bound, not a speed claim
NO_WAIT = RetryPolicy(attempts=3, initial_backoff=0.0, max_backoff=0.0)


# Helpers


@pytest.fixture
def server() -> Iterator[HostileCI]:
    hostile = HostileCI()
    yield hostile
    hostile.close()


@pytest.fixture
def stats() -> ApiStats:
    return ApiStats()


def make_client(
    server: HostileCI, stats: ApiStats, *, timeout: float = 5.0, **options: object
) -> CIClient:
    return CIClient(
        bucket=BUCKET,
        region=REGION,
        endpoint=server.url,
        credentials=StaticCredentials(Credentials(SECRET_ID, SECRET_KEY, TOKEN)),
        timeout=timeout,
        stats=stats,
        **options,  # type: ignore[arg-type]
    )


def retrying(server: HostileCI, stats: ApiStats, **options: object) -> CIClient:
    """A client that would try a retryable failure three times (without waiting)."""
    return make_client(server, stats, retry=NO_WAIT, sleep=lambda stopping, s: False, **options)


def fragments(text: str) -> list[str]:
    """Every 16-character piece of a secret found in `text`."""
    return [
        secret[i : i + 16]
        for secret in SECRETS
        for i in range(len(secret) - 15)
        if secret[i : i + 16] in text
    ]


def failure(call: Callable[[], object]) -> CIError:
    """The CIError `call` raised, checked for the properties every failure must have."""
    with pytest.raises(CIError) as info:
        call()
    error = info.value
    text = f"{error} {error!r}"
    assert "\n" not in str(error)
    assert fragments(text) == []
    return error


def error_labels(stats: ApiStats) -> dict[str, int]:
    """error label -> count, over every endpoint; no label holds a piece of a secret."""
    labels: dict[str, int] = {}
    for (_, _, _, label), count in stats.snapshot().errors.items():
        assert fragments(label) == []
        labels[label] = labels.get(label, 0) + count
    return labels


def calls(stats: ApiStats) -> int:
    return sum(stats.snapshot().requests.values())


def job_xml(job_id: str, state: str = "Success", created: str = CREATED, **extra: str) -> str:
    fields = {"JobId": job_id, "State": state, "CreationTime": created, **extra}
    return "<JobsDetail>" + "".join(f"<{k}>{v}</{k}>" for k, v in fields.items()) + "</JobsDetail>"


def queue_xml(queue_id: str) -> str:
    return (
        f"<QueueList><QueueId>{queue_id}</QueueId><Name>n</Name><State>Active</State>"
        "<MaxSize>10000</MaxSize><MaxConcurrent>2</MaxConcurrent></QueueList>"
    )


def answer(body: str | bytes, status: int = 200, **headers: str) -> Callable[[Request, Peer], None]:
    data = body.encode() if isinstance(body, str) else body
    return lambda request, peer: peer.respond(data, status, headers)  # type: ignore[func-returns-value]


def list_jobs(client: CIClient, **options: object) -> list[Job]:
    return client.list_jobs(MEDIA, "q1", "Transcode", ["Success"], **options)  # type: ignore[arg-type]


@contextmanager
def traced() -> Iterator[Callable[[], tuple[int, int]]]:
    """Python memory since the block began: (now, peak), in bytes. The cycle collector is off,
    so memory kept alive by a reference cycle counts as kept."""
    gc.collect()
    gc.disable()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    try:
        yield lambda: tuple(m - base for m in tracemalloc.get_traced_memory())  # type: ignore[return-value]
    finally:
        tracemalloc.stop()
        gc.enable()


# 1. A refused body does not stay in memory; a gzip bomb does not inflate


def test_an_endless_chunked_body_stops_at_the_cap_and_nothing_of_it_stays(
    server: HostileCI, stats: ApiStats
) -> None:
    def endless(request: Request, peer: Peer) -> None:
        peer.head(200, {"Transfer-Encoding": "chunked"})
        peer.chunks_forever(b"<" + b"x" * (64 * 1024 - 1))

    server.script = endless
    cap = 2 * MiB
    client = make_client(server, stats, max_body_bytes=cap, timeout=30)
    with traced() as memory:
        error = failure(lambda: list_jobs(client))
        assert isinstance(error, CIInvalidResponse)
        assert str(error) == f"GET /jobs: body larger than {cap} bytes"
        held, peak = memory()
        del error
        after, _ = memory()
    assert peak <= 3 * cap  # about twice the cap at most, at once
    # What the error keeps (its traceback) is the last chunk read and buffers, never the body;
    # dropped, nothing of it stays, even with the cycle collector off.
    assert held <= cap // 4
    assert after <= cap // 4
    assert error_labels(stats) == {"invalid_response": 1}


def test_a_large_error_answer_is_freed_with_its_error(server: HostileCI, stats: ApiStats) -> None:
    server.script = answer(b"<html><title>busy</title>" + b" " * (3 * MiB) + b"</html>", 503)
    client = make_client(server, stats)
    with traced() as memory:
        error = failure(lambda: list_jobs(client))
        assert str(error) == "HTTP 503 : non-XML body: busy"
        del error
        after, _ = memory()
    assert after <= 256 * 1024  # nothing of the 3 MiB body stays, even with cycles uncollected
    assert error_labels(stats) == {"http_503": 1}


def test_a_gzip_bomb_is_refused_before_it_inflates(server: HostileCI, stats: ApiStats) -> None:
    bomb = gzip.compress(b"\0" * (32 * MiB), compresslevel=9)  # some 32 KB
    server.script = answer(bomb, **{"Content-Encoding": "gzip"})
    client = make_client(server, stats, max_body_bytes=MiB)
    with traced() as memory:
        error = failure(lambda: list_jobs(client))
        _, peak = memory()
    assert isinstance(error, CIInvalidResponse)
    assert str(error) == f"GET /jobs: body larger than {MiB} bytes"
    assert peak <= 3 * MiB
    assert error_labels(stats) == {"invalid_response": 1}


def test_a_gzip_page_is_inflated_and_an_encoding_not_asked_for_is_refused(
    server: HostileCI, stats: ApiStats
) -> None:
    page = gzip.compress(f"<Response>{job_xml('j1')}</Response>".encode())
    server.script = answer(page, **{"Content-Encoding": "gzip"})
    client = make_client(server, stats)
    assert [job.job_id for job in list_jobs(client)] == ["j1"]
    assert server.requests()[0].headers["accept-encoding"] == "gzip, deflate"
    server.script = answer(b"\x0b\x03\x80<Response/>\x03", **{"Content-Encoding": "br"})
    error = failure(lambda: list_jobs(client))
    assert str(error) == "GET /jobs: body in an encoding not asked for"
    server.script = answer(page[:-12], **{"Content-Encoding": "gzip"})  # cut short
    assert str(failure(lambda: list_jobs(client))) == "GET /jobs: compressed body cut short"
    assert error_labels(stats) == {"invalid_response": 2}


# 2. request_timeout bounds the whole call; `stopping` ends it at once


def trickled_headers(request: Request, peer: Peer) -> None:
    peer.trickle(b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 100_000)


def test_headers_at_a_trickle_end_at_the_timeout(server: HostileCI, stats: ApiStats) -> None:
    server.script = trickled_headers
    client = make_client(server, stats, timeout=0.5)
    started = time.monotonic()
    error = failure(lambda: list_jobs(client))
    assert time.monotonic() - started < 0.5 + MARGIN
    assert isinstance(error, CITimeout)
    assert str(error) == "GET /jobs: no answer within 0.5s"
    assert error_labels(stats) == {"timeout": 1}


def test_a_body_at_a_trickle_ends_at_the_timeout(server: HostileCI, stats: ApiStats) -> None:
    def trickled_body(request: Request, peer: Peer) -> None:
        peer.head(200, {"Content-Length": "100000"})
        peer.trickle(b"<Response>" + b" " * 99_000)

    server.script = trickled_body
    client = make_client(server, stats, timeout=0.5)
    started = time.monotonic()
    error = failure(lambda: list_jobs(client))
    assert time.monotonic() - started < 0.5 + MARGIN
    assert isinstance(error, CITimeout)
    assert str(error) == "GET /jobs: body not complete within 0.5s"
    assert stats.snapshot().requests == {(BUCKET, REGION, "/jobs", "200"): 1}
    assert error_labels(stats) == {"timeout": 1}


@contextmanager
def never_accepting() -> Iterator[str]:
    """An endpoint whose accept queue is full: a new connection's handshake never completes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(address)
        fillers.append(filler)
    try:
        yield f"http://{address[0]}:{address[1]}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_a_peer_that_never_accepts_ends_at_the_timeout(stats: ApiStats) -> None:
    with never_accepting() as url:
        client = CIClient(
            bucket=BUCKET,
            region=REGION,
            endpoint=url,
            credentials=StaticCredentials(Credentials(SECRET_ID, SECRET_KEY, TOKEN)),
            timeout=0.5,
            stats=stats,
        )
        started = time.monotonic()
        error = failure(lambda: list_jobs(client))
        assert time.monotonic() - started < 0.5 + MARGIN
    assert isinstance(error, CITimeout)
    assert error_labels(stats) == {"timeout": 1}


def run_in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, raised


def test_stopping_ends_a_trickling_call_within_two_seconds(
    server: HostileCI, stats: ApiStats
) -> None:
    server.script = trickled_headers
    stopping = threading.Event()
    client = make_client(server, stats, timeout=60, stopping=stopping)
    thread, raised = run_in_thread(lambda: list_jobs(client))
    assert server.first_peer_started()  # the answer is trickling in
    stopping.set()
    thread.join(2.0)
    assert not thread.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], CIStopped)
    assert fragments(f"{raised[0]} {raised[0]!r}") == []
    assert calls(stats) == 0  # cut short by us: not a failure of CI's


def test_stopping_ends_a_connect_that_never_completes(stats: ApiStats) -> None:
    stopping = threading.Event()
    with never_accepting() as url:
        client = CIClient(
            bucket=BUCKET,
            region=REGION,
            endpoint=url,
            credentials=StaticCredentials(Credentials(SECRET_ID, SECRET_KEY, TOKEN)),
            timeout=60,
            stats=stats,
            stopping=stopping,
        )
        thread, raised = run_in_thread(lambda: list_jobs(client))
        thread.join(0.3)  # the adversary's side: let the call get to its connect
        stopping.set()
        thread.join(2.0)
        assert not thread.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], CIStopped)


def tls_trickle(peer: Peer) -> None:
    """A TLS server that answers the ClientHello with a 16 KB record, a byte at a time: each
    read gets a byte, so no single read times out, and the handshake would take 800 s."""
    peer.sock.recv(16384)
    peer.send(b"\x16\x03\x03\x40\x00")
    peer.trickle(b"\x02" + b"\x00" * 16383)


def tls_client(server: HostileCI, stats: ApiStats, **options: object) -> CIClient:
    return CIClient(
        bucket=BUCKET,
        region=REGION,
        endpoint=server.url.replace("http://", "https://"),
        credentials=StaticCredentials(Credentials(SECRET_ID, SECRET_KEY, TOKEN)),
        stats=stats,
        **options,  # type: ignore[arg-type]
    )


def test_a_tls_handshake_at_a_trickle_ends_at_the_timeout(
    server: HostileCI, stats: ApiStats
) -> None:
    server.raw = tls_trickle
    client = tls_client(server, stats, timeout=0.5)
    started = time.monotonic()
    error = failure(lambda: list_jobs(client))
    assert time.monotonic() - started < 0.5 + MARGIN
    assert isinstance(error, CITimeout)
    assert error_labels(stats) == {"timeout": 1}


def test_stopping_ends_a_tls_handshake_at_a_trickle(server: HostileCI, stats: ApiStats) -> None:
    server.raw = tls_trickle
    stopping = threading.Event()
    client = tls_client(server, stats, timeout=60, stopping=stopping)
    thread, raised = run_in_thread(lambda: list_jobs(client))
    assert server.first_peer_started()  # the handshake is trickling in
    stopping.set()
    thread.join(2.0)
    assert not thread.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], CIStopped)
    assert calls(stats) == 0


# 3. Secrets echoed back are redacted before truncation, in every field


def echoing(status: int, code: str) -> Callable[[Request, Peer], None]:
    """An error that quotes back what the request carried: the Authorization header (secret id
    and signature) and the token, inside a long Message, plus the key in the RequestId."""

    def script(request: Request, peer: Peer) -> None:
        message = (
            "x" * 200  # the token straddles the cut at 256 characters
            + f" token {request.headers.get('x-ci-security-token')}"
            + f" Authorization: {request.headers.get('authorization')} key {SECRET_KEY}"
        )
        message = message.replace("&", "&amp;")
        body = (
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{SECRET_KEY}{TOKEN[:40]}</RequestId></Error>"
        )
        peer.respond(body.encode(), status)

    return script


@pytest.mark.parametrize(
    ("status", "code"),
    [(403, TOKEN), (400, SECRET_ID), (401, f"{SECRET_KEY}")],
    ids=["token-as-code", "secret-id-as-code", "key-as-code"],
)
def test_secrets_echoed_in_an_error_are_redacted_before_truncation(
    server: HostileCI, stats: ApiStats, status: int, code: str
) -> None:
    server.script = echoing(status, code)
    client = make_client(server, stats)
    error = failure(lambda: list_jobs(client))
    assert isinstance(error, CIAuthError) == (status != 400)
    signature = server.requests()[0].headers["authorization"].rpartition("q-signature=")[2]
    for field in (error.code, error.message, error.request_id, str(error), repr(error)):  # type: ignore[attr-defined]
        assert fragments(field) == []
        assert signature not in field
    assert "<redacted>" in error.message  # type: ignore[attr-defined]
    assert error.kind == "other"  # a redacted Code is not CI's Code
    assert error_labels(stats) == {"other": 1}


def test_a_secret_in_an_html_error_page_is_redacted(server: HostileCI, stats: ApiStats) -> None:
    page = f"<html><head><title>denied {TOKEN} for {SECRET_ID}</title></head></html>"
    server.script = answer(page, 502)
    error = failure(lambda: list_jobs(make_client(server, stats)))
    assert "non-XML body: denied <redacted>" in str(error)
    assert error_labels(stats) == {"http_502": 1}


@pytest.mark.parametrize(
    "body",
    [
        f"<Response><{TOKEN[:60]}></Response>",  # lxml quotes the tag name
        f"<Response>{job_xml('j1', state=TOKEN[:70])}</Response>",  # the unknown State is quoted
        f"<{TOKEN[:60]}/>",  # the wrong root is quoted
        f"<Response>{job_xml('j1', created=TOKEN[:60])}</Response>",  # the bad time is quoted
    ],
    ids=["tag", "state", "root", "time"],
)
def test_a_parse_error_quoting_a_secret_is_redacted(
    server: HostileCI, stats: ApiStats, body: str
) -> None:
    server.script = answer(body)
    error = failure(lambda: list_jobs(make_client(server, stats)))
    assert isinstance(error, CIInvalidResponse)
    assert "<redacted>" in str(error)
    assert error_labels(stats) == {"invalid_response": 1}


def test_a_failed_jobs_code_and_message_echoing_secrets_are_redacted(
    server: HostileCI, stats: ApiStats
) -> None:
    job = job_xml("j1", "Failed", Code=TOKEN[:64], Message="y" * 240 + TOKEN)
    server.script = answer(f"<Response>{job}</Response>")
    (listed,) = list_jobs(make_client(server, stats))
    assert fragments(listed.code) == [] and fragments(listed.message) == []
    assert listed.code == "<redacted>"
    assert error_labels(stats) == {}


@pytest.mark.parametrize(
    ("code", "label"),
    [
        ("InvalidParameter.JobIdInvalid", "InvalidParameter.JobIdInvalid"),
        ("Bad Code!", "other"),
        ("a" * 65, "other"),
        ("1abc", "other"),
        ("x-y", "other"),
        ("Код", "other"),
    ],
)
def test_error_codes_not_shaped_like_cis_are_other(
    server: HostileCI, stats: ApiStats, code: str, label: str
) -> None:
    server.script = answer(f"<Error><Code>{code}</Code></Error>", 400)
    error = failure(lambda: list_jobs(make_client(server, stats)))
    assert error.kind == label
    assert error_labels(stats) == {label: 1}


# 5. Size caps: items per page, listing length, far-future times


def test_a_page_with_more_jobs_than_asked_for_is_invalid(
    server: HostileCI, stats: ApiStats
) -> None:
    jobs = "".join(job_xml(f"j{i}") for i in range(101))
    server.script = answer(f"<Response>{jobs}</Response>")
    error = failure(lambda: list_jobs(retrying(server, stats)))
    assert str(error) == "GET /jobs: more than the 100 jobs asked for"
    assert len(server.requests()) == 1  # not tried again: CI would answer the same
    assert error_labels(stats) == {"invalid_response": 1}


def test_a_dense_body_is_refused_before_it_is_parsed(server: HostileCI, stats: ApiStats) -> None:
    # 400 KB that libxml2 would turn into some 100,000 nodes of over a hundred bytes each.
    body = b"<Response>" + b"<a/>" * (MAX_MARKUP + 1) + b"</Response>"
    server.script = answer(body)
    client = make_client(server, stats)
    with traced() as memory:
        error = failure(lambda: list_jobs(client))
        _, peak = memory()
    assert str(error) == f"GET /jobs: body has more than {MAX_MARKUP} tags"  # never parsed
    assert peak <= 4 * len(body)  # the body read, joined, and read buffers
    assert error_labels(stats) == {"invalid_response": 1}


def test_a_page_of_220000_jobs_is_refused_at_the_body_cap(
    server: HostileCI, stats: ApiStats
) -> None:
    def huge(request: Request, peer: Peer) -> None:  # 31.7 MB, streamed
        peer.head(200, {"Transfer-Encoding": "chunked"})
        chunk = "".join(job_xml(f"j{i:08d}") for i in range(500)).encode()
        for _ in range(440):
            if not peer.send(b"%x\r\n%s\r\n" % (len(chunk), chunk)):
                return
        peer.send(b"0\r\n\r\n")

    server.script = huge
    client = make_client(server, stats)  # the default cap: 4 MiB
    with traced() as memory:
        error = failure(lambda: list_jobs(client))
        _, peak = memory()
    assert str(error) == f"GET /jobs: body larger than {4 * MiB} bytes"
    assert peak <= 10 * MiB
    assert error_labels(stats) == {"invalid_response": 1}


def fresh_pages(jobs_per_page: int) -> Callable[[Request, Peer], None]:
    """A listing that never ends: new jobs and a new NextToken on every page."""

    def script(request: Request, peer: Peer) -> None:
        number = int(request.query.get("nextToken", "t0")[1:])
        jobs = "".join(job_xml(f"j{number}-{i}") for i in range(jobs_per_page))
        peer.respond(f"<Response>{jobs}<NextToken>t{number + 1}</NextToken></Response>".encode())

    return script


def test_endless_next_tokens_stop_at_the_listing_cap(server: HostileCI, stats: ApiStats) -> None:
    server.script = fresh_pages(100)
    error = failure(lambda: list_jobs(retrying(server, stats), max_jobs=1000))
    assert str(error) == "GET /jobs: listing longer than 1000 jobs"
    assert len(server.requests()) == 11
    assert error_labels(stats) == {"invalid_response": 1}


def test_endless_empty_pages_stop_at_once(server: HostileCI, stats: ApiStats) -> None:
    server.script = fresh_pages(0)
    error = failure(lambda: list_jobs(retrying(server, stats)))
    assert str(error) == f"GET /jobs: {MAX_EMPTY_PAGES} empty pages in a row, each with a NextToken"
    assert len(server.requests()) == MAX_EMPTY_PAGES
    assert error_labels(stats) == {"invalid_response": 1}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("CreationTime", "2100-01-01T00:00:00+0800"),
        ("EndTime", "2024-05-08T07:08:10+0800"),  # two days past CI's Date
    ],
)
def test_times_far_in_the_future_are_invalid(
    server: HostileCI, stats: ApiStats, field: str, value: str
) -> None:
    date = "Mon, 06 May 2024 00:00:00 GMT"
    server.script = answer(f"<Response>{job_xml('j1', **{field: value})}</Response>", Date=date)
    client = retrying(server, stats, clock=lambda: 1714953600.0)  # our clock agrees with CI's
    error = failure(lambda: list_jobs(client))
    assert str(error) == f"GET /jobs: job j1: {field} more than a day ahead of CI's clock"
    assert len(server.requests()) == 1
    assert error_labels(stats) == {"invalid_response": 1}


def test_a_total_count_above_the_queue_cap_is_invalid_at_once(
    server: HostileCI, stats: ApiStats
) -> None:
    queues = "".join(queue_xml(f"q{i}") for i in range(100))
    server.script = answer(f"<Response><TotalCount>1000000000</TotalCount>{queues}</Response>")
    error = failure(lambda: retrying(server, stats).list_queues(MEDIA))
    assert str(error) == (
        f"GET /queue: TotalCount 1000000000 is more than the {MAX_QUEUES} queues a listing may hold"
    )
    assert len(server.requests()) == 1
    assert error_labels(stats) == {"invalid_response": 1}


# 7. A listing that ignores startCreationTime is invalid, never counted


def test_a_listing_that_ignores_the_window_is_invalid(server: HostileCI, stats: ApiStats) -> None:
    server.script = answer(f"<Response>{job_xml('old')}</Response>")
    client = retrying(server, stats)
    error = failure(lambda: list_jobs(client, start_creation_time=CREATED_EPOCH + 3600))
    assert str(error) == "GET /jobs: job old: created before the startCreationTime asked for"
    assert len(server.requests()) == 1
    assert error_labels(stats) == {"invalid_response": 1}
    # The one-second edge the accounting allows for (it asks from a second early) passes.
    assert [job.job_id for job in list_jobs(client, start_creation_time=CREATED_EPOCH + 1)] == [
        "old"
    ]


def test_a_listing_that_ignores_the_end_of_the_window_is_invalid(
    server: HostileCI, stats: ApiStats
) -> None:
    server.script = answer(f"<Response>{job_xml('late')}</Response>")
    error = failure(lambda: list_jobs(make_client(server, stats), end_creation_time=0))
    assert str(error) == "GET /jobs: job late: created after the endCreationTime asked for"
    assert error_labels(stats) == {"invalid_response": 1}


# 8. Ids are checked where they enter: a bad one makes the page invalid, counted


@pytest.mark.parametrize(
    "bad",
    ["p&#x85;x", "p&#x2028;x", "p" * 129, "p x", "p/x"],
    ids=["U+0085", "U+2028", "129-chars", "space", "slash"],
)
def test_a_queue_id_that_could_not_be_stored_makes_the_page_invalid(
    server: HostileCI, stats: ApiStats, bad: str
) -> None:
    server.script = answer(
        f"<Response><TotalCount>2</TotalCount>{queue_xml('q1')}{queue_xml(bad)}</Response>"
    )
    error = failure(lambda: retrying(server, stats).list_queues(MEDIA))
    assert str(error).startswith("GET /queue: QueueList[2]: QueueId: not a queue id: ")
    assert len(server.requests()) == 1
    assert error_labels(stats) == {"invalid_response": 1}


@pytest.mark.parametrize(
    "bad",
    ["j&#x85;x", "j&#x2028;x", "j" * 129, "j,x"],
    ids=["U+0085", "U+2028", "129-chars", "comma"],
)
def test_a_job_id_that_could_not_be_stored_makes_the_page_invalid(
    server: HostileCI, stats: ApiStats, bad: str
) -> None:
    server.script = answer(f"<Response>{job_xml('j1')}{job_xml(bad)}</Response>")
    client = retrying(server, stats)
    error = failure(lambda: list_jobs(client))
    assert str(error).startswith("GET /jobs: JobsDetail[2]: JobId: not a job id: ")
    error = failure(lambda: client.describe_jobs(MEDIA, ["j1", "j2"]))
    assert str(error).startswith("GET /jobs: JobsDetail[2]: JobId: not a job id: ")
    assert len(server.requests()) == 2
    assert error_labels(stats) == {"invalid_response": 2}


def test_a_job_in_another_queue_with_a_bad_queue_id_makes_the_page_invalid(
    server: HostileCI, stats: ApiStats
) -> None:
    server.script = answer(f"<Response>{job_xml('j1', QueueId='q&#x2028;x')}</Response>")
    error = failure(lambda: list_jobs(make_client(server, stats)))
    assert str(error).startswith("GET /jobs: JobsDetail[1]: QueueId: not a queue id: ")
    assert error_labels(stats) == {"invalid_response": 1}


# 10. A lying TotalCount, a repeated page, the page cap: counted, stopped at the first sign


def test_a_lying_total_count_stops_at_the_first_repeated_page(
    server: HostileCI, stats: ApiStats
) -> None:
    queues = "".join(queue_xml(f"q{i}") for i in range(10))
    server.script = answer(f"<Response><TotalCount>5000</TotalCount>{queues}</Response>")
    error = failure(lambda: retrying(server, stats).list_queues(MEDIA))
    assert str(error) == (
        "GET /queue: page 2 lists only queues already listed (10 of TotalCount 5000)"
    )
    assert len(server.requests()) == 2
    assert error_labels(stats) == {"invalid_response": 1}


def test_a_listing_that_never_reaches_its_total_count_stops_at_the_page_cap(
    server: HostileCI, stats: ApiStats
) -> None:
    def short_pages(request: Request, peer: Peer) -> None:
        number = int(request.query["pageNumber"])
        queues = "".join(queue_xml(f"q{number}-{i}") for i in range(5))  # new, but never enough
        body = f"<Response><TotalCount>{MAX_QUEUES}</TotalCount>{queues}</Response>"
        peer.respond(body.encode())

    server.script = short_pages
    error = failure(lambda: retrying(server, stats).list_queues(MEDIA))
    pages = MAX_QUEUES // 100
    assert str(error) == f"GET /queue: listing did not end within {pages} pages"
    assert len(server.requests()) == pages
    assert error_labels(stats) == {"invalid_response": 1}


def test_a_repeated_page_under_a_new_token_stops_at_once(
    server: HostileCI, stats: ApiStats
) -> None:
    def same_page(request: Request, peer: Peer) -> None:
        token = int(request.query.get("nextToken", "t0")[1:]) + 1
        jobs = "".join(job_xml(f"j{i}") for i in range(100))
        peer.respond(f"<Response>{jobs}<NextToken>t{token}</NextToken></Response>".encode())

    server.script = same_page
    error = failure(lambda: list_jobs(retrying(server, stats)))
    assert str(error) == "GET /jobs: page 2 lists only jobs already listed"
    assert len(server.requests()) == 2
    assert error_labels(stats) == {"invalid_response": 1}


def test_the_job_page_cap_is_counted(server: HostileCI, stats: ApiStats) -> None:
    server.script = fresh_pages(1)  # one new job a page: the page cap, not the job cap, ends it
    error = failure(lambda: list_jobs(retrying(server, stats), max_jobs=500))
    assert str(error) == "GET /jobs: listing did not end within 6 pages"
    assert len(server.requests()) == 6
    assert error_labels(stats) == {"invalid_response": 1}


# Attacks already survived, kept


def test_billion_laughs_is_refused(server: HostileCI, stats: ApiStats) -> None:
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
        for i in range(1, 10)
    )
    server.script = answer(f"<!DOCTYPE Response [{entities}]><Response>&lol9;</Response>")
    client = make_client(server, stats)
    with traced() as memory:
        error = failure(lambda: list_jobs(client))
        _, peak = memory()
    # libxml2 stops the expansion itself (its amplification limit), or the DOCTYPE is refused.
    assert str(error).startswith("GET /jobs: body ")
    assert peak <= MiB
    assert error_labels(stats) == {"invalid_response": 1}


def test_xxe_is_refused_without_reading_the_file(server: HostileCI, stats: ApiStats) -> None:
    body = (
        '<!DOCTYPE Response [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        f"<Response>{job_xml('j1', 'Failed', Message='&xxe;')}</Response>"
    )
    server.script = answer(body)
    error = failure(lambda: list_jobs(make_client(server, stats)))
    assert "root:" not in str(error)
    assert str(error) == "GET /jobs: body has a DOCTYPE, which CI never sends"
    assert error_labels(stats) == {"invalid_response": 1}


def test_xinclude_is_not_processed(server: HostileCI, stats: ApiStats) -> None:
    include = (
        '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" '
        'href="file:///etc/passwd" parse="text"/>'
    )
    server.script = answer(f"<Response>{job_xml('j1', 'Failed', Message=include)}</Response>")
    (job,) = list_jobs(make_client(server, stats))
    assert "root:" not in repr(job)
    assert job.message == ""


def test_deep_nesting_is_refused(server: HostileCI, stats: ApiStats) -> None:
    depth = 20_000  # far past libxml2's limit, within MAX_MARKUP
    server.script = answer("<Response>" + "<a>" * depth + "</a>" * depth + "</Response>")
    error = failure(lambda: list_jobs(make_client(server, stats)))
    assert str(error).startswith("GET /jobs: body is not well-formed XML: ")
    assert error_labels(stats) == {"invalid_response": 1}


def test_a_200mb_declared_body_is_refused_unread(server: HostileCI, stats: ApiStats) -> None:
    def declared(request: Request, peer: Peer) -> None:
        peer.head(200, {"Content-Length": str(200_000_000)})
        peer.send(b"<Response>")
        peer.stall()

    server.script = declared
    client = make_client(server, stats, timeout=30)
    started = time.monotonic()
    with traced() as memory:
        error = failure(lambda: list_jobs(client))
        _, peak = memory()
    assert time.monotonic() - started < MARGIN  # refused on the header, not at the timeout
    assert str(error) == f"GET /jobs: body larger than {4 * MiB} bytes"
    assert peak <= MiB
    assert error_labels(stats) == {"invalid_response": 1}


def test_cycling_next_tokens_stop(server: HostileCI, stats: ApiStats) -> None:
    def cycling(request: Request, peer: Peer) -> None:
        token = request.query.get("nextToken", "")
        following = {"": "A", "A": "B", "B": "A"}[token]
        job = job_xml(f"j-{token or 'first'}")
        peer.respond(f"<Response>{job}<NextToken>{following}</NextToken></Response>".encode())

    server.script = cycling
    error = failure(lambda: list_jobs(retrying(server, stats)))
    assert str(error) == "GET /jobs: NextToken 'A' repeated in one listing"
    assert len(server.requests()) == 3
    assert error_labels(stats) == {"invalid_response": 1}
