"""The CI simulator, over real HTTP on loopback, signed with exporter.signing."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Mapping
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import pytest
import requests
from freezegun import freeze_time
from lxml import etree

from exporter.signing import TOKEN_HEADER, authorization
from exporter.simulator import (
    DEMO_SECRET_ID,
    DEMO_SECRET_KEY,
    FAULT_KINDS,
    Fault,
    SimBucket,
    Simulator,
    Stream,
    Workload,
    build_demo,
)
from exporter.simulator.records import Clock
from exporter.simulator.render import format_time

SID, KEY = "AKIDtest0000", "test-secret-key"
TMP_SID, TMP_KEY, TOKEN = "AKIDtemp0000", "temp-secret-key", "temp-session-token"
BUCKET = "test-1250000000"
T0 = 1_700_000_000  # whole seconds: CI times have one-second granularity


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator({SID: KEY}, seed=3)
    simulator.add_credentials(TMP_SID, TMP_KEY, TOKEN)
    simulator.add_bucket(BUCKET, "ap-beijing")
    with simulator:
        yield simulator


def call(
    sim: Simulator,
    path: str,
    params: Mapping[str, str] | None = None,
    *,
    bucket: str = BUCKET,
    sid: str = SID,
    key: str = KEY,
    token: str | None = None,
    sign_token: bool = True,
    signed_params: Mapping[str, str] | None = None,
    sign_host: bool = True,
    window: tuple[int, int] | None = None,
    timeout: float = 5.0,
    method: str = "GET",
    session: requests.Session | None = None,
) -> requests.Response:
    """One request, signed the way the exporter signs (host, plus the token when sent)."""
    params = dict(params or {})
    endpoint = sim.endpoint(bucket)
    to_sign = {"host": urlsplit(endpoint).netloc} if sign_host else {}
    headers: dict[str, str] = {}
    if token is not None:
        headers[TOKEN_HEADER] = token
        if sign_token:
            to_sign[TOKEN_HEADER] = token
    now = int(time.time())
    start, end = window or (now - 60, now + 600)
    headers["Authorization"] = authorization(
        sid,
        key,
        method,
        path,
        params if signed_params is None else signed_params,
        to_sign,
        start,
        end,
    )
    return (session or requests).request(
        method, endpoint + path, params=params, headers=headers, timeout=timeout
    )


def xml(resp: requests.Response) -> etree._Element:
    return etree.fromstring(resp.content)


def error_code(resp: requests.Response) -> str:
    root = xml(resp)
    assert root.tag == "Error"
    return str(root.findtext("Code"))


def job_ids(resp: requests.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [str(j.findtext("JobId")) for j in xml(resp).iterfind("JobsDetail")]


def token_of(resp: requests.Response) -> str:
    return str(xml(resp).findtext("NextToken"))


def list_all(sim: Simulator, params: Mapping[str, str], path: str = "/jobs") -> list[str]:
    seen: list[str] = []
    query = dict(params)
    for _ in range(100):
        resp = call(sim, path, query)
        seen += job_ids(resp)
        token = token_of(resp)
        if not token:
            return seen
        query["nextToken"] = token
    raise AssertionError("listing did not end")


def bucket(sim: Simulator) -> SimBucket:
    return sim.bucket(BUCKET)


# -- the model -------------------------------------------------------------------------


def test_job_life_cycle_and_ids() -> None:
    b = SimBucket("b-1", seed=1)
    q = b.add_queue("media", name="q", at=T0)
    job_id = b.create_job(q, "Transcode", at=T0 + 0.7)
    assert re.fullmatch(r"j[0-9a-f]{32}", job_id)
    assert b.job(job_id).state == "Submitted"
    assert b.job(job_id).creation_time == T0  # whole seconds
    b.start_job(job_id, at=T0 + 2)
    b.finish_job(job_id, "Failed", code="InvalidInputFile", message="bad", at=T0 + 5)
    done = b.job(job_id)
    assert (done.state, done.start_time, done.end_time) == ("Failed", T0 + 2, T0 + 5)
    assert (done.code, done.message) == ("InvalidInputFile", "bad")
    with pytest.raises(ValueError):
        b.finish_job(job_id)
    b.delete_job(job_id)
    with pytest.raises(KeyError):
        b.job(job_id)


def test_pausing_a_queue_holds_waiting_jobs_only() -> None:
    b = SimBucket("b-1", seed=1)
    q = b.add_queue("speech")
    waiting, running = b.create_job(q, "SpeechRecognition"), b.create_job(q, "SpeechRecognition")
    b.start_job(running)
    b.set_queue_paused(q, True)
    assert (b.job(waiting).state, b.job(running).state) == ("Pause", "Running")
    assert b.job(b.create_job(q, "SpeechRecognition")).state == "Pause"
    b.set_queue_paused(q, False)
    assert b.job(waiting).state == "Submitted"
    assert b.queue(q).state == "Active"


def test_removing_a_queue_removes_its_jobs() -> None:
    b = SimBucket("b-1", seed=1)
    q, other = b.add_queue("pic"), b.add_queue("pic")
    b.create_job(q, "PicProcess")
    kept = b.create_job(other, "PicProcess")
    b.remove_queue(q)
    assert [j.job_id for j in b.jobs()] == [kept]


def test_categories_are_checked_per_service() -> None:
    b = SimBucket("b-1")
    assert b.queue(b.add_queue("media", category="SpeedTranscoding")).category == (
        "SpeedTranscoding"
    )
    assert b.queue(b.add_queue("ai")).category == "AIProcess"
    with pytest.raises(ValueError):
        b.add_queue("speech", category="Transcoding")


# -- authentication --------------------------------------------------------------------


def test_a_signed_request_is_answered_with_ci_headers(sim: Simulator) -> None:
    resp = call(sim, "/asrqueue")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/xml"
    assert resp.headers["x-ci-request-id"]
    assert resp.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert xml(resp).findtext("RequestId") == resp.headers["x-ci-request-id"]


def test_missing_authorization(sim: Simulator) -> None:
    resp = requests.get(sim.endpoint(BUCKET) + "/queue", timeout=5)
    assert resp.status_code == 401
    assert error_code(resp) == "MissingAuthorization"
    root = xml(resp)
    assert [c.tag for c in root] == ["Code", "Message", "RequestId", "TraceId"]
    assert root.findtext("RequestId") == resp.headers["x-ci-request-id"]


def test_malformed_authorization(sim: Simulator) -> None:
    resp = requests.get(
        sim.endpoint(BUCKET) + "/queue", headers={"Authorization": "Bearer x"}, timeout=5
    )
    assert (resp.status_code, error_code(resp)) == (401, "InvalidAuthorization")


def test_unknown_secret_id(sim: Simulator) -> None:
    resp = call(sim, "/queue", sid="AKIDnobody")
    assert (resp.status_code, error_code(resp)) == (401, "SecretidNotExist")


def test_wrong_key_does_not_match(sim: Simulator) -> None:
    resp = call(sim, "/queue", key="not-the-key")
    assert (resp.status_code, error_code(resp)) == (401, "InvalidAuthorization")


@pytest.mark.parametrize("offset", [(-700, -100), (100, 700)])
def test_signature_outside_its_window_is_expired(sim: Simulator, offset: tuple[int, int]) -> None:
    now = int(time.time())
    resp = call(sim, "/queue", window=(now + offset[0], now + offset[1]))
    assert (resp.status_code, error_code(resp)) == (401, "SignatureExpired")


def test_every_query_parameter_must_be_signed(sim: Simulator) -> None:
    resp = call(
        sim, "/queue", {"pageSize": "5", "pageNumber": "1"}, signed_params={"pageSize": "5"}
    )
    assert (resp.status_code, error_code(resp)) == (401, "InvalidAuthorization")


def test_host_must_be_signed(sim: Simulator) -> None:
    resp = call(sim, "/queue", sign_host=False)
    assert (resp.status_code, error_code(resp)) == (401, "InvalidAuthorization")


def test_temporary_key_with_its_token(sim: Simulator) -> None:
    assert call(sim, "/queue", sid=TMP_SID, key=TMP_KEY, token=TOKEN).status_code == 200


def test_token_must_be_signed(sim: Simulator) -> None:
    resp = call(sim, "/queue", sid=TMP_SID, key=TMP_KEY, token=TOKEN, sign_token=False)
    assert (resp.status_code, error_code(resp)) == (401, "InvalidAuthorization")


@pytest.mark.parametrize("token", ["stale-token", None])
def test_temporary_key_with_a_wrong_or_no_token(sim: Simulator, token: str | None) -> None:
    resp = call(sim, "/queue", sid=TMP_SID, key=TMP_KEY, token=token)
    assert (resp.status_code, error_code(resp)) == (403, "AccessDenied")


def test_unknown_path_and_method(sim: Simulator) -> None:
    resp = call(sim, "/file_jobs", {"queueId": "x"})
    assert (resp.status_code, error_code(resp)) == (404, "ResourceNotFound")
    resp = call(sim, "/queue", method="POST")
    assert (resp.status_code, error_code(resp)) == (405, "MethodNotAllowed")


# -- queue listings --------------------------------------------------------------------


def test_queue_pagination_and_media_categories(sim: Simulator) -> None:
    b = bucket(sim)
    plain = [b.add_queue("media", name=f"t{i}", at=T0 + i) for i in range(12)]
    speed = [b.add_queue("media", category="SpeedTranscoding", at=T0 + 20 + i) for i in range(2)]
    b.add_queue("speech")  # another service: never on /queue
    pages = [call(sim, "/queue", {"pageNumber": str(n), "pageSize": "5"}) for n in (1, 2, 3)]
    listed = [q.findtext("QueueId") for p in pages for q in xml(p).iterfind("QueueList")]
    assert listed == plain  # the default category leaves SpeedTranscoding out
    assert {xml(p).findtext("TotalCount") for p in pages} == {"12"}
    assert xml(pages[1]).findtext("PageNumber") == "2"
    every = xml(call(sim, "/queue", {"category": "CateAll", "pageSize": "100"}))
    assert every.findtext("TotalCount") == "14"
    assert [q.findtext("QueueId") for q in every.iterfind("QueueList")] == plain + speed
    fast = xml(call(sim, "/queue", {"category": "SpeedTranscoding"}))
    assert [q.findtext("Category") for q in fast.iterfind("QueueList")] == ["SpeedTranscoding"] * 2


def test_queue_fields_state_filter_and_escaping(sim: Simulator) -> None:
    b = bucket(sim)
    b.add_queue("speech", name="a<&>b", max_concurrent=3, notify=True, at=T0)
    paused = b.add_queue("speech", paused=True, at=T0 + 1)
    resp = call(sim, "/asrqueue")
    first = xml(resp).find("QueueList")
    assert first is not None
    assert first.findtext("Name") == "a<&>b"
    assert first.findtext("MaxConcurrent") == "3"
    assert first.findtext("State") == "Active"
    assert first.findtext("Category") == "Speeching"
    assert first.findtext("BucketId") == BUCKET
    assert first.findtext("CreateTime") == "2023-11-15T06:13:20+0800"
    assert first.findtext("NotifyConfig/State") == "On"
    only = xml(call(sim, "/asrqueue", {"state": "Paused"}))
    assert [q.findtext("QueueId") for q in only.iterfind("QueueList")] == [paused]


@pytest.mark.parametrize(
    ("service", "path", "category"),
    [
        ("ai", "/ai_queue", "AIProcess"),
        ("speech", "/asrqueue", "Speeching"),
        ("pic", "/picqueue", "PicProcessing"),
        ("doc", "/docqueue", "DocProcess"),
    ],
)
def test_each_service_lists_its_own_queues(
    sim: Simulator, service: str, path: str, category: str
) -> None:
    mine = bucket(sim).add_queue(service)
    bucket(sim).add_queue("media")
    root = xml(call(sim, path))
    assert [q.findtext("QueueId") for q in root.iterfind("QueueList")] == [mine]
    assert root.findtext("QueueList/Category") == category


def test_queue_ids_and_non_existent_ones(sim: Simulator) -> None:
    b = bucket(sim)
    known = b.add_queue("pic")
    root = xml(call(sim, "/picqueue", {"queueIds": f"{known},pnope1,pnope2"}))
    assert [q.findtext("QueueId") for q in root.iterfind("QueueList")] == [known]
    assert [q.text for q in root.iterfind("NonExistPIDs/QueueID")] == ["pnope1", "pnope2"]


@pytest.mark.parametrize(
    "params",
    [
        {"pageSize": "0"},
        {"pageSize": "101"},
        {"pageNumber": "0"},
        {"pageSize": "ten"},
        {"state": "Sleeping"},
        {"category": "Everything"},
        {"queueIds": ",".join(f"p{i}" for i in range(11))},
    ],
)
def test_bad_queue_parameters(sim: Simulator, params: dict[str, str]) -> None:
    resp = call(sim, "/queue", params)
    assert (resp.status_code, error_code(resp)) == (400, "InvalidArgument")


# -- job listings ----------------------------------------------------------------------


def make_jobs(b: SimBucket, queue_id: str, count: int, tag: str = "Transcode") -> list[str]:
    return [b.create_job(queue_id, tag, at=T0 + i) for i in range(count)]


def test_job_fields_follow_the_seed_documents(sim: Simulator) -> None:
    b = bucket(sim)
    q = b.add_queue("media")
    waiting, failed, cancelled = make_jobs(b, q, 3)
    b.start_job(failed, at=T0 + 10)
    b.finish_job(failed, "Failed", code="InputFileNotExist", message="no <input>", at=T0 + 20)
    b.finish_job(cancelled, "Cancel", at=T0 + 30)
    root = xml(call(sim, "/jobs", {"queueId": q, "tag": "Transcode"}))
    by_id = {j.findtext("JobId"): j for j in root.iterfind("JobsDetail")}
    fresh = by_id[waiting]
    assert (fresh.findtext("State"), fresh.findtext("Code")) == ("Submitted", "Success")
    assert (fresh.findtext("StartTime"), fresh.findtext("EndTime")) == ("", "-")
    assert fresh.findtext("CreationTime") == format_time(T0)
    assert fresh.findtext("QueueId") == q
    assert fresh.findtext("Operation/Output/Region") == "ap-beijing"
    assert fresh.findtext("Input/Object")
    bad = by_id[failed]
    assert (bad.findtext("State"), bad.findtext("Code")) == ("Failed", "InputFileNotExist")
    assert bad.findtext("Message") == "no <input>"
    assert bad.findtext("StartTime") == format_time(T0 + 10)
    assert bad.findtext("EndTime") == format_time(T0 + 20)
    assert by_id[cancelled].findtext("Code") == "Success"
    assert root.findtext("NextToken") == ""


def test_states_filter_order_and_size(sim: Simulator) -> None:
    b = bucket(sim)
    q = b.add_queue("media")
    ids = make_jobs(b, q, 15)
    b.start_job(ids[3])
    b.start_job(ids[4])
    b.finish_job(ids[4])
    base = {"queueId": q, "tag": "Transcode"}
    assert job_ids(call(sim, "/jobs", base)) == ids[::-1][:10]  # Desc, 10 by default
    asc = job_ids(call(sim, "/jobs", {**base, "orderByTime": "Asc", "size": "100"}))
    assert asc == ids
    running = job_ids(call(sim, "/jobs", {**base, "states": "Running,Success"}))
    assert running == [ids[4], ids[3]]
    assert len(job_ids(call(sim, "/jobs", {**base, "states": "Submitted"}))) == 10
    assert job_ids(call(sim, "/jobs", {**base, "tag": "Snapshot"})) == []


def test_jobs_of_other_families_and_unknown_queues_list_nothing(sim: Simulator) -> None:
    b = bucket(sim)
    speech, ai = b.add_queue("speech"), b.add_queue("ai")
    b.create_job(speech, "SpeechRecognition")
    translated = b.create_job(ai, "Translation")
    # /jobs serves media and ai queues; a speech queue there lists nothing.
    assert job_ids(call(sim, "/jobs", {"queueId": speech, "tag": "SpeechRecognition"})) == []
    assert job_ids(call(sim, "/jobs", {"queueId": ai, "tag": "Translation"})) == [translated]
    assert len(job_ids(call(sim, "/asr_jobs", {"queueId": speech, "tag": "SpeechRecognition"})))
    assert job_ids(call(sim, "/pic_jobs", {"queueId": "pgone", "tag": "PicProcess"})) == []


@pytest.mark.parametrize(
    "params",
    [
        {"tag": "Transcode"},
        {"queueId": "q"},
        {"queueId": "q", "tag": "Transcode", "size": "0"},
        {"queueId": "q", "tag": "Transcode", "size": "101"},
        {"queueId": "q", "tag": "Transcode", "states": "Running,Sleeping"},
        {"queueId": "q", "tag": "Transcode", "orderByTime": "Newest"},
        {"queueId": "q", "tag": "Transcode", "nextToken": "never-issued"},
        {"queueId": "q", "tag": "Transcode", "startCreationTime": "2001-01-01 00:00:00"},
        {"queueId": "q", "tag": "Transcode", "endCreationTime": "2001-01-01T00:00:00"},
    ],
)
def test_bad_job_parameters(sim: Simulator, params: dict[str, str]) -> None:
    resp = call(sim, "/jobs", params)
    assert (resp.status_code, error_code(resp)) == (400, "InvalidArgument")


def test_size_100_is_allowed(sim: Simulator) -> None:
    q = bucket(sim).add_queue("doc")
    make_jobs(bucket(sim), q, 120, tag="DocProcess")
    resp = call(sim, "/doc_jobs", {"queueId": q, "tag": "DocProcess", "size": "100"})
    assert len(job_ids(resp)) == 100
    assert token_of(resp)


@pytest.mark.parametrize(("mode", "expected"), [("exclusive", [2]), ("inclusive", [1, 2, 3])])
def test_creation_time_bounds(sim: Simulator, mode: str, expected: list[int]) -> None:
    sim.creation_bounds = mode
    q = bucket(sim).add_queue("media")
    ids = make_jobs(bucket(sim), q, 5)  # created at T0 .. T0+4
    params = {
        "queueId": q,
        "tag": "Transcode",
        "orderByTime": "Asc",
        "startCreationTime": format_time(T0 + 1),  # "+0800" travels as %2B
        "endCreationTime": format_time(T0 + 3),
    }
    assert job_ids(call(sim, "/jobs", params)) == [ids[i] for i in expected]


def test_creation_bounds_setting_is_checked() -> None:
    with pytest.raises(ValueError):
        Simulator(creation_bounds="sometimes")


@pytest.mark.parametrize("order", ["Desc", "Asc"])
def test_pagination_is_stable_while_jobs_come_and_go(sim: Simulator, order: str) -> None:
    b = bucket(sim)
    q = b.add_queue("media")
    ids = make_jobs(b, q, 7)
    params = {"queueId": q, "tag": "Transcode", "size": "3", "orderByTime": order}
    first = call(sim, "/jobs", params)
    # Between pages: a new job arrives, one already listed and one not yet listed finish.
    newcomer = b.create_job(q, "Transcode", at=T0 + 100)
    listed_one, unlisted_one = job_ids(first)[0], (ids[0] if order == "Desc" else ids[-1])
    b.finish_job(listed_one)
    b.finish_job(unlisted_one)
    rest = list_all(sim, {**params, "nextToken": token_of(first)})
    seen = job_ids(first) + rest
    assert len(seen) == len(set(seen))
    assert set(ids) <= set(seen)
    # Newer than the cursor: a Desc listing has passed it, an Asc one reaches it at the end.
    assert (newcomer in seen) == (order == "Asc")


def test_a_token_is_reusable_but_bound_to_its_listing(sim: Simulator) -> None:
    b = bucket(sim)
    q = b.add_queue("media")
    make_jobs(b, q, 5)
    params = {"queueId": q, "tag": "Transcode", "size": "2"}
    token = token_of(call(sim, "/jobs", params))
    again = [job_ids(call(sim, "/jobs", {**params, "nextToken": token})) for _ in range(2)]
    assert again[0] == again[1]  # a client retrying a failed page gets the same page
    other = call(sim, "/jobs", {**params, "tag": "Snapshot", "nextToken": token})
    assert (other.status_code, error_code(other)) == (400, "InvalidArgument")


# -- describe by id --------------------------------------------------------------------


def test_describe_jobs_by_id(sim: Simulator) -> None:
    b = bucket(sim)
    media, speech = b.add_queue("media"), b.add_queue("speech")
    a, c = make_jobs(b, media, 2)
    spoken = b.create_job(speech, "SpeechRecognition")
    resp = call(sim, f"/jobs/{a},jnope,{c},{spoken}")
    assert job_ids(resp) == [a, c]
    assert [e.text for e in xml(resp).iterfind("NonExistJobIds")] == ["jnope", spoken]
    assert job_ids(call(sim, f"/asr_jobs/{spoken}")) == [spoken]


def test_describe_at_most_ten_ids(sim: Simulator) -> None:
    q = bucket(sim).add_queue("pic")
    ids = make_jobs(bucket(sim), q, 11, tag="PicProcess")
    assert len(job_ids(call(sim, "/pic_jobs/" + ",".join(ids[:10])))) == 10
    resp = call(sim, "/pic_jobs/" + ",".join(ids))
    assert (resp.status_code, error_code(resp)) == (400, "InvalidArgument")


# -- clock -----------------------------------------------------------------------------


def test_clock_offset_shows_in_date_times_and_signature_validity(sim: Simulator) -> None:
    with freeze_time("2024-01-02 03:04:05"):
        sim.clock_offset = 3600
        q = bucket(sim).add_queue("media")
        job = bucket(sim).create_job(q, "Transcode")
        now = int(time.time())
        resp = call(sim, "/jobs", {"queueId": q, "tag": "Transcode"}, window=(now, now + 7200))
        assert resp.headers["Date"] == "Tue, 02 Jan 2024 04:04:05 GMT"
        assert job_ids(resp) == [job]
        assert xml(resp).findtext("JobsDetail/CreationTime") == "2024-01-02T12:04:05+0800"
        # CI judges a signature by its own clock: an hour ahead, a 10-minute one has expired.
        late = call(sim, "/queue", window=(now - 60, now + 600))
        assert (late.status_code, error_code(late)) == (401, "SignatureExpired")


def test_date_header_follows_the_real_clock(sim: Simulator) -> None:
    before = time.time()
    date = parsedate_to_datetime(call(sim, "/queue").headers["Date"]).timestamp()
    assert before - 1 <= date <= time.time() + 1


# -- faults ----------------------------------------------------------------------------


def media_listing(sim: Simulator, jobs: int = 3) -> dict[str, str]:
    q = bucket(sim).add_queue("media")
    make_jobs(bucket(sim), q, jobs)
    return {"queueId": q, "tag": "Transcode"}


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("http_500", 500, "InternalError"),
        ("http_503", 503, "SlowDown"),
        ("http_429", 429, "SlowDown"),
    ],
)
def test_error_faults_on_one_path_for_n_times(
    sim: Simulator, kind: str, status: int, code: str
) -> None:
    params = media_listing(sim)
    sim.faults.add(Fault(kind=kind, path="/jobs", times=2, retry_after=7))
    assert call(sim, "/queue").status_code == 200  # another path family: untouched
    failing = [call(sim, "/jobs", params) for _ in range(2)]
    assert [(r.status_code, error_code(r)) for r in failing] == [(status, code)] * 2
    assert all(r.headers["x-ci-request-id"] for r in failing)
    if kind == "http_429":
        assert failing[0].headers["Retry-After"] == "7"
    assert call(sim, "/jobs", params).status_code == 200


def test_slow_fault_times_out_a_short_client(sim: Simulator) -> None:
    sim.faults.add(Fault(kind="slow", delay=2.0, times=1))
    with pytest.raises(requests.exceptions.ReadTimeout):
        call(sim, "/queue", timeout=0.2)


def test_stop_interrupts_a_slow_answer_and_idle_connections() -> None:
    simulator = Simulator({SID: KEY})
    simulator.add_bucket(BUCKET)
    simulator.start()
    with requests.Session() as session:
        assert call(simulator, "/queue", session=session).status_code == 200  # keep-alive
        simulator.faults.add(Fault(kind="slow", delay=30.0))
        outcome: list[object] = []
        waiting = threading.Thread(target=lambda: outcome.append(_attempt(simulator)), daemon=True)
        waiting.start()
        deadline = time.monotonic() + 5
        while simulator.faults.active()[0].hits == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # waiting on a condition, bounded
        began = time.monotonic()
        simulator.stop()
        assert time.monotonic() - began < 1.0
        waiting.join(timeout=2)
        assert outcome and isinstance(outcome[0], requests.exceptions.ConnectionError)


def _attempt(simulator: Simulator) -> object:
    try:
        return call(simulator, "/queue", timeout=10)
    except requests.exceptions.RequestException as err:
        return err


def test_reset_fault_closes_without_an_answer(sim: Simulator) -> None:
    sim.faults.add(Fault(kind="reset", times=1))
    with pytest.raises(requests.exceptions.ConnectionError):
        call(sim, "/queue")
    assert sim.requests[-1].status == 0
    assert call(sim, "/queue").status_code == 200


def test_truncated_fault_sends_less_than_promised(sim: Simulator) -> None:
    params = media_listing(sim)
    sim.faults.add(Fault(kind="truncated", times=1))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        call(sim, "/jobs", params)


def test_malformed_fault_breaks_xml_like_the_seed_documents(sim: Simulator) -> None:
    params = media_listing(sim)
    sim.faults.add(Fault(kind="malformed", path="/jobs"))
    resp = call(sim, "/jobs", params)
    assert resp.status_code == 200
    assert b"<Tag>Transcode<Tag>" in resp.content
    with pytest.raises(etree.XMLSyntaxError):
        xml(resp)
    empty = call(sim, "/jobs", {**params, "tag": "Snapshot"})  # no Tag to break
    with pytest.raises(etree.XMLSyntaxError):
        xml(empty)


@pytest.mark.parametrize("status", [200, 502])
def test_html_fault(sim: Simulator, status: int) -> None:
    sim.faults.add(Fault(kind="html", status=status))
    resp = call(sim, "/queue")
    assert resp.status_code == status
    assert resp.headers["Content-Type"] == "text/html"
    assert resp.text.startswith("<!DOCTYPE html>")


def test_repeating_next_token(sim: Simulator) -> None:
    params = media_listing(sim, jobs=1)  # one page only, yet the token never ends
    sim.faults.add(Fault(kind="repeat_token"))
    assert call(sim, "/queue").status_code == 200  # not a job listing: not counted
    first = token_of(call(sim, "/jobs", params))
    assert first
    follow = call(sim, "/jobs", {**params, "nextToken": first})
    assert token_of(follow) == first
    assert sim.faults.active()[0].hits == 2


def test_oversized_fault_is_large_but_well_formed(sim: Simulator) -> None:
    params = media_listing(sim)
    sim.faults.add(Fault(kind="oversized", size=2_000_000))
    resp = call(sim, "/jobs", params)
    assert len(resp.content) >= 2_000_000
    assert len(job_ids(resp)) == 3


def test_slow_down_fault_says_so_in_the_body_only(sim: Simulator) -> None:
    sim.faults.add(Fault(kind="slow_down", times=1))
    resp = call(sim, "/queue")
    assert (resp.status_code, error_code(resp)) == (400, "SlowDown")
    assert "Retry-After" not in resp.headers
    sim.faults.add(Fault(kind="slow_down", status=200, times=1))
    assert call(sim, "/queue").status_code == 200


def test_retry_after_as_an_http_date_on_cis_clock(sim: Simulator) -> None:
    sim.clock_offset = 500
    sim.faults.add(Fault(kind="http_429", retry_after=90, retry_after_as_date=True))
    resp = call(sim, "/queue", window=(int(time.time()) + 400, int(time.time()) + 1100))
    assert resp.status_code == 429
    after = parsedate_to_datetime(resp.headers["Retry-After"])
    date = parsedate_to_datetime(resp.headers["Date"])
    assert (after - date).total_seconds() == 90


@pytest.mark.parametrize("field", ["JobId", "State", "CreationTime", "Tag", "QueueId"])
def test_missing_field_fault_drops_a_field_from_every_job(sim: Simulator, field: str) -> None:
    params = media_listing(sim)
    sim.faults.add(Fault(kind="missing_field", job_field=field))
    assert xml(call(sim, "/queue")).find("QueueList/QueueId") is not None  # no jobs: untouched
    listing = xml(call(sim, "/jobs", params)).findall("JobsDetail")
    assert len(listing) == 3
    assert all(job.find(field) is None and job.find("Progress") is not None for job in listing)
    job_id = bucket(sim).jobs()[0].job_id
    described = xml(call(sim, f"/jobs/{job_id}")).findall("JobsDetail")
    assert len(described) == 1 and described[0].find(field) is None


def test_unknown_state_fault_puts_every_job_in_that_state(sim: Simulator) -> None:
    params = media_listing(sim)
    sim.faults.add(Fault(kind="unknown_state", state="Frozen"))
    listing = xml(call(sim, "/jobs", params)).findall("JobsDetail")
    assert [job.findtext("State") for job in listing] == ["Frozen"] * 3
    job_id = bucket(sim).jobs()[0].job_id
    assert xml(call(sim, f"/jobs/{job_id}")).findtext("JobsDetail/State") == "Frozen"


def test_skew_fault_moves_one_buckets_front_end_clock(sim: Simulator) -> None:
    other = sim.add_bucket("other-1250000000")
    sim.faults.add(Fault(kind="skew", offset=900, bucket=BUCKET))
    skewed = call(sim, "/queue")  # our window ends 600 s from now: CI is past it
    assert (skewed.status_code, error_code(skewed)) == (401, "SignatureExpired")
    date = parsedate_to_datetime(skewed.headers["Date"]).timestamp()
    assert date == pytest.approx(time.time() + 900, abs=2)
    assert call(sim, "/queue", bucket=other.name).status_code == 200  # the other bucket: on time
    now = int(time.time())
    assert call(sim, "/queue", window=(now + 800, now + 1000)).status_code == 200
    sim.faults.clear()
    sim.faults.add(Fault(kind="skew", offset=120))  # within the window: only the Date moves
    resp = call(sim, "/queue")
    assert resp.status_code == 200
    assert parsedate_to_datetime(resp.headers["Date"]).timestamp() == pytest.approx(
        time.time() + 120, abs=2
    )


def test_auth_fault_refuses_and_quotes_the_token_it_was_sent(sim: Simulator) -> None:
    sim.faults.add(Fault(kind="auth", code="AccessDenied"))
    resp = call(sim, "/queue", sid=TMP_SID, key=TMP_KEY, token=TOKEN)
    assert (resp.status_code, error_code(resp)) == (403, "AccessDenied")
    assert TOKEN in resp.text  # a careless proxy's echo, for the exporter to redact
    sim.faults.clear()
    sim.faults.add(Fault(kind="auth", status=401, code="SecretidNotExist"))
    resp = call(sim, "/queue")
    assert (resp.status_code, error_code(resp)) == (401, "SecretidNotExist")


def test_latency_delays_every_answer(sim: Simulator) -> None:
    assert sim.latency == 0
    assert call(sim, "/queue", timeout=0.5).status_code == 200
    sim.latency = 2.0  # held like the slow fault, so stop() cuts it short as tested above
    with pytest.raises(requests.exceptions.ReadTimeout):
        call(sim, "/queue", timeout=0.5)
    sim.latency = 0.0
    assert call(sim, "/queue", timeout=0.5).status_code == 200


def test_probabilistic_faults_are_reproducible_and_clearable() -> None:
    def run(seed: int) -> list[int]:
        simulator = Simulator({SID: KEY}, seed=seed)
        simulator.add_bucket(BUCKET)
        simulator.faults.add(Fault(kind="http_500", probability=0.5))
        with simulator:
            statuses = [call(simulator, "/queue").status_code for _ in range(20)]
            simulator.faults.clear()
            assert call(simulator, "/queue").status_code == 200
        return statuses

    first = run(5)
    assert first == run(5)
    assert 0 < first.count(500) < 20


def test_fault_kinds_are_checked() -> None:
    assert "repeat_token" in FAULT_KINDS
    with pytest.raises(ValueError):
        Fault(kind="gremlins")
    assert (Fault("html").status, Fault("slow_down").status, Fault("auth").status) == (
        502,
        400,
        403,
    )
    with pytest.raises(ValueError):
        Fault(kind="http_500", probability=1.5)


# -- accounting, life cycle ------------------------------------------------------------


def test_request_accounting(sim: Simulator) -> None:
    other = sim.add_bucket("other-1250000000")
    q = bucket(sim).add_queue("media")
    call(sim, "/queue")
    call(sim, "/jobs", {"queueId": q, "tag": "Transcode"})
    call(sim, "/jobs/jnope")
    call(sim, "/queue", bucket=other.name)
    assert sim.request_count() == 4
    assert sim.request_count(bucket=BUCKET) == 3
    assert sim.request_count(path_family="/jobs") == 2
    assert sim.request_count(bucket=other.name, path_family="/queue") == 1
    last = sim.requests[-1]
    assert (last.bucket, last.method, last.path, last.status) == (other.name, "GET", "/queue", 200)
    assert sim.requests[1].params == {"queueId": q, "tag": "Transcode"}
    sim.reset_requests()
    assert sim.request_count() == 0 and sim.requests == []


def test_each_bucket_has_its_own_listener(sim: Simulator) -> None:
    other = sim.add_bucket("other-1250000000", "ap-shanghai")
    mine = bucket(sim).add_queue("doc")
    assert sim.endpoint(other.name) != sim.endpoint(BUCKET)
    listed = xml(call(sim, "/docqueue", bucket=other.name)).findall("QueueList")
    assert listed == []
    assert xml(call(sim, "/docqueue")).findtext("QueueList/QueueId") == mine


def test_secrets_stay_out_of_reprs() -> None:
    simulator = Simulator({SID: KEY}, tokens={SID: TOKEN})
    assert KEY not in repr(simulator) and TOKEN not in repr(simulator)


# -- workload --------------------------------------------------------------------------


def seeded_bucket() -> SimBucket:
    b = SimBucket("w-1250000000", clock=Clock(), seed="fixed")
    b.add_queue("media", name="m", max_concurrent=3, at=T0)
    b.add_queue("speech", name="s", max_concurrent=2, at=T0)
    return b


def history(b: SimBucket) -> list[tuple[object, ...]]:
    return [
        (j.job_id, j.tag, j.state, j.creation_time, j.start_time, j.end_time, j.code)
        for j in b.jobs()
    ]


def test_workload_is_deterministic_for_a_seed_however_time_is_advanced() -> None:
    one_step, many_steps, other_seed = seeded_bucket(), seeded_bucket(), seeded_bucket()
    Workload(one_step, seed=7, start=T0, default_rate=0.2).advance(T0 + 1800)
    stepped = Workload(many_steps, seed=7, start=T0, default_rate=0.2)
    for t in range(T0, T0 + 1801, 37):
        stepped.advance(t)
    stepped.advance(T0 + 1800)
    Workload(other_seed, seed=8, start=T0, default_rate=0.2).advance(T0 + 1800)
    assert history(one_step) == history(many_steps)
    assert len(history(one_step)) > 100
    assert history(one_step) != history(other_seed)


def test_workload_fails_and_cancels_some_jobs_with_several_codes() -> None:
    b = seeded_bucket()
    Workload(b, seed=1, start=T0, default_rate=0.5, failure_ratio=0.1).advance(T0 + 7200)
    jobs = b.jobs()
    failed = [j for j in jobs if j.state == "Failed"]
    assert len({j.code for j in failed}) >= 3
    assert any(j.state == "Cancel" for j in jobs)
    assert sum(j.state == "Success" for j in jobs) > len(failed)


def test_workload_respects_max_concurrent_and_pauses() -> None:
    b = SimBucket("w-1250000000", seed=2)
    q = b.add_queue("media", max_concurrent=2, at=T0)
    workload = Workload(b, seed=3, streams=[Stream(q, "Transcode", rate=0.5)], start=T0)
    saw_backlog = False
    for t in range(T0, T0 + 600, 5):
        workload.advance(t)
        assert b.count(q, "Running") <= 2
        saw_backlog |= b.count(q, "Running") == 2 and b.count(q, "Submitted") > 0
    assert saw_backlog
    b.set_queue_paused(q, True)
    running_at_pause = b.count(q, "Running")
    for t in range(T0 + 600, T0 + 1200, 5):
        workload.advance(t)
        assert b.count(q, "Running") <= running_at_pause  # nothing starts while paused
    assert b.count(q, "Submitted") == 0 and b.count(q, "Pause") > 0
    b.set_queue_paused(q, False)
    workload.advance(T0 + 1205)
    assert b.count(q, "Running") == 2


def test_workload_retention_deletes_old_finished_jobs() -> None:
    b = seeded_bucket()
    Workload(b, seed=4, start=T0, default_rate=0.2, retention=600).advance(T0 + 3600)
    finished_ends = [j.end_time for j in b.jobs() if j.end_time is not None]
    assert finished_ends and min(finished_ends) >= T0 + 3600 - 600 - 1


def test_demo_is_lively() -> None:
    simulator = build_demo(seed=1)
    assert {b.region for b in simulator.buckets.values()} == {"ap-guangzhou", "ap-shanghai"}
    queues = [q for b in simulator.buckets.values() for q in b.queues()]
    assert {q.service for q in queues} == {
        "media",
        "ai",
        "speech",
        "pic",
        "doc",
        "workflow",
        "batch",
    }
    assert any(q.category == "SpeedTranscoding" for q in queues)
    assert any(q.paused for q in queues) and any(q.notify for q in queues)
    jobs = [j for b in simulator.buckets.values() for j in b.jobs()]
    assert {"Running", "Success", "Failed"} <= {j.state for j in jobs}
    assert len({j.code for j in jobs if j.state == "Failed"}) >= 2
    with simulator:
        simulator.start_workload(interval=0.05)
        name = "demo-1250000000"
        before = {j.job_id: j.state for j in simulator.bucket(name).jobs()}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            after = {j.job_id: j.state for j in simulator.bucket(name).jobs()}
            if after != before:
                break
            time.sleep(0.05)  # waiting on a condition, bounded
        assert after != before
        resp = call(
            simulator,
            "/queue",
            {"category": "CateAll"},
            bucket=name,
            sid=DEMO_SECRET_ID,
            key=DEMO_SECRET_KEY,
        )
        categories = {q.findtext("Category") for q in xml(resp).iterfind("QueueList")}
        assert categories == {"Transcoding", "SpeedTranscoding"}


def test_offset_tokens_page_by_count_and_skip_when_a_listed_job_leaves(sim: Simulator) -> None:
    b = bucket(sim)
    q = b.add_queue("media")
    ids = make_jobs(b, q, 7)
    sim.api.token_mode = "offset"
    params = {"queueId": q, "tag": "Transcode", "size": "3", "states": "Submitted"}
    assert sorted(list_all(sim, params)) == sorted(ids)
    first = call(sim, "/jobs", params)
    assert token_of(first) == "offset-3"
    b.finish_job(job_ids(first)[0])  # leaves the result set: the rest shift up by one
    rest = list_all(sim, {**params, "nextToken": token_of(first)})
    missed = set(ids) - set(job_ids(first)) - set(rest)
    assert len(missed) == 1
    bad = call(sim, "/jobs", {**params, "nextToken": "garbage"})
    assert bad.status_code == 400 and error_code(bad) == "InvalidArgument"
