"""How a stream's tracked jobs are held (exporter.accounting): every job held, active or
counted and remembered, costs memory for as long as it is held, so it is held compactly. The
JobId is an int when it has CI's usual form (a letter and 32 hex digits: half the memory of the
text), an active job's record is one int (its state, whether its wait was observed, and its
creation and start times as IEEE doubles). Both are exact; JobsById and ActiveJobs show them by
JobId. No state of its own: the dicts belong to the tracker's thread.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from exporter.ci.models import ACTIVE_STATES
from exporter.dedupe import JobKey

_USUAL_ID = re.compile(r"[a-z][0-9a-f]{32}\Z")
_HEX_BITS = 128
_HEX_MASK = (1 << _HEX_BITS) - 1
_LETTER_BITS = {chr(c): c << _HEX_BITS for c in range(ord("a"), ord("z") + 1)}


def job_key(job_id: str) -> JobKey:
    """CI's JobIds are a letter and 32 lowercase hex digits: as an int that is half the memory
    of the text. Any other id is kept as it is (an int key never equals a str key)."""
    if len(job_id) == 33 and _USUAL_ID.match(job_id):
        return _LETTER_BITS[job_id[0]] | int(job_id[1:], 16)
    return job_id


def job_id_of(key: JobKey) -> str:
    if isinstance(key, str):
        return key
    return chr(key >> _HEX_BITS) + (key & _HEX_MASK).to_bytes(16, "big").hex()


# An active job's record packed in one int: bits 0-1 the state, bit 2 wait observed, bits 3-4
# whether each time is known, from bit 5 the two times as IEEE doubles (creation, then start).
_STATE_CODES = {state: code for code, state in enumerate(ACTIVE_STATES)}
_WAIT_OBSERVED, _HAS_CREATION, _HAS_START = 4, 8, 16
_TIMES_SHIFT = 5
_TWO_TIMES = struct.Struct("<dd")
_ONE_TIME = struct.Struct("<d")
_DOUBLE_MASK = (1 << 64) - 1


def pack(state: str, creation: float | None, start: float | None, wait_observed: bool) -> int:
    flags = _STATE_CODES[state]
    if wait_observed:
        flags |= _WAIT_OBSERVED
    if creation is None:
        creation = 0.0
    else:
        flags |= _HAS_CREATION
    if start is None:
        start = 0.0
    else:
        flags |= _HAS_START
    return int.from_bytes(_TWO_TIMES.pack(creation, start), "little") << _TIMES_SHIFT | flags


def _double(bits: int) -> float:
    value: float = _ONE_TIME.unpack(bits.to_bytes(8, "little"))[0]
    return value


def wait_observed(packed: int) -> bool:
    return bool(packed & _WAIT_OBSERVED)


def packed_state(packed: int) -> str:
    return ACTIVE_STATES[packed & 3]


def packed_creation(packed: int) -> float | None:
    """A packed record's creation time, without unpacking the rest."""
    return _double(packed >> _TIMES_SHIFT & _DOUBLE_MASK) if packed & _HAS_CREATION else None


def _packed_start(packed: int) -> float | None:
    return _double(packed >> (_TIMES_SHIFT + 64)) if packed & _HAS_START else None


def _packed_running_since(packed: int) -> float | None:
    """When a running job started; its creation when no start is known (a workflow run's
    listing gives none, and a run starts when it is created: it waits for no slot)."""
    start = _packed_start(packed)
    return start if start is not None else packed_creation(packed)


# The age of the backlog is told by when its oldest job was created; of the running jobs, by
# when the longest-running one started.
OLDEST_BY = {"Submitted": packed_creation, "Running": _packed_running_since}


@dataclass(slots=True)
class ActiveJob:
    state: str
    creation_time: float | None
    start_time: float | None
    wait_observed: bool

    def pack(self) -> int:
        return pack(self.state, self.creation_time, self.start_time, self.wait_observed)

    @staticmethod
    def unpack(packed: int) -> ActiveJob:
        creation, start = _TWO_TIMES.unpack((packed >> _TIMES_SHIFT).to_bytes(16, "little"))
        return ActiveJob(
            ACTIVE_STATES[packed & 3],
            creation if packed & _HAS_CREATION else None,
            start if packed & _HAS_START else None,
            bool(packed & _WAIT_OBSERVED),
        )


_Held = TypeVar("_Held")


class JobsById(Mapping[str, _Held]):
    """A read-only view, by JobId, of jobs held by JobKey: for tests and inspection."""

    __slots__ = ("_jobs",)

    def __init__(self, jobs: dict[JobKey, _Held]) -> None:
        self._jobs = jobs

    def __getitem__(self, job_id: str) -> _Held:
        return self._jobs[job_key(job_id)]

    def __contains__(self, job_id: object) -> bool:
        return isinstance(job_id, str) and job_key(job_id) in self._jobs

    def __iter__(self) -> Iterator[str]:
        return map(job_id_of, self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)


class ActiveJobs(Mapping[str, ActiveJob]):
    """A read-only view, by JobId, of a stream's active jobs."""

    __slots__ = ("_packed",)

    def __init__(self, jobs: dict[JobKey, int]) -> None:
        self._packed = JobsById(jobs)

    def __getitem__(self, job_id: str) -> ActiveJob:
        return ActiveJob.unpack(self._packed[job_id])

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._packed

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)
