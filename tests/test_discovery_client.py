"""Bucket discovery's first layer: the client's bucket listings (exporter.ci.discovery) over
real loopback HTTP, against the simulator's service hosts and against hostile stubs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from test_client import Reply, StubCI, xml

from exporter.ci.buckets import BUCKET_PAGE_SIZE, parse_bucket_page
from exporter.ci.client import CIClient
from exporter.ci.discovery import DiscoveryClient, service_endpoint
from exporter.ci.models import CIAPIError, CIAuthError, CIError, CIInvalidResponse
from exporter.ci.services import SERVICES
from exporter.credentials import Credentials, StaticCredentials
from exporter.simulator import Simulator
from exporter.simulator.discovery import LIST_ELEMENTS

SID, KEY = "AKIDdiscovery", "discovery-secret-key"
GZ, SH, BJ = "ap-guangzhou", "ap-shanghai", "ap-beijing"
MEDIA = SERVICES["media"]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator({SID: KEY}, seed=5)
    with simulator:
        yield simulator


@pytest.fixture
def stub() -> Iterator[StubCI]:
    server = StubCI()
    yield server
    server.close()


def client(endpoint: str, region: str = GZ, key: str = KEY) -> DiscoveryClient:
    credentials = StaticCredentials(Credentials(SID, key))
    return DiscoveryClient(region=region, endpoint=endpoint, credentials=credentials, timeout=5.0)


def names(sim: Simulator, service: str = "media", region: str = GZ, **kwargs: object) -> set[str]:
    with client(sim.service_endpoint(region), region) as c:
        found = c.list_buckets(SERVICES[service], **kwargs)  # type: ignore[arg-type]
    assert len(found) == len({b.bucket_id for b in found})
    return {b.bucket_id for b in found}


# The simulator


def test_each_service_lists_the_buckets_it_is_enabled_on(sim: Simulator) -> None:
    sim.add_bucket("every-1250000000", GZ)
    sim.add_bucket("media-1250000000", GZ, services=["media"])
    sim.add_bucket("docs-1250000000", GZ, services=["doc", "pic"])
    sim.add_bucket("none-1250000000", GZ, services=[])
    assert names(sim, "media") == {"every-1250000000", "media-1250000000"}
    assert names(sim, "doc") == names(sim, "pic") == {"every-1250000000", "docs-1250000000"}
    assert names(sim, "speech") == names(sim, "ai") == {"every-1250000000"}
    paths = {r.path for r in sim.requests}
    assert paths == {"/mediabucket", "/asrbucket", "/picbucket", "/docbucket", "/ai_bucket"}
    assert {r.bucket for r in sim.requests} == {f"ci.{GZ}"}


def test_a_bucket_comes_back_whole(sim: Simulator) -> None:
    sim.add_bucket("whole-1250000000", SH, created=1_700_000_000.0)
    with client(sim.service_endpoint(SH), SH) as c:
        (bucket,) = c.list_buckets(SERVICES["speech"])
    assert (bucket.bucket_id, bucket.name, bucket.region) == ("whole-1250000000",) * 2 + (SH,)
    assert bucket.create_time == 1_700_000_000.0


def test_the_list_elements_are_the_documented_ones() -> None:
    assert LIST_ELEMENTS == {
        "media": "MediaBucketList",
        "ai": "AiBucketList",
        "speech": "AsrBucketList",
        "pic": "PicBucketList",
        "doc": "DocBucketList",
    }
    # An older speech page names the element SpeechBucketList: read as well.
    body = xml(
        "<TotalCount>1</TotalCount><SpeechBucketList><BucketId>a-1</BucketId>"
        f"<Region>{GZ}</Region></SpeechBucketList>"
    )
    page = parse_bucket_page(body, SERVICES["speech"].bucket_list, max_buckets=1)
    assert [b.bucket_id for b in page.buckets] == ["a-1"]
    # Another service's element is not this service's bucket.
    assert parse_bucket_page(body, MEDIA.bucket_list, max_buckets=1).buckets == ()


def test_a_listing_is_paged_to_its_end(sim: Simulator) -> None:
    expected = {f"b{i:03d}-1250000000" for i in range(2 * BUCKET_PAGE_SIZE + 17)}
    for name in sorted(expected):
        sim.add_bucket(name, GZ, services=["media"])
    assert names(sim) == expected
    asked = [r.params for r in sim.requests]
    assert [p["pageNumber"] for p in asked] == ["1", "2", "3"]
    assert {p["pageSize"] for p in asked} == {"100"}
    assert {p["regions"] for p in asked} == {GZ}


def test_prefix_and_exact_names(sim: Simulator) -> None:
    for name in ("logs-a-1250000000", "logs-b-1250000000", "media-1250000000"):
        sim.add_bucket(name, GZ)
    assert names(sim, prefix="logs-") == {"logs-a-1250000000", "logs-b-1250000000"}
    assert names(sim, names=["media-1250000000", "gone-1250000000"]) == {"media-1250000000"}
    both = names(sim, prefix="logs-", names=["logs-a-1250000000", "media-1250000000"])
    assert both == {"logs-a-1250000000"}
    asked = sim.requests[-1].params
    assert asked["bucketName"] == "logs-"
    assert asked["bucketNames"] == "logs-a-1250000000,media-1250000000"


def test_a_listing_covers_the_regions_asked_for(sim: Simulator) -> None:
    for region in (GZ, SH, BJ):
        sim.add_bucket(f"in-{region}-1250000000", region)
    assert names(sim, region=GZ) == {f"in-{GZ}-1250000000"}
    assert names(sim, region=GZ, regions=[SH, BJ]) == {
        f"in-{SH}-1250000000",
        f"in-{BJ}-1250000000",
    }


def test_a_region_without_buckets_lists_none(sim: Simulator) -> None:
    sim.add_region("ap-chengdu")
    assert names(sim, region="ap-chengdu") == set()


def test_a_removed_bucket_leaves_the_listing(sim: Simulator) -> None:
    sim.add_bucket("stays-1250000000", GZ)
    sim.add_bucket("goes-1250000000", GZ)
    sim.remove_bucket("goes-1250000000")
    assert names(sim) == {"stays-1250000000"}


def test_the_simulator_checks_what_it_is_asked(sim: Simulator) -> None:
    sim.add_bucket("one-1250000000", GZ)
    parse = lambda body, answer: body  # noqa: E731
    with client(sim.service_endpoint(GZ)) as c:
        for params in ({"pageSize": "101"}, {"pageNumber": "0"}, {"regions": "Mars"}):
            with pytest.raises(CIAPIError) as info:
                c._request("/mediabucket", params, parse)
            assert (info.value.status, info.value.code) == (400, "InvalidArgument"), params
        body = c._request("/mediabucket", {"regions": "All", "pageNumber": "9"}, parse)
    page = parse_bucket_page(body, MEDIA.bucket_list, max_buckets=10)
    assert (page.total_count, page.buckets) == (1, ())


def test_listings_only_on_the_service_host(sim: Simulator) -> None:
    sim.add_bucket("host-1250000000", GZ)
    with client(sim.endpoint("host-1250000000")) as c, pytest.raises(CIAPIError) as info:
        c.list_buckets(MEDIA)
    assert (info.value.status, info.value.code) == (404, "ResourceNotFound")
    credentials = StaticCredentials(Credentials(SID, KEY))
    with (
        CIClient(
            bucket="host-1250000000",
            region=GZ,
            endpoint=sim.service_endpoint(GZ),
            credentials=credentials,
        ) as bucket_client,
        pytest.raises(CIAPIError) as info,
    ):
        bucket_client.list_queues(MEDIA)
    assert info.value.code == "ResourceNotFound"


def test_a_listing_must_be_signed(sim: Simulator) -> None:
    sim.add_bucket("signed-1250000000", GZ)
    unsigned = requests.get(sim.service_endpoint(GZ) + "/mediabucket", timeout=5)
    assert unsigned.status_code == 401 and b"MissingAuthorization" in unsigned.content
    with (
        client(sim.service_endpoint(GZ), key="not-the-key") as c,
        pytest.raises(CIAuthError) as info,
    ):
        c.list_buckets(MEDIA)
    assert info.value.kind == "InvalidAuthorization"
    # Discovery's actions can only be granted on `*`: the refusal names that resource.
    assert "needs CAM action ci:DescribeMediaBuckets on *;" in str(info.value)


def test_nothing_is_sent_for_what_could_not_be_a_cos_name(stub: StubCI) -> None:
    with client(stub.url) as c:
        for bad in ({"regions": ["ap-guangzhou/x"]}, {"prefix": "A?"}, {"names": ["x.y-1"]}):
            with pytest.raises(ValueError):
                c.list_buckets(MEDIA, **bad)  # type: ignore[arg-type]
    assert stub.received == []
    assert service_endpoint(SH) == "https://ci.ap-shanghai.myqcloud.com"
    with pytest.raises(ValueError):
        service_endpoint("ap-x.evil.com")


# Hostile answers: each ends in one one-line error, within the caps


def page_of(
    numbers: range, total: int, region: str = GZ, element: str = "MediaBucketList"
) -> bytes:
    items = "".join(
        f"<{element}><BucketId>b{n}-1250000000</BucketId><Region>{region}</Region>"
        f"<CreateTime>2024-01-01T00:00:00+0800</CreateTime></{element}>"
        for n in numbers
    )
    return xml(f"<TotalCount>{total}</TotalCount><PageSize>100</PageSize>{items}")


def refused(stub: StubCI, handler: object, **kwargs: object) -> str:
    stub.handler = handler  # type: ignore[assignment]
    with client(stub.url) as c, pytest.raises(CIError) as info:
        c.list_buckets(MEDIA, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and message.startswith("GET /mediabucket: "), message
    return message


def test_endless_next_pages_end_at_the_page_cap(stub: StubCI) -> None:
    def endless(request: object) -> Reply:
        number = int(request.query["pageNumber"])  # type: ignore[attr-defined]
        # Always new buckets, always "more to come": one at a time, so no count cap ends it.
        return Reply(body=page_of(range(number, number + 1), 500))

    message = refused(stub, endless, max_buckets=500)
    assert "did not end within 5 pages" in message
    assert len(stub.received) == 5


def test_a_server_ignoring_page_numbers_is_refused_at_once(stub: StubCI) -> None:
    message = refused(stub, lambda r: Reply(body=page_of(range(100), 1000)))
    assert "lists only buckets already listed" in message
    assert len(stub.received) == 2


def test_a_huge_count_is_refused_up_front(stub: StubCI) -> None:
    message = refused(stub, lambda r: Reply(body=page_of(range(3), 10**17)))
    assert "more than the 10000 buckets" in message
    assert len(stub.received) == 1


def test_more_than_a_page_is_refused(stub: StubCI) -> None:
    message = refused(stub, lambda r: Reply(body=page_of(range(101), 101)))
    assert "more than the 100 buckets asked for" in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<Response><TotalCount>1</TotalCount><MediaBucketList>", "not well-formed XML"),
        (b"<html>busy</html>", "expected <Response>"),
        (page_of(range(1), 1).replace(b"<TotalCount>1</TotalCount>", b""), "TotalCount"),
        (page_of(range(1), 1, region=SH), "region ap-shanghai not asked for"),
        (
            xml(
                "<TotalCount>1</TotalCount><MediaBucketList><BucketId>evil.com/x-1</BucketId>"
                f"<Region>{GZ}</Region></MediaBucketList>"
            ),
            "BucketId: not a valid value",
        ),
        (
            xml(
                "<TotalCount>1</TotalCount><MediaBucketList><BucketId>a-1</BucketId>"
                "<Region>ap-gz.evil\ncom</Region></MediaBucketList>"
            ),
            "Region: not a valid value",
        ),
    ],
)
def test_malformed_answers_are_one_line_errors(stub: StubCI, body: bytes, expected: str) -> None:
    message = refused(stub, lambda r: Reply(body=body))
    assert expected in message
    assert len(stub.received) == 1


def test_a_bucket_outside_the_filters_is_refused(stub: StubCI) -> None:
    message = refused(stub, lambda r: Reply(body=page_of(range(1), 1)), prefix="logs")
    assert "not of the prefix asked for" in message
    message = refused(stub, lambda r: Reply(body=page_of(range(1), 1)), names=["other-1250000000"])
    assert "not one of the names asked for" in message


def test_an_invalid_answer_is_an_invalid_response(stub: StubCI) -> None:
    stub.handler = lambda r: Reply(body=b"garbage")
    with client(stub.url) as c, pytest.raises(CIInvalidResponse):
        c.list_buckets(MEDIA)
