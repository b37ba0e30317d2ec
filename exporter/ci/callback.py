"""CI's callbacks, TaskFinish and WorkflowFinish, XML or JSON -> one plain record (CallbackEvent).

Thread ownership: no mutable state (XML is parsed with exporter.ci.parse's per-thread parser).

What the pages say (cloud.tencent.com/document/product/436/85073 and the other "任务回调" pages,
436/80040 "工作流回调", tencentcloud.com 436/48042; the Go SDK's JobsNotifyBody and
WorkflowExecutionNotifyBody; the Python SDK: CallBackFormat "JSON or XML, XML by default"):
- TaskFinish: `<Response><EventName>TaskFinish</EventName><JobsDetail>` with Code, Message, JobId,
  Tag, State, CreationTime, StartTime, EndTime, QueueId, Input (BucketId, Object, ...),
  Operation, and `<Workflow>` (RunId, WorkflowId, WorkflowName, Name: the node) when a workflow
  started the job. JSON: `{"EventName": "TaskFinish", "JobsDetail": ...}`, the same keys, no
  Response; JobsDetail a list of one object on some pages, the object itself on others.
- WorkflowFinish: `<Response><EventName>WorkflowFinish</EventName><WorkflowExecution>` with
  WorkflowId, WorkflowName, RunId, State (Success or Failed), BucketId, Object, CreateTime
  (`2022-08-09 14:54:17+0800`: a space, not a T) and one `<Tasks>` per step (Type, CreateTime,
  StartTime, EndTime, State, JobId, Name, ...). JSON: `{"EventName": "WorkflowFinish",
  "WorkflowExecution": {..., "Tasks": [...]}}`. In JSON every value is a string.
- Older pages show both bodies without EventName (`<Response><JobsDetail>...`).

Decisions where the pages are silent:
- The body's first non-space byte (after a UTF-8 BOM) tells the format: `<` XML, `{` or `[`
  JSON. Content-Type is not trusted (CI's pages call every callback body application/xml, JSON
  samples included); it is only named when the body is neither.
- XML goes through exporter.ci.parse.response_root (no DTD, no entities, at most MAX_MARKUP
  tags). JSON: at most MAX_MARKUP separators, then json.loads refusing integers of more than
  MAX_DIGITS digits, floats that are not finite, NaN/Infinity, a key repeated in one object;
  then nesting deeper than MAX_DEPTH, and a non-string where a string is read. The caller caps
  the body's size.
- No EventName: TaskFinish with a JobsDetail, WorkflowFinish with a WorkflowExecution. Another
  event's name is kept (cut to MAX_EVENT) when it is `[A-Za-z0-9_]` only, else it is "other";
  nothing else of that body is read.
- Exactly one JobsDetail or WorkflowExecution, at most one Workflow: CI calls back per job and
  per run. The job is checked as a listed one (exporter.ci.listing.check_jobs) and must be
  finished (Success, Failed, Cancel).
- A run becomes a Job as a described run does (exporter.ci.workflows): tag "Workflow", queue the
  WorkflowId (required), start and end from its tasks, a Failed run's code the Type of its
  first Failed task.
- BucketId is kept when it is a bucket id (exporter.ci.buckets), else "": the request's path
  routes a callback, not the body.

Any other body is refused with one CIInvalidResponse whose single line says what is wrong and
where (`JobsDetail: missing JobId`); free text passes the caller's redactor before it is cut.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from lxml import etree

from exporter.ci.buckets import is_bucket_id
from exporter.ci.fields import (
    MAX_TEXT,
    Redact,
    free_text,
    id_field,
    is_job_id,
    job_time,
    label_text,
    one_line,
)
from exporter.ci.listing import check_jobs
from exporter.ci.models import FINISHED_STATES, CIInvalidResponse, Job
from exporter.ci.parse import MAX_MARKUP, response_root
from exporter.ci.workflows import MAX_TASKS, Task, run_record

__all__ = ["EVENTS", "MAX_DEPTH", "MAX_DIGITS", "MAX_EVENT", "CallbackEvent", "parse_callback"]

TASK_FINISH, WORKFLOW_FINISH = "TaskFinish", "WorkflowFinish"
EVENTS: tuple[str, ...] = (TASK_FINISH, WORKFLOW_FINISH)
MAX_EVENT = 64  # characters of an unknown event's name that are kept
MAX_DEPTH = 32  # JSON nesting; CI's deepest is Operation.MediaInfo.Stream.Video (6)
MAX_DIGITS = 18  # an integer longer than this is no value of CI's
_MAX_FLOAT = 40  # characters of a JSON float
_EVENT_RE = re.compile(r"[A-Za-z0-9_]+")
_FIRST_RE = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\r\n]*([^ \t\r\n])")
_MEDIA_TYPE_RE = re.compile(r"[a-z0-9.+-]{1,40}/[a-z0-9.+-]{1,60}")


@dataclass(frozen=True, slots=True)
class CallbackEvent:
    """One callback. `job` is the finished job (TaskFinish) or run (WorkflowFinish, as
    exporter.ci.workflows makes a run a Job); None for any other event. For a job a workflow
    started, `run_id`, `workflow_id` and `workflow_name` name the run; for a run, its own."""

    event: str  # "TaskFinish", "WorkflowFinish", an unknown event's name, or "other"
    format: str  # "XML" or "JSON"
    job: Job | None = None
    run_id: str = ""
    workflow_id: str = ""
    workflow_name: str = ""
    bucket: str = ""  # the body's BucketId when it is one, else ""

    @property
    def known(self) -> bool:
        return self.event in EVENTS


# -- both formats as one tree: the fields read (strings) and the containers read ------------


@dataclass(frozen=True, slots=True)
class _Shape:
    fields: frozenset[str]
    containers: Mapping[str, _Shape] = field(default_factory=dict)


@dataclass(slots=True)
class _Node:
    fields: dict[str, str] = field(default_factory=dict)
    children: dict[str, list[_Node]] = field(default_factory=dict)


def _shape(names: str, **containers: _Shape) -> _Shape:
    return _Shape(frozenset(names.split()), containers)


_TASK = _shape("Type Name JobId State CreateTime StartTime EndTime Code Message")
_RUN = _shape("RunId WorkflowId WorkflowName State CreateTime CreationTime BucketId", Tasks=_TASK)
_JOB = _shape(
    "JobId Tag State QueueId CreationTime StartTime EndTime Code Message",
    Workflow=_shape("RunId WorkflowId WorkflowName Name"),
    Input=_shape("BucketId"),
)
_ROOT = _shape("EventName", JobsDetail=_JOB, WorkflowExecution=_RUN)


def _invalid(message: str) -> CIInvalidResponse:
    return CIInvalidResponse(message, retryable=False)


def _from_xml(element: etree._Element, shape: _Shape) -> _Node:
    """The element's direct children that `shape` reads; an empty container is none."""
    node = _Node()
    for child in element:
        tag = child.tag
        if tag in shape.fields:
            node.fields[tag] = (child.text or "").strip()
        elif isinstance(tag, str) and tag in shape.containers and len(child):
            node.children.setdefault(tag, []).append(_from_xml(child, shape.containers[tag]))
    return node


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else "a string"


