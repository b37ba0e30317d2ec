"""Model records -> the XML bodies CI sends (built with lxml, so text is always escaped).

Thread ownership: no mutable state.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone

from lxml import etree

from exporter.simulator.records import NOTIFY_EVENT, NOTIFY_URL, SimJob, SimQueue, SimStep

# CI renders every time in China Standard Time, whatever the bucket's region.
CST = timezone(timedelta(hours=8))
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def format_time(t: float | None, missing: str = "") -> str:
    if t is None:
        return missing
    return datetime.fromtimestamp(t, tz=CST).strftime(TIME_FORMAT)


def new_request_id() -> str:
    """Looks like CI's: base64 of underscore-joined hex fields."""
    raw = "_".join(secrets.token_hex(n) for n in (4, 4, 2, 3))
    return base64.b64encode(raw.encode()).decode()


def _sub(parent: etree._Element, tag: str, text: object = None) -> etree._Element:
    child = etree.SubElement(parent, tag)
    if text is not None:
        child.text = str(text)
    return child


XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def _serialize(root: etree._Element) -> bytes:
    return XML_DECLARATION + etree.tostring(root, xml_declaration=False, encoding="UTF-8")


def error_body(code: str, message: str, request_id: str) -> bytes:
    root = etree.Element("Error")
    _sub(root, "Code", code)
    _sub(root, "Message", message)
    _sub(root, "RequestId", request_id)
    _sub(root, "TraceId", secrets.token_hex(16))
    return _serialize(root)


def _queue(parent: etree._Element, q: SimQueue, bucket: str) -> None:
    el = _sub(parent, "QueueList")
    _sub(el, "QueueId", q.queue_id)
    _sub(el, "Name", q.name)
    _sub(el, "State", q.state)
    _sub(el, "MaxSize", q.max_size)
    _sub(el, "MaxConcurrent", q.max_concurrent)
    _sub(el, "CreateTime", format_time(q.create_time))
    _sub(el, "UpdateTime", format_time(q.update_time))
    _sub(el, "Category", q.category)
    _sub(el, "BucketId", bucket)
    notify = _sub(el, "NotifyConfig")
    _sub(notify, "Url", NOTIFY_URL if q.notify else "")
    _sub(notify, "Type", "Url" if q.notify else "")
    _sub(notify, "State", "On" if q.notify else "Off")
    _sub(notify, "Event", NOTIFY_EVENT if q.notify else "")


def queue_list_body(
    request_id: str,
    queues: Iterable[SimQueue],
    total: int,
    page_number: int,
    page_size: int,
    non_exist: Iterable[str],
    bucket: str,
) -> bytes:
    root = etree.Element("Response")
    _sub(root, "RequestId", request_id)
    _sub(root, "TotalCount", total)
    _sub(root, "PageNumber", page_number)
    _sub(root, "PageSize", page_size)
    for q in queues:
        _queue(root, q, bucket)
    missing = list(non_exist)
    if missing:
        pids = _sub(root, "NonExistPIDs")
        for qid in missing:
            _sub(pids, "QueueID", qid)
    return _serialize(root)


def _job(parent: etree._Element, job: SimJob, bucket: str, region: str) -> None:
    el = _sub(parent, "JobsDetail")
    _sub(el, "Code", job.code)
    _sub(el, "Message", job.message)
    _sub(el, "JobId", job.job_id)
    _sub(el, "Tag", job.tag)
    _sub(el, "State", job.state)
    _sub(el, "Progress", job.progress)
    _sub(el, "CreationTime", format_time(job.creation_time))
    # As in the seed documents: a start not reached is empty, an end not reached is "-".
    _sub(el, "StartTime", format_time(job.start_time))
    _sub(el, "EndTime", format_time(job.end_time, missing="-"))
    _sub(el, "QueueId", job.queue_id)
    # Object names are derived from the id so the model need not store them per job.
    _sub(_sub(el, "Input"), "Object", f"input/{job.tag.lower()}/{job.job_id[-8:]}.mp4")
    op = _sub(el, "Operation")
    _sub(op, "TemplateId", f"t0{job.queue_id[1:]}")
    out = _sub(op, "Output")
    _sub(out, "Region", region)
    _sub(out, "Bucket", bucket)
    _sub(out, "Object", f"output/{job.tag.lower()}/{job.job_id[-8:]}.mp4")
    _sub(op, "JobLevel", 0)


