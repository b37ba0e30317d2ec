"""Workflows, their executions and batch jobs as two more services of the client
(exporter.ci.client, exporter.ci.dialect, exporter.ci.workflows), over real loopback HTTP:
against the simulator (exporter.simulator.workflows), which is strict about what CI documents,
and against hostile stubs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_client import Received, Reply, StubCI, make_client, xml
from test_simulator import call, error_code

from exporter.ci.client import CIClient
from exporter.ci.dialect import BATCH_QUEUE
from exporter.ci.listing import JOB_PAGE_SIZE
from exporter.ci.models import (
    ACTIVE_STATES,
    FINISHED_STATES,
    CIAPIError,
    CIAuthError,
    CIInvalidResponse,
)
from exporter.ci.permissions import EXAMPLE_BUCKET, EXAMPLE_REGION, bucket_resource, policy
from exporter.ci.services import (
    ALL_SERVICES,
    BATCH,
    SERVICES,
    WORKFLOW,
    cam_action,
    service_named,
)
from exporter.credentials import Credentials, StaticCredentials
from exporter.simulator import Fault, SimBucket, Simulator
from exporter.simulator import workflows as wf

SID, KEY = "AKIDworkflow0", "workflow-secret-key"
BUCKET = "flows-1250000000"
T0 = 1_700_000_000  # whole seconds, in the past: CI's times have one-second granularity
ROOT = Path(__file__).resolve().parent.parent
CREATED = "2023-11-14T00:00:00+0800"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator({SID: KEY}, seed=11)
    simulator.add_bucket(BUCKET, services=[*SERVICES, "workflow", "batch"])
    with simulator:
        yield simulator


@pytest.fixture
def bucket(sim: Simulator) -> SimBucket:
    return sim.bucket(BUCKET)


@pytest.fixture
def client(sim: Simulator) -> Iterator[CIClient]:
    credentials = StaticCredentials(Credentials(SID, KEY))
    with CIClient(
        bucket=BUCKET,
        region="ap-guangzhou",
        endpoint=sim.endpoint(BUCKET),
        credentials=credentials,
        timeout=5.0,
        queue_page_size=10,
    ) as c:
        yield c


@pytest.fixture
def stub() -> Iterator[StubCI]:
    server = StubCI()
    yield server
    server.close()


def raw(sim: Simulator, path: str, **params: str) -> tuple[int, str]:
    resp = call(sim, path, params, bucket=BUCKET, sid=SID, key=KEY)
    return resp.status_code, error_code(resp) if resp.status_code != 200 else ""


def runs(bucket: SimBucket, workflow: str, count: int, at: int = T0) -> list[str]:
    return [wf.start_run(bucket, workflow, at=at + i) for i in range(count)]


# The table


def test_the_new_services_are_opt_in_and_found_by_name() -> None:
    assert list(SERVICES) == ["media", "ai", "speech", "pic", "doc"]
    assert list(ALL_SERVICES) == [*SERVICES, "workflow", "batch"]
    assert service_named("workflow") is WORKFLOW and service_named("batch") is BATCH
    assert service_named("media") is SERVICES["media"]
    with pytest.raises(LookupError, match="unknown service 'flows'"):
        service_named("flows")
    # Workflows and batch jobs live on media buckets: discovery lists those.
    assert WORKFLOW.buckets is BATCH.buckets is SERVICES["media"].buckets
    assert BATCH.queues is None and BATCH.queue_path == ""
    assert (WORKFLOW.job.max_ids, BATCH.job.max_ids, SERVICES["media"].job.max_ids) == (1, 1, 10)


def test_the_cam_action_of_each_new_path() -> None:
    assert cam_action("/workflow") == "ci:DescribeMediaWorkflows"
    assert cam_action("/workflowexecution") == "ci:DescribeMediaWorkflowExecutions"
    assert cam_action("/workflowexecution/i1") == "ci:DescribeMediaWorkflowExecution"
    assert cam_action("/inventorytriggerjob") == "ci:DescribeInventoryTriggerJobs"
    assert cam_action("/inventorytriggerjob/b1") == "ci:DescribeInventoryTriggerJob"
    for path in ("/workflow/w1", "/workflowexecutions", "/inventorytriggerjobs"):
        with pytest.raises(LookupError):
            cam_action(path)


def test_a_refused_call_names_the_new_action(stub: StubCI) -> None:
    refusal = b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>"
    stub.handler = lambda r: Reply(403, refusal)
    resource = "qcs::ci:ap-chongqing:uid/1250000000:bucket/examplebucket-1250000000/*"
    with make_client(stub) as client:
        for do, action in (
            (lambda: client.list_queues(WORKFLOW), "ci:DescribeMediaWorkflows"),
            (
                lambda: client.list_jobs(WORKFLOW, "w1", "Workflow", []),
                "ci:DescribeMediaWorkflowExecutions",
            ),
            (lambda: client.describe_jobs(WORKFLOW, ["i1"]), "ci:DescribeMediaWorkflowExecution"),
            (lambda: client.list_jobs(BATCH, "", "Job", []), "ci:DescribeInventoryTriggerJobs"),
            (lambda: client.describe_jobs(BATCH, ["b1"]), "ci:DescribeInventoryTriggerJob"),
        ):
            with pytest.raises(CIAuthError) as info:
                do()
            assert f"needs CAM action {action} on {resource}" in str(info.value)


def test_the_documented_policy_grants_the_new_services() -> None:
    deploy = json.loads((ROOT / "deploy" / "cam-policy.json").read_text())
    assert deploy == policy([bucket_resource(EXAMPLE_REGION, EXAMPLE_BUCKET)])
    actions = [statement["action"] for statement in deploy["statement"]]
    assert actions[5] == [
        "ci:DescribeMediaWorkflows",
        "ci:DescribeMediaWorkflowExecutions",
        "ci:DescribeMediaWorkflowExecution",
    ]
    assert actions[6] == ["ci:DescribeInventoryTriggerJobs", "ci:DescribeInventoryTriggerJob"]
    assert "ci:DescribeMediaBuckets" in actions[7] and len(actions) == 8
    doc = (ROOT / "docs" / "permissions.md").read_text()
    assert "| workflow | jobs by id | `/workflowexecution/<id>` |" in doc
    assert "| batch | jobs by id | `/inventorytriggerjob/<id>` |" in doc


# Workflows, as queues


def test_workflows_are_listed_as_queues_page_by_page(
    sim: Simulator, bucket: SimBucket, client: CIClient
) -> None:
    made = [wf.add_workflow(bucket, f"flow-{i}", paused=i % 4 == 0, at=T0 + i) for i in range(25)]
    queues = client.list_queues(WORKFLOW)
    assert [q.queue_id for q in queues] == made
    first = queues[0]
    assert (first.name, first.state, first.category) == ("flow-0", "Paused", "Workflow")
    assert (first.max_size, first.max_concurrent, first.notify_enabled) == (0, 0, False)
    assert (first.create_time, first.update_time) == (T0, T0)
    assert queues[1].state == "Active"
    asked = [r.params for r in sim.requests]
    assert [p["pageNumber"] for p in asked] == ["1", "2", "3"]
    assert all(p == {"pageNumber": p["pageNumber"], "pageSize": "10"} for p in asked)
    assert all(re.fullmatch(r"w[0-9a-f]{32}", q) for q in made)


def test_the_workflow_listing_filters_by_ids_and_name(sim: Simulator, bucket: SimBucket) -> None:
    a = wf.add_workflow(bucket, "a", at=T0)
    wf.add_workflow(bucket, "b", at=T0 + 1)
    resp = call(sim, "/workflow", {"ids": f"{a},wgone"}, bucket=BUCKET, sid=SID, key=KEY)
    assert re.findall(r"<WorkflowId>(\w+)</WorkflowId>", resp.text) == [a]
    assert "<NonExistIDs>wgone</NonExistIDs>" in resp.text
    resp = call(sim, "/workflow", {"name": "b"}, bucket=BUCKET, sid=SID, key=KEY)
    assert "<Name>b</Name>" in resp.text and "<TotalCount>1</TotalCount>" in resp.text


# Executions, as jobs


def test_executions_are_listed_across_pages(
    sim: Simulator, bucket: SimBucket, client: CIClient
) -> None:
    flow = wf.add_workflow(bucket, "flow", at=T0)
    other = wf.add_workflow(bucket, "other", at=T0)
    made = runs(bucket, flow, 2 * JOB_PAGE_SIZE + 30)
    runs(bucket, other, 3)
    jobs = client.list_jobs(WORKFLOW, flow, "Workflow", [], order="Asc")
    assert [j.job_id for j in jobs] == made
    assert {(j.tag, j.queue_id, j.state) for j in jobs} == {("Workflow", flow, "Running")}
    assert jobs[0].creation_time == T0 and jobs[0].start_time is jobs[0].end_time is None
    asked = [r.params for r in sim.requests]
    assert [p.get("nextToken", "") != "" for p in asked] == [False, True, True]
    assert {(p["workflowId"], p["size"], p["orderByTime"]) for p in asked} == {(flow, "100", "Asc")}
    assert not any("tag" in p or "queueId" in p or "states" in p for p in asked)
    assert all(re.fullmatch(r"i[0-9a-f]{32}", r) for r in made)


def test_execution_listings_take_states_and_creation_windows(
    sim: Simulator, bucket: SimBucket, client: CIClient
) -> None:
    flow = wf.add_workflow(bucket, "flow", at=T0)
    made = runs(bucket, flow, 6)
    bucket.finish_job(made[0], "Success", at=T0 + 50)
    bucket.finish_job(made[2], "Failed", code="InvalidInput", at=T0 + 60)
    bucket.finish_job(made[4], "Cancel", at=T0 + 70)
    active = client.list_jobs(WORKFLOW, flow, "Workflow", ACTIVE_STATES)
    assert [j.job_id for j in active] == [made[5], made[3], made[1]]
    assert sim.requests[-1].params["states"] == "Running"  # never Submitted or Pause
    finished = client.list_jobs(
        WORKFLOW, flow, "Workflow", FINISHED_STATES, start_creation_time=T0 + 1, order="Asc"
    )
    assert [(j.job_id, j.state) for j in finished] == [(made[2], "Failed"), (made[4], "Cancel")]
    listings = [r for r in sim.requests if r.path == "/workflowexecution"]
    assert listings[-1].params["states"] == "Success,Failed,Cancel"
    # The Failed run was described once for its failed step: the listing has none.
    assert [r.path for r in sim.requests[-1:]] == [f"/workflowexecution/{made[2]}"]
    ended = client.list_jobs(WORKFLOW, flow, "Workflow", [], end_creation_time=T0 + 2)
    assert [j.job_id for j in ended] == [made[1], made[0]]
    before = len(sim.requests)
    assert client.list_jobs(WORKFLOW, flow, "Workflow", ["Submitted", "Pause"]) == []
    assert len(sim.requests) == before  # states executions never have: no request


def test_a_listing_asked_what_its_service_cannot_take_is_refused(client: CIClient) -> None:
    with pytest.raises(ValueError, match="only tag is 'Workflow'"):
        client.list_jobs(WORKFLOW, "w1", "Transcode", [])
    with pytest.raises(ValueError, match="no queue to name"):
        client.list_jobs(BATCH, "p1", "Job", [])


def test_a_failed_run_is_described_with_its_step_and_times(
    bucket: SimBucket, client: CIClient
) -> None:
    flow = wf.add_workflow(bucket, "flow", at=T0)
    failed, done, running = runs(bucket, flow, 3)
    bucket.finish_job(failed, "Failed", code="InvalidInput", message="bad\ninput", at=T0 + 90)
    bucket.finish_job(done, "Success", at=T0 + 40)
    result = client.describe_jobs(WORKFLOW, [failed, done, running])
    assert result.non_exist_ids == ()
    by_id = {j.job_id: j for j in result.jobs}
    step = wf.steps_of(bucket.job(failed), bucket.now())[-1]
    job = by_id[failed]
    assert (job.state, job.tag, job.queue_id) == ("Failed", "Workflow", flow)
    assert (job.creation_time, job.start_time, job.end_time) == (T0, T0, T0 + 90)
    assert job.code == step.type and job.code in wf.STEP_TYPES
    assert job.message == f"{step.name} failed (job {step.job_id}): InvalidInput: bad input"
    assert (by_id[done].code, by_id[done].start_time, by_id[done].end_time) == ("", T0 + 1, T0 + 40)
    assert (by_id[running].state, by_id[running].end_time) == ("Running", None)
    assert by_id[running].start_time == T0 + 2


def test_an_unknown_run_does_not_exist(sim: Simulator, bucket: SimBucket, client: CIClient) -> None:
    flow = wf.add_workflow(bucket, "flow", at=T0)
    (known,) = runs(bucket, flow, 1)
    gone = "i" + "0" * 32
    result = client.describe_jobs(WORKFLOW, [gone, known, gone])
    assert [j.job_id for j in result.jobs] == [known] and result.non_exist_ids == (gone,)
    # One id a call; the unknown one answered 400 ResourceNotFound.
    assert [(r.path, r.status) for r in sim.requests] == [
        (f"/workflowexecution/{gone}", 400),
        (f"/workflowexecution/{known}", 200),
    ]


# Batch jobs


def test_batch_jobs_have_one_queue_that_costs_no_request(sim: Simulator, client: CIClient) -> None:
    assert client.list_queues(BATCH) == [BATCH_QUEUE]
    assert (BATCH_QUEUE.queue_id, BATCH_QUEUE.category, BATCH_QUEUE.state) == (
        "",
        "Batch",
        "Active",
    )
    assert sim.requests == []


def test_batch_jobs_are_listed_by_type_and_described(
    sim: Simulator, bucket: SimBucket, client: CIClient
) -> None:
    jobs = [wf.add_batch_job(bucket, "Job", at=T0 + i) for i in range(JOB_PAGE_SIZE + 5)]
    flows = [wf.add_batch_job(bucket, "Workflow", at=T0 + i) for i in range(2)]
    bucket.start_job(jobs[0], at=T0 + 10)
    bucket.finish_job(jobs[0], "Failed", code="InputInvalid", message="no such prefix", at=T0 + 20)
    listed = client.list_jobs(BATCH, "", "Job", [], order="Asc")
    assert [j.job_id for j in listed] == jobs
    assert {(j.tag, j.queue_id) for j in listed} == {("Job", "")}
    asked = [r.params for r in sim.requests]
    assert len(asked) == 2 and {p["type"] for p in asked} == {"Job"}
    assert not any("tag" in p or "queueId" in p or "workflowId" in p for p in asked)
    assert [j.job_id for j in client.list_jobs(BATCH, "", "Workflow", ["Submitted"])] == flows[::-1]
    result = client.describe_jobs(BATCH, [jobs[0], "b" + "f" * 32])
    (job,) = result.jobs
    assert (job.state, job.tag, job.code, job.message) == (
        "Failed",
        "Job",
        "InputInvalid",
        "no such prefix",
    )
    assert (job.creation_time, job.start_time, job.end_time) == (T0, T0 + 10, T0 + 20)
    assert result.non_exist_ids == ("b" + "f" * 32,)
    assert re.fullmatch(r"b[0-9a-f]{32}", jobs[0])


# The simulator holds to what it decided


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"workflowId": "w1", "states": "Submitted"},
        {"workflowId": "w1", "states": "Running,Pause"},
        {"workflowId": "w1", "size": "101"},
        {"workflowId": "w1", "orderByTime": "Newest"},
        {"workflowId": "w1", "nextToken": "never-issued"},
        {"workflowId": "w1", "startCreationTime": "2001-01-01 00:00:00"},
    ],
)
def test_the_execution_listing_is_strict(sim: Simulator, params: dict[str, str]) -> None:
    assert raw(sim, "/workflowexecution", **params) == (400, "InvalidArgument")


@pytest.mark.parametrize("params", [{}, {"type": "Transcode"}, {"type": "Job", "states": "Done"}])
def test_the_batch_listing_is_strict(sim: Simulator, params: dict[str, str]) -> None:
    assert raw(sim, "/inventorytriggerjob", **params) == (400, "InvalidArgument")


def test_describe_takes_one_id_a_call_and_unknown_paths_are_not_found(sim: Simulator) -> None:
    assert raw(sim, "/workflowexecution/i1,i2") == (400, "InvalidArgument")
    assert raw(sim, "/inventorytriggerjob/b1,b2") == (400, "InvalidArgument")
    assert raw(sim, "/workflowexecution/i1") == (400, "ResourceNotFound")
    assert raw(sim, "/workflow/w1") == (404, "ResourceNotFound")
    assert raw(sim, "/workflow", pageSize="101") == (400, "InvalidArgument")


def test_a_token_is_bound_to_its_listing(sim: Simulator, bucket: SimBucket) -> None:
    a, b = wf.add_workflow(bucket, "a", at=T0), wf.add_workflow(bucket, "b", at=T0)
    runs(bucket, a, 3)
    resp = call(
        sim, "/workflowexecution", {"workflowId": a, "size": "1"}, bucket=BUCKET, sid=SID, key=KEY
    )
    token = re.findall(r"<NextToken>(\w+)</NextToken>", resp.text)[0]
    assert raw(sim, "/workflowexecution", workflowId=a, size="1", nextToken=token)[0] == 200
    assert raw(sim, "/workflowexecution", workflowId=b, size="1", nextToken=token) == (
        400,
        "InvalidArgument",
    )


def test_without_opting_in_a_bucket_has_none_of_it(sim: Simulator) -> None:
    plain = sim.add_bucket("plain-1250000000")
    assert plain.services == frozenset(SERVICES)
    for path in (
        "/workflow",
        "/workflowexecution",
        "/inventorytriggerjob",
        "/inventorytriggerjob/b1",
    ):
        resp = call(sim, path, {}, bucket=plain.name, sid=SID, key=KEY)
        assert (resp.status_code, error_code(resp)) == (404, "ResourceNotFound")
    with pytest.raises(ValueError, match="not enabled"):
        wf.add_workflow(plain)
    with pytest.raises(ValueError, match="not enabled"):
        wf.add_batch_job(plain, "Job")


def test_a_paused_workflow_starts_no_runs_and_its_runs_carry_on(bucket: SimBucket) -> None:
    flow = wf.add_workflow(bucket, "flow", at=T0)
    (run,) = runs(bucket, flow, 1)
    bucket.set_queue_paused(flow, True, at=T0 + 5)
    with pytest.raises(ValueError, match="paused"):
        wf.start_run(bucket, flow, at=T0 + 6)
    assert bucket.job(run).state == "Running"
    with pytest.raises(ValueError):
        wf.add_batch_job(bucket, "Transcode")


def test_signatures_are_checked_on_the_new_paths(sim: Simulator) -> None:
    for path in ("/workflow", "/workflowexecution", "/inventorytriggerjob/b1"):
        resp = call(sim, path, {}, bucket=BUCKET, sid=SID, key="another-key")
        assert (resp.status_code, error_code(resp)) == (401, "InvalidAuthorization")


# Faults and hostile answers: one line, never a record


def one_line(info: pytest.ExceptionInfo[CIInvalidResponse], *parts: str) -> str:
    message = str(info.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message
    return message


def test_the_simulators_faults_reach_the_new_paths(
    sim: Simulator, bucket: SimBucket, client: CIClient
) -> None:
    flow = wf.add_workflow(bucket, "flow", at=T0)
    (run,) = runs(bucket, flow, 1)
    batch = wf.add_batch_job(bucket, "Job", at=T0)
    fault = sim.faults.add(Fault(kind="unknown_state", state="Frozen"))
    for do in (
        lambda: client.list_jobs(WORKFLOW, flow, "Workflow", []),
        lambda: client.describe_jobs(WORKFLOW, [run]),
        lambda: client.list_jobs(BATCH, "", "Job", []),
        lambda: client.describe_jobs(BATCH, [batch]),
    ):
        with pytest.raises(CIInvalidResponse) as info:
            do()
        one_line(info, "unknown State 'Frozen'")
    sim.faults.remove(fault)
    sim.faults.add(Fault(kind="missing_field", job_field="RunId", times=1))
    with pytest.raises(CIInvalidResponse) as info:
        client.list_jobs(WORKFLOW, flow, "Workflow", [])
    one_line(info, "GET /workflowexecution: WorkflowExecutionList[1]: missing RunId")
    sim.faults.add(Fault(kind="repeat_token", path="/inventorytriggerjob", times=3))
    for _ in range(3):
        wf.add_batch_job(bucket, "Job", at=T0)
    with pytest.raises(CIInvalidResponse) as info:
        client.list_jobs(BATCH, "", "Job", [])
    one_line(info, "repeated")


def test_an_oversized_answer_is_refused(stub: StubCI) -> None:
    padding = b"<!--" + b" " * 200_000 + b"-->"
    stub.handler = lambda r: Reply(body=xml("<TotalCount>0</TotalCount>") + padding)
    with make_client(stub, max_body_bytes=100_000) as client:
        for do, family in (
            (lambda: client.list_queues(WORKFLOW), "/workflow"),
            (lambda: client.describe_jobs(WORKFLOW, ["i1"]), "/workflowexecution"),
            (lambda: client.list_jobs(BATCH, "", "Job", []), "/inventorytriggerjob"),
        ):
            with pytest.raises(CIInvalidResponse) as info:
                do()
            one_line(info, f"GET {family}: body larger than 100000 bytes")


def run_xml(run_id: str = "i1", state: str = "Running", **extra: str) -> str:
    fields = {"RunId": run_id, "WorkflowId": "w1", "State": state, "CreateTime": CREATED, **extra}
    return "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())


def listed(run_id: str = "i1", state: str = "Running", **extra: str) -> str:
    return f"<WorkflowExecutionList>{run_xml(run_id, state, **extra)}</WorkflowExecutionList>"


def described(run: str, tasks: str = "") -> bytes:
    return xml(f"<WorkflowExecution>{run}{tasks}</WorkflowExecution>")


def task(state: str = "Success", **extra: str) -> str:
    fields = {"Type": "Transcode", "Name": "Transcode_1", "JobId": "j1", "State": state, **extra}
    return "<Tasks>" + "".join(f"<{k}>{v}</{k}>" for k, v in fields.items()) + "</Tasks>"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (xml(listed("i1/x")), "WorkflowExecutionList[1]: RunId: not a job id: 'i1/x'"),
        (xml(listed("i1,i2")), "RunId: not a job id: 'i1,i2'"),
        (xml(listed(state="Queuing")), "job i1: unknown State 'Queuing'"),
        (xml(listed(WorkflowId="w 1")), "WorkflowId: not a queue id: 'w 1'"),
        (xml(listed(CreateTime="yesterday")), "CreateTime: not a time: 'yesterday'"),
        (
            xml(
                "<WorkflowExecutionList><RunId>i1</RunId><State>Running</State>"
                "</WorkflowExecutionList>"
            ),
            "job i1: missing CreationTime",
        ),
        (xml("".join(listed(f"i{n}") for n in range(101))), "more than the 100 jobs asked for"),
        (xml(listed() + "<NextToken>a\nb</NextToken>"), "NextToken: not a valid token"),
        (b"<Error/>", "expected <Response>, got <Error>"),
    ],
    ids=[
        "slash-id",
        "comma-id",
        "unknown-state",
        "bad-workflow-id",
        "bad-time",
        "no-creation-time",
        "too-many",
        "bad-token",
        "wrong-root",
    ],
)
def test_a_hostile_execution_listing_is_one_line(stub: StubCI, body: bytes, expected: str) -> None:
    stub.handler = lambda r: Reply(body=body)
    with make_client(stub) as client, pytest.raises(CIInvalidResponse) as info:
        client.list_jobs(WORKFLOW, "w1", "Workflow", [])
    one_line(info, "GET /workflowexecution: ", expected)


def test_the_go_sdks_spelling_of_an_executions_creation_time_is_read(stub: StubCI) -> None:
    body = xml(
        "<WorkflowExecutionList><RunId>i1</RunId><State>Running</State>"
        f"<CreationTime>{CREATED}</CreationTime></WorkflowExecutionList>"
    )
    stub.handler = lambda r: Reply(body=body)
    with make_client(stub) as client:
        (job,) = client.list_jobs(WORKFLOW, "w1", "Workflow", [])
    assert (job.job_id, job.creation_time) == ("i1", 1699891200)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (described(run_xml("i2")), "RunId 'i2' is not the one asked for"),
        (xml(f"<WorkflowExecution>{run_xml()}</WorkflowExecution>" * 2), "more than the 1"),
        (described(run_xml(), task() * 101), "more than 100 tasks"),
        (described(run_xml(), task(EndTime="soon")), "Tasks[1]: EndTime: not a time: 'soon'"),
        (described(run_xml(state="Sleeping")), "unknown State 'Sleeping'"),
        (described(run_xml(WorkflowId="w/1")), "WorkflowId: not a workflow id: 'w/1'"),
        (described(run_xml(), task(Type="T" * 200)), "Type: not a valid value"),
        (
            xml(
                f"<WorkflowExecution>{run_xml()}</WorkflowExecution><NonExistJobIds>i1</NonExistJobIds>"
            ),
            "both described and said not to exist",
        ),
    ],
    ids=[
        "another-run",
        "two-runs",
        "too-many-tasks",
        "bad-task-time",
        "unknown-state",
        "bad-workflow-id",
        "long-step-type",
        "found-and-missing",
    ],
)
def test_a_hostile_execution_is_one_line(stub: StubCI, body: bytes, expected: str) -> None:
    stub.handler = lambda r: Reply(body=body)
    with make_client(stub) as client, pytest.raises(CIInvalidResponse) as info:
        client.describe_jobs(WORKFLOW, ["i1"])
    one_line(info, "GET /workflowexecution: ", expected)


def test_an_execution_takes_its_times_and_failure_from_its_tasks(stub: StubCI) -> None:
    tasks = task(CreateTime="2023-11-14 00:00:05+0800", EndTime="2023-11-14T00:01:00+0800") + task(
        "Failed",
        Type="Snapshot",
        Name="Snapshot_2",
        JobId="j2",
        StartTime="2023-11-14T00:01:00+08:00",
        EndTime="2023-11-14T00:02:00+0800",
        Code="InvalidInput",
        Message="bad input",
    )
    stub.handler = lambda r: Reply(body=described(run_xml(state="Failed"), tasks))
    with make_client(stub) as client:
        (job,) = client.describe_jobs(WORKFLOW, ["i1"]).jobs
    assert (job.start_time, job.end_time) == (1699891205, 1699891320)
    assert job.code == "Snapshot"
    assert job.message == "Snapshot_2 failed (job j2): InvalidInput: bad input"


def test_what_an_execution_describe_says_of_an_unknown_id(stub: StubCI) -> None:
    answers = {
        "i1": Reply(body=xml("<RequestId>r</RequestId><NonExistJobIds>i1</NonExistJobIds>")),
        "i2": Reply(body=xml("<RequestId>r</RequestId>")),  # says nothing: neither
        "i3": Reply(400, b"<Error><Code>ResourceNotFound</Code><Message>no</Message></Error>"),
    }
    stub.handler = lambda r: answers[r.path.rsplit("/", 1)[1]]
    with make_client(stub) as client:
        result = client.describe_jobs(WORKFLOW, ["i1", "i2", "i3"])
        assert (result.jobs, result.non_exist_ids) == ((), ("i1", "i3"))
        # Only that answer means "gone": a 404 (no such path) or another Code stays an error.
        for status, code in ((404, "ResourceNotFound"), (400, "InvalidArgument")):
            error = f"<Error><Code>{code}</Code><Message>no</Message></Error>".encode()
            stub.handler = lambda r, s=status, e=error: Reply(s, e)
            with pytest.raises(CIAPIError) as info:
                client.describe_jobs(WORKFLOW, ["i4"])
            assert (info.value.status, info.value.code) == (status, code)


def test_ids_that_would_change_the_path_are_not_sent(stub: StubCI) -> None:
    with make_client(stub) as client:
        for service, family in ((WORKFLOW, "/workflowexecution"), (BATCH, "/inventorytriggerjob")):
            with pytest.raises(CIInvalidResponse) as info:
                client.describe_jobs(service, ["ok", "../jobs"])
            one_line(info, f"GET {family}: not a job id: '../jobs'")
    assert stub.received == []


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (
            "/workflow",
            "<TotalCount>1</TotalCount><MediaWorkflowList><WorkflowId>w,1</WorkflowId>"
            "<State>Active</State></MediaWorkflowList>",
            "MediaWorkflowList[1]: WorkflowId: not a",
        ),
        (
            "/workflow",
            "<TotalCount>1</TotalCount><MediaWorkflowList><WorkflowId>w1</WorkflowId>"
            "</MediaWorkflowList>",
            "MediaWorkflowList[1]: missing State",
        ),
        (
            "/inventorytriggerjob",
            "<JobsDetail><JobId>b 1</JobId><State>Running</State></JobsDetail>",
            "JobsDetail[1]: JobId: not a job id",
        ),
        (
            "/inventorytriggerjob",
            f"<JobsDetail><JobId>b1</JobId><State>Done</State><CreationTime>"
            f"{CREATED}</CreationTime></JobsDetail>",
            "unknown State 'Done'",
        ),
        (
            "/inventorytriggerjob/b1",
            f"<JobsDetail><JobId>b2</JobId><State>Running</State>"
            f"<CreationTime>{CREATED}</CreationTime></JobsDetail>",
            "answers about 'b2'",
        ),
    ],
    ids=["bad-workflow-id", "no-state", "bad-batch-id", "unknown-state", "another-batch-job"],
)
def test_hostile_workflow_and_batch_answers_are_one_line(
    stub: StubCI, path: str, body: str, expected: str
) -> None:
    stub.handler = lambda r: Reply(body=xml(body))
    with make_client(stub) as client, pytest.raises(CIInvalidResponse) as info:
        if path == "/workflow":
            client.list_queues(WORKFLOW)
        elif path == "/inventorytriggerjob":
            client.list_jobs(BATCH, "", "Job", [])
        else:
            client.describe_jobs(BATCH, ["b1"])
    one_line(info, f"GET {path.rsplit('/b1', 1)[0]}: ", expected)


def test_a_batch_job_ignores_any_queue_and_reads_both_missing_spellings(stub: StubCI) -> None:
    def handle(r: Received) -> Reply:
        if r.path.startswith("/inventorytriggerjob/"):
            return Reply(body=xml("<NonExistJobId>b9</NonExistJobId>"))
        return Reply(
            body=xml(
                f"<JobsDetail><JobId>b1</JobId><State>Success</State><QueueId>p1</QueueId>"
                f"<CreationTime>{CREATED}</CreationTime><StartTime>-</StartTime>"
                "<EndTime>-</EndTime></JobsDetail>"
            )
        )

    stub.handler = handle
    with make_client(stub) as client:
        (job,) = client.list_jobs(BATCH, "", "Workflow", ["Success"])
        assert (job.tag, job.queue_id, job.start_time, job.end_time) == ("Workflow", "", None, None)
        assert client.describe_jobs(BATCH, ["b9"]).non_exist_ids == ("b9",)
    assert stub.received[0].query == {
        "type": "Workflow",
        "size": "100",
        "orderByTime": "Desc",
        "states": "Success",
    }
