"""exporter.ci.client over real HTTP on loopback, against a stub CI defined here.

The stub records every request and answers with what the test scripted: canned XML, errors, or
misbehaviour (reset, truncated or endless bodies, no answer at all).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import __version__
from exporter.api_stats import ApiStats
from exporter.ci.client import CIClient, error_label, format_creation_time
from exporter.ci.models import (
    CIAPIError,
    CIAuthError,
    CIConnectionError,
    CICredentialsError,
    CIInvalidResponse,
    CIStopped,
    CITimeout,
)
from exporter.ci.parse import parse_time
from exporter.ci.services import SERVICES
from exporter.credentials import Credentials, CredentialsError, StaticCredentials
from exporter.ratelimit import Pacer, RequestGate, RetryPolicy
from exporter.signing import TOKEN_HEADER, expected_signature, parse_authorization

SECRET_ID = "AKIDtestid"
SECRET_KEY = "very-secret-key-value"
TOKEN = "session-token-value"
NOW = 1_700_000_000.0
MEDIA, AI, SPEECH = SERVICES["media"], SERVICES["ai"], SERVICES["speech"]


# The stub CI


@dataclass
class Received:
    path: str  # decoded
    raw_path: str
    raw_query: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"<Response/>"
    headers: dict[str, str] = field(default_factory=dict)
    # "send", "reset" (RST, no answer), "truncate" (Content-Length promises more),
    # "stall" (no answer until the test ends), "endless" (chunked, never finishes)
    action: str = "send"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        stub = self.server.stub
        parts = urlsplit(self.path)
        received = Received(
            path=unquote(parts.path),
            raw_path=parts.path,
            raw_query=parts.query,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        with stub.lock:
            stub.received.append(received)
        reply = stub.handler(received)
        getattr(self, "_" + reply.action)(reply)

    def _head(self, reply: Reply, length: int | None) -> None:
        self.send_response_only(reply.status)  # no automatic Date: tests choose it
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send(self, reply: Reply) -> None:
        self._head(reply, len(reply.body))
        self.wfile.write(reply.body)

    def _truncate(self, reply: Reply) -> None:
        self._head(reply, len(reply.body) + 1000)
        self.wfile.write(reply.body)
        self.wfile.flush()
        self.close_connection = True

    def _reset(self, reply: Reply) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()  # with linger 0: an RST, not a FIN
        self.close_connection = True

    def _stall(self, reply: Reply) -> None:
        self.server.stub.release.wait(10)
        self.close_connection = True

    def _endless(self, reply: Reply) -> None:
        self._head(reply, None)
        try:
            for _ in range(4):  # more than any test's limit, then hang without the last chunk
                self.wfile.write(b"%x\r\n%s\r\n" % (len(reply.body), reply.body))
            self.wfile.flush()
        except OSError:
            pass
        self.server.stub.release.wait(10)
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stub: StubCI

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # resets and broken pipes are the point of some tests


class StubCI:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.handler: Callable[[Received], Reply] = lambda r: Reply()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.stub = self
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class RecordingStats(ApiStats):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str, str, str, str | None]] = []

    def record(
        self,
        bucket: str,
        region: str,
        endpoint: str,
        status: str,
        error: str | None,
        duration: float,
    ) -> None:
        assert duration >= 0
        self.calls.append((bucket, region, endpoint, status, error))
        super().record(bucket, region, endpoint, status, error, duration)


@pytest.fixture
def stub() -> Iterator[StubCI]:
    server = StubCI()
    yield server
    server.close()


@pytest.fixture
def stats() -> RecordingStats:
    return RecordingStats()


def make_client(
    stub: StubCI, stats: ApiStats | None = None, *, token: str | None = None, **kwargs: object
) -> CIClient:
    options: dict[str, object] = {"timeout": 5.0, "clock": lambda: NOW}
    options.update(kwargs)
    return CIClient(
        bucket="examplebucket-1250000000",
        region="ap-chongqing",
        endpoint=stub.url,
        credentials=StaticCredentials(Credentials(SECRET_ID, SECRET_KEY, token)),
        stats=stats,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def client(stub: StubCI, stats: RecordingStats) -> Iterator[CIClient]:
    c = make_client(stub, stats, token=TOKEN)
    yield c
    c.close()


def xml(text: str) -> bytes:
    return f"<Response>{text}</Response>".encode()


def job_xml(job_id: str, state: str = "Running", **extra: str) -> str:
    fields = {"JobId": job_id, "State": state, "CreationTime": "2022-07-07T12:12:12+0800", **extra}
    return "<JobsDetail>" + "".join(f"<{k}>{v}</{k}>" for k, v in fields.items()) + "</JobsDetail>"


def queue_xml(queue_id: str) -> str:
    return (
        f"<QueueList><QueueId>{queue_id}</QueueId><Name>n-{queue_id}</Name>"
        "<State>Active</State><MaxSize>100</MaxSize><MaxConcurrent>2</MaxConcurrent>"
        "<NotifyConfig><State>Off</State></NotifyConfig></QueueList>"
    )


def assert_signed(
    received: Received,
    secret_id: str = SECRET_ID,
    secret_key: str = SECRET_KEY,
    token: str | None = None,
) -> None:
    """Verify the request the way CI does, from what actually arrived."""
    token = token or received.headers.get(TOKEN_HEADER)
    auth = parse_authorization(received.headers["authorization"])
    assert auth["q-sign-algorithm"] == "sha1"
    assert auth["q-ak"] == secret_id
    key_time = auth["q-key-time"]
    assert auth["q-sign-time"] == key_time
    assert key_time == f"{int(NOW) - 60};{int(NOW) + 600}"
    signed = {"host": received.headers["host"]}
    if token is not None:
        signed[TOKEN_HEADER] = received.headers[TOKEN_HEADER]
    assert auth["q-header-list"] == ";".join(sorted(signed))
    assert auth["q-url-param-list"] == ";".join(sorted(k.lower() for k in received.query))
    assert auth["q-signature"] == expected_signature(
        secret_key, "GET", received.path, received.query, signed, key_time
    )


# Signing and headers


def test_every_request_is_signed_over_host_and_every_parameter(stub: StubCI) -> None:
    in_window = "2001-01-01T12:00:00+0800"
    stub.handler = lambda r: Reply(body=xml(job_xml("j1", CreationTime=in_window)))
    with make_client(stub) as client:
        client.list_jobs(
            MEDIA,
            "q1",
            "Transcode",
            ["Submitted", "Running"],
            start_creation_time=978278400,
            end_creation_time=978364799,
        )
    (received,) = stub.received
    assert received.headers["host"] == stub.url.removeprefix("http://")
    assert TOKEN_HEADER not in received.headers
    assert set(received.query) == {
        "queueId",
        "tag",
        "states",
        "size",
        "orderByTime",
        "startCreationTime",
        "endCreationTime",
    }
    assert_signed(received)
    assert received.headers["user-agent"] == f"tencent-ci-exporter/{__version__}"


def test_signature_fails_verification_with_another_key(stub: StubCI, client: CIClient) -> None:
    client.list_queues(AI)
    with pytest.raises(AssertionError):
        assert_signed(stub.received[0], secret_key="another-key")


def test_temporary_credentials_send_and_sign_the_token(stub: StubCI) -> None:
    with make_client(stub, token=TOKEN) as client:
        client.list_queues(SPEECH)
    (received,) = stub.received
    assert received.headers[TOKEN_HEADER] == TOKEN
    assert_signed(received, token=TOKEN)


def test_credentials_are_fetched_for_every_request(stub: StubCI) -> None:
    keys = iter([Credentials("AKID1", "key-1"), Credentials("AKID2", "key-2", TOKEN)])

    class Rotating:
        def get(self) -> Credentials:
            return next(keys)

    client = CIClient(
        bucket="b", region="r", endpoint=stub.url, credentials=Rotating(), clock=lambda: NOW
    )
    client.list_queues(AI)
    client.list_queues(AI)
    client.close()
    assert_signed(stub.received[0], "AKID1", "key-1")
    assert_signed(stub.received[1], "AKID2", "key-2", token=TOKEN)


def test_signature_validity_is_configurable(stub: StubCI) -> None:
    with make_client(stub, signature_validity=60) as client:
        client.list_queues(AI)
    auth = parse_authorization(stub.received[0].headers["authorization"])
    assert auth["q-key-time"] == f"{int(NOW) - 60};{int(NOW) + 60}"


def test_endpoint_must_be_http_url() -> None:
    for bad in ("ci.example.com", "ftp://x", "https://", "https://h/?a=b"):
        with pytest.raises(ValueError, match="endpoint must look like"):
            CIClient(
                bucket="b",
                region="r",
                endpoint=bad,
                credentials=StaticCredentials(Credentials("a", "b")),
            )


def test_repr_holds_no_secret(stub: StubCI) -> None:
    with make_client(stub, token=TOKEN) as client:
        text = repr(client) + repr(vars(client))
    assert SECRET_KEY not in text and TOKEN not in text


# Queue listings


def capped_queue_server(queue_ids: list[str], cap: int = 10) -> Callable[[Received], Reply]:
    def handle(r: Received) -> Reply:
        size = min(int(r.query["pageSize"]), cap)
        start = (int(r.query["pageNumber"]) - 1) * size
        items = "".join(queue_xml(q) for q in queue_ids[start : start + size])
        return Reply(
            body=xml(
                f"<TotalCount>{len(queue_ids)}</TotalCount>"
                f"<PageNumber>{r.query['pageNumber']}</PageNumber>"
                f"<PageSize>{size}</PageSize>{items}"
            )
        )

    return handle


def test_queue_pages_are_followed_when_the_server_caps_page_size(
    stub: StubCI, client: CIClient, stats: RecordingStats
) -> None:
    ids = [f"q{i:02d}" for i in range(25)]
    stub.handler = capped_queue_server(ids)
    queues = client.list_queues(MEDIA)
    assert [q.queue_id for q in queues] == ids
    assert queues[3].name == "n-q03" and queues[3].max_size == 100
    assert [r.query["pageNumber"] for r in stub.received] == ["1", "2", "3"]
    for r in stub.received:
        assert r.path == "/queue"
        assert r.query["pageSize"] == "100"
        assert r.query["category"] == "CateAll"
        assert r.query["state"] == "All"
        assert_signed(r)
    assert [c[2:] for c in stats.calls] == [("/queue", "200", None)] * 3


def test_queue_listing_in_one_page_when_allowed(stub: StubCI, client: CIClient) -> None:
    stub.handler = capped_queue_server([f"q{i}" for i in range(42)], cap=100)
    assert len(client.list_queues(AI)) == 42
    (received,) = stub.received
    assert received.path == "/ai_queue" and "category" not in received.query


def test_queue_pages_that_overlap_are_deduplicated(stub: StubCI, client: CIClient) -> None:
    ids = [f"q{i:02d}" for i in range(12)]
    pages = {"1": ids[:10], "2": ids[9:]}  # a queue was added between the two calls
    stub.handler = lambda r: Reply(
        body=xml(
            "<TotalCount>12</TotalCount>"
            + "".join(queue_xml(q) for q in pages[r.query["pageNumber"]])
        )
    )
    assert [q.queue_id for q in client.list_queues(AI)] == ids
    assert len(stub.received) == 2


def test_queue_listing_stops_on_an_empty_page(stub: StubCI, client: CIClient) -> None:
    ids = [f"q{i}" for i in range(15)]
    handler = capped_queue_server(ids)
    stub.handler = lambda r: Reply(body=handler(r).body.replace(b">15<", b">30<"))
    assert len(client.list_queues(AI)) == 15
    assert len(stub.received) == 3


def test_queue_server_ignoring_page_number_does_not_loop(stub: StubCI, client: CIClient) -> None:
    stub.handler = lambda r: Reply(
        body=xml("<TotalCount>50</TotalCount>" + "".join(queue_xml(f"q{i}") for i in range(10)))
    )
    with pytest.raises(CIInvalidResponse, match="page 2 lists only queues already listed"):
        client.list_queues(AI)
    assert len(stub.received) == 2


# Job listings


def token_job_server(
    count: int, page_size: int = 100, final: str = "<NextToken/>"
) -> Callable[[Received], Reply]:
    def handle(r: Received) -> Reply:
        start = int(r.query.get("nextToken", "t0")[1:])
        size = min(int(r.query["size"]), page_size)
        jobs = "".join(
            job_xml(f"j{i:04d}", QueueId="q1", Tag="Transcode")
            for i in range(start, min(start + size, count))
        )
        more = start + size < count
        return Reply(
            body=xml(jobs + (f"<NextToken>t{start + size}</NextToken>" if more else final))
        )

    return handle


@pytest.mark.parametrize("final", ["<NextToken/>", "<NextToken></NextToken>", ""])
def test_job_pages_follow_next_token(
    stub: StubCI, client: CIClient, stats: RecordingStats, final: str
) -> None:
    stub.handler = token_job_server(250, final=final)
    jobs = client.list_jobs(MEDIA, "q1", "Transcode", ["Success", "Failed", "Cancel"])
    assert [j.job_id for j in jobs] == [f"j{i:04d}" for i in range(250)]
    assert [r.query.get("nextToken") for r in stub.received] == [None, "t100", "t200"]
    for r in stub.received:
        assert r.path == "/jobs"
        assert (r.query["queueId"], r.query["tag"], r.query["size"]) == ("q1", "Transcode", "100")
        assert r.query["states"] == "Success,Failed,Cancel"
        assert r.query["orderByTime"] == "Desc"
        assert_signed(r)
    assert [c[2:] for c in stats.calls] == [("/jobs", "200", None)] * 3


def test_job_listing_options(stub: StubCI, client: CIClient) -> None:
    stub.handler = lambda r: Reply(body=xml(job_xml("j1")))  # no Tag, no QueueId
    (job,) = client.list_jobs(SPEECH, "", "SpeechRecognition", [], order="Asc")
    (received,) = stub.received
    assert received.path == "/asr_jobs"
    assert received.query == {"tag": "SpeechRecognition", "size": "100", "orderByTime": "Asc"}
    assert (job.tag, job.queue_id) == ("SpeechRecognition", "")


def test_jobs_without_tag_or_queue_get_the_ones_asked_for(stub: StubCI, client: CIClient) -> None:
    stub.handler = lambda r: Reply(body=xml(job_xml("j1") + job_xml("j2", Tag="X", QueueId="q9")))
    jobs = client.list_jobs(AI, "q1", "Translation", ["Running"])
    assert [(j.tag, j.queue_id) for j in jobs] == [("Translation", "q1"), ("X", "q9")]


def test_job_pages_are_requested_one_per_next(stub: StubCI, client: CIClient) -> None:
    stub.handler = token_job_server(250)
    pages = client.iter_job_pages(MEDIA, "q1", "Transcode", ["Running"])
    assert stub.received == []  # nothing until the first page is asked for
    first = next(pages)
    assert [j.job_id for j in first] == [f"j{i:04d}" for i in range(100)]
    assert len(stub.received) == 1
    del pages  # the caller has seen enough: no other page is fetched
    assert len(stub.received) == 1
    assert [len(p) for p in client.iter_job_pages(MEDIA, "q1", "Transcode", ["Running"])] == [
        100,
        100,
        50,
    ]
    assert len(stub.received) == 4


def test_job_pages_fill_tag_and_queue_like_the_listing(stub: StubCI, client: CIClient) -> None:
    stub.handler = lambda r: Reply(body=xml(job_xml("j1")))
    (page,) = client.iter_job_pages(AI, "q1", "Translation", ["Running"])
    assert [(j.job_id, j.tag, j.queue_id) for j in page] == [("j1", "Translation", "q1")]


def test_a_repeated_next_token_stops_the_pages_before_the_looping_one(
    stub: StubCI, client: CIClient
) -> None:
    stub.handler = lambda r: Reply(body=xml(job_xml("j1") + "<NextToken>same</NextToken>"))
    pages = client.iter_job_pages(MEDIA, "q1", "Transcode", ["Running"])
    assert [j.job_id for j in next(pages)] == ["j1"]
    with pytest.raises(CIInvalidResponse, match="NextToken 'same' repeated"):
        next(pages)
    assert len(stub.received) == 2


def test_a_repeated_next_token_is_an_error(stub: StubCI, client: CIClient) -> None:
    stub.handler = lambda r: Reply(body=xml(job_xml("j1") + "<NextToken>same</NextToken>"))
    with pytest.raises(CIInvalidResponse) as info:
        client.list_jobs(MEDIA, "q1", "Transcode", ["Running"])
    assert str(info.value) == "GET /jobs: NextToken 'same' repeated in one listing"
    assert info.value.endpoint == "/jobs"
    assert len(stub.received) == 2


def test_creation_time_bounds_are_china_standard_time(stub: StubCI, client: CIClient) -> None:
    start = int(datetime(2000, 12, 31, 16, 0, 0, tzinfo=timezone.utc).timestamp())
    client.list_jobs(
        MEDIA,
        "q1",
        "Transcode",
        ["Running"],
        start_creation_time=start,
        end_creation_time=start + 86399,
    )
    (received,) = stub.received
    assert received.query["startCreationTime"] == "2001-01-01T00:00:00+0800"
    assert received.query["endCreationTime"] == "2001-01-01T23:59:59+0800"
    assert "startCreationTime=2001-01-01T00%3A00%3A00%2B0800" in received.raw_query


@settings(max_examples=100, derandomize=True)
@given(st.integers(min_value=0, max_value=4_000_000_000))
def test_creation_time_format_round_trips(epoch: int) -> None:
    text = format_creation_time(epoch)
    assert text.endswith("+0800") and len(text) == 24
    assert parse_time(text) == epoch


# Describe


def test_describe_goes_in_chunks_of_ten(
    stub: StubCI, client: CIClient, stats: RecordingStats
) -> None:
    ids = [f"id{i:02d}" for i in range(23)]
    unknown = {"id05", "id21"}

    def handle(r: Received) -> Reply:
        asked = r.path.removeprefix("/jobs/").split(",")
        found = "".join(job_xml(i, "Success") for i in asked if i not in unknown)
        missing = ",".join(i for i in asked if i in unknown)
        return Reply(body=xml(found + f"<NonExistJobIds>{missing}</NonExistJobIds>"))

    stub.handler = handle
    result = client.describe_jobs(MEDIA, ids)
    assert [r.path for r in stub.received] == [
        "/jobs/" + ",".join(ids[0:10]),
        "/jobs/" + ",".join(ids[10:20]),
        "/jobs/" + ",".join(ids[20:23]),
    ]
    assert [j.job_id for j in result.jobs] == [i for i in ids if i not in unknown]
    assert result.non_exist_ids == ("id05", "id21")
    for r in stub.received:
        assert r.query == {} and "," in r.raw_path
        assert_signed(r)
    assert [c[2:] for c in stats.calls] == [("/jobs", "200", None)] * 3


def test_describe_nothing_makes_no_call(stub: StubCI, client: CIClient) -> None:
    assert client.describe_jobs(MEDIA, []).jobs == ()
    assert stub.received == []


@pytest.mark.parametrize(
    ("job_id", "shown"),
    [
        ("a,b", "'a,b'"),
        ("a/b", "'a/b'"),
        ("..", "'..'"),
        ("a b", "'a b'"),
        ("", "''"),
        ("x/" * 100, ("'" + "x/" * 100)[:77] + "..."),
    ],  # truncated to 80 characters
    ids=["comma", "slash", "dots", "space", "empty", "long"],
)
def test_describe_refuses_ids_that_would_change_the_path(
    stub: StubCI, client: CIClient, stats: RecordingStats, job_id: str, shown: str
) -> None:
    with pytest.raises(CIInvalidResponse) as info:
        client.describe_jobs(MEDIA, ["ok1", job_id])
    assert str(info.value) == f"GET /jobs: not a job id: {shown}"
    assert info.value.endpoint == "/jobs"
    assert stub.received == [] and stats.calls == []  # refused before any request


# Errors, each with its self-metric


def call_failing(client: CIClient, stub: StubCI, reply: Reply) -> BaseException:
    stub.handler = lambda r: reply
    with pytest.raises(Exception) as info:
        client.describe_jobs(AI, ["a", "b"])
    message = str(info.value)
    assert "\n" not in message
    for secret in (SECRET_KEY, TOKEN, "q-sign", "q-ak="):
        assert secret not in message
    return info.value


def test_401_body(stub: StubCI, client: CIClient, stats: RecordingStats) -> None:
    err = call_failing(
        client,
        stub,
        Reply(
            401,
            b"<Error><Code>InvalidAuthorization</Code><Message>bad sign</Message></Error>",
            {"x-ci-request-id": "rid-401"},
        ),
    )
    assert isinstance(err, CIAPIError)
    assert (err.status, err.code, err.message) == (401, "InvalidAuthorization", "bad sign")
    assert (err.request_id, err.endpoint, err.auth_failed) == ("rid-401", "/jobs", True)
    assert stats.calls == [
        ("examplebucket-1250000000", "ap-chongqing", "/jobs", "401", "InvalidAuthorization")
    ]


def test_503_slow_down(stub: StubCI, client: CIClient, stats: RecordingStats) -> None:
    err = call_failing(
        client,
        stub,
        Reply(
            503,
            (
                b"<Error><Code>SlowDown</Code><Message>frequency control</Message>"
                b"<RequestId>rid-b</RequestId></Error>"
            ),
        ),
    )
    assert isinstance(err, CIAPIError)
    assert (err.code, err.request_id, err.throttled) == ("SlowDown", "rid-b", True)
    assert stats.calls[0][2:] == ("/jobs", "503", "SlowDown")


def test_429_retry_after(stub: StubCI, client: CIClient, stats: RecordingStats) -> None:
    err = call_failing(client, stub, Reply(429, b"", {"Retry-After": "3"}))
    assert isinstance(err, CIAPIError)
    assert (err.status, err.code, err.retry_after, err.throttled) == (429, "", 3.0, True)
    assert stats.calls[0][2:] == ("/jobs", "429", "http_429")


def test_html_error_page(stub: StubCI, client: CIClient, stats: RecordingStats) -> None:
    page = (
        b"<html><head><title>502 Bad Gateway</title></head><body>"
        + b"<center>nginx</center>" * 2000
        + b"</body></html>"
    )
    err = call_failing(client, stub, Reply(502, page, {"Content-Type": "text/html"}))
    assert isinstance(err, CIAPIError)
    assert (err.code, err.message) == ("", "non-XML body: 502 Bad Gateway")
    assert stats.calls[0][2:] == ("/jobs", "502", "http_502")


def test_html_with_status_200_is_an_invalid_response(
    stub: StubCI, client: CIClient, stats: RecordingStats
) -> None:
    err = call_failing(client, stub, Reply(200, b"<html><body>login</body></html>"))
    assert isinstance(err, CIInvalidResponse)
    assert str(err) == "GET /jobs: expected <Response>, got <html>"
    assert err.endpoint == "/jobs"
    assert stats.calls[0][2:] == ("/jobs", "200", "invalid_response")


def test_seed_example_body_is_an_invalid_response(
    stub: StubCI, client: CIClient, stats: RecordingStats
) -> None:
    body = (Path(__file__).parent / "fixtures" / "seed_ai_jobs_translation.xml").read_bytes()
    stub.handler = lambda r: Reply(body=body)
    with pytest.raises(CIInvalidResponse, match=r"^GET /jobs: body is not well-formed XML: "):
        client.list_jobs(AI, "q1", "Translation", ["Running"])
    assert stats.calls[0][2:] == ("/jobs", "200", "invalid_response")


def test_timeout(stub: StubCI, stats: RecordingStats) -> None:
    with make_client(stub, stats, token=TOKEN, timeout=0.2) as client:
        err = call_failing(client, stub, Reply(action="stall"))
    assert isinstance(err, CITimeout)
    assert str(err) == "GET /jobs: no answer within 0.2s"
    assert err.endpoint == "/jobs"
    assert stats.calls[0][2:] == ("/jobs", "error", "timeout")


def test_stalled_body_times_out(stub: StubCI, stats: RecordingStats) -> None:
    with make_client(stub, stats, token=TOKEN, timeout=0.2) as client:
        err = call_failing(client, stub, Reply(body=b"<Response>", action="endless"))
    assert isinstance(err, CITimeout)
    assert stats.calls[0][2:] == ("/jobs", "200", "timeout")


def test_connection_reset(stub: StubCI, client: CIClient, stats: RecordingStats) -> None:
    err = call_failing(client, stub, Reply(action="reset"))
    assert isinstance(err, CIConnectionError)
    assert str(err).startswith("GET /jobs: ConnectionResetError: ")
    assert err.endpoint == "/jobs"
    assert stats.calls[0][2:] == ("/jobs", "error", "connection")


def test_truncated_body(stub: StubCI, client: CIClient, stats: RecordingStats) -> None:
    err = call_failing(client, stub, Reply(body=xml(job_xml("j1")), action="truncate"))
    assert isinstance(err, CIConnectionError)
    assert str(err).startswith("GET /jobs: body cut short: ")
    assert stats.calls[0][2:] == ("/jobs", "200", "connection")


def test_connection_refused(stats: RecordingStats) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = CIClient(
        bucket="b",
        region="r",
        endpoint=f"http://127.0.0.1:{port}",
        credentials=StaticCredentials(Credentials(SECRET_ID, SECRET_KEY)),
        stats=stats,
        timeout=2,
    )
    with pytest.raises(CIConnectionError, match=r"^GET /queue: "):
        client.list_queues(MEDIA)
    assert stats.calls == [("b", "r", "/queue", "error", "connection")]


def test_declared_oversized_body(stub: StubCI, stats: RecordingStats) -> None:
    with make_client(stub, stats, token=TOKEN, max_body_bytes=1000) as client:
        err = call_failing(client, stub, Reply(body=b"<Response>" + b" " * 5000 + b"</Response>"))
    assert isinstance(err, CIInvalidResponse)
    assert str(err) == "GET /jobs: body larger than 1000 bytes"
    assert stats.calls[0][2:] == ("/jobs", "200", "invalid_response")


def test_streamed_oversized_body_stops_early(stub: StubCI, stats: RecordingStats) -> None:
    # The stub never finishes this body: only stopping at the limit avoids the 5 s timeout.
    with make_client(stub, stats, token=TOKEN, max_body_bytes=1500, timeout=5) as client:
        started = time.monotonic()
        err = call_failing(client, stub, Reply(body=b" " * 1000, action="endless"))
    assert isinstance(err, CIInvalidResponse)
    assert str(err) == "GET /jobs: body larger than 1500 bytes"
    assert time.monotonic() - started < 4
    assert stats.calls[0][2:] == ("/jobs", "200", "invalid_response")


@pytest.mark.parametrize(
    ("code", "label"),
    [
        ("InvalidParameter.JobIdInvalid", "InvalidParameter.JobIdInvalid"),
        ("Bad Code!", "other"),
        ("<script>", "other"),
        ("Код", "other"),
        ("", "http_400"),
    ],
)
def test_error_label_is_ci_code_when_it_looks_like_one(
    stub: StubCI, client: CIClient, stats: RecordingStats, code: str, label: str
) -> None:
    body = f"<Error><Code>{code.replace('<', '&lt;')}</Code></Error>".encode()
    err = call_failing(client, stub, Reply(400, body))
    assert isinstance(err, CIAPIError)
    assert stats.calls[0][3:] == ("400", label)


@pytest.mark.parametrize(
    ("kind", "label"),
    [
        ("SlowDown", "SlowDown"),
        ("a" * 64, "a" * 64),
        ("a" * 65, "other"),
        ("a\nb", "other"),
        ("a/b", "other"),
        ("", "other"),
        ("http_503", "http_503"),
        ("timeout", "timeout"),
    ],
)
def test_error_label(kind: str, label: str) -> None:
    assert error_label(kind) == label


def test_session_survives_errors(stub: StubCI, client: CIClient, stats: RecordingStats) -> None:
    call_failing(client, stub, Reply(action="reset"))
    stub.handler = lambda r: Reply(body=xml(job_xml("a")))
    assert [j.job_id for j in client.describe_jobs(AI, ["a"]).jobs] == ["a"]
    assert [c[3:] for c in stats.calls] == [("error", "connection"), ("200", None)]


# Clock offset


def test_clock_offset_from_date_against_the_middle_of_the_request(stub: StubCI) -> None:
    now = [NOW]

    def handle(r: Received) -> Reply:
        now[0] += 2  # the round trip takes 2 s of our clock, the most a sample may take
        date = formatdate(NOW + 1 + 100, usegmt=True)  # CI is 100 s ahead
        return Reply(body=xml(""), headers={"Date": date})

    with make_client(stub, clock=lambda: now[0]) as client:
        assert client.clock_offset is None
        stub.handler = lambda r: Reply(body=xml(""))  # no Date header
        client.list_queues(AI)
        assert client.clock_offset is None
        stub.handler = handle
        client.list_queues(AI)
        assert client.clock_offset == pytest.approx(100.0)
        stub.handler = lambda r: Reply(body=xml(""), headers={"Date": "garbage"})
        client.list_queues(AI)
        assert client.clock_offset == pytest.approx(100.0)  # the last one measured


def test_a_slow_first_answer_leaves_the_clock_unmeasured(stub: StubCI) -> None:
    now = [NOW]

    def handle(r: Received) -> Reply:
        now[0] += 2.5  # just over MAX_CLOCK_SAMPLE_RTT
        return Reply(body=xml(""), headers={"Date": formatdate(NOW + 100, usegmt=True)})

    with make_client(stub, clock=lambda: now[0]) as client:
        stub.handler = handle
        client.list_queues(AI)
        client.list_queues(AI)
        assert client.clock_offset is None
        stub.handler = lambda r: Reply(
            body=xml(""), headers={"Date": formatdate(now[0] + 7, usegmt=True)}
        )
        client.list_queues(AI)
        assert client.clock_offset == pytest.approx(7.0)  # the first fast answer


def test_clock_offset_from_error_answers_too(stub: StubCI) -> None:
    with make_client(stub) as client:
        stub.handler = lambda r: Reply(503, b"", {"Date": formatdate(NOW - 30, usegmt=True)})
        with pytest.raises(CIAPIError):
            client.list_queues(AI)
        assert client.clock_offset == pytest.approx(-30.0)


def test_a_slow_answer_does_not_replace_a_good_clock_measure(stub: StubCI) -> None:
    now = [NOW]

    def answer(rtt: float, ahead: float) -> Callable[[Received], Reply]:
        def handle(r: Received) -> Reply:
            now[0] += rtt
            date = formatdate(NOW + rtt / 2 + ahead, usegmt=True)
            return Reply(body=xml(""), headers={"Date": date})

        return handle

    with make_client(stub, clock=lambda: now[0]) as client:
        stub.handler = answer(0, 20)
        client.list_queues(AI)
        assert client.clock_offset == pytest.approx(20.0)
        now[0] = NOW
        stub.handler = answer(8, 50)  # 8 s round trip: the Date could be 4 s either way
        client.list_queues(AI)
        assert client.clock_offset == pytest.approx(20.0)


# Retries, throttling, auth, credentials, stopping


class Sleeps:
    """The client's sleeper: records each wait and moves a fake clock (`clock`, for pacers) by
    it instead of sleeping; can play a shutdown."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.waits: list[float] = []
        self.now = 0.0
        self.stop_after = stop_after

    def clock(self) -> float:
        return self.now

    def __call__(self, stopping: threading.Event, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        if self.stop_after is not None and len(self.waits) >= self.stop_after:
            stopping.set()
        return stopping.is_set()


def scripted(*replies: Reply) -> Callable[[Received], Reply]:
    """Answer with these in turn, then the last one forever."""
    queue = list(replies)

    def handle(r: Received) -> Reply:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handle


RETRY = RetryPolicy(attempts=3, initial_backoff=0.5, max_backoff=10.0)
OK_JOBS = Reply(body=xml(job_xml("j1", "Success")))
ERROR_500 = Reply(500, b"<Error><Code>InternalError</Code><Message>oops</Message></Error>")
SLOW_DOWN_503 = Reply(503, b"<Error><Code>SlowDown</Code><Message>slow down</Message></Error>")


def retrying_client(stub: StubCI, stats: ApiStats, sleeps: Sleeps, **kwargs: object) -> CIClient:
    options: dict[str, object] = {"retry": RETRY, "sleep": sleeps, "random": lambda: 1.0}
    options.update(kwargs)
    return make_client(stub, stats, token=TOKEN, **options)


def retry_counts(stats: ApiStats) -> dict[tuple[str, str, str], int]:
    return dict(stats.snapshot().retries)


@pytest.mark.parametrize(
    "failure",
    [
        ERROR_500,
        Reply(502, b"<html><title>502 Bad Gateway</title></html>"),
        Reply(action="reset"),
        Reply(body=xml(job_xml("j1")), action="truncate"),
        Reply(body=b"<Response><JobsDetail><JobId>j</JobsDetail></Response>"),
        Reply(body=b"<html><body>login</body></html>"),
        Reply(body=xml("<JobsDetail><JobId>j1</JobId><State>Success</State></JobsDetail>")),
    ],
    ids=["500", "gateway-html", "reset", "truncated", "malformed", "html-200", "no-creation-time"],
)
def test_transient_failures_are_retried_with_backoff(
    stub: StubCI, stats: RecordingStats, failure: Reply
) -> None:
    stub.handler = scripted(failure, failure, OK_JOBS)
    sleeps = Sleeps()
    with retrying_client(stub, stats, sleeps) as client:
        (job,) = client.list_jobs(MEDIA, "q1", "Transcode", ["Success"])
    assert job.job_id == "j1"
    assert len(stub.received) == 3
    assert sleeps.waits == [0.5, 1.0]  # full jitter drawn at its top: initial, then doubled
    assert [c[4] is None for c in stats.calls] == [False, False, True]  # every attempt counted
    assert retry_counts(stats) == {("examplebucket-1250000000", "ap-chongqing", "/jobs"): 2}


def test_a_timeout_is_retried(stub: StubCI, stats: RecordingStats) -> None:
    stub.handler = scripted(Reply(action="stall"), OK_JOBS)
    sleeps = Sleeps()
    with retrying_client(stub, stats, sleeps, timeout=0.2) as client:
        assert len(client.list_jobs(MEDIA, "q1", "Transcode", ["Success"])) == 1
    assert [c[3:] for c in stats.calls] == [("error", "timeout"), ("200", None)]


def test_retries_stop_after_the_last_attempt(stub: StubCI, stats: RecordingStats) -> None:
    stub.handler = scripted(ERROR_500)
    sleeps = Sleeps()
    with retrying_client(stub, stats, sleeps) as client, pytest.raises(CIAPIError) as info:
        client.list_queues(MEDIA)
    assert info.value.kind == "InternalError"
    assert len(stub.received) == 3 and len(sleeps.waits) == 2
    assert [c[3:] for c in stats.calls] == [("500", "InternalError")] * 3


def test_jitter_comes_from_the_injected_random(stub: StubCI, stats: RecordingStats) -> None:
    stub.handler = scripted(ERROR_500)
    draws = iter([0.25, 0.5])
    sleeps = Sleeps()
    with (
        retrying_client(stub, stats, sleeps, random=lambda: next(draws)) as client,
        pytest.raises(CIAPIError),
    ):
        client.list_queues(MEDIA)
    assert sleeps.waits == [0.125, 0.5]


def test_without_a_policy_the_client_tries_once(stub: StubCI, stats: RecordingStats) -> None:
    stub.handler = scripted(ERROR_500, OK_JOBS)
    with make_client(stub, stats) as client, pytest.raises(CIAPIError):
        client.list_queues(MEDIA)
    assert len(stub.received) == 1


@pytest.mark.parametrize(
    ("reply", "error", "kind"),
    [
        (Reply(400, b"<Error><Code>InvalidArgument</Code></Error>"), CIAPIError, "InvalidArgument"),
        (
            Reply(404, b"<Error><Code>ResourceNotFound</Code></Error>"),
            CIAPIError,
            "ResourceNotFound",
        ),
        (
            Reply(body=b"<Response>" + b" " * 3000 + b"</Response>"),
            CIInvalidResponse,
            "invalid_response",
        ),
        (Reply(body=xml(job_xml("j1", "Queuing"))), CIInvalidResponse, "invalid_response"),
    ],
    ids=["400", "404", "oversized", "unknown-state"],
)
def test_answers_that_would_be_the_same_again_are_not_retried(
    stub: StubCI, stats: RecordingStats, reply: Reply, error: type[Exception], kind: str
) -> None:
    stub.handler = scripted(reply, OK_JOBS)
    sleeps = Sleeps()
    with (
        retrying_client(stub, stats, sleeps, max_body_bytes=2000) as client,
        pytest.raises(error) as info,
    ):
        client.list_jobs(MEDIA, "q1", "Transcode", ["Success"])
    assert getattr(info.value, "kind", None) == kind
    assert len(stub.received) == 1 and sleeps.waits == [] and retry_counts(stats) == {}


def test_an_unknown_job_state_is_named_in_one_line(stub: StubCI, client: CIClient) -> None:
    stub.handler = lambda r: Reply(body=xml(job_xml("j1") + job_xml("j2", "Queuing")))
    with pytest.raises(CIInvalidResponse) as info:
        client.list_jobs(MEDIA, "q1", "Transcode", ["Running"])
    assert str(info.value) == "GET /jobs: job j2: unknown State 'Queuing'"
    stub.handler = lambda r: Reply(body=xml(job_xml("j3", "Queuing")))
    with pytest.raises(CIInvalidResponse, match="job j3: unknown State 'Queuing'"):
        client.describe_jobs(MEDIA, ["j3"])


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, "AccessDenied"),
        (403, "AccessDenied"),
        (401, "InvalidAuthorization"),
        (401, "MissingAuthorization"),
        (401, "SecretidNotExist"),
        (401, "SignatureExpired"),
        (403, ""),
        (400, "SignatureExpired"),
    ],
)
def test_auth_failures_are_not_retried_and_name_the_code(
    stub: StubCI, stats: RecordingStats, status: int, code: str
) -> None:
    body = f"<Error><Code>{code}</Code><Message>no</Message></Error>".encode()
    stub.handler = scripted(Reply(status, body), OK_JOBS)
    sleeps = Sleeps()
    with retrying_client(stub, stats, sleeps) as client, pytest.raises(CIAuthError) as info:
        client.list_queues(MEDIA)
    err = info.value
    assert err.kind == (code or f"http_{status}")
    assert str(err).startswith(f"HTTP {status} {code}: no; not retried: ")
    hint = "clock" if code == "SignatureExpired" else "credentials"
    assert hint in str(err) and "\n" not in str(err)
    assert len(stub.received) == 1 and sleeps.waits == []
    assert [c[3:] for c in stats.calls] == [(str(status), err.kind)]


