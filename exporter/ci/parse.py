"""Where XML ends: CI response bodies (bytes) -> the plain records of exporter.ci.models.

Anything that is not what CI sends gives one CIInvalidResponse whose single line says what is
wrong and where (`JobsDetail[3]: missing JobId`), never a traceback and never partial records:
a page with one bad job is a bad page, so nothing above counts wrong numbers from it.

The parser is hardened because the body comes from the network: no entity expansion, no DTD
loading, no network access, libxml2's size limits kept (huge_tree off), and any DOCTYPE is
refused (CI never sends one). Every listed job passes through here, so the walk is one pass over
each element's direct children and nothing else (no XPath, no dict-of-everything).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from lxml import etree

from exporter.ci.models import (
    CIAPIError,
    CIInvalidResponse,
    DescribeResult,
    Job,
    JobPage,
    Queue,
    QueuePage,
)

MAX_TEXT = 256  # Code and Message are free text of any length; keep what a human reads.
_SUMMARY_CHARS = 120  # how much of a non-XML error body goes into a message
_SUMMARY_BYTES = 4096

_JOB_FIELDS = frozenset(
    ("JobId", "Tag", "State", "QueueId", "CreationTime", "StartTime", "EndTime", "Code", "Message")
)
_QUEUE_FIELDS = frozenset(
    ("QueueId", "Name", "State", "MaxSize", "MaxConcurrent", "Category", "CreateTime", "UpdateTime")
)

_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?"
    r"(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)\Z",
    re.ASCII,  # \d would otherwise take any script's digits
)
_TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_TAG_RE = re.compile(r"<[^>]*>")
_SPACE_RE = re.compile(r"\s+")

# lxml parsers keep per-parse state; one per thread avoids sharing it between pollers.
_local = threading.local()


def _parser() -> etree.XMLParser:
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
            collect_ids=False,
        )
        _local.parser = parser
    return parser


def one_line(text: str, limit: int = MAX_TEXT) -> str:
    """Collapse whitespace and control characters so a message stays a single line."""
    if len(text) <= limit and text.isprintable() and "  " not in text:
        return text.strip()  # the common case (`Success`, ``), without a regex pass
    text = _SPACE_RE.sub(" ", text).strip()
    if not text.isprintable():
        text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _root(body: bytes, expected: str = "Response") -> etree._Element:
    if not body.strip():
        raise CIInvalidResponse("body is empty")
    try:
        root = etree.fromstring(body, _parser())
    except etree.XMLSyntaxError as exc:
        raise CIInvalidResponse(f"body is not well-formed XML: {one_line(exc.msg)}") from None
    except ValueError as exc:  # e.g. an encoding lxml cannot handle
        raise CIInvalidResponse(f"body is not XML: {one_line(str(exc))}") from None
    if root.getroottree().docinfo.internalDTD is not None:
        raise CIInvalidResponse("body has a DOCTYPE, which CI never sends")
    if root.tag != expected:
        raise CIInvalidResponse(f"expected <{expected}>, got <{one_line(str(root.tag), 60)}>")
    return root


def _text(element: etree._Element) -> str:
    return (element.text or "").strip()


@functools.lru_cache(maxsize=8192)
def _time_value(text: str) -> float | None:
    # Cached: the same creation/start times come back on every poll of the active jobs.
    if text in ("", "-"):
        return None
    match = _TIME_RE.match(text)
    if match is None:
        raise CIInvalidResponse(f"not a time: {one_line(repr(text), 60)}")
    year, month, day, hour, minute, second, frac, zulu, sign, off_h, off_m = match.groups()
    offset = 0
    if not zulu:
        off_hours, off_minutes = int(off_h), int(off_m or 0)
        if off_hours > 23 or off_minutes > 59:
            raise CIInvalidResponse(f"not a time: {one_line(repr(text), 60)}")
        offset = (off_hours * 3600 + off_minutes * 60) * (-1 if sign == "-" else 1)
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=timezone.utc,
        )
    except ValueError:
        raise CIInvalidResponse(f"not a time: {one_line(repr(text), 60)}") from None
    return moment.timestamp() - offset + (float(frac) if frac else 0.0)


def parse_time(text: str | None) -> float | None:
    """`2022-07-07T12:12:12+0800` (or `Z`, `+08:00`) -> epoch seconds; `-`, empty, None -> None.

    A time without a zone is refused rather than guessed.
    """
    if text is None:
        return None
    return _time_value(text.strip())


def _field_time(fields: Mapping[str, str], name: str, where: str) -> float | None:
    try:
        return parse_time(fields.get(name))
    except CIInvalidResponse as exc:
        raise CIInvalidResponse(f"{where}: {name}: {exc}") from None


def _count(text: str | None, where: str) -> int:
    """A non-negative integer; missing or empty is 0."""
    text = (text or "").strip()
    if not text:
        return 0
    # Eighteen digits hold any count CI can have, and keep int() far from its size limit.
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise CIInvalidResponse(f"{where}: not a non-negative integer: {one_line(repr(text), 60)}")
    return int(text)


def is_job_id(text: str) -> bool:
    """Whether `text` can be a job id.

    Describe puts ids in the URL path, comma-separated: a comma, a slash, a dot-only segment or
    whitespace would ask for other jobs or another path, so such an id is refused wherever it
    comes from rather than sent.
    """
    return (
        bool(text.strip("."))
        and text.isprintable()
        and " " not in text
        and "," not in text
        and "/" not in text
    )


def _fields(element: etree._Element, wanted: frozenset[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for child in element:
        tag = child.tag
        if tag in wanted:
            fields[tag] = (child.text or "").strip()
    return fields


def _job_time(fields: Mapping[str, str], name: str, where: str) -> float | None:
    # _fields has stripped the text already; the cached conversion is all that is left.
    try:
        return _time_value(fields.get(name, ""))
    except CIInvalidResponse as exc:
        raise CIInvalidResponse(f"{where}: {name}: {exc}") from None


def _job(element: etree._Element, where: str) -> Job:
    fields = _fields(element, _JOB_FIELDS)
    job_id = fields.get("JobId")
    if not job_id:
        raise CIInvalidResponse(f"{where}: missing JobId")
    if not is_job_id(job_id):
        raise CIInvalidResponse(f"{where}: JobId: not a job id: {one_line(repr(job_id), 80)}")
    state = fields.get("State")
    if not state:
        raise CIInvalidResponse(f"{where}: missing State")
    return Job(
        job_id=job_id,
        tag=fields.get("Tag", ""),
        state=state,
        queue_id=fields.get("QueueId", ""),
        creation_time=_job_time(fields, "CreationTime", where),
        start_time=_job_time(fields, "StartTime", where),
        end_time=_job_time(fields, "EndTime", where),
        code=one_line(fields.get("Code", "")),
        message=one_line(fields.get("Message", "")),
    )


def _jobs_and_rest(root: etree._Element) -> tuple[list[Job], list[etree._Element]]:
    """The JobsDetail children as jobs (an empty JobsDetail is no job), plus the other children."""
    jobs: list[Job] = []
    rest: list[etree._Element] = []
    index = 0
    for child in root:
        if child.tag == "JobsDetail":
            index += 1
            if len(child):
                jobs.append(_job(child, f"JobsDetail[{index}]"))
        else:
            rest.append(child)
    return jobs, rest


def parse_job_page(body: bytes) -> JobPage:
    """One page of a job listing: `<Response><JobsDetail/>*<NextToken/></Response>`."""
    jobs, rest = _jobs_and_rest(_root(body))
    next_token = ""
    for child in rest:
        if child.tag == "NextToken":
            next_token = _text(child)
    return JobPage(tuple(jobs), next_token)


def _ids(element: etree._Element) -> list[str]:
    """Ids given as text (`a,b`) and/or as child elements (`<JobId>a</JobId>`)."""
    ids = [part.strip() for part in (element.text or "").split(",")]
    for child in element:
        ids.extend(part.strip() for part in (child.text or "").split(","))
    return [i for i in ids if i]


def parse_describe(body: bytes) -> DescribeResult:
    """`GET <job_path>/<ids>`: JobsDetail* plus NonExistJobIds (repeated, or comma-separated)."""
    jobs, rest = _jobs_and_rest(_root(body))
    missing: list[str] = []
    for child in rest:
        if child.tag == "NonExistJobIds":
            missing.extend(_ids(child))
    return DescribeResult(tuple(jobs), tuple(missing))


def _queue(element: etree._Element, where: str) -> Queue:
    fields = _fields(element, _QUEUE_FIELDS)
    queue_id = fields.get("QueueId")
    if not queue_id:
        raise CIInvalidResponse(f"{where}: missing QueueId")
    state = fields.get("State")
    if not state:
        raise CIInvalidResponse(f"{where}: missing State")
    notify = element.find("NotifyConfig")
    notify_state = notify.findtext("State") if notify is not None else None
    return Queue(
        queue_id=queue_id,
        name=fields.get("Name", ""),
        state=state,
        max_size=_count(fields.get("MaxSize"), f"{where}: MaxSize"),
        max_concurrent=_count(fields.get("MaxConcurrent"), f"{where}: MaxConcurrent"),
        category=fields.get("Category", ""),
        notify_enabled=(notify_state or "").strip() == "On",
        create_time=_field_time(fields, "CreateTime", where),
        update_time=_field_time(fields, "UpdateTime", where),
    )


def parse_queue_page(body: bytes) -> QueuePage:
    """One page of a queue listing.

    TotalCount is absent when queues are asked for by id: it is then the number listed.
    PageNumber and PageSize are 0 when absent.
    """
    root = _root(body)
    queues: list[Queue] = []
    missing: list[str] = []
    scalars: dict[str, str | None] = {}
    index = 0
    for child in root:
        tag = child.tag
        if tag == "QueueList":
            index += 1
            if len(child):
                queues.append(_queue(child, f"QueueList[{index}]"))
        elif tag == "NonExistPIDs":
            missing.extend(_ids(child))
        elif tag in ("RequestId", "TotalCount", "PageNumber", "PageSize"):
            scalars[tag] = child.text
    total = scalars.get("TotalCount")
    return QueuePage(
        queues=tuple(queues),
        total_count=_count(total, "TotalCount") if total is not None else len(queues),
        page_number=_count(scalars.get("PageNumber"), "PageNumber"),
        page_size=_count(scalars.get("PageSize"), "PageSize"),
        request_id=(scalars.get("RequestId") or "").strip(),
        non_exist_ids=tuple(missing),
    )


def _header(headers: Mapping[str, str] | None, name: str) -> str:
    if not headers:
        return ""
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lower), None)
    return (value or "").strip()


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from Retry-After: a number, or an HTTP date measured against the Date header."""
    value = _header(headers, "Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        date = _header(headers, "Date")
        try:
            seconds = (parsedate_to_datetime(value) - parsedate_to_datetime(date)).total_seconds()
        except (TypeError, ValueError, IndexError):
            return None
    return max(seconds, 0.0) if seconds == seconds and seconds != float("inf") else None


def _summary(body: bytes) -> str:
    """A short human line for a non-XML error body (an HTML page's title, else its first words)."""
    head = body[:_SUMMARY_BYTES]
    title = _TITLE_RE.search(head)
    text = (title.group(1) if title else head).decode("utf-8", "replace")
    text = one_line(_TAG_RE.sub(" ", text), _SUMMARY_CHARS)
    if not text:
        return "empty body" if not body.strip() else "unreadable body"
    return f"non-XML body: {text}"


def parse_error(
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    endpoint: str = "",
) -> CIAPIError:
    """An error answer -> CIAPIError. Any body is accepted: code is "" when it is not CI's XML."""
    code = message = request_id = ""
    try:
        root: etree._Element | None = etree.fromstring(body, _parser()) if body.strip() else None
    except (etree.XMLSyntaxError, ValueError):
        root = None
    if root is not None and root.tag in ("Error", "Response"):
        code = one_line(root.findtext("Code") or "", 64)
        message = one_line(root.findtext("Message") or "")
        request_id = one_line(root.findtext("RequestId") or "", 128)
    else:
        message = _summary(body)
    return CIAPIError(
        status=status,
        code=code,
        message=message,
        request_id=request_id or one_line(_header(headers, "x-ci-request-id"), 128),
        endpoint=endpoint,
        retry_after=_retry_after(headers),
    )
