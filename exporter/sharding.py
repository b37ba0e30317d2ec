"""Which replica polls which bucket, when targets are spread over several exporter processes.

A bucket's shard depends on its name and the shard count only (jump consistent hash over a
SHA-256 of the name): adding or removing other buckets never moves it, every process computes
the same answer without talking to the others, and going from N to N+1 shards moves only the
~1/(N+1) of buckets the new shard takes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.config import TargetConfig

MAX_SHARDS = 1024
_ORDINAL_RE = re.compile(r"-([0-9]+)$")
_JUMP_MULTIPLIER = 2862933555777941757
_U64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Shard:
    index: int
    count: int

    def owns(self, bucket: str) -> bool:
        return shard_of(bucket, self.count) == self.index


ALL = Shard(0, 1)


def shard_of(bucket: str, count: int) -> int:
    """The shard, in [0, count), that polls `bucket`."""
    if count < 1:
        raise ValueError("the shard count must be at least 1")
    key = int.from_bytes(hashlib.sha256(bucket.encode("utf-8")).digest()[:8], "big")
    # Lamping and Veach's jump consistent hash.
    chosen, candidate = -1, 0
    while candidate < count:
        chosen = candidate
        key = (key * _JUMP_MULTIPLIER + 1) & _U64
        candidate = int((chosen + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return chosen


def select(targets: Sequence[TargetConfig], shard: Shard) -> tuple[TargetConfig, ...]:
    return tuple(target for target in targets if shard.owns(target.bucket))


def resolve_shard(count: int, index: int | None, environ: Mapping[str, str]) -> Shard:
    """The shard this process is, from the flags or, with no index given, from the ordinal at
    the end of a StatefulSet pod's host name (`tencent-ci-exporter-2` is shard 2)."""
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"--shard.count: must be between 1 and {MAX_SHARDS}, not {count}")
    if index is None:
        if count == 1:
            return ALL
        hostname = environ.get("HOSTNAME", "")
        match = _ORDINAL_RE.search(hostname)
        if match is None:
            raise ValueError(
                "--shard.index: not given, and HOSTNAME "
                f"({hostname!r}) does not end in -<ordinal> as a StatefulSet pod's does"
            )
        index = int(match.group(1))
        if index >= count:
            raise ValueError(
                f"--shard.index: HOSTNAME {hostname!r} gives ordinal {index}, "
                f"but --shard.count is {count}"
            )
    if not 0 <= index < count:
        raise ValueError(f"--shard.index: must be between 0 and {count - 1}, not {index}")
    return Shard(index, count)
