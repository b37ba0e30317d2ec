"""Bucket discovery end to end (issue 16): the Poller lists the buckets each configured service
is enabled on, region by region, over real loopback HTTP against the simulator's service
hosts, and polls each as a target through the built-in clients (retries, rate limit and
concurrency at their defaults)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.api_stats import ApiStats
from exporter.collector import CICollector
from exporter.config import Config, DiscoveryConfig, ServiceConfig, TargetConfig, parse_config
from exporter.credentials import Credentials
from exporter.poller import Poller
from exporter.sharding import ALL, Shard
from exporter.simulator import Fault, Simulator

SID, KEY = "AKIDdiscovery0000000000000000000000", "discovery-key-00000000000000000000"
GZ, SH, BJ = "ap-guangzhou", "ap-shanghai", "ap-beijing"
MEDIA = ServiceConfig("media", ("Transcode",))
PIC = ServiceConfig("pic", ("PicProcess",))


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator({SID: KEY}, seed=16)
    for region in (GZ, SH, BJ):
        simulator.add_region(region)
    with simulator:
        yield simulator


def entry(**changes: object) -> DiscoveryConfig:
    settings: dict[str, object] = {
        "regions": (GZ, SH, BJ),
        "credentials": Credentials(SID, KEY),
        "services": (MEDIA, PIC),
        "interval": 0.0,  # every discover() lists again (the file's minimum is 1m)
        **changes,
    }
    return DiscoveryConfig(**settings)  # type: ignore[arg-type]


def poller(
    sim: Simulator,
    *entries: DiscoveryConfig,
    clock: Clock | None = None,
    targets: tuple[TargetConfig, ...] = (),
    shard: Shard = ALL,
    state_file: str | None = None,
) -> Poller:
    config = Config(
        targets=targets,
        discovery=entries or (entry(),),
        request_timeout=5,
        idle_tag_backoff=0,
        state_file=state_file,
    )
    return Poller(
        config,
        ApiStats(),
        clock=clock,
        shard=shard,
        bucket_endpoint=lambda bucket, region: sim.endpoint(bucket),
        service_endpoint=sim.service_endpoint,
    )


def polled(p: Poller) -> dict[str, tuple[str, ...]]:
    return {t.name: tuple(s.name for s in t.target.services) for t in p.targets}


def value(p: Poller, name: str, **labels: str) -> float | None:
    registry = CollectorRegistry()
    registry.register(CICollector(p, p.stats, "test"))
    return registry.get_sample_value(name, labels)


def test_three_regions_two_services_with_paging(sim: Simulator) -> None:
    many = [f"m{i:03d}-1250000000" for i in range(103)]  # two pages of media in Guangzhou
    for name in many:
        sim.add_bucket(name, GZ, services=["media"])
    sim.add_bucket("both-1250000000", GZ, services=["media", "pic"])
    sim.add_bucket("pics-1250000000", SH, services=["pic"])
    sim.add_bucket("docs-1250000000", SH, services=["doc"])  # no configured service
    sim.add_bucket("north-1250000000", BJ, services=["media", "pic", "speech"])
    p = poller(sim)
    p.poll_once()
    found = polled(p)
    assert len(found) == 103 + 3
    assert found["both-1250000000/" + GZ] == ("media", "pic")
    assert found["pics-1250000000/" + SH] == ("pic",)
    assert found["north-1250000000/" + BJ] == ("media", "pic")  # speech not configured
    assert found[f"{many[0]}/{GZ}"] == ("media",)
    assert "docs-1250000000/" + SH not in found
    listings = [r for r in sim.requests if r.bucket.startswith("ci.")]
    pages = sorted(r.params["pageNumber"] for r in listings if r.bucket == f"ci.{GZ}")
    assert pages == ["1", "1", "2"]  # media twice (104 buckets), pic once
    assert {(r.bucket, r.path) for r in listings} == {
        (f"ci.{region}", path) for region in (GZ, SH, BJ) for path in ("/mediabucket", "/picbucket")
    }
    # Every discovered target was polled, on its own host, for its services only.
    assert all(t.polled and t.up for t in p.board.current.targets)
    assert sim.request_count("pics-1250000000", "/picqueue") == 1
    assert sim.request_count("pics-1250000000", "/queue") == 0
    assert value(p, "tencent_ci_discovery_buckets", region=GZ, service="media") == 104
    assert value(p, "tencent_ci_discovery_buckets", region=SH, service="media") == 0
    assert value(p, "tencent_ci_discovery_last_successful", region=BJ, service="pic") == 1
    assert value(p, "tencent_ci_discovery_last_success_timestamp_seconds", region=SH, service="pic")
    calls = value(
        p,
        "tencent_ci_api_requests_total",
        bucket="",
        region=GZ,
        endpoint="/mediabucket",
        status="200",
    )
    assert calls == 2


def test_a_bucket_added_removed_and_added_again(sim: Simulator, tmp_path: Path) -> None:
    clock = Clock()
    sim.add_bucket("stays-1250000000", GZ, services=["media"])
    sim.add_bucket("comes-1250000000", GZ, services=["media"]).add_queue("media", name="q")
    state = tmp_path / "state.json"
    p = poller(sim, entry(regions=(GZ,), grace=600.0), clock=clock, state_file=str(state))
    p.poll_once()
    assert set(polled(p)) == {f"stays-1250000000/{GZ}", f"comes-1250000000/{GZ}"}
    assert f"comes-1250000000/{GZ}" in json.loads(state.read_text())["targets"]

    sim.remove_bucket("comes-1250000000")
    clock.now += 599  # missing, but for less than the grace: still polled
    p.poll_once()
    assert f"comes-1250000000/{GZ}" in polled(p)
    assert value(p, "tencent_ci_discovery_buckets", region=GZ, service="media") == 2

    clock.now += 1
    p.poll_once()
    assert set(polled(p)) == {f"stays-1250000000/{GZ}"}
    assert f"comes-1250000000/{GZ}" not in json.loads(state.read_text())["targets"]
    assert value(p, "tencent_ci_up", bucket="comes-1250000000", region=GZ) is None
    assert value(p, "tencent_ci_discovery_buckets", region=GZ, service="media") == 1

    again = sim.add_bucket("comes-1250000000", GZ, services=["media"], seed=1)
    queue = again.add_queue("media", name="q2")
    job = again.create_job(queue, "Transcode")  # before the baseline: never counted
    again.finish_job(job, "Success")
    p.poll_once()
    assert f"comes-1250000000/{GZ}" in polled(p)
    finished = value(
        p,
        "tencent_ci_jobs_finished_total",
        bucket="comes-1250000000",
        region=GZ,
        service="media",
        queue_id=queue,
        tag="Transcode",
        state="Success",
    )
    assert finished == 0  # a baseline of its own


def test_a_failing_discovery_keeps_the_last_list_and_polling(sim: Simulator) -> None:
    clock = Clock()
    sim.add_bucket("kept-1250000000", SH, services=["media"]).add_queue("media", name="q")
    p = poller(sim, entry(regions=(SH,), services=(MEDIA,), grace=60.0), clock=clock)
    p.poll_once()
    assert set(polled(p)) == {f"kept-1250000000/{SH}"}
    failing = sim.faults.add(Fault("http_500", bucket=f"ci.{SH}"))
    for _ in range(3):
        clock.now += 3600  # far past the grace: a failed listing drops nothing
        p.poll_once()
        assert set(polled(p)) == {f"kept-1250000000/{SH}"}
        assert p.board.current.targets[0].up
    assert value(p, "tencent_ci_discovery_last_successful", region=SH, service="media") == 0
    assert (
        value(p, "tencent_ci_discovery_last_success_timestamp_seconds", region=SH, service="media")
        == 1_800_000_000.0
    )
    errors = value(
        p,
        "tencent_ci_api_errors_total",
        bucket="",
        region=SH,
        endpoint="/mediabucket",
        error="InternalError",
    )
    assert errors == 9  # three listings, each tried three times (the default retry)
    sim.faults.remove(failing)
    p.poll_once()
    assert value(p, "tencent_ci_discovery_last_successful", region=SH, service="media") == 1


def test_shards_split_the_discovered_buckets(sim: Simulator) -> None:
    names = [f"shard{i:02d}-1250000000" for i in range(24)]
    for name in names:
        sim.add_bucket(name, BJ, services=["media"])
    shards = [
        poller(sim, entry(regions=(BJ,), services=(MEDIA,)), shard=Shard(i, 3)) for i in range(3)
    ]
    for p in shards:
        p.poll_once()
    owned = [set(polled(p)) for p in shards]
    assert sorted(n for o in owned for n in o) == sorted(f"{n}/{BJ}" for n in names)
    assert all(o for o in owned)  # each shard polls some
    for name in names:  # each bucket's queues listed by exactly one shard
        assert sim.request_count(name, "/queue") == 1
    # Every shard discovers every bucket.
    for p in shards:
        assert value(p, "tencent_ci_discovery_buckets", region=BJ, service="media") == 24


def test_a_named_target_wins_over_discovery(sim: Simulator) -> None:
    sim.add_bucket("named-1250000000", GZ)
    sim.add_bucket("found-1250000000", GZ, services=["media"])
    named = TargetConfig(
        "named-1250000000", GZ, sim.endpoint("named-1250000000"), Credentials(SID, KEY), (PIC,)
    )
    p = poller(sim, entry(regions=(GZ,)), targets=(named,))
    p.poll_once()
    assert polled(p) == {f"named-1250000000/{GZ}": ("pic",), f"found-1250000000/{GZ}": ("media",)}


def test_a_restart_takes_up_a_discovered_target_from_the_state_file(
    sim: Simulator, tmp_path: Path
) -> None:
    bucket = sim.add_bucket("saved-1250000000", GZ, services=["media"])
    queue = bucket.add_queue("media", name="q")
    running = bucket.create_job(queue, "Transcode")
    bucket.start_job(running)
    state = str(tmp_path / "state.json")
    first = poller(sim, entry(regions=(GZ,), services=(MEDIA,)), state_file=state)
    first.poll_once()
    first.stop()
    bucket.finish_job(running, "Failed", code="InternalError")  # while no exporter runs

    second = poller(sim, entry(regions=(GZ,), services=(MEDIA,)), state_file=state)
    # Not discovered yet: the saved target stays in the file for discovery to find.
    assert second.targets == []
    assert f"saved-1250000000/{GZ}" in json.loads(Path(state).read_text())["targets"]
    second.poll_once()
    labels = {"bucket": "saved-1250000000", "region": GZ, "service": "media", "queue_id": queue}
    failed = value(
        second, "tencent_ci_jobs_finished_total", **labels, tag="Transcode", state="Failed"
    )
    assert failed == 1  # the job that finished while down, counted once from the saved state
    second.poll_once()
    assert (
        value(second, "tencent_ci_jobs_finished_total", **labels, tag="Transcode", state="Failed")
        == 1
    )


def test_a_saved_target_not_found_again_leaves_the_state_file(
    sim: Simulator, tmp_path: Path
) -> None:
    sim.add_bucket("gone-1250000000", GZ, services=["media"])
    state = str(tmp_path / "state.json")
    first = poller(sim, entry(regions=(GZ,), services=(MEDIA,)), state_file=state)
    first.poll_once()
    first.stop()
    sim.remove_bucket("gone-1250000000")
    second = poller(sim, entry(regions=(GZ,), services=(MEDIA,), grace=0.0), state_file=state)
    second.poll_once()
    assert second.targets == []
    assert json.loads(Path(state).read_text())["targets"] == {}


def test_the_configuration_file_form() -> None:
    config = parse_config(
        """
