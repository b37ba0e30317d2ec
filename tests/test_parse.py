"""exporter.ci.parse: CI bodies -> records, the seed documents' examples among the fixtures."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.ci.models import CIAPIError, CIInvalidResponse, Job
from exporter.ci.parse import (
    MAX_TEXT,
    parse_describe,
    parse_error,
    parse_job_page,
    parse_queue_page,
    parse_time,
)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc).timestamp()


def job_xml(job_id: str = "j1", state: str = "Running", **extra: str) -> str:
    fields = {"JobId": job_id, "State": state, **extra}
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items() if v is not None)
    return f"<JobsDetail>{inner}</JobsDetail>"


def page(*jobs: str, token: str | None = None) -> bytes:
    tail = f"<NextToken>{token}</NextToken>" if token is not None else ""
    return f"<Response>{''.join(jobs)}{tail}</Response>".encode()


# The seed documents' examples, as printed: `<Tag>Translation<Tag>` is not well-formed.


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("seed_ai_jobs_translation.xml", 11),
        ("seed_media_jobs_voiceseparate.xml", 11),
        ("seed_jobs_translation_oneline.xml", 1),
    ],
)
@pytest.mark.parametrize("parse", [parse_job_page, parse_describe])
def test_seed_job_examples_are_rejected_with_one_clear_line(
    name: str, line: int, parse: Callable[[bytes], object]
) -> None:
    with pytest.raises(CIInvalidResponse) as info:
        parse(fixture(name))
    message = str(info.value)
    assert message.startswith(
        f"body is not well-formed XML: Opening and ending tag mismatch: Tag line {line} and "
        "JobsDetail"
    )
    assert "\n" not in message
    assert info.value.kind == "invalid_response"


def test_seed_translation_example_corrected_gives_every_field() -> None:
    result = parse_job_page(fixture("seed_ai_jobs_translation_fixed.xml"))
    expected = Job(
        job_id="a8d121820f5e411ec926ef19d53ba9c6f",
        tag="Translation",
        state="Running",
        queue_id="p893bcda225bf4945a378da6662e81a89",
        creation_time=utc(2022, 7, 7, 4, 12, 12),
        start_time=utc(2022, 7, 7, 4, 12, 13),
        end_time=None,
        code="Success",
        message="",
    )
    assert result.jobs == (expected, expected)
    assert result.next_token == "225508"


def test_seed_voiceseparate_example_corrected() -> None:
    result = parse_job_page(fixture("seed_media_jobs_voiceseparate_fixed.xml"))
    assert [j.job_id for j in result.jobs] == ["jabcxxxxfeipplsdfwe"] * 2
    job = result.jobs[1]
    assert (job.tag, job.state, job.code, job.message) == (
        "VoiceSeparate",
        "Submitted",
        "Success",
        "Success",
    )
    assert job.creation_time == utc(2019, 7, 7, 4, 12, 12)
    assert job.start_time is None and job.end_time is None  # empty elements
    assert result.next_token == ""  # no NextToken element at all


def test_seed_queue_example() -> None:
    result = parse_queue_page(fixture("seed_asr_queues_example.xml"))
    assert (result.total_count, result.page_number, result.page_size) == (1, 1, 5)
    assert result.request_id == "NWYzZTQ3ZmRfOTBmYTUwNjRfMjJh****"
    assert result.non_exist_ids == ()
    (queue,) = result.queues
    assert queue.queue_id == "pd0a7e02988c24db88b61551cf540444c"
    assert queue.name == "queue-speech-1"
    assert queue.state == "Active" and not queue.paused
    assert (queue.max_size, queue.max_concurrent) == (10000, 10)
    assert queue.category == "Speeching"
    assert queue.notify_enabled is False
    assert queue.create_time == queue.update_time == utc(2020, 8, 20, 9, 52, 33)


def test_seed_queue_schema_with_empty_fields() -> None:
    result = parse_queue_page(fixture("seed_asr_queues_schema.xml"))
    (queue,) = result.queues
    assert (queue.queue_id, queue.name, queue.category) == ("A", "", "")
    assert queue.create_time is None and queue.update_time is None
    assert queue.notify_enabled is False
    assert (result.total_count, result.page_number, result.page_size) == (1, 1, 10)


def test_seed_queue_by_ids_lists_unknown_ids_and_counts_without_total() -> None:
    result = parse_queue_page(fixture("seed_asr_queues_by_ids.xml"))
    assert [q.queue_id for q in result.queues] == ["A"]
    assert result.non_exist_ids == ("B", "C")
    assert result.total_count == 1  # no TotalCount: the queues listed
    assert (result.page_number, result.page_size) == (0, 0)
    assert (result.queues[0].max_size, result.queues[0].max_concurrent) == (0, 0)


def test_queue_notify_on_paused_and_category() -> None:
    body = (
        b"<Response><TotalCount>12</TotalCount><PageNumber>2</PageNumber><PageSize>10</PageSize>"
        b"<QueueList><QueueId>q1</QueueId><Name>n</Name><State>Paused</State>"
        b"<MaxSize>5</MaxSize><MaxConcurrent>3</MaxConcurrent><Category>SpeedTranscoding</Category>"
        b"<NotifyConfig><Url>http://x</Url><State>On</State></NotifyConfig></QueueList>"
        b"<QueueList/></Response>"
    )
    result = parse_queue_page(body)
    (queue,) = result.queues  # an empty QueueList is no queue
    assert queue.paused and queue.notify_enabled
    assert (queue.max_size, queue.max_concurrent, queue.category) == (5, 3, "SpeedTranscoding")
    assert (result.total_count, result.page_number, result.page_size) == (12, 2, 10)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b"<Response><QueueList><Name>x</Name><State>Active</State></QueueList></Response>",
            "QueueList[1]: missing QueueId",
        ),
        (
            b"<Response><QueueList><QueueId>a</QueueId><State>Active</State></QueueList>"
            b"<QueueList><QueueId>b</QueueId></QueueList></Response>",
            "QueueList[2]: missing State",
        ),
        (
            b"<Response><QueueList><QueueId>a</QueueId><State>Active</State>"
            b"<MaxSize>lots</MaxSize></QueueList></Response>",
            "QueueList[1]: MaxSize: not a non-negative integer: 'lots'",
        ),
        (
            b"<Response><QueueList><QueueId>a</QueueId><State>Active</State>"
            b"<MaxConcurrent>-1</MaxConcurrent></QueueList></Response>",
            "QueueList[1]: MaxConcurrent: not a non-negative integer: '-1'",
        ),
        (
            b"<Response><TotalCount>1_0</TotalCount></Response>",
            "TotalCount: not a non-negative integer: '1_0'",
        ),
        (
            b"<Response><QueueList><QueueId>a</QueueId><State>Active</State>"
            b"<CreateTime>yesterday</CreateTime></QueueList></Response>",
            "QueueList[1]: CreateTime: not a time: 'yesterday'",
        ),
        (b"<Error><Code>AccessDenied</Code></Error>", "expected <Response>, got <Error>"),
    ],
)
def test_bad_queue_pages(body: bytes, message: str) -> None:
    with pytest.raises(CIInvalidResponse, match=r"^" + message.replace("[", r"\[") + "$"):
        parse_queue_page(body)


# Job pages


def test_failed_job_keeps_code_and_message() -> None:
    body = page(
        job_xml(
            "j9",
            "Failed",
            Code="InternalError",
            Message="transcode failed",
            Tag="Transcode",
            QueueId="q",
            CreationTime="2022-07-07T12:12:12+0800",
            StartTime="2022-07-07T12:12:20+0800",
            EndTime="2022-07-07T12:13:00+0800",
        ),
        token="",
    )
    (job,) = parse_job_page(body).jobs
    assert (job.state, job.code, job.message) == ("Failed", "InternalError", "transcode failed")
    assert job.end_time is not None and job.start_time is not None
    assert job.end_time - job.start_time == 40


def test_missing_tag_and_queue_are_empty_and_unknown_children_ignored() -> None:
    body = page(job_xml("j1", Input="<Object>a.mp4</Object>", Workflow="<Name>w</Name>"))
    (job,) = parse_job_page(body).jobs
    assert (job.tag, job.queue_id, job.code, job.message) == ("", "", "", "")
    assert job.creation_time is None


def test_long_message_is_truncated_to_one_line() -> None:
    text = "line one\nline two\t" + "x" * 1000
    (job,) = parse_job_page(page(job_xml("j1", "Failed", Message=text, Code="E"))).jobs
    assert len(job.message) == MAX_TEXT
    assert job.message.startswith("line one line two x")
    assert job.message.endswith("...")


def test_empty_listing_and_empty_jobs_detail() -> None:
    assert parse_job_page(b"<Response><NextToken/></Response>").jobs == ()
    assert (
        parse_job_page(
            b"<Response><JobsDetail></JobsDetail><NextToken></NextToken></Response>"
        ).jobs
        == ()
    )
    assert parse_job_page(b"<Response/>").next_token == ""


def test_next_token_is_stripped() -> None:
    assert parse_job_page(page(job_xml(), token="  tok-2 \n")).next_token == "tok-2"


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ([job_xml("j1"), job_xml("j2"), job_xml("")], "JobsDetail[3]: missing JobId"),
        (["<JobsDetail><State>Running</State></JobsDetail>"], "JobsDetail[1]: missing JobId"),
        ([job_xml("j1", "")], "JobsDetail[1]: missing State"),
        (
            [job_xml("j1"), job_xml("j2", CreationTime="2022-13-01T00:00:00+0800")],
            "JobsDetail[2]: CreationTime: not a time: '2022-13-01T00:00:00+0800'",
        ),
        ([job_xml("j1", EndTime="soon")], "JobsDetail[1]: EndTime: not a time: 'soon'"),
    ],
)
def test_one_bad_job_rejects_the_page(jobs: list[str], message: str) -> None:
    with pytest.raises(CIInvalidResponse) as info:
        parse_job_page(page(*jobs))
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("job_id", "shown"),
    [
        ("a,b", "'a,b'"),
        ("a/b", "'a/b'"),
        ("../queue", "'../queue'"),
        ("..", "'..'"),
        ("a b", "'a b'"),
        ("a\tb", "'a\\tb'"),
        ("a\u3000b", "'a\\u3000b'"),  # an ideographic space
    ],
)
@pytest.mark.parametrize("parse", [parse_job_page, parse_describe])
def test_a_job_id_that_cannot_go_in_a_path_rejects_the_page(
    job_id: str, shown: str, parse: Callable[[bytes], object]
) -> None:
    with pytest.raises(CIInvalidResponse) as info:
        parse(page(job_xml("j1"), job_xml("j2"), job_xml(job_id)))
    assert str(info.value) == f"JobsDetail[3]: JobId: not a job id: {shown}"


def test_a_long_bad_job_id_is_truncated_in_one_line() -> None:
    with pytest.raises(CIInvalidResponse) as info:
        parse_job_page(page(job_xml("x,\n" * 500)))
    message = str(info.value)
    assert message.startswith("JobsDetail[1]: JobId: not a job id: 'x,\\nx,")
    assert message.endswith("...") and "\n" not in message and len(message) < 150


def test_job_ids_with_other_punctuation_are_kept() -> None:
    ids = ["j8d9b5b8a13d211ed9b6c525400d9b8d9", "a.b-c_d~e:f", "...x", "任务1"]
    assert [j.job_id for j in parse_job_page(page(*map(job_xml, ids))).jobs] == ids


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "body is empty"),
        (b"  \n", "body is empty"),
        (b"<html><body>Bad gateway</body></html>", "expected <Response>, got <html>"),
        (
            b"<!DOCTYPE html><html><head><title>x</title></head><body><br></body></html>",
            "body is not well-formed XML: ",
        ),
        (b'{"Response": {}}', "body is not well-formed XML: Start tag expected"),
        (b"<Response><JobsDetail>", "body is not well-formed XML: "),
        (b"<Response>&nbsp;</Response>", "body is not well-formed XML: Entity 'nbsp' not defined"),
    ],
)
def test_bodies_that_are_not_ci_responses(body: bytes, message: str) -> None:
    for parse in (parse_job_page, parse_describe, parse_queue_page):
        with pytest.raises(CIInvalidResponse) as info:
            parse(body)
        assert str(info.value).startswith(message)
        assert "\n" not in str(info.value)


def test_xml_declaration_and_utf8_text() -> None:
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        + page(job_xml("j1", "Failed", Message="转码失败")).decode()
    ).encode()
    assert parse_job_page(body).jobs[0].message == "转码失败"


# Describe


@pytest.mark.parametrize(
    "missing_xml",
    [
        "<NonExistJobIds>a</NonExistJobIds><NonExistJobIds>b</NonExistJobIds>",
        "<NonExistJobIds>a,b</NonExistJobIds>",
        "<NonExistJobIds> a , b ,</NonExistJobIds>",
        "<NonExistJobIds><JobId>a</JobId><JobId>b</JobId></NonExistJobIds>",
    ],
)
def test_describe_non_exist_ids_in_every_form(missing_xml: str) -> None:
    body = f"<Response>{job_xml('j1', 'Success')}{missing_xml}</Response>".encode()
    result = parse_describe(body)
    assert [j.job_id for j in result.jobs] == ["j1"]
    assert result.non_exist_ids == ("a", "b")


def test_describe_without_unknown_ids() -> None:
    result = parse_describe(f"<Response>{job_xml('j1')}{job_xml('j2')}</Response>".encode())
    assert [j.job_id for j in result.jobs] == ["j1", "j2"] and result.non_exist_ids == ()
    assert parse_describe(b"<Response><NonExistJobIds/></Response>").non_exist_ids == ()


# Times


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2022-07-07T12:12:12+0800", utc(2022, 7, 7, 4, 12, 12)),
        ("2022-07-07T12:12:12+08:00", utc(2022, 7, 7, 4, 12, 12)),
        ("2022-07-07T04:12:12Z", utc(2022, 7, 7, 4, 12, 12)),
        ("2022-07-07T04:12:12z", utc(2022, 7, 7, 4, 12, 12)),
        ("2022-07-07T04:12:12+0000", utc(2022, 7, 7, 4, 12, 12)),
        ("2022-07-06T23:12:12-0500", utc(2022, 7, 7, 4, 12, 12)),
        ("2022-07-07T12:12:12+08", utc(2022, 7, 7, 4, 12, 12)),
        ("2022-07-07 12:12:12+0800", utc(2022, 7, 7, 4, 12, 12)),
        ("  2022-07-07T12:12:12+0800\n", utc(2022, 7, 7, 4, 12, 12)),
        ("2022-07-07T04:12:12.250Z", utc(2022, 7, 7, 4, 12, 12) + 0.25),
        ("2024-02-29T00:00:00+0800", utc(2024, 2, 28, 16)),
        ("1970-01-01T08:00:00+0800", 0.0),
        ("2022-07-07T05:42:12+0530", utc(2022, 7, 7, 0, 12, 12)),
        ("-", None),
        ("", None),
        ("  ", None),
        (None, None),
    ],
)
def test_parse_time(text: str | None, expected: float | None) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2022-07-07T12:12:12",  # no zone: refused, not guessed
        "2022-07-07",
        "2023-02-29T00:00:00+0800",
        "2022-07-07T24:00:00+0800",
        "2022-07-07T12:12:12+2400",
        "2022-07-07T12:12:12+0860",
        "1657167132",
        "2022/07/07 12:12:12",
        "2022-07-07T12:12:12+0800x",
        "２０２２-07-07T12:12:12+0800",
        "N/A",
    ],
)
def test_parse_time_garbage(text: str) -> None:
    with pytest.raises(CIInvalidResponse, match=r"^not a time: "):
        parse_time(text)


# Error bodies


def test_parse_error_xml_body() -> None:
    err = parse_error(
        503, fixture("error_slowdown.xml"), {"x-ci-request-id": "from-header"}, endpoint="/jobs"
    )
    assert isinstance(err, CIAPIError)
    assert (err.status, err.code, err.message) == (503, "SlowDown", "frequency control")
    assert err.request_id == "NjMxMDJhYTNfMThhYTk0MGFfYmU1OV8zZjc="  # the body's, first
    assert err.endpoint == "/jobs" and err.throttled and err.kind == "SlowDown"
    assert err.retry_after is None
    assert str(err) == (
        "HTTP 503 SlowDown: frequency control (RequestId NjMxMDJhYTNfMThhYTk0MGFfYmU1OV8zZjc=)"
    )


def test_parse_error_request_id_from_header_when_body_has_none() -> None:
    body = b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>"
    err = parse_error(403, body, {"X-Ci-Request-Id": "rid-1"})  # any header case
    assert (err.code, err.request_id, err.auth_failed) == ("AccessDenied", "rid-1", True)


def test_parse_error_html_page_keeps_only_its_title() -> None:
    html = (
        b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>"
        + b"<p>nginx</p>" * 5000
        + b"</body></html>"
    )
    err = parse_error(502, html, {})
    assert err.code == ""
    assert err.message == "non-XML body: 502 Bad Gateway"
    assert err.kind == "http_502"


def test_parse_error_plain_text_and_empty_bodies() -> None:
    err = parse_error(500, b"upstream\r\nconnect error " + b"z" * 10_000)
    assert err.message.startswith("non-XML body: upstream connect error zzz")
    assert len(err.message) < 160 and "\n" not in err.message
    assert parse_error(500, b"").message == "empty body"
    assert parse_error(500, b"\xff\xfe\x00").code == ""


def test_parse_error_unexpected_xml_root_is_summarised() -> None:
    err = parse_error(400, b"<Other><Code>X</Code></Other>")
    assert err.code == "" and err.message.startswith("non-XML body")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "soon"}, None),
        (
            {
                "Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT",
                "Date": "Wed, 21 Oct 2015 07:28:00 GMT",
            },
            30.0,
        ),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT"}, None),  # no Date to measure from
        ({}, None),
    ],
)
def test_parse_error_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_error(429, b"", headers).retry_after == expected


# A hardened parser

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<ROOT><Code>&lol9;</Code><Message>&lol9;</Message>
<JobsDetail><JobId>&lol9;</JobId><State>Running</State></JobsDetail></ROOT>"""


