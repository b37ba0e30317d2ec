"""exporter.signing against the official SDK (cos-python-sdk-v5's CosS3Auth) as the oracle.

The SDK signs at `int(time.time())` with key time `now-60;now+expire`, signs the `host` it
takes from the URL (the hostname: no port) when no Host header is given, and signs only the
headers `filter_headers` keeps. The exporter signs exactly the headers it is handed, chosen by
`signed_headers`; so each request here goes through both paths and the headers must agree.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
import requests
from freezegun import freeze_time
from qcloud_cos import CosConfig
from qcloud_cos.cos_auth import CosS3Auth, filter_headers

from exporter.ci.client import CIClient
from exporter.ci.services import SERVICES
from exporter.credentials import Credentials, StaticCredentials
from exporter.signing import (
    TOKEN_HEADER,
    authorization,
    expected_signature,
    parse_authorization,
    signed_headers,
)
from exporter.simulator import Simulator

SEED = 20260101
CASES = 60
PATHS = (
    "/jobs",
    "/asr_jobs",
    "/jobs/id1,id2",
    "/queue",
    "/asrqueue",
    "/ai_queue",
    "/picqueue",
    "/pic_jobs",
    "/docqueue",
    "/doc_jobs",
    "/jobs/j8d2f1c3e0a",
    "/asr_jobs/a1,b2,c3",
)
ENDPOINTS = (
    "https://examplebucket-1250000000.ci.ap-chongqing.myqcloud.com",
    "https://other-1300000001.ci.ap-guangzhou.myqcloud.com",
    "http://127.0.0.1:8080",
    "http://localhost:39001",
)
PARAM_KEYS = (
    "queueId",
    "tag",
    "State",
    "pageNumber",
    "pageSize",
    "nextToken",
    "size",
    "orderByTime",
    "startCreationTime",
    "endCreationTime",
    "queueIds",
    "category",
    "X-Mixed-Case",
    "标签",
    "a b",
    "k+ey",
    "with/slash",
    "eq=sign",
)
VALUE_PIECES = (
    "",
    " ",
    "+",
    "/",
    "=",
    "&",
    "%",
    "~",
    "*",
    "'",
    "中文",
    "任务",
    "a",
    "Z",
    "0",
    "2026-01-01T00:00:00+0800",
    "Transcode",
    "a b",
    "é",
    ";",
    ",",
    "?",
    "#",
    ":",
    "@",
    "\u00a0",
)


@dataclass(frozen=True)
class Case:
    method: str
    endpoint: str
    path: str
    params: dict[str, str]
    token: str | None
    now: datetime
    expire: int
    secret_id: str
    secret_key: str


def _value(rng: random.Random) -> str:
    if rng.random() < 0.15:
        return ""
    return "".join(rng.choice(VALUE_PIECES) for _ in range(rng.randint(1, 6)))


def _params(rng: random.Random) -> dict[str, str]:
    keys = rng.sample(PARAM_KEYS, rng.randint(0, 7))
    # Random case changes, but no two keys equal once lower-cased: the SDK keeps one of such
    # a pair in a dict, which no request of ours would ever send.
    keys = [k.upper() if rng.random() < 0.2 else k for k in keys]
    return {key: _value(rng) for key in keys}


def _cases() -> list[Case]:
    rng = random.Random(SEED)
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    cases = []
    for index in range(CASES):
        cases.append(
            Case(
                method=rng.choice(("GET", "GET", "GET", "POST", "PUT")),
                endpoint=rng.choice(ENDPOINTS),
                path=rng.choice(PATHS),
                params=_params(rng),
                # Every third request carries a temporary-credential token.
                token=None if index % 3 else f"tok{rng.getrandbits(64):x}+/=中",
                now=base + timedelta(seconds=rng.randint(0, 10**8)),
                expire=rng.choice((600, 3600, 10000)),
                secret_id=f"AKID{rng.getrandbits(80):x}",
                secret_key=f"{rng.getrandbits(128):x}",
            )
        )
    return cases


def _request_headers(case: Case) -> dict[str, str]:
    # What the SDK's send_request adds for a CI call with a token.
    return {} if case.token is None else {TOKEN_HEADER: case.token}


def _prepared(case: Case) -> requests.PreparedRequest:
    # A session's prepare_request adds what a real send carries: requests' default headers
    # (User-Agent, Accept, ...) and, for POST/PUT without a body, Content-Length: 0.
    return requests.Session().prepare_request(
        requests.Request(
            case.method,
            case.endpoint + case.path,
            params=case.params,
            headers=_request_headers(case),
        )
    )


def _sdk_authorization(case: Case) -> str:
    conf = CosConfig(
        Region="ap-chongqing", SecretId=case.secret_id, SecretKey=case.secret_key, Token=case.token
    )
    auth = CosS3Auth(conf, key=case.path, params=case.params, expire=case.expire, sign_host=True)
    with freeze_time(case.now):
        signed = auth(_prepared(case))
    return str(signed.headers["Authorization"])


def _our_authorization(case: Case) -> str:
    # The host the SDK signs: the URL's hostname, without the port.
    host = urlsplit(case.endpoint).hostname or ""
    sent = {"Host": host, **_prepared(case).headers}
    start = int(case.now.timestamp())
    return authorization(
        case.secret_id,
        case.secret_key,
        case.method,
        case.path,
        case.params,
        signed_headers(sent),
        start - 60,
        start + case.expire,
    )


ALL_CASES = _cases()


def test_the_generated_requests_cover_the_awkward_parts() -> None:
    """Guards the generator: a change to it must not quietly drop the hard inputs."""
    values = [v for c in ALL_CASES for v in c.params.values()]
    keys = [k for c in ALL_CASES for k in c.params]
    for piece in (" ", "+", "/", "=", "&", "中文"):
        assert any(piece in v for v in values), piece
    assert "" in values
    assert any(k != k.lower() for k in keys) and any(not k.isascii() for k in keys)
    assert {c.path for c in ALL_CASES} >= {"/jobs", "/asr_jobs", "/jobs/id1,id2", "/queue"}
    assert sum(c.token is not None for c in ALL_CASES) >= 15
    assert any(not c.params for c in ALL_CASES)


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: f"{c.method}{c.path}")
def test_authorization_matches_the_sdk(case: Case) -> None:
    assert _our_authorization(case) == _sdk_authorization(case)


def test_the_token_header_is_signed() -> None:
    first = next(c for c in ALL_CASES if c.token is not None)
    case = replace(first, method="GET")  # no Content-Length to sign
    fields = parse_authorization(_our_authorization(case))
    assert fields["q-header-list"] == f"host;{TOKEN_HEADER}"
    without = parse_authorization(_our_authorization(replace(case, token=None)))
    assert without["q-header-list"] == "host"
    assert without["q-signature"] != fields["q-signature"]


def test_signed_headers_agree_with_the_sdk_on_what_the_client_sends() -> None:
    sent = {
        "Host": "b-1250000000.ci.ap-chongqing.myqcloud.com",
        TOKEN_HEADER: "t",
        "Content-Type": "application/xml",
        "Content-MD5": "abc",
        "Content-Length": "0",
        "x-cos-meta-a": "1",
        "X-CI-Other": "2",
        "User-Agent": "tencent-ci-exporter/0.1",
        "Accept": "*/*",
        "Accept-Encoding": "gzip",
        "Connection": "keep-alive",
        "Authorization": "q-sign-algorithm=sha1",
        "x-request-id": "r",
    }
    assert signed_headers(sent) == filter_headers(sent)


def test_signed_headers_never_sign_what_the_sdk_would_not() -> None:
    names = [
        "Host",
        "Range",
        "Cache-Control",
        "Expires",
        "Origin",
        "If-Match",
        "Expect",
        "Pic-Operations",
        "Transfer-Encoding",
        "Date",
        "Cookie",
        "X-Forwarded-For",
        "x-cos-acl",
        "x-ci-security-token",
        "Content-Type",
        "Content-Encoding",
    ]
    headers = {name: "v" for name in names}
    assert set(signed_headers(headers)) <= set(filter_headers(headers))


def test_parse_authorization_round_trip() -> None:
    for case in ALL_CASES[:20]:
        value = _our_authorization(case)
        fields = parse_authorization(value)
        start = int(case.now.timestamp())
        key_time = f"{start - 60};{start + case.expire}"
        assert fields["q-sign-algorithm"] == "sha1"
        assert fields["q-ak"] == case.secret_id
        assert fields["q-sign-time"] == fields["q-key-time"] == key_time
        assert fields["q-url-param-list"].split(";") == (
            sorted(fields["q-url-param-list"].split(";")) if case.params else [""]
        )
        host = urlsplit(case.endpoint).hostname or ""
        headers = signed_headers({"Host": host, **_prepared(case).headers})
        assert fields["q-signature"] == expected_signature(
            case.secret_key, case.method, case.path, case.params, headers, key_time
        )
        # Every field back, in the order the header lists them.
        assert "&".join(f"{k}={v}" for k, v in fields.items()) == value


def test_parse_authorization_of_the_sdk_header_names_every_field() -> None:
    fields = parse_authorization(_sdk_authorization(ALL_CASES[0]))
    assert list(fields) == [
        "q-sign-algorithm",
        "q-ak",
        "q-sign-time",
        "q-key-time",
        "q-header-list",
        "q-url-param-list",
        "q-signature",
    ]


def test_parse_authorization_of_junk_is_partial_not_an_error() -> None:
    assert parse_authorization("") == {}
    assert parse_authorization("Bearer abc") == {}
    assert parse_authorization("q-ak=x&junk&q-signature=") == {"q-ak": "x", "q-signature": ""}


def test_a_wrong_key_or_time_changes_the_signature() -> None:
    """So that the equality tests above could fail: inputs do reach the signature."""
    case = ALL_CASES[1]
    reference = parse_authorization(_our_authorization(case))["q-signature"]
    other_key = replace(case, secret_key=case.secret_key + "x")
    later = replace(case, now=case.now + timedelta(seconds=1))
    assert parse_authorization(_our_authorization(other_key))["q-signature"] != reference
    assert parse_authorization(_our_authorization(later))["q-signature"] != reference


# -- over real HTTP: the client's requests, as the simulator receives them -------------------


class _RecordingSession(requests.Session):
    """Keeps every request the client sends, as sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        return super().send(request, **kwargs)