# Renders one page of a listing: (jobs, NextToken, bucket, region) -> body.
PageBody = Callable[[list[SimJob], str, str, str], bytes]


def job_list_body(jobs: Iterable[SimJob], next_token: str, bucket: str, region: str) -> bytes:
    root = etree.Element("Response")
    for job in jobs:
        _job(root, job, bucket, region)
    _sub(root, "NextToken", next_token)
    return _serialize(root)


def describe_body(
    jobs: Iterable[SimJob], non_exist: Iterable[str], bucket: str, region: str
) -> bytes:
    """Unknown ids come back as repeated `NonExistJobIds` elements, one id each."""
    root = etree.Element("Response")
    for job in jobs:
        _job(root, job, bucket, region)
    for job_id in non_exist:
        _sub(root, "NonExistJobIds", job_id)
    return _serialize(root)


def workflow_list_body(
    request_id: str,
    workflows: Iterable[SimQueue],
    total: int,
    page_number: int,
    page_size: int,
    non_exist: Iterable[str],
    bucket: str,
) -> bytes:
    """`GET /workflow`: one MediaWorkflowList per workflow, ids not found as NonExistIDs."""
    root = etree.Element("Response")
    for tag, value in (
        ("RequestId", request_id),
        ("TotalCount", total),
        ("PageNumber", page_number),
        ("PageSize", page_size),
    ):
        _sub(root, tag, value)
    for workflow in workflows:
        el = _sub(root, "MediaWorkflowList")
        _sub(el, "Name", workflow.name)
        _sub(el, "WorkflowId", workflow.queue_id)
        _sub(el, "State", workflow.state)
        _sub(el, "CreateTime", format_time(workflow.create_time))
        _sub(el, "UpdateTime", format_time(workflow.update_time))
        _sub(el, "BucketId", bucket)
        topology = _sub(el, "Topology")
        _sub(_sub(topology, "Dependencies"), "Start", "End")
        _sub(_sub(_sub(topology, "Nodes"), "Start"), "Type", "Start")
    for workflow_id in non_exist:
        _sub(root, "NonExistIDs", workflow_id)
    return _serialize(root)


def _object(job: SimJob) -> str:
    return f"input/{job.tag.lower()}/{job.job_id[-8:]}.mp4"


def execution_list_body(runs: Iterable[SimJob], next_token: str, bucket: str, region: str) -> bytes:
    """`GET /workflowexecution`: WorkflowExecutionList items (no start or end time)."""
    root = etree.Element("Response")
    for run in runs:
        el = _sub(root, "WorkflowExecutionList")
        _sub(el, "RunId", run.job_id)
        _sub(el, "WorkflowId", run.queue_id)
        _sub(el, "Object", _object(run))
        _sub(el, "CreateTime", format_time(run.creation_time))
        _sub(el, "State", run.state)
    _sub(root, "NextToken", next_token)
    return _serialize(root)


def execution_body(
    request_id: str, run: SimJob, workflow_name: str, tasks: Iterable[SimStep]
) -> bytes:
    """`GET /workflowexecution/<RunId>`: one WorkflowExecution with a Tasks per step. A task's
    start is its CreateTime; only a Failed task carries Code and Message."""
    root = etree.Element("Response")
    _sub(root, "RequestId", request_id)
    el = _sub(root, "WorkflowExecution")
    for tag, value in (
        ("RunId", run.job_id),
        ("WorkflowId", run.queue_id),
        ("WorkflowName", workflow_name),
        ("State", run.state),
        ("CreateTime", format_time(run.creation_time)),
        ("Object", _object(run)),
    ):
        _sub(el, tag, value)
    _sub(_sub(_sub(el, "Topology"), "Dependencies"), "Start", "End")
    for task in tasks:
        t = _sub(el, "Tasks")
        _sub(t, "Type", task.type)
        _sub(t, "CreateTime", format_time(task.start))
        _sub(t, "EndTime", format_time(task.end))
        _sub(t, "State", task.state)
        _sub(t, "JobId", task.job_id)
        _sub(t, "Name", task.name)
        if task.state == "Failed":
            _sub(t, "Code", task.code)
            _sub(t, "Message", task.message)
    return _serialize(root)


