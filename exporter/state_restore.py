"""Reading the state file back: every target's state restored into its records (TargetState,
StreamTracker) with suspicion. One that is missing, unreadable, not JSON, of another format or
version, or holding a value of the wrong type or size gives one log line and a fresh baseline,
never a crash and never a half-restored target; one bad record is skipped alone.

Threads: no mutable state between calls (the tally of skipped records is local to one load).
Called by the thread that builds the targets (the Poller's, through StateFile.load) before the
state it returns is handed to their poll threads, which own it from then on.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from exporter.accounting import StreamKey, StreamTracker, TrackerState
from exporter.ci.models import ACTIVE_STATES
from exporter.ci.services import ALL_SERVICES
from exporter.held_jobs import ActiveJob
from exporter.smallfile import FileShapeError, read_regular_file
from exporter.snapshot import FailedJob
from exporter.state_checks import (
    MAX_INT_DIGITS,
    StateError,
    _BadId,
    _bool,
    _id,
    _int,
    _job_id,
    _list,
    _name,
    _object,
    _one_line,
    _optional_int,
    _optional_time,
    _shown,
    _time,
)
from exporter.state_format import FORMAT, VERSION, TargetState
from exporter.stream_counts import CodeLimiter

# Its lines keep the logger name exporter.state: log lines show it, and filters use it.
log = logging.getLogger("exporter.state")

# Refused unread past this size. Loading takes about 9x the file's size at its peak (16 MiB,
# ~330,000 tracked jobs: 147 MiB measured), which with the process's ~60 MiB stays within the
# 256Mi memory limit of deploy/kubernetes.
MAX_STATE_BYTES = 16 * 1024 * 1024
# (service, queue id) of the queues a service has without a queue listing: batch jobs' one
# pseudo-queue has the id "" (exporter.ci.dialect.BATCH_QUEUE), which no other queue may have.
_FIXED_QUEUES = frozenset(
    (service.name, queue.queue_id)
    for service in ALL_SERVICES.values()
    for queue in service.dialect.fixed_queues
)


def load_state(
    path: str | os.PathLike[str],
    codes: CodeLimiter,
    recent_failures_for: Callable[[str], deque[FailedJob]],
) -> dict[str, TargetState]:
    """Every target's state by name ("bucket/region"), or {} when there is none to take up:
    quietly (one info line) when the file does not exist yet, after one warning naming the
    file and the problem otherwise. A record whose id is not one (a queue id, tag or JobId
    that is too long or holds a control character) is skipped, with one warning for all of
    them, rather than the file. Never raises for what the file holds, and no warning quotes
    the file's text: it may not be this exporter's."""
    where = os.fspath(path)
    try:
        # Not through a symbolic link: the exporter renames a regular file into place, so a
        # link there was put by someone else, and what it points to is none of the log's
        # business. The size is checked on the open file before anything is read.
        data = read_regular_file(where, MAX_STATE_BYTES, follow_symlinks=False)
    except FileNotFoundError:
        log.info("no state file yet: starting from a fresh baseline", extra={"state_file": where})
        return {}
    except OSError as error:
        if error.errno == errno.ELOOP:
            return _ignored(where, "it is a symbolic link, not followed (nothing of it is read)")
        return _ignored(where, f"cannot read it: {error.strerror or type(error).__name__}")
    except FileShapeError as error:
        return _ignored(where, f"cannot read it: {error}")
    skipped = _Skipped()
    try:
        states = _decode(data, codes, recent_failures_for, skipped)
    except StateError as error:
        return _ignored(where, str(error))
    if skipped.count:
        log.warning(
            "state file: records with a bad id skipped; the rest is taken up",
            extra={"state_file": where, "skipped": skipped.count, "error": skipped.first},
        )
    return states


def _ignored(where: str, problem: str) -> dict[str, TargetState]:
    log.warning(
        "state file ignored: starting from a fresh baseline",
        extra={"state_file": where, "error": problem},
    )
    return {}


@dataclass
class _Skipped:
    """The records skipped for a bad id, and the first one's problem (for the warning)."""

    count: int = 0
    first: str = ""

    def note(self, error: _BadId) -> None:
        self.count += 1
        self.first = self.first or str(error)


def _decode(
    data: bytes,
    codes: CodeLimiter,
    recent_failures_for: Callable[[str], deque[FailedJob]],
    skipped: _Skipped,
) -> dict[str, TargetState]:
    document = _parse_json(data)
    top = _object(document, "the file")
    if top.get("format") != FORMAT:
        raise StateError(f"not a state file of this exporter (format is not {FORMAT!r})")
    version = top.get("version")
    if version != VERSION or type(version) is not int:
        raise StateError(f"format version {_shown(version)}, this exporter reads {VERSION}")
    targets = _object(top.get("targets"), "targets")
    states: dict[str, TargetState] = {}
    for index, (name, value) in enumerate(targets.items()):
        # A target's name is shown when it has the shape of one (bucket/region), else its place.
        shown = repr(name) if _TARGET_NAME_RE.fullmatch(name) else f"#{index}"
        where = f"targets[{shown}]"
        _name(name, where)
        states[name] = _target(value, where, codes, recent_failures_for(name), skipped)
    return states


_TARGET_NAME_RE = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}/[a-z0-9-]{1,40}")