def _sdk_authorization_of(
    sent: requests.PreparedRequest, secret_id: str, secret_key: str, token: str | None, expire: int
) -> str:
    """What the SDK signs for the same request: same path, query and Host (with its port)."""
    parts = urlsplit(sent.url or "")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    conf = CosConfig(Region="ap-chongqing", SecretId=secret_id, SecretKey=secret_key, Token=token)
    auth = CosS3Auth(conf, key=unquote(parts.path), params=params, expire=expire, sign_host=True)
    headers = {"Host": parts.netloc}
    if token:
        headers[TOKEN_HEADER] = token
    probe = requests.Request("GET", sent.url, headers=headers).prepare()
    return str(auth(probe).headers["Authorization"])


def test_client_signatures_over_http_match_the_sdk_and_the_simulator_accepts_them() -> None:
    rng = random.Random(SEED + 1)
    secret_id, secret_key, token = "AKIDoverhttp0000000000000000000000", "k" * 32, "tok+/=x"
    sim = Simulator({secret_id: secret_key}, tokens={secret_id: token})
    bucket = sim.add_bucket("sign-1250000000", "ap-chongqing")
    queue = bucket.add_queue("media")
    session = _RecordingSession()
    with sim.start(), freeze_time("2026-03-04 05:06:07"):
        client = CIClient(
            bucket="sign-1250000000",
            region="ap-chongqing",
            endpoint=sim.endpoint(bucket.name),
            credentials=StaticCredentials(Credentials(secret_id, secret_key, token)),
            session=session,
            timeout=5,
        )
        for _ in range(50):
            tag = "".join(rng.choice(VALUE_PIECES[1:]) for _ in range(rng.randint(1, 5)))
            states = rng.sample(["Submitted", "Running", "Success", "Failed", "Pause"], 2)
            start = rng.randint(1_600_000_000, 1_800_000_000)
            client.list_jobs(SERVICES["media"], queue, tag, states, start_creation_time=start)
        client.list_queues(SERVICES["media"])
        client.describe_jobs(SERVICES["media"], ["jnotthere", "jnothereeither"])
    assert len(session.sent) == 52
    for sent in session.sent:
        with freeze_time("2026-03-04 05:06:07"):
            expected = _sdk_authorization_of(sent, secret_id, secret_key, token, 600)
        assert sent.headers["Authorization"] == expected, sent.url
    assert [r.status for r in sim.requests] == [200] * 52