def _from_json(value: object, shape: _Shape, where: str) -> _Node:
    """An object's keys that `shape` reads: strings (null is ""), and containers given as an
    object or a list of objects; an empty one is none."""
    if not isinstance(value, dict):
        raise _invalid(f"{where}: expected an object, got {_kind(value)}")
    node = _Node()
    for key, item in value.items():
        path = f"{where}.{key}" if where else key
        if key in shape.fields:
            if item is not None and not isinstance(item, str):
                raise _invalid(f"{path}: expected a string, got {_kind(item)}")
            node.fields[key] = (item or "").strip()
        elif key in shape.containers and item is not None:
            items = item if isinstance(item, list) else [item]
            for index, part in enumerate(items, 1):
                inner = f"{path}[{index}]" if isinstance(item, list) else path
                child = _from_json(part, shape.containers[key], inner)
                if part:  # an empty object is no container, as an empty element is none
                    node.children.setdefault(key, []).append(child)
    return node


class _Refused(ValueError):
    """A JSON value refused while it is decoded (its message says which)."""


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise _Refused(f"a number of more than {MAX_DIGITS} digits")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text) if len(text) <= _MAX_FLOAT else float("inf")
    if value != value or value in (float("inf"), float("-inf")):
        raise _Refused(f"a number too large: {one_line(text, 40)}")
    return value


