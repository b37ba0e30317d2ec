"""exporter.ci.parse against anything the network can send: random bytes, and generated XML-ish
documents (random trees over CI's own tag names and others, entities, DOCTYPEs, CDATA, huge
numbers, bad dates, control characters, truncation at any point, odd encodings). Each parser
gives records or exactly one CIInvalidResponse whose message is one line, never another
exception; parse_error never raises at all. Derandomized: the same examples on every run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.ci.models import CIAPIError, CIInvalidResponse, DescribeResult, JobPage, QueuePage
from exporter.ci.parse import (
    parse_describe,
    parse_error,
    parse_job_page,
    parse_queue_page,
    parse_time,
)

Job = tuple[str, str]  # (JobId, State)
PARSERS: dict[str, Callable[[bytes], Any]] = {
    "job page": parse_job_page,
    "describe": parse_describe,
    "queue page": parse_queue_page,
}
RESULTS = (JobPage, DescribeResult, QueuePage)
SETTINGS = settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

CI_TAGS = (
    "Response",
    "Error",
    "JobsDetail",
    "JobId",
    "Tag",
    "State",
    "QueueId",
    "CreationTime",
    "StartTime",
    "EndTime",
    "Code",
    "Message",
    "NextToken",
    "NonExistJobIds",
    "QueueList",
    "Name",
    "MaxSize",
    "MaxConcurrent",
    "Category",
    "CreateTime",
    "UpdateTime",
    "NotifyConfig",
    "TotalCount",
    "PageNumber",
    "PageSize",
    "RequestId",
    "NonExistPIDs",
    "Progress",
)
OTHER_TAGS = ("x", "a.b", "_u", "jobid", "n-1", "JobsDetails", "html", "body", "title")
TEXTS = (
    "",
    " ",
    "-",
    "Success",
    "Failed",
    "Running",
    "Queuing",
    "j1",
    "a,b",
    "../x",
    "q1",
    "2022-07-07T12:12:12+0800",
    "2022-07-07T12:12:12Z",
    "2022-07-07T12:12:12+08:00",
    "2022-13-45T99:99:99+0800",
    "2022-07-07T12:12:12+9900",
    "2022-07-07 12:12:12",
    "0000-00-00T00:00:00+0000",
    "9999-12-31T23:59:59-2359",
    "٢٠٢٢-07-07T12:12:12+0800",
    "12",
    "-1",
    "0x10",
    "1e400",
    "9" * 400,
    "NaN",
    "inf",
    "１２",
    "&amp;",
    "&lt;&gt;",
    "&#65;",
    "&#0;",
    "&#x110000;",
    "&undefined;",
    "&lol;",
    "<![CDATA[<JobsDetail>]]>",
    "\x00",
    "\x1b[31m",
    "\u2028",
    "line\nbreak",
    "tab\there",
    "\ud7ff",
    "🙂",
    "a" * 600,
)


def element(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    tag = st.sampled_from((*CI_TAGS, *OTHER_TAGS))
    attrs = st.sampled_from(["", ' a="1"', " xmlns='urn:x'", ' x="&amp;"'])
    return st.builds(
        lambda t, a, inner: f"<{t}{a}>{''.join(inner)}</{t}>" if inner else f"<{t}{a}/>",
        tag,
        attrs,
        st.lists(children, max_size=4),
    )


NODES = st.recursive(
    st.one_of(st.sampled_from(TEXTS), st.text(max_size=10)),
    element,
    max_leaves=12,
)
PROLOGUES = (
    "",
    '<?xml version="1.0" encoding="UTF-8"?>\n',
    '<?xml version="1.1"?>',
    '<?xml version="1.0" encoding="UTF-16"?>',
    '<?xml version="1.0" encoding="ebcdic-xx"?>',
    "\ufeff",
    "<!-- note -->",
    "<?pi data?>",
    '<!DOCTYPE Response [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>',
    '<!DOCTYPE Response SYSTEM "http://127.0.0.1:9/evil.dtd">',
    '<!DOCTYPE Response [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
)


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    root = draw(st.sampled_from(["Response", "Error", "html", "JobsDetail"]))
    body = "".join(draw(st.lists(NODES, max_size=4)))
    text = draw(st.sampled_from(PROLOGUES)) + f"<{root}>{body}</{root}>"
    encoding = draw(st.sampled_from(["utf-8", "utf-16", "latin-1"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]  # cut short anywhere
    return data


@st.composite
def job_pages(draw: st.DrawFn) -> tuple[bytes, list[Job]]:
    """Well-formed pages of jobs with the fields CI sends, in any order, plus unknown fields."""
    ids = draw(st.lists(st.integers(0, 2**128), max_size=8, unique=True))
    states = st.sampled_from(["Submitted", "Running", "Pause", "Success", "Failed", "Cancel"])
    jobs = [(f"j{n:x}", draw(states)) for n in ids]
    parts = []
    for job_id, state in jobs:
        fields = [
            f"<JobId>{job_id}</JobId>",
            f"<State>{state}</State>",
            "<CreationTime>2022-07-07T12:12:12+0800</CreationTime>",
            "<EndTime>-</EndTime>",
            "<Operation><Output><Object>x</Object></Output></Operation>",
        ]
        draw(st.randoms(use_true_random=False)).shuffle(fields)
        parts.append("<JobsDetail>" + "".join(fields) + "</JobsDetail>")
    token = draw(st.sampled_from(["", "<NextToken/>", "<NextToken>abc</NextToken>"]))
    return f"<Response>{''.join(parts)}{token}</Response>".encode(), jobs


def outcome(parse: Callable[[bytes], Any], data: bytes) -> object:
    """The parser's result, or its CIInvalidResponse; anything else fails the test."""
    try:
        result = parse(data)
    except CIInvalidResponse as error:
        message = str(error)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        assert message.isprintable(), repr(message)
        return error
    assert isinstance(result, RESULTS)
    return result


