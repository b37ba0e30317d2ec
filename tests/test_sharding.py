from __future__ import annotations

from collections import Counter

import pytest

from exporter.config import ServiceConfig, TargetConfig
from exporter.credentials import Credentials
from exporter.sharding import ALL, Shard, resolve_shard, select, shard_of

BUCKETS = [f"bucket{i:04d}-125000{i % 7}" for i in range(400)]


def _target(bucket: str) -> TargetConfig:
    return TargetConfig(
        bucket=bucket,
        region="ap-chongqing",
        endpoint=f"https://{bucket}.ci.ap-chongqing.myqcloud.com",
        credentials=Credentials("AKIDsharding", "key"),
        services=(ServiceConfig("media", ("Transcode",)),),
    )


@pytest.mark.parametrize("count", range(1, 17))
def test_each_bucket_is_polled_by_exactly_one_shard(count: int) -> None:
    targets = [_target(b) for b in BUCKETS]
    selected = [select(targets, Shard(index, count)) for index in range(count)]
    polled = Counter(t.bucket for shard_targets in selected for t in shard_targets)
    assert polled == Counter(BUCKETS)
    # Spread: no shard is empty and none holds more than twice its share.
    sizes = [len(s) for s in selected]
    assert min(sizes) > 0
    assert max(sizes) <= 2 * len(BUCKETS) / count


@pytest.mark.parametrize("count", range(1, 17))
def test_assignment_stays_put_when_other_buckets_are_added(count: int) -> None:
    before = {b: shard_of(b, count) for b in BUCKETS[:100]}
    targets = [_target(b) for b in BUCKETS]  # 300 more buckets
    for index in range(count):
        for target in select(targets, Shard(index, count)):
            if target.bucket in before:
                assert before[target.bucket] == index


def test_a_new_shard_only_takes_buckets_from_the_others() -> None:
    for count in range(1, 16):
        for bucket in BUCKETS:
            old, new = shard_of(bucket, count), shard_of(bucket, count + 1)
            assert new in (old, count)
        moved = sum(shard_of(b, count) != shard_of(b, count + 1) for b in BUCKETS)
        # About 1/(count+1) of the buckets move; never most of them.
        assert moved <= 2 * len(BUCKETS) / (count + 1)


def test_the_hash_is_stable_across_processes() -> None:
    # Fixed values: a change of hash would reshuffle every deployment's buckets.
    names = ("examplebucket-1250000000", "a-1", "video-1300000000")
    assert [shard_of(b, 16) for b in names] == [11, 6, 2]
    assert [shard_of(b, 3) for b in names] == [2, 2, 2]
    assert shard_of("examplebucket-1250000000", 1) == 0


def test_one_shard_owns_everything() -> None:
    assert resolve_shard(1, None, {}) == ALL
    assert all(ALL.owns(b) for b in BUCKETS)


def test_index_from_a_statefulset_pod_name() -> None:
    assert resolve_shard(3, None, {"HOSTNAME": "tencent-ci-exporter-2"}) == Shard(2, 3)
    assert resolve_shard(3, 1, {"HOSTNAME": "whatever"}) == Shard(1, 3)


@pytest.mark.parametrize(
    ("count", "index", "env", "message"),
    [
        (0, None, {}, "--shard.count: must be between 1 and 1024, not 0"),
        (3, 3, {}, "--shard.index: must be between 0 and 2, not 3"),
        (3, -1, {}, "--shard.index: must be between 0 and 2, not -1"),
        (
            3,
            None,
            {"HOSTNAME": "exporter"},
            "--shard.index: not given, and HOSTNAME ('exporter') does not end in -<ordinal> "
            "as a StatefulSet pod's does",
        ),
        (
            2,
            None,
            {"HOSTNAME": "tencent-ci-exporter-5"},
            "--shard.index: HOSTNAME 'tencent-ci-exporter-5' gives ordinal 5, "
            "but --shard.count is 2",
        ),
    ],
)
def test_bad_shard_flags_are_one_line(
    count: int, index: int | None, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError) as raised:
        resolve_shard(count, index, env)
    assert str(raised.value) == message