def _json_constant(name: str) -> object:
    raise _Refused(f"{name}, which is not JSON")


def _json_object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    value: dict[str, object] = {}
    for key, item in pairs:
        if key in value:
            raise _Refused(f"an object repeating the key {one_line(repr(key), 60)}")
        value[key] = item
    return value


def _json_root(body: bytes) -> dict[str, object]:
    if body.count(b":") + body.count(b",") > MAX_MARKUP:
        raise _invalid(f"body has more than {MAX_MARKUP} JSON values")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _invalid("body is not UTF-8") from None
    try:
        value = json.loads(
            text,
            parse_int=_json_int,
            parse_float=_json_float,
            parse_constant=_json_constant,
            object_pairs_hook=_json_object,
        )
    except _Refused as exc:
        raise _invalid(f"body has {exc}") from None
    except RecursionError:
        raise _invalid(f"body is nested more than {MAX_DEPTH} deep") from None
    except ValueError as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise CIInvalidResponse(f"body is not well-formed JSON: {one_line(msg, 120)}") from None
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _invalid(f"body is nested more than {MAX_DEPTH} deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    if not isinstance(value, dict):
        raise _invalid(f"body is {_kind(value)}, not a JSON object")
    inner = value.get("Response")
    if len(value) == 1 and isinstance(inner, dict):
        return inner  # the XML's root, kept by a converter
    return value


def _root(body: bytes, content_type: str) -> tuple[str, _Node]:
    first = _FIRST_RE.match(body)
    if first is None:
        raise CIInvalidResponse("body is empty")
    byte = first.group(1)
    if byte == b"<":
        return "XML", _from_xml(response_root(body), _ROOT)
    if byte in (b"{", b"["):
        return "JSON", _from_json(_json_root(body), _ROOT, "")
    declared = content_type.partition(";")[0].strip().lower()
    if not _MEDIA_TYPE_RE.fullmatch(declared):
        declared = "none" if not declared else "not a media type"
    raise _invalid(f"body is neither XML nor JSON (Content-Type: {declared})")


# -- the records -----------------------------------------------------------------------------


def _optional(node: _Node, name: str, where: str) -> _Node | None:
    found = node.children.get(name, [])
    if len(found) > 1:
        raise _invalid(f"{where}: {len(found)} {name}, one was expected")
    return found[0] if found else None


def _the(node: _Node, name: str, where: str) -> _Node:
    found = _optional(node, name, where)
    if found is None:
        raise _invalid(f"{where}: missing {name}")
    return found


def _optional_id(fields: Mapping[str, str], name: str, where: str, what: str) -> str:
    value = fields.get(name, "")
    if value and not is_job_id(value):
        raise _invalid(f"{where}: {name}: not a {what}: {one_line(repr(value), 80)}")
    return value


def _finished(job: Job, now: float, event: str) -> None:
    check_jobs((job,), now)
    if job.state not in FINISHED_STATES:
        raise _invalid(f"{event} about {job.job_id} in State {job.state}, not a finished state")


def _bucket(fields: Mapping[str, str]) -> str:
    value = fields.get("BucketId", "")
    return value if is_bucket_id(value) else ""


def _task_finish(root: _Node, fmt: str, redact: Redact | None, now: float) -> CallbackEvent:
    where = "JobsDetail"
    node = _the(root, where, TASK_FINISH)
    f = node.fields
    job_id = id_field(f, "JobId", where, "job id")
    state = f.get("State")
    if not state:
        raise CIInvalidResponse(f"{where}: missing State")
    job = Job(
        job_id=job_id,
        tag=label_text(f, "Tag", where),
        state=state,
        queue_id=_optional_id(f, "QueueId", where, "queue id"),
        creation_time=job_time(f, "CreationTime", where),
        start_time=job_time(f, "StartTime", where),
        end_time=job_time(f, "EndTime", where),
        code=free_text(f.get("Code", ""), redact),
        message=free_text(f.get("Message", ""), redact),
    )
    _finished(job, now, TASK_FINISH)
    run_id = workflow_id = workflow_name = ""
    workflow = _optional(node, "Workflow", where)
    if workflow is not None:
        w = workflow.fields
        run_id = id_field(w, "RunId", f"{where}.Workflow", "run id")
        workflow_id = _optional_id(w, "WorkflowId", f"{where}.Workflow", "workflow id")
        workflow_name = free_text(w.get("WorkflowName", ""), redact, 128)
    inputs = _optional(node, "Input", where)
    return CallbackEvent(
        TASK_FINISH,
        fmt,
        job,
        run_id=run_id,
        workflow_id=workflow_id,
        workflow_name=workflow_name,
        bucket=_bucket(inputs.fields) if inputs is not None else "",
    )


def _task(node: _Node, where: str, redact: Redact | None) -> Task:
    f = node.fields
    start = job_time(f, "StartTime", where)
    return Task(
        type=label_text(f, "Type", where),
        name=free_text(f.get("Name", ""), redact, 128),
        job_id=free_text(f.get("JobId", ""), redact, 128),
        state=f.get("State", ""),
        start=job_time(f, "CreateTime", where) if start is None else start,
        end=job_time(f, "EndTime", where),
        code=free_text(f.get("Code", ""), redact, 64),
        message=free_text(f.get("Message", ""), redact),
    )


def _workflow_finish(root: _Node, fmt: str, redact: Redact | None, now: float) -> CallbackEvent:
    where = "WorkflowExecution"
    node = _the(root, where, WORKFLOW_FINISH)
    f = node.fields
    run_id = id_field(f, "RunId", where, "run id")
    workflow_id = id_field(f, "WorkflowId", where, "workflow id")
    state = f.get("State")
    if not state:
        raise CIInvalidResponse(f"{where}: missing State")
    nodes = node.children.get("Tasks", [])
    if len(nodes) > MAX_TASKS:
        raise _invalid(f"{where}: more than {MAX_TASKS} tasks")
    tasks = [_task(t, f"{where}.Tasks[{i}]", redact) for i, t in enumerate(nodes, 1)]
    created = "CreateTime" if "CreateTime" in f else "CreationTime"
    run = run_record(run_id, workflow_id, state, job_time(f, created, where), tasks, redact)
    _finished(run, now, WORKFLOW_FINISH)
    return CallbackEvent(
        WORKFLOW_FINISH,
        fmt,
        run,
        run_id=run_id,
        workflow_id=workflow_id,
        workflow_name=free_text(f.get("WorkflowName", ""), redact, 128),
        bucket=_bucket(f),
    )


def event_label(name: str) -> str:
    """An event name as it may be shown: cut to MAX_EVENT, `[A-Za-z0-9_]` only, else "other"."""
    name = name[:MAX_EVENT]
    return name if _EVENT_RE.fullmatch(name) else "other"


def parse_callback(
    body: bytes,
    content_type: str = "",
    *,
    redact: Redact | None = None,
    now: float | None = None,
) -> CallbackEvent:
    """One callback body -> CallbackEvent; CIInvalidResponse when it is not one CI sends (see
    the module). `now` is the time job times are checked against (time.time() by default);
    the refusal's message, which may quote the body, passes `redact` too."""
    try:
        return _parse(body, content_type, redact, time.time() if now is None else now)
    except CIInvalidResponse as exc:
        if redact is None:
            raise
        message = free_text(str(exc), redact, 2 * MAX_TEXT)
        raise CIInvalidResponse(message, retryable=exc.retryable) from None


def _parse(body: bytes, content_type: str, redact: Redact | None, now: float) -> CallbackEvent:
    fmt, root = _root(body, content_type)
    name = root.fields.get("EventName", "")
    if not name:
        if "JobsDetail" in root.children:
            name = TASK_FINISH
        elif "WorkflowExecution" in root.children:
            name = WORKFLOW_FINISH
        else:
            raise _invalid("missing EventName")
    if name == TASK_FINISH:
        return _task_finish(root, fmt, redact, now)
    if name == WORKFLOW_FINISH:
        return _workflow_finish(root, fmt, redact, now)
    return CallbackEvent(event_label(name), fmt)