@pytest.mark.parametrize(
    ("reply", "hold"),
    [
        (Reply(429, b"", {"Retry-After": "7"}), 7.0),
        (Reply(429, b"", {"Retry-After": "0"}), 0.0),
        (Reply(429, b"", {"Retry-After": "86400"}), 300.0),  # capped at five minutes
        (
            Reply(
                429,
                b"",
                {
                    "Retry-After": "Tue, 14 Nov 2023 22:15:20 GMT",
                    "Date": "Tue, 14 Nov 2023 22:13:20 GMT",
                },
            ),
            120.0,
        ),
        (Reply(429, b"", {"Retry-After": "soon"}), 0.0),
        (SLOW_DOWN_503, 0.0),
        (Reply(400, b"<Error><Code>SlowDown</Code></Error>"), 0.0),
        (Reply(200, b"<Error><Code>SlowDown</Code></Error>"), None),  # not throttling: invalid
    ],
    ids=["seconds", "zero", "capped", "http-date", "junk", "503", "slowdown-400", "error-200"],
)
def test_throttling_is_retried_after_retry_after_and_slows_the_target(
    stub: StubCI, stats: RecordingStats, reply: Reply, hold: float | None
) -> None:
    stub.handler = scripted(reply, OK_JOBS)
    sleeps = Sleeps()
    pacer = Pacer(clock=sleeps.clock)
    with retrying_client(stub, stats, sleeps, pacer=pacer) as client:
        assert len(client.list_jobs(MEDIA, "q1", "Transcode", ["Success"])) == 1
    key = ("examplebucket-1250000000", "ap-chongqing", "/jobs")
    if hold is None:
        assert sleeps.waits == [0.5] and stats.snapshot().throttled == {}
        return
    # One wait: for Retry-After or the back-off, whichever is longer (the pacer holds every
    # request of the target that long too, so the retry waits no more than that).
    assert sleeps.waits == [max(0.5, hold)]
    assert stats.snapshot().throttled == {key: 1}
    assert stats.snapshot().retries == {key: 1}
    # Spaced from now on; one success takes a sixteenth off, and the gauge follows.
    assert stats.snapshot().spacing == {key[:2]: pytest.approx(0.1 * 15 / 16)}


