"""Workflows, their executions (runs) and batch (inventory trigger) jobs: a scripted API over a
SimBucket and what CI answers for them, without HTTP.

Thread ownership: no mutable state of its own; runs and batch jobs are a bucket's jobs, held
under its lock (exporter.simulator.model).

The model: a workflow is a SimQueue of service "workflow" (Active or Paused); its runs are
SimJobs tagged "Workflow" that start Running (a paused workflow starts none; its running runs
carry on) and finish Success, Failed or Cancel. Batch jobs are SimJobs of one pseudo-queue of
service "batch" (BATCH_QUEUE_ID), tagged with their Type (Workflow or Job), with a job's life
cycle. A run's steps (1 to 3 tasks: Transcode, Snapshot, ...) are derived from its id and times
when asked for (`steps_of`), never stored. Both services are opt-in per bucket: a bucket built
without them in its `services` answers their paths 404 ResourceNotFound, as before they existed.

Choices where the pages are silent (exporter.ci.workflows and exporter.ci.dialect say what the
pages do say; the tests pin these):
- `/workflow`: `ids` (comma-separated, at most 10) and `name` (exact) filter; `pageNumber` >= 1
  (default 1), `pageSize` 1..100 (default 10), else 400 InvalidArgument. Workflows are listed by
  CreateTime, then id; ids not found come back as repeated NonExistIDs (the Go SDK's element).
- `/workflowexecution`: `workflowId` is required and `states` takes All, Running, Success,
  Failed, Cancel only (400 InvalidArgument otherwise); `size`, `orderByTime`, the creation-time
  bounds (exclusive or inclusive, the simulator's setting) and `nextToken` (cursors bound to
  their listing) are checked and followed exactly as for /jobs. A workflow that does not exist
  lists nothing. Items carry CreateTime (the page's table and example), no start or end time.
- `/workflowexecution/<RunId>`: one id a call (a comma is 400 InvalidArgument). An unknown
  RunId is 400 ResourceNotFound (CI's error page: "the specified resource does not exist").
  Each task's start is its CreateTime; a Failed run's last task is the Failed one, with the
  run's Code and Message (no page shows a task's Code: these are ours).
- `/inventorytriggerjob`: `type` is required here (Workflow or Job; the page says optional, the
  client always sends it); `states` takes every job state; the rest as for /jobs. `workflowId`,
  `jobId` and `name` filters are not simulated (ignored). Times not reached are "-".
- `/inventorytriggerjob/<JobId>`: one id a call; an unknown id comes back under NonExistJobIds
  with 200, as its page shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from exporter.ci.services import endpoint_family
from exporter.simulator import render
from exporter.simulator.model import SimBucket
from exporter.simulator.params import (
    ApiError,
    Reply,
    bad_request,
    id_list,
    int_param,
    not_found,
)
from exporter.simulator.records import JOB_STATES, JobQuery, SimJob, SimStep

WORKFLOW_TAG = "Workflow"
RUN_STATES: tuple[str, ...] = ("Running", "Success", "Failed", "Cancel")
BATCH_TYPES: tuple[str, ...] = ("Workflow", "Job")
BATCH_QUEUE_ID = "inventorytriggerjobs"  # the batch jobs' pseudo-queue (never listed)
STEP_TYPES: tuple[str, ...] = ("Transcode", "Snapshot", "Animation", "SmartCover", "Concat")
MAX_PAGE = 100

WORKFLOWS, RUNS, BATCH = "/workflow", "/workflowexecution", "/inventorytriggerjob"
FAMILIES: frozenset[str] = frozenset((WORKFLOWS, RUNS, BATCH))
LISTING_PATHS: frozenset[str] = frozenset((RUNS, BATCH))  # job listings, and described by id
_SERVICE_OF = {WORKFLOWS: "workflow", RUNS: "workflow", BATCH: "batch"}


class Listings(Protocol):
    """What answering needs of the Api (exporter.simulator.api, which routes here): its job
    listings' queries and pages, read and paged as /jobs is."""

    def job_query(
        self,
        params: Mapping[str, str],
        services: frozenset[str],
        queue_id: str,
        tag: str,
        states: tuple[str, ...],
    ) -> JobQuery: ...

    def list_page(
        self,
        bucket: SimBucket,
        query: JobQuery,
        params: Mapping[str, str],
        repeat_token: bool,
        body: render.PageBody,
    ) -> Reply: ...


# -- the scripted API ----------------------------------------------------------------------


def add_workflow(
    bucket: SimBucket, name: str | None = None, paused: bool = False, at: float | None = None
) -> str:
    """A workflow on a bucket with the "workflow" service; its WorkflowId."""
    return bucket.add_queue(
        "workflow", name=name, paused=paused, max_concurrent=0, max_size=0, at=at
    )


def start_run(bucket: SimBucket, workflow_id: str, at: float | None = None) -> str:
    """A run of the workflow, Running from `at`; its RunId. Finish it with finish_job."""
    workflow = bucket.queue(workflow_id)
    if workflow.service != "workflow":
        raise ValueError(f"{workflow_id} is not a workflow")
    if workflow.paused:
        raise ValueError(f"workflow {workflow_id} is paused: it starts no runs")
    run_id = bucket.create_job(workflow_id, WORKFLOW_TAG, at=at)
    bucket.start_job(run_id, at=at)
    return run_id


