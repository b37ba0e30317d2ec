"""A workflow execution described by id (`GET /workflowexecution/<RunId>`): its body -> one Job,
its times and failure taken from the run's tasks.

Thread ownership: no mutable state.

What the pages say (cloud.tencent.com/document/product/436/53992, tencentcloud.com 1045/51275,
the Go SDK's WorkflowExecution and WorkflowExecutionNotifyBody): `<Response>` holds one
`<WorkflowExecution>` with RunId, WorkflowId, WorkflowName (or Name), State, CreateTime, Object,
Topology and one `<Tasks>` per step run so far, each with Type (the step's kind: Transcode,
Snapshot, ...), Name (the node, `Transcode_1581665960537`), JobId (the job the step ran), State,
CreateTime and EndTime (StartTime, Code and Message are read too when present: no page shows
them). "A run with one Failed task is Failed." The listing gives neither start nor end time.

Decisions where the pages are silent (the simulator, exporter.simulator.workflows, holds to
them):
- The run's start is its earliest task's StartTime (or CreateTime when there is none); its end,
  once the run is finished, its latest task's EndTime. A run without tasks has neither.
- A Failed run's `code` is the Type of its first Failed task: the step kind is a bounded set, so
  failures count by step; its `message` is that task's name, JobId, Code and Message on one
  line (redacted, cut). A Failed run without a Failed task has code "" (counted as unknown).
- An unknown RunId: CI answers 400 with Code ResourceNotFound (its error page: "the specified
  resource does not exist"); the client reads that one answer as "does not exist"
  (exporter.ci.dialect, WORKFLOW_DIALECT.not_found), any other error stays an error. A 200
  answer naming the id under NonExistJobIds (as the batch describe does) says the same. A 200
  answer with no WorkflowExecution says nothing: the run is neither found nor gone.
- An answer about another RunId than the one asked for, or with more than one
  WorkflowExecution, or more than MAX_TASKS tasks, is invalid.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from exporter.ci.fields import (
    Redact,
    field_time,
    free_text,
    id_field,
    is_job_id,
    label_text,
    one_line,
)
from exporter.ci.models import FINISHED_STATES, CIInvalidResponse, DescribeResult, Job
from exporter.ci.parse import child_texts, id_list, response_root

__all__ = ["MAX_TASKS", "Task", "parse_execution"]

MAX_TASKS = 100  # steps a run reports; a topology is a handful of nodes
_RUN_FIELDS = frozenset(("RunId", "WorkflowId", "State", "CreateTime", "CreationTime"))
_TASK_FIELDS = frozenset(
    ("Type", "Name", "JobId", "State", "CreateTime", "StartTime", "EndTime", "Code", "Message")
)


@dataclass(frozen=True, slots=True)
class Task:
    """One step of a run, as far as the run's accounting needs it."""

    type: str
    name: str
    job_id: str
    state: str
    start: float | None
    end: float | None
    code: str
    message: str


def _invalid(message: str) -> CIInvalidResponse:
    return CIInvalidResponse(message, retryable=False)


def _task(element: etree._Element, where: str, redact: Redact | None) -> Task:
    fields = child_texts(element, _TASK_FIELDS)
    start = field_time(fields, "StartTime", where)
    if start is None:
        start = field_time(fields, "CreateTime", where)
    return Task(
        type=label_text(fields, "Type", where),
        name=free_text(fields.get("Name", ""), redact, 128),
        job_id=free_text(fields.get("JobId", ""), redact, 128),
        state=fields.get("State", ""),
        start=start,
        end=field_time(fields, "EndTime", where),
        code=free_text(fields.get("Code", ""), redact, 64),
        message=free_text(fields.get("Message", ""), redact),
    )


def _failure(tasks: list[Task], redact: Redact | None) -> tuple[str, str]:
    """(code, message) of a Failed run: its first Failed task's Type, and what it says."""
    failed = next((task for task in tasks if task.state == "Failed"), None)
    if failed is None:
        return "", "no task of the run is Failed"
    step = failed.name or failed.type or "a step"
    parts = [f"{step} failed" + (f" (job {failed.job_id})" if failed.job_id else "")]
    parts += [text for text in (failed.code, failed.message) if text]
    return failed.type, free_text(": ".join(parts), redact)


def _run(element: etree._Element, asked: str, redact: Redact | None) -> Job:
    where = "WorkflowExecution"
    fields = child_texts(element, _RUN_FIELDS)
    run_id = id_field(fields, "RunId", where, "run id")
    if run_id != asked:
        raise _invalid(f"{where}: RunId {one_line(repr(run_id), 80)} is not the one asked for")
    state = fields.get("State")
    if not state:
        raise CIInvalidResponse(f"{where}: missing State")
    workflow_id = fields.get("WorkflowId", "")
    if workflow_id and not is_job_id(workflow_id):
        raise _invalid(f"{where}: WorkflowId: not a workflow id: {one_line(repr(workflow_id), 80)}")
    created = "CreateTime" if "CreateTime" in fields else "CreationTime"
    tasks: list[Task] = []
    for child in element:
        if child.tag == "Tasks" and len(child):
            if len(tasks) >= MAX_TASKS:
                raise _invalid(f"{where}: more than {MAX_TASKS} tasks")
            tasks.append(_task(child, f"{where}.Tasks[{len(tasks) + 1}]", redact))
    return run_record(run_id, workflow_id, state, field_time(fields, created, where), tasks, redact)


def run_record(
    run_id: str,
    workflow_id: str,
    state: str,
    creation_time: float | None,
    tasks: list[Task],
    redact: Redact | None,
) -> Job:
    """A run as a job of tag Workflow: started when its first step started, ended when its
    last step ended (once finished), and when Failed, its first failed step's type as code.
    Described runs and WorkflowFinish callbacks (exporter.ci.callback) are read so."""
    starts = [task.start for task in tasks if task.start is not None]
    ends = [task.end for task in tasks if task.end is not None]
    code, message = _failure(tasks, redact) if state == "Failed" else ("", "")
    return Job(
        job_id=run_id,
        tag="Workflow",
        state=state,
        queue_id=workflow_id,
        creation_time=creation_time,
        start_time=min(starts) if starts else None,
        end_time=max(ends) if ends and state in FINISHED_STATES else None,
        code=code,
        message=message,
    )


def parse_execution(
    body: bytes,
    run_id: str,
    *,
    redact: Redact | None = None,
    missing_elements: tuple[str, ...] = ("NonExistJobIds",),
) -> DescribeResult:
    """`GET /workflowexecution/<run_id>`: the run as a Job, or `run_id` among non_exist_ids
    when the answer names it missing; neither when the answer has no run (see the module)."""
    jobs: list[Job] = []
    missing: list[str] = []
    for child in response_root(body):
        if child.tag == "WorkflowExecution" and len(child):
            if jobs:
                raise _invalid("more than the 1 WorkflowExecution asked for")
            jobs.append(_run(child, run_id, redact))
        elif child.tag in missing_elements:
            missing.extend(i for i in id_list(child) if i == run_id)
    if jobs and missing:
        raise _invalid(f"run {run_id} is both described and said not to exist")
    return DescribeResult(tuple(jobs), tuple(dict.fromkeys(missing)))