def test_a_throttled_target_keeps_its_requests_apart(stub: StubCI, stats: RecordingStats) -> None:
    stub.handler = scripted(SLOW_DOWN_503, SLOW_DOWN_503, OK_JOBS)
    sleeps = Sleeps()
    pacer = Pacer(clock=sleeps.clock)
    with retrying_client(stub, stats, sleeps, pacer=pacer, random=lambda: 0.0) as client:
        client.list_jobs(MEDIA, "q1", "Transcode", ["Success"])
        assert pacer.spacing == pytest.approx(0.2 * 15 / 16)  # doubled twice, relieved once
        client.list_jobs(MEDIA, "q1", "Transcode", ["Success"])
    # No back-off drawn (random 0): the waits are the pacing, 0.1 s then 0.2 s apart.
    assert sleeps.waits == pytest.approx([0.1, 0.2])


def test_throttled_on_the_last_attempt_still_slows_the_next_request(
    stub: StubCI, stats: RecordingStats
) -> None:
    stub.handler = scripted(Reply(429, b"", {"Retry-After": "30"}), OK_JOBS)
    sleeps = Sleeps()
    pacer = Pacer(clock=sleeps.clock)
    with retrying_client(stub, stats, sleeps, pacer=pacer, retry=RetryPolicy(1, 0, 0)) as client:
        with pytest.raises(CIAPIError):
            client.list_queues(MEDIA)
        assert sleeps.waits == []
        client.list_queues(MEDIA)
    assert sleeps.waits == [30.0]