discovery:
  - regions: [ap-guangzhou, ap-shanghai]
    prefixes: [media-, logs-]
    buckets: [special-1250000000]
    interval: 5m
    grace: 1h
    credentials: {secret_id: AKIDx, secret_key: y}
    services: {media: {tags: [Transcode]}}
""",
        "c.yml",
        {},
    )
    (found,) = config.discovery
    assert (found.regions, found.prefixes, found.buckets) == (
        (GZ, SH),
        ("media-", "logs-"),
        ("special-1250000000",),
    )
    assert (found.interval, found.grace, config.targets) == (300.0, 3600.0, ())
    assert found.services == (ServiceConfig("media", ("Transcode",)),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("targets: []", "c.yml: targets: must list at least one target (or give discovery)"),
        (
            "discovery: [{regions: []}]",
            "c.yml: discovery[0].regions: is empty (name at least one region)",
        ),
        (
            "discovery: [{regions: [ap-x, ap-x]}]",
            'c.yml: discovery[0].regions[1]: duplicate "ap-x"',
        ),
        (
            "discovery: [{regions: [ap-x], interval: 5s}]",
            "c.yml: discovery[0].interval: 5s is too short (minimum 60s)",
        ),
        (
            "discovery: [{regions: [ap-x], bucket: a-1}]",
            "c.yml: discovery[0].bucket: unknown key (allowed: regions, credentials, services,",
        ),
        (
            "discovery: [{regions: [ap-x], prefixes: [Media]}]",
            'c.yml: discovery[0].prefixes[0]: "Media" is not the start of a bucket name',
        ),
        (
            "discovery: [{regions: [ap-x], credentials: {secret_id: S3CR3T}}]",
            "c.yml: discovery[0].credentials.secret_key: required when secret_id is given",
        ),
    ],
)
def test_bad_discovery_settings(text: str, message: str) -> None:
    from exporter.config import ConfigError

    environ = {"TENCENTCLOUD_SECRET_ID": "AKIDenv", "TENCENTCLOUD_SECRET_KEY": "env-key"}
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yml", environ)
    assert str(caught.value).startswith(message)
    assert "S3CR3T" not in str(caught.value)


def test_at_most_max_buckets_are_polled(sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    for i in range(5):
        sim.add_bucket(f"cap{i}-1250000000", GZ, services=["media"])
    p = poller(sim, entry(regions=(GZ,), services=(MEDIA,), max_buckets=3))
    p.poll_once()
    assert sorted(polled(p)) == [f"cap{i}-1250000000/{GZ}" for i in range(3)]
    assert "discovery found more buckets than max_buckets" in caplog.text
    assert value(p, "tencent_ci_discovery_buckets", region=GZ, service="media") == 5