@SETTINGS
@given(st.binary(max_size=3000))
def test_any_bytes(data: bytes) -> None:
    for parse in PARSERS.values():
        outcome(parse, data)


@SETTINGS
@given(documents())
def test_any_xml_ish_document(data: bytes) -> None:
    for parse in PARSERS.values():
        outcome(parse, data)


@SETTINGS
@given(st.binary(max_size=3000) | documents(), st.integers(100, 599))
def test_an_error_answer_never_raises(data: bytes, status: int) -> None:
    error = parse_error(status, data, {"Retry-After": "soon", "Date": "junk"}, endpoint="/jobs")
    assert isinstance(error, CIAPIError)
    assert "\n" not in str(error) and len(error.code) <= 64


@SETTINGS
@given(st.one_of(st.sampled_from(TEXTS), st.text(max_size=40)))
def test_any_time_text(text: str) -> None:
    try:
        value = parse_time(text)
    except CIInvalidResponse as error:
        assert "\n" not in str(error)
        return
    assert value is None or isinstance(value, float)


@SETTINGS
@given(job_pages())
def test_well_formed_pages_give_every_job_in_order(page: tuple[bytes, list[Job]]) -> None:
    data, jobs = page
    result = parse_job_page(data)
    assert [(j.job_id, j.state) for j in result.jobs] == jobs
    assert all(j.creation_time == 1657167132.0 and j.end_time is None for j in result.jobs)


def test_the_documents_reach_both_outcomes() -> None:
    """The generators are not all junk: some documents parse, some are refused."""
    seen: set[str] = set()

    @settings(derandomize=True, max_examples=100, deadline=None, database=None)
    @given(documents())
    def collect(data: bytes) -> None:
        for name, parse in PARSERS.items():
            result = outcome(parse, data)
            seen.add(f"{name}: {'refused' if isinstance(result, Exception) else 'parsed'}")

    collect()
    assert {f"{n}: {o}" for n in PARSERS for o in ("parsed", "refused")} <= seen