def test_stopping_cuts_a_retry_wait_short(stub: StubCI, stats: RecordingStats) -> None:
    stub.handler = scripted(ERROR_500)
    sleeps = Sleeps(stop_after=1)
    stopping = threading.Event()
    with (
        retrying_client(stub, stats, sleeps, stopping=stopping) as client,
        pytest.raises(CIStopped) as info,
    ):
        client.list_queues(MEDIA)
    assert info.value.kind == "stopped"
    assert len(stub.received) == 1  # the retry never went out


def test_a_stopped_client_sends_nothing(stub: StubCI, stats: RecordingStats) -> None:
    stopping = threading.Event()
    stopping.set()
    with (
        retrying_client(stub, stats, Sleeps(), stopping=stopping) as client,
        pytest.raises(CIStopped),
    ):
        client.list_queues(MEDIA)
    assert stub.received == [] and stats.calls == []


def test_every_attempt_passes_the_shared_gate(stub: StubCI, stats: RecordingStats) -> None:
    stub.handler = scripted(ERROR_500, OK_JOBS)
    gate = RequestGate(1000.0, 10, concurrency=1)
    with retrying_client(stub, stats, Sleeps(), gate=gate) as client:
        client.list_queues(MEDIA)
    assert gate.granted == 2 and gate.in_flight == 0


