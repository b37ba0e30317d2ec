"""The CAM policy in docs/permissions.md and deploy/cam-policy.json against the client's table
of endpoints and actions (exporter.ci.services): every call the client can make has an action,
and the documented policy allows each of them, and nothing more."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_client import Received, Reply, StubCI, job_xml, make_client, queue_xml, xml

from exporter.ci.client import CIClient
from exporter.ci.models import CIAuthError
from exporter.ci.permissions import (
    EXAMPLE_BUCKET,
    EXAMPLE_REGION,
    actions,
    appid,
    bucket_resource,
    policy,
)
from exporter.ci.services import ALL_SERVICES, ENDPOINTS, SERVICES, Endpoint, cam_action

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "permissions.md").read_text()
DEPLOY = (ROOT / "deploy" / "cam-policy.json").read_text()
# What the client can call; a method added to CIClient must be driven below as well.
CLIENT_CALLS = {"list_queues", "list_jobs", "iter_job_pages", "describe_jobs"}


@pytest.fixture
def stub() -> Iterator[StubCI]:
    server = StubCI()
    yield server
    server.close()


def documented_policy() -> str:
    section = DOC.split("\n## The policy\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```json\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "one JSON block under 'The policy'"
    return str(blocks[0])


def documented_rows() -> list[tuple[str, ...]]:
    section = DOC.split("\n## Endpoints and actions\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    return [tuple(cell.strip() for cell in line.strip("|").split("|")) for line in lines[1:]]


def endpoint_of(path: str) -> Endpoint:
    (endpoint,) = [e for e in ENDPOINTS if e.matches(path)]
    return endpoint


CALLS = ("queue listing", "job listing", "jobs by id")  # a service's endpoints, in order


def expected_row(endpoint: Endpoint) -> tuple[str, ...]:
    if endpoint.service_host:  # discovery's bucket listing, one per service
        services = [s for s in ALL_SERVICES.values() if endpoint is s.buckets]
        call = "bucket listing"
    else:
        services = [s for s in ALL_SERVICES.values() if endpoint in s.endpoints]
        (call,) = {CALLS[(s.queues, s.jobs, s.job).index(endpoint)] for s in services}
    ids = ["<id>", "<id>"][: endpoint.max_ids]
    shown = endpoint.with_ids(ids) if endpoint.by_id else endpoint.path
    page = "/".join(endpoint.source.split("/")[-2:])
    named = f"[{page}]({endpoint.source})" if endpoint.source else "inferred"
    return (", ".join(s.name for s in services), call, f"`{shown}`", f"`{endpoint.action}`", named)


def answer(request: Received) -> Reply:
    """Enough of CI for one call of each kind: a queue page, a job page, jobs by id."""
    endpoint = endpoint_of(request.path)
    if any(endpoint is s.queues for s in SERVICES.values()):
        size = request.query["pageSize"]
        head = f"<TotalCount>1</TotalCount><PageNumber>1</PageNumber><PageSize>{size}</PageSize>"
        return Reply(body=xml(head + queue_xml("q1")))
    if endpoint.by_id:
        ids = request.path.removeprefix(endpoint.path + "/").split(",")
        return Reply(body=xml("".join(job_xml(i) for i in ids)))
    return Reply(body=xml(job_xml("j1")))


# The table


def test_every_endpoint_of_every_service_has_a_read_only_action() -> None:
    for service in SERVICES.values():
        for endpoint in service.endpoints:
            assert endpoint in ENDPOINTS
            assert re.fullmatch(r"ci:Describe[A-Z][A-Za-z]+", endpoint.action), endpoint
            assert not endpoint.source or endpoint.source.startswith("https://"), endpoint


def test_one_path_has_one_action() -> None:
    """Media and ai share /jobs: the same call must be the same action whichever asks."""
    for endpoint in ENDPOINTS:
        twins = [e for e in ENDPOINTS if (e.path, e.by_id) == (endpoint.path, endpoint.by_id)]
        assert twins == [endpoint]


def test_the_action_of_a_path() -> None:
    assert cam_action("/queue") == "ci:DescribeMediaQueues"
    assert cam_action("/jobs") == "ci:DescribeMediaJobs"
    assert cam_action("/jobs/j1,j2") == "ci:DescribeMediaJob"
    assert cam_action("/asr_jobs/j1") == "ci:DescribeAsrJob"
    for path in ("/jobsx", "/file_queue", "/workflow/w1", "/queue/q1", ""):
        with pytest.raises(LookupError, match="no CAM action"):
            cam_action(path)


def test_the_client_calls_exactly_the_endpoints_of_the_table(stub: StubCI) -> None:
    public = {name for name, _ in inspect.getmembers(CIClient, inspect.isfunction)}
    assert {n for n in public if not n.startswith("_")} - {"close"} == CLIENT_CALLS
    stub.handler = answer
    with make_client(stub) as client:
        for service in SERVICES.values():
            before = len(stub.received)
            client.list_queues(service)
            client.list_jobs(service, "q1", service.tags[0], ["Running"])
            list(client.iter_job_pages(service, "q1", service.tags[0], []))
            client.describe_jobs(service, ["j1", "j2"])
            called = {endpoint_of(r.path) for r in stub.received[before:]}
            assert called == set(service.endpoints), service.name


def test_a_path_without_an_action_is_not_sent(stub: StubCI) -> None:
    with make_client(stub) as client, pytest.raises(LookupError):
        client._request("/file_queue", {}, lambda body, answer: body)
    assert stub.received == []


def test_a_refused_call_names_its_action_and_the_bucket_resource(stub: StubCI) -> None:
    refusal = b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>"
    stub.handler = lambda r: Reply(403, refusal)
    with make_client(stub) as client:
        for call, action in (
            (lambda: client.list_queues(SERVICES["pic"]), "ci:DescribePicProcessQueues"),
            (lambda: client.list_jobs(SERVICES["speech"], "q1", "x", []), "ci:DescribeAsrJobs"),
            (lambda: client.describe_jobs(SERVICES["ai"], ["j1"]), "ci:DescribeMediaJob"),
        ):
            with pytest.raises(CIAuthError) as info:
                call()
            resource = "qcs::ci:ap-chongqing:uid/1250000000:bucket/examplebucket-1250000000/*"
            assert f"needs CAM action {action} on {resource}; see docs/permissions.md" in str(
                info.value
            )
            assert info.value.kind == "AccessDenied"


def test_a_clock_refusal_says_clock_not_permissions(stub: StubCI) -> None:
    refusal = b"<Error><Code>SignatureExpired</Code><Message>late</Message></Error>"
    stub.handler = lambda r: Reply(403, refusal)
    with make_client(stub) as client, pytest.raises(CIAuthError) as info:
        client.list_queues(SERVICES["media"])
    assert "clock" in str(info.value) and "CAM action" not in str(info.value)


def test_the_resource_of_a_bucket() -> None:
    assert bucket_resource("ap-beijing", "media-1250000000") == (
        "qcs::ci:ap-beijing:uid/1250000000:bucket/media-1250000000/*"
    )
    assert appid("my-media-bucket-1300000001") == "1300000001"
    for odd in ("nobucketid", "media-", "media-12x4", "-"):
        assert appid(odd) == "<APPID>"


# The documents


def test_the_documented_policy_is_the_deploy_file() -> None:
    assert documented_policy().strip() == DEPLOY.strip()


def test_the_documented_policy_is_the_one_the_table_makes() -> None:
    made = policy([bucket_resource(EXAMPLE_REGION, EXAMPLE_BUCKET)])
    assert json.loads(documented_policy()) == made
    assert json.loads(DEPLOY) == made
    assert json.dumps(made, indent=2) + "\n" == DEPLOY


def test_the_policy_allows_every_call_of_each_service_and_nothing_else() -> None:
    document = json.loads(DEPLOY)
    assert document["version"] == "2.0"
    *statements, discovery = document["statement"]
    assert len(statements) == len(ALL_SERVICES)
    for statement, service in zip(statements, ALL_SERVICES.values(), strict=True):
        assert statement["effect"] == "allow"
        assert set(statement["action"]) == {e.action for e in service.endpoints}
        assert statement["resource"] == [bucket_resource(EXAMPLE_REGION, EXAMPLE_BUCKET)]
        assert statement["action"] == actions(service)
    # Discovery's listings are on the service host: only `*` can grant them, in a statement of
    # their own, and no bucket-scoped statement holds one.
    assert discovery == {
        "effect": "allow",
        "action": [s.buckets.action for s in SERVICES.values()],
        "resource": ["*"],
    }
    allowed = {a for s in statements for a in s["action"]}
    assert allowed == {e.action for e in ENDPOINTS if not e.service_host}
    assert allowed.isdisjoint(discovery["action"])


def test_the_documented_table_is_the_table_of_the_code() -> None:
    rows = documented_rows()
    assert len(rows) == len(set(rows))
    assert sorted(rows) == sorted(expected_row(e) for e in ENDPOINTS)


def test_the_page_says_how_to_scope_to_buckets_and_what_is_uncertain() -> None:
    assert "qcs::ci:<Region>:uid/<APPID>:bucket/<BucketName-APPID>/*" in DOC
    assert "https://www.tencentcloud.com/document/product/1045/72914" in DOC
    uncertain = DOC.split("\n## What is not certain\n", 1)[1].split("\n## ", 1)[0]
    for endpoint in ENDPOINTS:
        if not endpoint.source:  # an inferred action says so, and what to do if it is wrong
            assert f"`{endpoint.path}`" in uncertain, endpoint
    assert '"ci:Describe*"' in uncertain