def with_root(body: bytes, root: str) -> bytes:
    return body.replace(b"ROOT>", root.encode() + b">")


def test_billion_laughs_is_refused_quickly() -> None:
    started = time.monotonic()
    for parse in (parse_job_page, parse_describe, parse_queue_page):
        with pytest.raises(CIInvalidResponse, match=r"^body (has a DOCTYPE|is not well-formed)"):
            parse(with_root(BILLION_LAUGHS, "Response"))
    err = parse_error(500, with_root(BILLION_LAUGHS, "Error"))
    assert len(err.message) <= MAX_TEXT and err.code == ""
    assert time.monotonic() - started < 5


def test_internal_entity_is_not_expanded() -> None:
    body = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e "EXPANDED">]>'
        b"<ROOT><Code>&e;</Code><Message>&e;</Message>"
        b"<JobsDetail><JobId>&e;</JobId><State>Running</State></JobsDetail></ROOT>"
    )
    with pytest.raises(CIInvalidResponse, match=r"^body has a DOCTYPE, which CI never sends$"):
        parse_job_page(with_root(body, "Response"))
    err = parse_error(500, with_root(body, "Error"))
    assert "EXPANDED" not in err.code and "EXPANDED" not in err.message


def test_external_entity_is_not_resolved(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    body = (
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "{secret.as_uri()}">]>'
        "<ROOT><Code>&x;</Code><Message>&x;</Message></ROOT>"
    ).encode()
    with pytest.raises(CIInvalidResponse, match="DOCTYPE") as info:
        parse_job_page(with_root(body, "Response"))
    assert "TOPSECRET" not in str(info.value)
    err = parse_error(400, with_root(body, "Error"))
    assert "TOPSECRET" not in err.message and "TOPSECRET" not in err.code


def test_deep_nesting_is_refused() -> None:
    body = b"<Response>" + b"<a>" * 2000 + b"</a>" * 2000 + b"</Response>"
    with pytest.raises(CIInvalidResponse, match=r"^body is not well-formed XML: Excessive depth"):
        parse_job_page(body)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_page_or_one_clear_error(body: bytes) -> None:
    for parse in (parse_job_page, parse_describe, parse_queue_page):
        try:
            parse(body)
        except CIInvalidResponse as exc:
            assert str(exc) and "\n" not in str(exc)
    assert isinstance(parse_error(500, body), CIAPIError)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(max_size=40))
def test_any_text_time_gives_a_time_or_one_clear_error(text: str) -> None:
    try:
        parse_time(text)
    except CIInvalidResponse as exc:
        assert str(exc).startswith("not a time: ") and "\n" not in str(exc)


def test_a_count_too_long_to_be_real_is_an_invalid_response() -> None:
    body = (
        b"<Response><TotalCount>" + b"9" * 5000 + b"</TotalCount><PageNumber>1</PageNumber>"
        b"<PageSize>10</PageSize></Response>"
    )
    with pytest.raises(CIInvalidResponse, match="TotalCount: not a non-negative integer"):
        parse_queue_page(body)