def _parse_json(data: bytes) -> object:
    def refuse_constant(name: str) -> object:
        raise StateError(f"not JSON: {name} is not a number")

    def bounded_int(text: str) -> int:
        if len(text.lstrip("-")) > MAX_INT_DIGITS:
            raise StateError("a number is too large")
        return int(text)

    try:
        return json.loads(
            data.decode("utf-8"), parse_constant=refuse_constant, parse_int=bounded_int
        )
    except StateError:
        raise
    except RecursionError:
        raise StateError("not a state: nested too deeply") from None
    except UnicodeDecodeError as error:
        raise StateError(f"not UTF-8 text (a bad byte at offset {error.start})") from None
    except ValueError as error:  # JSONDecodeError: its message gives a place, not the text
        raise StateError(f"not JSON: {_one_line(str(error))}") from None


def _target(
    value: object,
    where: str,
    codes: CodeLimiter,
    recent_failures: deque[FailedJob],
    skipped: _Skipped,
) -> TargetState:
    target = _object(value, where)
    state = TargetState()
    started = _object(target.get("service_started"), f"{where}.service_started")
    for i, (name, t) in enumerate(started.items()):
        _name(name, f"{where}.service_started[#{i}]")
        state.service_started[name] = _time(t, f"{where}.service_started[#{i}]")
    services = _object(target.get("services"), f"{where}.services")
    for i, (name, tags) in enumerate(services.items()):
        _name(name, f"{where}.services[#{i}]")
        tag_list = _list(tags, f"{where}.services[#{i}]")
        state.services[name] = tuple(
            _name(tag, f"{where}.services[#{i}][{j}]") for j, tag in enumerate(tag_list)
        )
    for i, item in enumerate(_list(target.get("streams"), f"{where}.streams")):
        try:
            key, tracker = _tracker(item, f"{where}.streams[{i}]", codes, recent_failures, skipped)
        except _BadId as error:
            skipped.note(error)
            continue
        if key in state.trackers:
            raise StateError(f"{where}.streams[{i}]: the same stream twice")
        state.trackers[key] = tracker
    for i, item in enumerate(_list(target.get("retired"), f"{where}.retired")):
        at = f"{where}.retired[{i}]"
        retired = _object(item, at)
        since = _time(retired.get("since"), f"{at}.since")
        try:
            key, tracker = _tracker(
                retired.get("stream"), f"{at}.stream", codes, recent_failures, skipped
            )
        except _BadId as error:
            skipped.note(error)
            continue
        if key in state.trackers or key in state.retired:
            raise StateError(f"{at}: the same stream twice")
        state.retired[key] = (since, tracker)
    for i, item in enumerate(_list(target.get("resume_at"), f"{where}.resume_at")):
        at = f"{where}.resume_at[{i}]"
        resume = _object(item, at)
        window_start = _int(resume.get("window_start"), f"{at}.window_start")
        since = _time(resume.get("since"), f"{at}.since")
        try:
            key = _stream_key(resume, at)
        except _BadId as error:
            skipped.note(error)
            continue
        state.resume_at[key] = (window_start, since)
    return state


def _stream_key(value: dict[str, object], where: str) -> StreamKey:
    service = _id(value.get("service"), f"{where}.service")
    queue_id = value.get("queue_id")
    if not (isinstance(queue_id, str) and (service, queue_id) in _FIXED_QUEUES):
        queue_id = _id(queue_id, f"{where}.queue_id")
    return StreamKey(service, queue_id, _id(value.get("tag"), f"{where}.tag"))


def _tracker(
    value: object,
    where: str,
    codes: CodeLimiter,
    recent_failures: deque[FailedJob],
    skipped: _Skipped,
) -> tuple[StreamKey, StreamTracker]:
    stream = _object(value, where)
    key = _stream_key(stream, where)
    state = TrackerState(
        window_start=_optional_int(stream.get("window_start"), f"{where}.window_start"),
        baseline_time=_optional_time(stream.get("baseline_time"), f"{where}.baseline_time"),
        baseline_fixed=_bool(stream.get("baseline_fixed"), f"{where}.baseline_fixed"),
        last_boundary=_optional_int(stream.get("last_boundary"), f"{where}.last_boundary"),
        counting=_bool(stream.get("counting"), f"{where}.counting"),
        active=_records(stream.get("active"), f"{where}.active", _active_job, skipped),
        counted=_records(stream.get("counted"), f"{where}.counted", _counted_job, skipped),
    )
    return key, StreamTracker.from_state(key, state, codes, recent_failures)


_Record = TypeVar("_Record")


def _records(
    value: object, where: str, read: Callable[[object, str], _Record], skipped: _Skipped
) -> tuple[_Record, ...]:
    """The list's records; one whose JobId is not one is skipped (noted in `skipped`)."""
    records: list[_Record] = []
    for i, item in enumerate(_list(value, where)):
        try:
            records.append(read(item, f"{where}[{i}]"))
        except _BadId as error:
            skipped.note(error)
    return tuple(records)


def _active_job(value: object, where: str) -> tuple[str, ActiveJob]:
    fields = _list(value, where)
    if len(fields) != 5:
        raise StateError(f"{where}: expected [JobId, state, creation, start, wait observed]")
    job_id, state, creation, start, observed = fields
    if not isinstance(state, str) or state not in ACTIVE_STATES:
        raise StateError(f"{where}: not an active state ({', '.join(ACTIVE_STATES)})")
    active = ActiveJob(
        state,
        _optional_time(creation, f"{where} creation"),
        _optional_time(start, f"{where} start"),
        _bool(observed, f"{where} wait observed"),
    )
    return _job_id(job_id, where), active


def _counted_job(value: object, where: str) -> tuple[str, float]:
    fields = _list(value, where)
    if len(fields) != 2:
        raise StateError(f"{where}: expected [JobId, creation]")
    creation = _time(fields[1], f"{where} creation")
    return _job_id(fields[0], where), creation
