"""How one service's calls and answers are spelled, as data: which element a listed queue or job
comes in, which of its children hold the id, the tag and the queue, which query parameters name
the queue and the tag, how many ids one describe call takes (exporter.ci.services, Endpoint),
and how an id that does not exist is answered.

Thread ownership: no mutable state (frozen records and module constants).

One code path in the client and the parser serves every service (exporter.ci.client): the
queue and job services spell things one way (JOBS_DIALECT), workflows and their executions
another (WORKFLOW_DIALECT), batch (inventory trigger) jobs a third (BATCH_DIALECT). A workflow
is a queue and its executions are jobs, so the records handed up are the same
(exporter.ci.models) and the job accounting is reused unchanged:

- a workflow is `Queue(queue_id=WorkflowId, name=Name, state=State, max_size=0,
  max_concurrent=0, category="Workflow")`;
- an execution is `Job(job_id=RunId, tag="Workflow", state=State, queue_id=WorkflowId,
  creation_time=CreateTime)`: listings carry no start or end time, describe-by-id derives them
  from the run's tasks (exporter.ci.workflows);
- a batch job is `Job(job_id=JobId, tag=Type, queue_id="")`, in one pseudo-queue (BATCH_QUEUE)
  that no call lists: batch jobs have no queue listing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.ci.models import ALL_STATES, Queue


def _names(*names: str | tuple[str, ...] | None) -> frozenset[str]:
    found: set[str] = set()
    for name in names:
        if isinstance(name, tuple):
            found.update(name)
        elif name:
            found.add(name)
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class QueueShape:
    """A queue listing's items: `<element>` children of `<Response>`."""

    element: str  # QueueList, MediaWorkflowList
    id: str  # QueueId, WorkflowId
    missing: tuple[str, ...]  # the elements naming ids asked for that do not exist
    category: str | None = None  # every item's category; None: read <Category>
    fields: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        common = (
            "Name",
            "State",
            "MaxSize",
            "MaxConcurrent",
            "Category",
            "CreateTime",
            "UpdateTime",
        )
        object.__setattr__(self, "fields", _names(self.id, common))


@dataclass(frozen=True, slots=True)
class JobShape:
    """A job listing's (or a describe answer's) items: `<element>` children of `<Response>`.
    A child named None is not read (its field stays empty, or is the one asked for)."""

    element: str  # JobsDetail, WorkflowExecutionList
    id: str  # JobId, RunId
    tag: str | None  # Tag, Type; None: the dialect's fixed tag
    queue: str | None  # QueueId, WorkflowId; None: every item is in queue ""
    creation: tuple[str, ...]  # the creation time, the first of these that is present
    start: str | None = "StartTime"
    end: str | None = "EndTime"
    code: str | None = "Code"
    message: str | None = "Message"
    fields: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = (self.id, self.tag, self.queue, self.creation, self.start, self.end)
        object.__setattr__(self, "fields", _names(*names, self.code, self.message, "State"))


@dataclass(frozen=True, slots=True)
class Dialect:
    queues: QueueShape | None  # None: no queue listing; `fixed_queues` stand for it
    jobs: JobShape
    queue_param: str | None = "queueId"  # the job listing's queue; None: no queue to name
    tag_param: str | None = "tag"  # the job listing's tag; None: every item has `fixed_tag`
    fixed_tag: str = ""
    # Sent with every queue listing page (before the service's own queue_params).
    queue_filters: tuple[tuple[str, str], ...] = (("state", "All"),)
    # What the job listing's `states` takes: other states asked for are not sent, and a
    # listing of none of these is empty without a request.
    states: tuple[str, ...] = ALL_STATES
    # Describe answers: "jobs" (JobsDetail*, plus the `missing` elements naming unknown ids)
    # or "execution" (one WorkflowExecution with its Tasks, exporter.ci.workflows).
    describe: str = "jobs"
    missing: tuple[str, ...] = ("NonExistJobIds",)
    # An error answer (status, Code) that means "the one id asked for does not exist".
    not_found: tuple[int, str] | None = None
    fixed_queues: tuple[Queue, ...] = ()


JOB_SHAPE = JobShape("JobsDetail", "JobId", tag="Tag", queue="QueueId", creation=("CreationTime",))
QUEUE_SHAPE = QueueShape("QueueList", "QueueId", missing=("NonExistPIDs",))

JOBS_DIALECT = Dialect(QUEUE_SHAPE, JOB_SHAPE)

WORKFLOW_TAG = "Workflow"
# The execution listing's items carry CreateTime (its page's table and example; the template
# above them, and the Go SDK, spell it CreationTime: both are read).
WORKFLOW_DIALECT = Dialect(
    QueueShape("MediaWorkflowList", "WorkflowId", missing=("NonExistIDs",), category=WORKFLOW_TAG),
    JobShape(
        "WorkflowExecutionList",
        "RunId",
        tag=None,
        queue="WorkflowId",
        creation=("CreateTime", "CreationTime"),
        start=None,
        end=None,
        code=None,
        message=None,
    ),
    queue_param="workflowId",
    tag_param=None,
    fixed_tag=WORKFLOW_TAG,
    queue_filters=(),
    states=("Running", "Success", "Failed", "Cancel"),
    describe="execution",
    not_found=(400, "ResourceNotFound"),
)

BATCH_QUEUE = Queue(
    queue_id="",
    name="inventory trigger jobs",
    state="Active",
    max_size=0,
    max_concurrent=0,
    category="Batch",
    notify_enabled=False,
)
# The describe page shows NonExistJobIds, the Go SDK reads NonExistJobId: both are read.
BATCH_DIALECT = Dialect(
    None,
    JobShape("JobsDetail", "JobId", tag="Type", queue=None, creation=("CreationTime",)),
    queue_param=None,
    tag_param="type",
    queue_filters=(),
    missing=("NonExistJobIds", "NonExistJobId"),
    fixed_queues=(BATCH_QUEUE,),
)
