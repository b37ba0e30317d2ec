"""Where XML ends: CI response bodies (bytes) -> the plain records of exporter.ci.models.

Thread ownership: the only mutable state is one lxml parser per thread (`_local`).

Anything that is not what CI sends gives one CIInvalidResponse whose single line says what is
wrong and where (`JobsDetail[3]: missing JobId`), never a traceback and never partial records:
a page with one bad job is a bad page, so nothing above counts wrong numbers from it. That
includes an id that could not be stored or sent back safely (exporter.ci.fields): refusing
the page, counted, loses nothing, where dropping the record could lose a job for good.

The parser is hardened because the body comes from the network: no entity expansion, no DTD
loading, no network access, libxml2's size limits kept (huge_tree off), and any DOCTYPE is
refused (CI never sends one). A body with more than MAX_MARKUP tags is refused before it is
parsed: libxml2 spends over a hundred bytes per element, so a dense body would otherwise cost
thirty times its size. Free text (Code, Message, RequestId) goes through the caller's redactor
before it is cut to length (exporter.ci.redact). Every listed job passes through here, so the
walk is one pass over each element's direct children and nothing else (no XPath, no
dict-of-everything).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from lxml import etree

from exporter.ci.dialect import JOB_SHAPE, QUEUE_SHAPE, JobShape, QueueShape
from exporter.ci.fields import (
    MAX_ID,
    MAX_TEXT,
    Redact,
    count,
    field_time,
    free_text,
    id_field,
    is_job_id,
    job_time,
    label_text,
    one_line,
    parse_time,
)
from exporter.ci.models import (
    CIAPIError,
    CIInvalidResponse,
    DescribeResult,
    Job,
    JobPage,
    Queue,
    QueuePage,
)

__all__ = [
    "MAX_ID",
    "MAX_MARKUP",
    "MAX_TEXT",
    "Redact",
    "is_job_id",
    "one_line",
    "parse_describe",
    "parse_error",
    "parse_job_page",
    "parse_queue_page",
    "parse_time",
]

MAX_TOKEN = 1024  # a NextToken is sent back in the next URL
# A page of 100 jobs with their full Operation and MediaInfo is some 30,000 tags; the tree of
# 100,000 is some 25 MB at most.
MAX_MARKUP = 100_000
_SUMMARY_CHARS = 120  # how much of a non-XML error body goes into a message
_SUMMARY_BYTES = 4096

_TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_TAG_RE = re.compile(r"<[^>]*>")

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


def response_root(body: bytes, expected: str = "Response") -> etree._Element:
    if not body.strip():
        raise CIInvalidResponse("body is empty")
    if body.count(b"<") > MAX_MARKUP:
        raise CIInvalidResponse(f"body has more than {MAX_MARKUP} tags", retryable=False)
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


def child_texts(element: etree._Element, wanted: frozenset[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for child in element:
        tag = child.tag
        if tag in wanted:
            fields[tag] = (child.text or "").strip()
    return fields


def _job(
    element: etree._Element, where: str, redact: Redact | None, shape: JobShape = JOB_SHAPE
) -> Job:
    """One item of a job listing or describe answer, its children named as `shape` says (a
    child `shape` names None is not read: its field is left empty)."""
    fields = child_texts(element, shape.fields)
    job_id = id_field(fields, shape.id, where, "job id")
    state = fields.get("State")
    if not state:
        raise CIInvalidResponse(f"{where}: missing State")
    queue_id = fields.get(shape.queue, "") if shape.queue else ""
    if queue_id and not is_job_id(queue_id):
        raise CIInvalidResponse(
            f"{where}: {shape.queue}: not a queue id: {one_line(repr(queue_id), 80)}",
            retryable=False,
        )
    creation = shape.creation
    created = creation[0]
    if len(creation) > 1 and created not in fields:  # another spelling of it, when present
        created = next((name for name in creation[1:] if name in fields), created)
    return Job(
        job_id=job_id,
        tag=label_text(fields, shape.tag, where) if shape.tag else "",
        state=state,
        queue_id=queue_id,
        creation_time=job_time(fields, created, where),
        start_time=job_time(fields, shape.start, where) if shape.start else None,
        end_time=job_time(fields, shape.end, where) if shape.end else None,
        code=free_text(fields.get(shape.code, ""), redact) if shape.code else "",
        message=free_text(fields.get(shape.message, ""), redact) if shape.message else "",
    )


def _jobs_and_rest(
    root: etree._Element,
    redact: Redact | None,
    max_jobs: int | None,
    shape: JobShape = JOB_SHAPE,
) -> tuple[list[Job], list[etree._Element]]:
    """The `shape.element` children as jobs (an empty one is no job), plus the other children.
    More than `max_jobs` jobs is an invalid answer, refused before any more is built."""
    jobs: list[Job] = []
    rest: list[etree._Element] = []
    index = 0
    element = shape.element
    for child in root:
        if child.tag == element:
            index += 1
            if len(child):
                if max_jobs is not None and len(jobs) >= max_jobs:
                    raise CIInvalidResponse(
                        f"more than the {max_jobs} jobs asked for", retryable=False
                    )
                jobs.append(_job(child, f"{element}[{index}]", redact, shape))
        else:
            rest.append(child)
    return jobs, rest


def parse_job_page(
    body: bytes,
    *,
    redact: Redact | None = None,
    max_jobs: int | None = None,
    shape: JobShape = JOB_SHAPE,
) -> JobPage:
    """One page of a job listing: `<Response><JobsDetail/>*<NextToken/></Response>` (the
    items' element as `shape` says)."""
    jobs, rest = _jobs_and_rest(response_root(body), redact, max_jobs, shape)
    next_token = ""
    for child in rest:
        if child.tag == "NextToken":
            next_token = _text(child)
    if len(next_token) > MAX_TOKEN or not next_token.isprintable():
        raise CIInvalidResponse(
            f"NextToken: not a valid token: {one_line(repr(next_token), 80)}", retryable=False
        )
    return JobPage(tuple(jobs), next_token)


def id_list(element: etree._Element) -> list[str]:
    """Ids given as text (`a,b`) and/or as child elements (`<JobId>a</JobId>`)."""
    ids = [part.strip() for part in (element.text or "").split(",")]
    for child in element:
        ids.extend(part.strip() for part in (child.text or "").split(","))
    return [i for i in ids if i]


def parse_describe(
    body: bytes,
    *,
    redact: Redact | None = None,
    max_jobs: int | None = None,
    shape: JobShape = JOB_SHAPE,
    missing_elements: tuple[str, ...] = ("NonExistJobIds",),
) -> DescribeResult:
    """`GET <job_path>/<ids>`: JobsDetail* plus NonExistJobIds (repeated, or comma-separated);
    the elements as `shape` and `missing_elements` say."""
    jobs, rest = _jobs_and_rest(response_root(body), redact, max_jobs, shape)
    missing: list[str] = []
    for child in rest:
        if child.tag in missing_elements:
            missing.extend(id_list(child))
    return DescribeResult(tuple(jobs), tuple(missing))


def _queue(element: etree._Element, where: str, shape: QueueShape) -> Queue:
    fields = child_texts(element, shape.fields)
    queue_id = id_field(fields, shape.id, where, "queue id")
    state = fields.get("State")
    if not state:
        raise CIInvalidResponse(f"{where}: missing State")
    notify = element.find("NotifyConfig")
    notify_state = notify.findtext("State") if notify is not None else None
    return Queue(
        queue_id=queue_id,
        name=fields.get("Name", ""),
        state=state,
        max_size=count(fields.get("MaxSize"), f"{where}: MaxSize"),
        max_concurrent=count(fields.get("MaxConcurrent"), f"{where}: MaxConcurrent"),
        category=shape.category if shape.category is not None else fields.get("Category", ""),
        notify_enabled=(notify_state or "").strip() == "On",
        create_time=field_time(fields, "CreateTime", where),
        update_time=field_time(fields, "UpdateTime", where),
    )


def parse_queue_page(
    body: bytes, *, max_queues: int | None = None, shape: QueueShape = QUEUE_SHAPE
) -> QueuePage:
    """One page of a queue listing (its items' elements as `shape` says); more than
    `max_queues` queues is an invalid answer.

    TotalCount is absent when queues are asked for by id: it is then the number listed.
    PageNumber and PageSize are 0 when absent.
    """
    root = response_root(body)
    queues: list[Queue] = []
    missing: list[str] = []
    scalars: dict[str, str | None] = {}
    index = 0
    for child in root:
        tag = child.tag
        if tag == shape.element:
            index += 1
            if len(child):
                if max_queues is not None and len(queues) >= max_queues:
                    raise CIInvalidResponse(
                        f"more than the {max_queues} queues asked for", retryable=False
                    )
                queues.append(_queue(child, f"{tag}[{index}]", shape))
        elif tag in shape.missing:
            missing.extend(id_list(child))
        elif tag in ("RequestId", "TotalCount", "PageNumber", "PageSize"):
            scalars[tag] = child.text
    total = scalars.get("TotalCount")
    return QueuePage(
        queues=tuple(queues),
        total_count=count(total, "TotalCount") if total is not None else len(queues),
        page_number=count(scalars.get("PageNumber"), "PageNumber"),
        page_size=count(scalars.get("PageSize"), "PageSize"),
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


def _summary(body: bytes, redact: Redact | None) -> str:
    """A short human line for a non-XML error body (an HTML page's title, else its first words)."""
    head = body[:_SUMMARY_BYTES]
    title = _TITLE_RE.search(head)
    text = (title.group(1) if title else head).decode("utf-8", "replace")
    text = free_text(_TAG_RE.sub(" ", text), redact, _SUMMARY_CHARS)
    if not text:
        return "empty body" if not body.strip() else "unreadable body"
    return f"non-XML body: {text}"


def parse_error(
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    endpoint: str = "",
    redact: Redact | None = None,
) -> CIAPIError:
    """An error answer -> CIAPIError. Any body is accepted: code is "" when it is not CI's XML.
    Every field passes `redact` before it is cut to length."""
    code = message = request_id = ""
    root: etree._Element | None = None
    if body.strip() and body.count(b"<") <= MAX_MARKUP:
        try:
            root = etree.fromstring(body, _parser())
        except (etree.XMLSyntaxError, ValueError):
            root = None
    if root is not None and root.tag in ("Error", "Response"):
        code = free_text(root.findtext("Code") or "", redact, 64)
        message = free_text(root.findtext("Message") or "", redact)
        request_id = free_text(root.findtext("RequestId") or "", redact, 128)
    else:
        message = _summary(body, redact)
    return CIAPIError(
        status=status,
        code=code,
        message=message,
        request_id=request_id or free_text(_header(headers, "x-ci-request-id"), redact, 128),
        endpoint=endpoint,
        retry_after=_retry_after(headers),
    )