def test_a_credentials_failure_is_one_safe_line_and_not_retried(
    stub: StubCI, stats: RecordingStats
) -> None:
    class Expired:
        def get(self) -> Credentials:
            raise CredentialsError("role ci-exporter: keys expired at 12:00, refresh failed")

    sleeps = Sleeps()
    client = CIClient(
        bucket="b",
        region="r",
        endpoint=stub.url,
        credentials=Expired(),
        stats=stats,
        retry=RETRY,
        sleep=sleeps,
    )
    with client, pytest.raises(CICredentialsError) as info:
        client.list_queues(MEDIA)
    assert info.value.kind == "credentials"
    assert str(info.value) == (
        "credentials: role ci-exporter: keys expired at 12:00, refresh failed"
    )
    assert stub.received == [] and sleeps.waits == [] and stats.calls == []


def test_secrets_echoed_in_an_error_are_redacted(stub: StubCI, stats: RecordingStats) -> None:
    body = (
        f"<Error><Code>AccessDenied</Code><Message>token {TOKEN} or key {SECRET_KEY} "
        f"refused</Message><RequestId>{TOKEN}</RequestId></Error>"
    ).encode()
    stub.handler = scripted(Reply(403, body))
    with retrying_client(stub, stats, Sleeps()) as client, pytest.raises(CIAuthError) as info:
        client.list_queues(MEDIA)
    text = str(info.value) + repr(info.value)
    assert TOKEN not in text and SECRET_KEY not in text
    assert "token <redacted> or key <redacted> refused" in text


def test_the_environment_is_read_once_when_the_client_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/custom.pem")
    client = CIClient(
        bucket="examplebucket-1250000000",
        region="ap-beijing",
        endpoint="https://examplebucket-1250000000.ci.ap-beijing.myqcloud.com",
        credentials=StaticCredentials(Credentials("AKIDenv", "key")),
    )
    session = client._session
    assert session.proxies.get("https") == "http://proxy.example:3128"
    assert session.verify == "/etc/ssl/certs/custom.pem"
    assert session.trust_env is False  # not looked up again on every request
    monkeypatch.setenv("NO_PROXY", "examplebucket-1250000000.ci.ap-beijing.myqcloud.com")
    bypassed = CIClient(
        bucket="examplebucket-1250000000",
        region="ap-beijing",
        endpoint="https://examplebucket-1250000000.ci.ap-beijing.myqcloud.com",
        credentials=StaticCredentials(Credentials("AKIDenv", "key")),
    )
    assert "https" not in bypassed._session.proxies
