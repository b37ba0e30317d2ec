"""The bodies of CI's callbacks, TaskFinish and WorkflowFinish, in XML or JSON, from model records.

Thread ownership: no mutable state.

The shapes follow CI's pages (exporter.ci.callback names them): XML under `<Response>` with
EventName first, JSON as `{"EventName": ..., "JobsDetail": [{...}]}` (a list of one, as most
pages show) or `{"EventName": ..., "WorkflowExecution": {..., "Tasks": [...]}}`, every value a
string. A job's fields come in the pages' (alphabetical) order; a WorkflowFinish's times have a
space where the other times have a T (`2022-08-09 14:54:17+0800`), as its page shows. Object
names are derived from the ids, as the listings' are (exporter.simulator.render).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Union

from lxml import etree

from exporter.simulator.records import SimJob, SimStep
from exporter.simulator.render import XML_DECLARATION, format_time

FORMATS: tuple[str, ...] = ("XML", "JSON")
CONTENT_TYPES: dict[str, str] = {"XML": "application/xml", "JSON": "application/json"}

# A body before it is written: text, a container, or a container repeated.
Value = Union[str, "Tree", list["Tree"]]
Tree = dict[str, Value]


@dataclass(frozen=True, slots=True)
class WorkflowRef:
    """The run that started a job (its TaskFinish's `<Workflow>`)."""

    run_id: str
    workflow_id: str
    workflow_name: str
    node: str  # the step's node name, `Transcode_1581665960537`


def _object(job: SimJob) -> str:
    return f"input/{job.tag.lower()}/{job.job_id[-8:]}.mp4"


def _job(job: SimJob, bucket: str, region: str, workflow: WorkflowRef | None) -> Tree:
    tree: Tree = {
        "Code": job.code,
        "CreationTime": format_time(job.creation_time),
        "EndTime": format_time(job.end_time),
        "Input": {"BucketId": bucket, "Object": _object(job), "Region": region},
        "JobId": job.job_id,
        "Message": job.message,
        "Operation": {
            "Output": {
                "Bucket": bucket,
                "Object": f"output/{job.tag.lower()}/{job.job_id[-8:]}.mp4",
                "Region": region,
            },
            "JobLevel": "0",
        },
    }
    if job.queue_id:
        tree["QueueId"] = job.queue_id
    tree.update(StartTime=format_time(job.start_time), State=job.state, Tag=job.tag)
    if workflow is not None:
        tree["Workflow"] = {
            "Name": workflow.node,
            "RunId": workflow.run_id,
            "WorkflowId": workflow.workflow_id,
            "WorkflowName": workflow.workflow_name,
        }
    return tree


def _run_time(t: float | None) -> str:
    return format_time(t).replace("T", " ")


def _run(run: SimJob, workflow_name: str, steps: Iterable[SimStep], bucket: str) -> Tree:
    tasks: list[Tree] = []
    for step in steps:
        task: Tree = {
            "Type": step.type,
            "CreateTime": _run_time(step.start),
            "EndTime": _run_time(step.end),
            "State": step.state,
            "JobId": step.job_id,
            "Name": step.name,
            "TemplateId": f"t0{step.job_id[1:]}",
            "TemplateName": f"{step.type.lower()}-template",
        }
        if step.state == "Failed":  # as the describe answer has them (exporter.simulator.render)
            task.update(Code=step.code, Message=step.message)
        tasks.append(task)
    tree: Tree = {
        "WorkflowId": run.queue_id,
        "WorkflowName": workflow_name,
        "RunId": run.job_id,
        "State": run.state,
        "BucketId": bucket,
        "Object": _object(run),
        "CreateTime": _run_time(run.creation_time),
        "CosHeaders": [{"Key": "Content-Type", "Value": "video/mp4"}],
    }
    if tasks:
        tree["Tasks"] = tasks
    return tree


def _xml(parent: etree._Element, tree: Mapping[str, Value]) -> None:
    for key, value in tree.items():
        if isinstance(value, str):
            etree.SubElement(parent, key).text = value
        elif isinstance(value, dict):
            _xml(etree.SubElement(parent, key), value)
        else:
            for item in value:
                _xml(etree.SubElement(parent, key), item)


def _write(tree: Tree, fmt: str) -> bytes:
    if fmt == "JSON":
        return json.dumps(tree, ensure_ascii=False).encode()
    if fmt != "XML":
        raise ValueError(f"callback format must be one of {FORMATS}, not {fmt!r}")
    root = etree.Element("Response")
    _xml(root, tree)
    return XML_DECLARATION + etree.tostring(root, encoding="UTF-8")


def task_finish_body(
    job: SimJob, bucket: str, region: str, fmt: str, workflow: WorkflowRef | None = None
) -> bytes:
    """A finished job's TaskFinish (with `<Workflow>` when a workflow's run started it)."""
    tree: Tree = {"EventName": "TaskFinish", "JobsDetail": [_job(job, bucket, region, workflow)]}
    return _write(tree, fmt)


def workflow_finish_body(
    run: SimJob, workflow_name: str, steps: Iterable[SimStep], bucket: str, fmt: str
) -> bytes:
    """A finished run's WorkflowFinish, one Tasks per step."""
    tree: Tree = {
        "EventName": "WorkflowFinish",
        "WorkflowExecution": _run(run, workflow_name, steps, bucket),
    }
    return _write(tree, fmt)