def _batch_job(parent: etree._Element, job: SimJob) -> None:
    el = _sub(parent, "JobsDetail")
    _sub(el, "Code", job.code)
    _sub(el, "Message", job.message)
    _sub(el, "JobId", job.job_id)
    _sub(el, "Name", f"batch-{job.job_id[-8:]}")
    _sub(el, "Type", job.tag)
    _sub(el, "State", job.state)
    _sub(el, "CreationTime", format_time(job.creation_time))
    # As the batch pages show: a time not reached is "-".
    _sub(el, "StartTime", format_time(job.start_time, missing="-"))
    _sub(el, "EndTime", format_time(job.end_time, missing="-"))
    _sub(_sub(el, "Input"), "Prefix", "input/")


def batch_list_body(jobs: Iterable[SimJob], next_token: str, bucket: str, region: str) -> bytes:
    """`GET /inventorytriggerjob`: JobsDetail items, then NextToken."""
    root = etree.Element("Response")
    for job in jobs:
        _batch_job(root, job)
    _sub(root, "NextToken", next_token)
    return _serialize(root)


def batch_describe_body(request_id: str, jobs: Iterable[SimJob], non_exist: Iterable[str]) -> bytes:
    """`GET /inventorytriggerjob/<id>`: the job, or its id under NonExistJobIds."""
    root = etree.Element("Response")
    _sub(root, "RequestId", request_id)
    for job in jobs:
        _batch_job(root, job)
    for job_id in non_exist:
        _sub(root, "NonExistJobIds", job_id)
    return _serialize(root)


def html_page() -> bytes:
    """What a gateway in front of CI answers when it, not CI, has the problem."""
    return (
        b"<!DOCTYPE html>\n<html><head><title>Bad Gateway</title></head>\n"
        b"<body><center><h1>Bad Gateway</h1></center>\n"
        b"<hr><center>nginx</center></body></html>\n"
    )


def malform(body: bytes) -> bytes:
    """Break a body the way the seed documents are broken: `<Tag>Translation<Tag>`."""
    if b"</Tag>" in body:
        return body.replace(b"</Tag>", b"<Tag>")
    return body.replace(b"</Response>", b"<Response>")


def oversize(body: bytes, size: int) -> bytes:
    """Still well-formed XML, padded with a comment up to `size` bytes."""
    pad = max(0, size - len(body) - len(b"<!---->"))
    return body + b"<!--" + b" " * pad + b"-->"


# The elements a job (an execution, a batch job) comes in: the faults that spoil jobs change them.
JOB_ELEMENTS = ("JobsDetail", "WorkflowExecutionList", "WorkflowExecution")


def _rewrite_jobs(body: bytes, change: Callable[[etree._Element], None]) -> bytes:
    """Apply `change` to every job of one of our own (well-formed) answers."""
    root = etree.fromstring(body)
    for job in root.iter(*JOB_ELEMENTS):
        change(job)
    return _serialize(root)


def drop_job_field(body: bytes, name: str) -> bytes:
    """Every job without its `name` element (JobId, State, CreationTime, RunId, ...)."""

    def drop(job: etree._Element) -> None:
        for child in job.findall(name):
            job.remove(child)

    return _rewrite_jobs(body, drop)


def set_job_state(body: bytes, state: str) -> bytes:
    """Every job in `state`, one CI's documentation does not list."""

    def restate(job: etree._Element) -> None:
        for child in job.findall("State"):
            child.text = state

    return _rewrite_jobs(body, restate)
