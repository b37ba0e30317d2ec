"""CI's callback bodies (TaskFinish, WorkflowFinish; XML and JSON) -> CallbackEvent, and the
bodies refused (exporter.ci.callback)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from exporter.ci.callback import MAX_DEPTH, MAX_EVENT, CallbackEvent, parse_callback
from exporter.ci.fields import parse_time
from exporter.ci.models import CIInvalidResponse, Job
from exporter.ci.parse import MAX_MARKUP
from exporter.ci.redact import Redactor
from exporter.ci.workflows import parse_execution

NOW = 1_700_000_000.0  # after every time below, less than a day after none
JOB_ID = "j7b0dfbe2f86b11ec995acf5cffaf6664"
QUEUE_ID = "p09d709939fef48a0a5c247ef39d90cec"
RUN_ID = "ic90edd59f84f11ec9d4f525400a3c59f"
WORKFLOW_ID = "web6ac56c1ef54dbfa44d7f4103203be9"
T_CREATED, T_END = "2023-11-14T19:55:05+0800", "2023-11-14T19:55:19+0800"


def parse(body: bytes | str, content_type: str = "", **kwargs: Any) -> CallbackEvent:
    data = body.encode() if isinstance(body, str) else body
    return parse_callback(data, content_type, now=NOW, **kwargs)


def job_fields(**changes: str | None) -> dict[str, str]:
    fields = {
        "Code": "Success",
        "CreationTime": T_CREATED,
        "EndTime": T_END,
        "JobId": JOB_ID,
        "Message": "",
        "QueueId": QUEUE_ID,
        "StartTime": T_CREATED,
        "State": "Success",
        "Tag": "VideoMontage",
    }
    for key, value in changes.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return fields


WORKFLOW_NODE = {
    "Name": "VideoMontage_1581665960537",
    "RunId": RUN_ID,
    "WorkflowId": WORKFLOW_ID,
    "WorkflowName": "workflow-test",
}


def xml_elements(fields: dict[str, Any]) -> str:
    out = []
    for key, value in fields.items():
        if isinstance(value, dict):
            out.append(f"<{key}>{xml_elements(value)}</{key}>")
        elif isinstance(value, list):
            out.extend(f"<{key}>{xml_elements(item)}</{key}>" for item in value)
        else:
            out.append(f"<{key}>{value}</{key}>" if value else f"<{key}/>")
    return "".join(out)


def task_xml(
    event: str | None = "TaskFinish", workflow: bool = False, **changes: str | None
) -> str:
    fields: dict[str, Any] = {
        "Input": {"BucketId": "test-123456789", "Object": "input/demo.mp4"},
        **job_fields(**changes),
        "Operation": {"MediaInfo": {"Format": {"Duration": "2.067"}}, "JobLevel": "0"},
    }
    if workflow:
        fields["Workflow"] = WORKFLOW_NODE
    head = f"<EventName>{event}</EventName>" if event else ""
    return f"<Response>{head}<JobsDetail>{xml_elements(fields)}</JobsDetail></Response>"


def task_json(as_list: bool = True, workflow: bool = False, **changes: str | None) -> str:
    job: dict[str, Any] = {"Input": {"BucketId": "test-123456789"}, **job_fields(**changes)}
    if workflow:
        job["Workflow"] = WORKFLOW_NODE
    return json.dumps({"EventName": "TaskFinish", "JobsDetail": [job] if as_list else job})


TASKS = [
    {
        "Type": "Transcode",
        "CreateTime": "2023-11-14 19:54:18+0800",
        "EndTime": "2023-11-14 19:54:39+0800",
        "State": "Success",
        "JobId": "j168668b217b011ed8efb27bb229e2d11",
        "Name": "Transcode_1581665960537",
        "TemplateId": "t01e57db1c2d154d2fb57aa5de9313a897",
    },
    {
        "Type": "Snapshot",
        "CreateTime": "2023-11-14 19:54:40+0800",
        "EndTime": "2023-11-14 19:54:42+0800",
        "State": "Success",
        "JobId": "j23c11e1e17b011edaab4ab15ec33d076",
        "Name": "Snapshot_1581665960536",
    },
]


def run_fields(state: str = "Success", tasks: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "WorkflowId": WORKFLOW_ID,
        "WorkflowName": "workflow-3",
        "RunId": RUN_ID,
        "State": state,
        "BucketId": "test-1234567890",
        "Object": "wk-test/game.mp4",
        "CreateTime": "2023-11-14 19:54:17+0800",
        "CosHeaders": [{"Key": "Content-Type", "Value": "video/mp4"}],
        "Tasks": TASKS if tasks is None else tasks,
    }


def run_xml(event: str | None = "WorkflowFinish", **kwargs: Any) -> str:
    head = f"<EventName>{event}</EventName>" if event else ""
    inner = xml_elements(run_fields(**kwargs))
    return f"<Response>{head}<WorkflowExecution>{inner}</WorkflowExecution></Response>"


def run_json(**kwargs: Any) -> str:
    return json.dumps({"EventName": "WorkflowFinish", "WorkflowExecution": run_fields(**kwargs)})


EXPECTED_JOB = Job(
    job_id=JOB_ID,
    tag="VideoMontage",
    state="Success",
    queue_id=QUEUE_ID,
    creation_time=parse_time(T_CREATED),
    start_time=parse_time(T_CREATED),
    end_time=parse_time(T_END),
    code="Success",
    message="",
)
EXPECTED_RUN = Job(
    job_id=RUN_ID,
    tag="Workflow",
    state="Success",
    queue_id=WORKFLOW_ID,
    creation_time=parse_time("2023-11-14 19:54:17+0800"),
    start_time=parse_time("2023-11-14 19:54:18+0800"),
    end_time=parse_time("2023-11-14 19:54:42+0800"),
)


# -- the documented shapes ---------------------------------------------------------------------


def test_task_finish_xml_as_the_pages_show() -> None:
    event = parse(task_xml(), "application/xml")
    assert event == CallbackEvent("TaskFinish", "XML", EXPECTED_JOB, bucket="test-123456789")
    assert event.known and not event.run_id


@pytest.mark.parametrize("as_list", [True, False], ids=["list", "object"])
def test_task_finish_json_as_the_pages_show(as_list: bool) -> None:
    event = parse(task_json(as_list), "application/json")
    assert event == CallbackEvent("TaskFinish", "JSON", EXPECTED_JOB, bucket="test-123456789")


@pytest.mark.parametrize("fmt", ["XML", "JSON"])
def test_a_job_started_by_a_workflow_names_its_run(fmt: str) -> None:
    body = task_xml(workflow=True) if fmt == "XML" else task_json(workflow=True)
    event = parse(body)
    assert event.format == fmt and event.job == EXPECTED_JOB
    assert (event.run_id, event.workflow_id, event.workflow_name) == (
        RUN_ID,
        WORKFLOW_ID,
        "workflow-test",
    )


@pytest.mark.parametrize("fmt", ["XML", "JSON"])
def test_workflow_finish_as_the_pages_show(fmt: str) -> None:
    event = parse(run_xml() if fmt == "XML" else run_json())
    assert event == CallbackEvent(
        "WorkflowFinish",
        fmt,
        EXPECTED_RUN,
        run_id=RUN_ID,
        workflow_id=WORKFLOW_ID,
        workflow_name="workflow-3",
        bucket="test-1234567890",
    )


@pytest.mark.parametrize("fmt", ["XML", "JSON"])
def test_a_failed_run_counts_by_its_first_failed_step(fmt: str) -> None:
    failed = {**TASKS[1], "State": "Failed", "Code": "InternalError", "Message": "bad input"}
    tasks = [TASKS[0], failed]
    event = parse(
        run_xml(state="Failed", tasks=tasks)
        if fmt == "XML"
        else run_json(state="Failed", tasks=tasks)
    )
    assert event.job is not None
    assert (event.job.state, event.job.code) == ("Failed", "Snapshot")
    assert event.job.message == (
        "Snapshot_1581665960536 failed (job j23c11e1e17b011edaab4ab15ec33d076): "
        "InternalError: bad input"
    )


def test_a_run_reads_as_describing_it_does() -> None:
    """The callback and `GET /workflowexecution/<RunId>` make the same Job of one run."""
    failed = {**TASKS[1], "State": "Failed", "Code": "E", "Message": "m"}
    fields = run_fields(state="Failed", tasks=[TASKS[0], failed])
    described = (
        f"<Response><WorkflowExecution>{xml_elements(fields)}</WorkflowExecution></Response>"
    )
    expected = parse_execution(described.encode(), RUN_ID).jobs[0]
    assert parse(run_xml(state="Failed", tasks=[TASKS[0], failed])).job == expected
    assert parse(run_json(state="Failed", tasks=[TASKS[0], failed])).job == expected


def test_a_run_without_tasks_has_no_start_or_end() -> None:
    event = parse(run_json(tasks=[]))
    assert event.job is not None and event.job.start_time is None and event.job.end_time is None


def test_older_pages_have_no_event_name() -> None:
    assert parse(task_xml(event=None)).event == "TaskFinish"
    assert parse(run_xml(event=None)).event == "WorkflowFinish"
    body = json.loads(task_json())
    del body["EventName"]
    assert parse(json.dumps(body)).job == EXPECTED_JOB


def test_json_under_a_response_key_is_read_too() -> None:
    assert parse(json.dumps({"Response": json.loads(task_json())})).job == EXPECTED_JOB


@pytest.mark.parametrize("state", ["Success", "Failed", "Cancel"])
def test_every_finished_state_is_taken(state: str) -> None:
    job = parse(task_xml(State=state)).job
    assert job is not None and job.state == state


def test_a_start_not_reached_is_none() -> None:
    job = parse(task_json(State="Cancel", StartTime="")).job
    assert job is not None and job.start_time is None


def test_the_body_not_the_content_type_tells_the_format() -> None:
    assert parse(task_json(), "application/xml").format == "JSON"
    assert parse(task_xml(), "application/json").format == "XML"
    assert parse(b"\xef\xbb\xbf \r\n" + task_json().encode(), "text/plain").job == EXPECTED_JOB
    assert parse(b"\xef\xbb\xbf" + task_xml().encode()).job == EXPECTED_JOB
    assert parse('<?xml version="1.0" encoding="UTF-8"?>\n' + task_xml()).format == "XML"


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("ObjectCreated", "ObjectCreated"),
        ("Task_Finish2", "Task_Finish2"),
        ("A" * 200, "A" * MAX_EVENT),
        ("cos:ObjectCreated:Put", "other"),
        ("Task Finish", "other"),
        ("Tâche", "other"),
        ("taskfinish", "taskfinish"),
    ],
)
def test_an_unknown_event_is_named_safely_and_read_no_further(name: str, label: str) -> None:
    for body in (
        json.dumps({"EventName": name, "JobsDetail": {"JobId": "a/b"}}),
        f"<Response><EventName>{name}</EventName><JobsDetail><JobId>a,b</JobId></JobsDetail>"
        "</Response>",
    ):
        event = parse(body)
        assert event == CallbackEvent(label, event.format) and not event.known


def test_free_text_is_redacted_and_cut() -> None:
    secret = "S3cr3tKeyS3cr3tKeyS3cr3tKey0123"
    redact = Redactor([secret])
    job = parse(task_xml(Code="Err", Message=f"denied {secret} " + "x" * 1000), redact=redact).job
    assert job is not None and secret not in job.message and "<redacted>" in job.message
    assert len(job.message) <= 256


# -- what is refused ---------------------------------------------------------------------------

HOSTILE: list[tuple[str, bytes | str, str]] = [
    ("empty", b"  \r\n ", "body is empty"),
    ("plain text", b"hello", "neither XML nor JSON (Content-Type: text/html)"),
    ("form", b"EventName=TaskFinish", "neither XML nor JSON"),
    ("not well-formed XML", "<Response><EventName>TaskFinish</Response>", "not well-formed XML"),
    (
        "DOCTYPE",
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x "TaskFinish">]>'
        "<Response><EventName>&x;</EventName></Response>",
        "DOCTYPE",
    ),
    (
        "external entity",
        '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><Response>&x;</Response>',
        "DOCTYPE",
    ),
    ("undefined entity", "<Response><EventName>&x;</EventName></Response>", "not well-formed XML"),
    ("wrong root", task_xml().replace("Response>", "Error>"), "expected <Response>, got <Error>"),
    ("too many tags", "<Response>" + "<a/>" * MAX_MARKUP + "</Response>", "more than"),
    ("no event, no job", "<Response><Foo>1</Foo></Response>", "missing EventName"),
    (
        "no JobsDetail",
        "<Response><EventName>TaskFinish</EventName></Response>",
        "missing JobsDetail",
    ),
    (
        "empty JobsDetail",
        "<Response><EventName>TaskFinish</EventName><JobsDetail/></Response>",
        "missing JobsDetail",
    ),
    (
        "two JobsDetail",
        task_xml().replace("</Response>", "<JobsDetail><JobId>j2</JobId></JobsDetail></Response>"),
        "2 JobsDetail, one was expected",
    ),
    ("missing JobId", task_xml(JobId=None), "JobsDetail: missing JobId"),
    ("empty JobId", task_json(JobId=""), "JobsDetail: missing JobId"),
    ("JobId with a slash", task_xml(JobId="j/../../jobs"), "JobId: not a job id"),
    ("JobId with a comma", task_json(JobId="j1,j2"), "JobId: not a job id"),
    ("JobId with a space", task_json(JobId="j1 j2"), "JobId: not a job id"),
    ("JobId too long", task_xml(JobId="j" * 129), "JobId: not a job id"),
    ("JobId with a control", task_json(JobId="j1\u2028j2"), "JobId: not a job id"),
    ("bad QueueId", task_xml(QueueId="p/1"), "QueueId: not a queue id"),
    ("bad Tag", task_json(Tag="t" * 200), "Tag: not a valid value"),
    ("missing State", task_xml(State=None), "JobsDetail: missing State"),
    ("unknown State", task_xml(State="Queuing"), "unknown State 'Queuing'"),
    ("unfinished", task_json(State="Running"), "in State Running, not a finished state"),
    ("missing CreationTime", task_xml(CreationTime=None), "missing CreationTime"),
    ("bad time", task_json(EndTime="yesterday"), "EndTime: not a time"),
    ("time without zone", task_xml(EndTime="2023-11-14T19:55:19"), "EndTime: not a time"),
    ("far future", task_json(EndTime="2099-01-01T00:00:00+0800"), "more than a day ahead"),
    (
        "bad RunId",
        task_xml(workflow=True).replace(RUN_ID, "i/1"),
        "JobsDetail.Workflow: RunId: not a run id",
    ),
    (
        "Workflow without RunId",
        task_json(workflow=True).replace('"RunId"', '"RunID"'),
        "JobsDetail.Workflow: missing RunId",
    ),
    ("run without RunId", run_xml().replace("RunId>", "Run>"), "WorkflowExecution: missing RunId"),
    (
        "run without WorkflowId",
        run_json().replace('"WorkflowId"', '"Workflow"'),
        "WorkflowExecution: missing WorkflowId",
    ),
    ("run still running", run_json(state="Running"), "not a finished state"),
    (
        "run without CreateTime",
        run_xml()
        .replace("CreateTime>2023-11-14 19:54:17", "X>2023-11-14 19:54:17")
        .replace("</CreateTime><CosHeaders", "</X><CosHeaders"),
        "missing CreationTime",
    ),
    ("too many tasks", run_json(tasks=[TASKS[0]] * 101), "more than 100 tasks"),
    ("bad task time", run_xml(tasks=[{**TASKS[0], "EndTime": "soon"}]), "Tasks[1]: EndTime"),
    (
        "two runs",
        run_xml().replace(
            "</Response>", "<WorkflowExecution><RunId>i1</RunId></WorkflowExecution></Response>"
        ),
        "2 WorkflowExecution",
    ),
    ("JSON not well-formed", '{"EventName": "TaskFinish",', "not well-formed JSON"),
    ("JSON array", "[1, 2]", "body is a list, not a JSON object"),
    ("JSON string", '"TaskFinish"', "neither XML nor JSON"),
    ("JSON not UTF-8", b'{"EventName": "\xff"}', "not UTF-8"),
    ("huge integer", '{"EventName": "TaskFinish", "X": ' + "9" * 5000 + "}", "more than 18 digits"),
    ("huge float", '{"EventName": "TaskFinish", "X": 1e999}', "number too large"),
    ("long float", '{"X": 0.' + "1" * 100 + "}", "number too large"),
    ("NaN", '{"EventName": NaN}', "NaN, which is not JSON"),
    ("Infinity", '{"X": -Infinity}', "-Infinity, which is not JSON"),
    ("repeated key", '{"EventName": "TaskFinish", "EventName": "Other"}', "repeating the key"),
    ("deep lists", "[" * 100_000 + "]" * 100_000, f"nested more than {MAX_DEPTH} deep"),
    ("deep objects", '{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), "nested more than"),
    ("too many values", "[" + "0," * (MAX_MARKUP + 1) + "0]", "JSON values"),
    (
        "JobId a number",
        task_json().replace(f'"{JOB_ID}"', "12345"),
        "JobsDetail[1].JobId: expected a string, got a number",
    ),
    (
        "State a boolean",
        task_json(as_list=False).replace('"State": "Success"', '"State": true'),
        "JobsDetail.State: expected a string, got a boolean",
    ),
    (
        "JobsDetail a string",
        '{"EventName": "TaskFinish", "JobsDetail": "x"}',
        "JobsDetail: expected an object, got a string",
    ),
    (
        "JobsDetail a list of lists",
        '{"EventName": "TaskFinish", "JobsDetail": [[]]}',
        "JobsDetail[1]: expected an object, got a list",
    ),
    (
        "EventName a list",
        '{"EventName": ["TaskFinish"]}',
        "EventName: expected a string, got a list",
    ),
    (
        "Tasks of strings",
        run_json().replace('"Tasks": [', '"Tasks": ["x", '),
        "Tasks[1]: expected an object",
    ),
]


@pytest.mark.parametrize(
    ("body", "fragment"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_a_hostile_body_is_one_clear_refusal(body: bytes | str, fragment: str) -> None:
    with pytest.raises(CIInvalidResponse) as refused:
        parse(body, "text/html; charset=utf-8")
    message = str(refused.value)
    assert fragment in message
    assert "\n" not in message and len(message) < 400
    error = refused.value  # no chained exception: one line, never a traceback
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    assert "Traceback" not in message


def test_content_type_is_named_only_when_it_is_one() -> None:
    with pytest.raises(CIInvalidResponse, match=r"Content-Type: not a media type\)"):
        parse(b"hello", "x\r\nSet-Cookie: a=b")
    with pytest.raises(CIInvalidResponse, match=r"Content-Type: none\)"):
        parse(b"hello", "")


def test_a_refusal_quoting_the_body_is_redacted() -> None:
    secret = "AKIDs3cr3tAKIDs3cr3tAKIDs3cr3t"
    redact = Redactor([secret])
    with pytest.raises(CIInvalidResponse) as refused:
        parse(task_json(JobId=f"{secret}/x"), redact=redact)
    assert secret not in str(refused.value) and secret[:16] not in str(refused.value)
    with pytest.raises(CIInvalidResponse) as refused:
        parse(task_json(JobId=f"{secret}/x"))
    assert secret in str(refused.value)  # without a redactor, the id is quoted as it came


def test_the_body_of_a_bucket_is_kept_only_when_it_is_a_bucket_id() -> None:
    body = task_xml().replace("test-123456789", "Not A Bucket")
    assert parse(body).bucket == ""
    assert parse(run_json()).bucket == "test-1234567890"