def add_batch_job(bucket: SimBucket, kind: str, at: float | None = None) -> str:
    """A Submitted batch job of Type `kind` (Workflow or Job); its JobId. Its life cycle is a
    job's: start_job, finish_job."""
    if kind not in BATCH_TYPES:
        raise ValueError(f"batch job type must be one of {BATCH_TYPES}, not {kind!r}")
    if BATCH_QUEUE_ID not in {q.queue_id for q in bucket.queues("batch")}:
        bucket.add_queue("batch", name="inventory trigger jobs", queue_id=BATCH_QUEUE_ID)
    return bucket.create_job(BATCH_QUEUE_ID, kind, at=at)


def steps_of(run: SimJob, now: float) -> list[SimStep]:
    """The run's steps, one after the other from its start to its end (or `now`): 1 to 3 of
    them, their types drawn from the RunId. All but the last succeeded; the last is in the
    run's state, and a Failed one carries the run's Code and Message."""
    digits = int(run.job_id[-8:], 16)
    count = 1 + digits % 3
    start = run.start_time if run.start_time is not None else run.creation_time
    horizon = run.end_time if run.end_time is not None else max(start, int(now))
    bounds = [start + (horizon - start) * i // count for i in range(count + 1)]
    steps: list[SimStep] = []
    for i in range(count):
        kind = STEP_TYPES[(digits >> (4 * (i + 1))) % len(STEP_TYPES)]
        job_id = f"j{(int(run.job_id[1:], 16) + i + 1) % (1 << 128):032x}"
        last = i == count - 1
        state = run.state if last else "Success"
        end = run.end_time if last else bounds[i + 1]
        failed = state == "Failed"
        steps.append(
            SimStep(
                type=kind,
                name=f"{kind}_{1581665960536 + i}",
                job_id=job_id,
                state=state,
                start=bounds[i],
                end=end,
                code=run.code if failed else "",
                message=run.message if failed else "",
            )
        )
    return steps


# -- what CI answers -------------------------------------------------------------------------


def answer(
    api: Listings,
    bucket: SimBucket,
    path: str,
    params: Mapping[str, str],
    request_id: str,
    repeat_token: bool,
) -> Reply:
    """A request under one of FAMILIES (already authorized)."""
    family = endpoint_family(path)
    if _SERVICE_OF[family] not in bucket.services:
        raise not_found(path)
    if path == WORKFLOWS:
        return _list_workflows(bucket, params, request_id)
    if path == RUNS:
        query = _run_query(api, params)
        return api.list_page(bucket, query, params, repeat_token, render.execution_list_body)
    if path == BATCH:
        query = _batch_query(api, params)
        return api.list_page(bucket, query, params, repeat_token, render.batch_list_body)
    if family == WORKFLOWS:
        raise not_found(path)  # /workflow/<id> is not a listing the exporter calls
    job_id = _one_id(path[len(family) + 1 :])
    if family == RUNS:
        return _describe_run(bucket, job_id, request_id)
    jobs, missing = bucket.describe_jobs(frozenset(("batch",)), [job_id])
    return Reply(200, render.batch_describe_body(request_id, jobs, missing))


def _one_id(text: str) -> str:
    ids = id_list(text, "ids", limit=1)
    if not ids or ids[0] != text:
        raise bad_request("one id a call")
    return text


def _list_workflows(bucket: SimBucket, params: Mapping[str, str], request_id: str) -> Reply:
    ids = id_list(params.get("ids", ""), "ids")
    name = params.get("name", "")
    number = int_param(params, "pageNumber", 1, 1, None)
    size = int_param(params, "pageSize", 10, 1, MAX_PAGE)
    workflows, missing = bucket.list_queues("workflow", ids)
    if name:
        workflows = [w for w in workflows if w.name == name]
    first = (number - 1) * size
    page = workflows[first : first + size]
    body = render.workflow_list_body(
        request_id, page, len(workflows), number, size, missing, bucket.name
    )
    return Reply(200, body)


def _run_query(api: Listings, params: Mapping[str, str]) -> JobQuery:
    workflow_id = params.get("workflowId", "")
    if not workflow_id:
        raise bad_request("workflowId is required")
    return api.job_query(params, frozenset(("workflow",)), workflow_id, WORKFLOW_TAG, RUN_STATES)


def _batch_query(api: Listings, params: Mapping[str, str]) -> JobQuery:
    kind = params.get("type", "")
    if kind not in BATCH_TYPES:
        raise bad_request(f"type {kind!r} is not one of {', '.join(BATCH_TYPES)}")
    return api.job_query(params, frozenset(("batch",)), BATCH_QUEUE_ID, kind, JOB_STATES)


def _describe_run(bucket: SimBucket, run_id: str, request_id: str) -> Reply:
    found, _ = bucket.describe_jobs(frozenset(("workflow",)), [run_id])
    if not found:
        raise ApiError(400, "ResourceNotFound", f"workflow execution {run_id} does not exist")
    run = found[0]
    name = bucket.queue(run.queue_id).name
    body = render.execution_body(request_id, run, name, steps_of(run, bucket.now()))
    return Reply(200, body)
