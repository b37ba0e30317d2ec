"""The state file: what each target's accounting needs to take up where it stopped after a
restart, so that jobs that finished while the exporter was down are counted once and none twice.

Written after every poll, atomically: a temporary file in the same directory, flushed to disk,
renamed over the old one, and the directory flushed, so a crash at any moment leaves either the
old state or the new one. Counts are not kept: counters start at 0 in a new process, as
Prometheus expects. Only where each stream's window stands, its baseline, its active jobs and
the counted jobs a window can still return.

The file is read back with suspicion: one that is missing, unreadable, not JSON, of another
format or version, or holding a value of the wrong type or size gives one log line and a fresh
baseline, never a crash and never a half-restored target; one bad record is skipped alone.

Threads: each target's poll thread encodes its own state (it owns the trackers) and hands the
text to the shared StateFile, whose fragments, owners and writer flag are guarded by its lock;
one thread at a time writes the file, for everyone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from exporter.accounting import (
    ActiveJob,
    CodeLimiter,
    StreamKey,
    StreamTracker,
    TrackerState,
)
from exporter.ci.models import ACTIVE_STATES
from exporter.ci.parse import is_job_id
from exporter.ci.services import ALL_SERVICES
from exporter.smallfile import FileShapeError, read_regular_file
from exporter.snapshot import FailedJob

log = logging.getLogger(__name__)

FORMAT = "tencent-ci-exporter-state"
VERSION = 1
# Refused unread past this size. Loading takes about 9x the file's size at its peak (16 MiB,
# ~330,000 tracked jobs: 147 MiB measured), which with the process's ~60 MiB stays within the
# 256Mi memory limit of deploy/kubernetes.
MAX_STATE_BYTES = 16 * 1024 * 1024
MAX_NAME_CHARS = 1024  # a target, service, queue id, tag or JobId
MAX_TIME = 1e11  # epoch seconds (year 5138): anything beyond is garbage, not a time
MAX_INT_DIGITS = 20
# (service, queue id) of the queues a service has without a queue listing: batch jobs' one
# pseudo-queue has the id "" (exporter.ci.dialect.BATCH_QUEUE), which no other queue may have.
_FIXED_QUEUES = frozenset(
    (service.name, queue.queue_id)
    for service in ALL_SERVICES.values()
    for queue in service.dialect.fixed_queues
)


class StateError(ValueError):
    """The state file's content is not a state this exporter can take up."""


@dataclass
class TargetState:
    """One target's accounting, mirroring TargetPoller's fields of the same names."""

    # Per service (or "service:tag" for a tag added by a reload): when its polling began.
    service_started: dict[str, float] = field(default_factory=dict)
    trackers: dict[StreamKey, StreamTracker] = field(default_factory=dict)
    retired: dict[StreamKey, tuple[float, StreamTracker]] = field(default_factory=dict)
    resume_at: dict[StreamKey, tuple[int, float]] = field(default_factory=dict)
    # The tags each service was polled for when saved: a tag configured since is new.
    services: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def restricted_to(self, services: Mapping[str, Collection[str]]) -> TargetState:
        """Only the streams of the services and tags configured now; the rest are dropped,
        and configured streams missing from the state start from a baseline as new ones."""

        def wanted(key: StreamKey) -> bool:
            return key.tag in services.get(key.service, ())

        def started_wanted(name: str) -> bool:
            service, _, tag = name.partition(":")
            return service in services and (not tag or tag in services[service])

        return TargetState(
            service_started={k: t for k, t in self.service_started.items() if started_wanted(k)},
            trackers={k: v for k, v in self.trackers.items() if wanted(k)},
            retired={k: v for k, v in self.retired.items() if wanted(k)},
            resume_at={k: v for k, v in self.resume_at.items() if wanted(k)},
            services={
                name: tuple(t for t in tags if t in services[name])
                for name, tags in self.services.items()
                if name in services
            },
        )

    def added_tags(self, services: Mapping[str, Collection[str]]) -> set[tuple[str, str]]:
        """(service, tag) pairs configured now for a service that was polled before the restart
        but not for that tag: like tags added by a reload, they start from a baseline of their
        own rather than from when the service began."""
        return {
            (name, tag)
            for name, tags in services.items()
            if name in self.services
            for tag in tags
            if tag not in self.services[name]
        }


# -- writing -------------------------------------------------------------------------------


def save_state(path: str | os.PathLike[str], targets: Mapping[str, TargetState]) -> None:
    """Write every target's state to `path` atomically. Raises OSError."""
    fragments = {name: encode_target(state) for name, state in targets.items()}
    _write_atomically(os.fspath(path), _document(fragments))


def encode_target(state: TargetState) -> str:
    """One target's state as compact JSON. Call it on the thread that polls the target: it
    reads the trackers, which only that thread changes."""
    document = {
        "service_started": state.service_started,
        "services": {name: list(tags) for name, tags in state.services.items()},
        "streams": [_stream(key, tracker) for key, tracker in state.trackers.items()],
        "retired": [
            {"since": since, "stream": _stream(key, tracker)}
            for key, (since, tracker) in state.retired.items()
        ],
        "resume_at": [
            {**_key(key), "window_start": window_start, "since": since}
            for key, (window_start, since) in state.resume_at.items()
        ],
    }
    return json.dumps(document, separators=(",", ":"), allow_nan=False)


def _key(key: StreamKey) -> dict[str, str]:
    return {"service": key.service, "queue_id": key.queue_id, "tag": key.tag}


def _stream(key: StreamKey, tracker: StreamTracker) -> dict[str, object]:
    state = tracker.to_state()
    return {
        **_key(key),
        "window_start": state.window_start,
        "baseline_time": state.baseline_time,
        "baseline_fixed": state.baseline_fixed,
        "last_boundary": state.last_boundary,
        "counting": state.counting,
        "active": [
            [job_id, job.state, job.creation_time, job.start_time, job.wait_observed]
            for job_id, job in state.active
        ],
        "counted": state.counted,  # (JobId, creation) pairs: JSON writes tuples as arrays
    }


def _document(fragments: Mapping[str, str]) -> bytes:
    # The targets' JSON is spliced in as it is: each was encoded on its own poller's thread.
    header = json.dumps(
        {"format": FORMAT, "version": VERSION, "saved_at": time.time()}, separators=(",", ":")
    )
    targets = ",".join(f"{json.dumps(name)}:{text}" for name, text in fragments.items())
    return f'{header[:-1]},"targets":{{{targets}}}}}'.encode()


def _write_atomically(path: str, data: bytes) -> None:
    directory = os.path.dirname(path) or "."
    fd, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable. Some systems cannot open a directory: the rename is
    then as durable as they make it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class StateFile:
    """The exporter's state file, shared by the targets' poller threads: each saves its own
    target after its poll; the file always holds the latest state of every target saved.

    Saves that come while another thread is writing do not write again each: that thread
    writes once more when it is done, with all of them, so many targets finishing their polls
    together cost two writes, not one each."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fragments: dict[str, str] = {}
        # The targets the running configuration polls, by name, and the object that polls
        # each (None: not restricted yet). A save from anyone else writes nothing.
        self._owners: dict[str, object] | None = None
        self._lock = threading.Lock()
        self._dirty = False  # a fragment changed since the last write began
        self._writing = False  # a thread is writing, and will write again if dirty
        self._failing = ""  # the last write error, logged once until a write succeeds

    def load(
        self, codes: CodeLimiter, recent_failures_for: Callable[[str], deque[FailedJob]]
    ) -> dict[str, TargetState]:
        return load_state(self.path, codes, recent_failures_for)

    def save(self, name: str, state: TargetState, owner: object = None) -> None:
        """Record `name`'s state and see that the file is written. A file system error gives
        a warning (once while it lasts), never an exception: the next save tries again.
        `owner` is what polls the target: unless retain() named it for `name` last, the save
        writes nothing (the target was removed, or replaced, by a reload meanwhile)."""
        fragment = encode_target(state)
        with self._lock:
            if self._owners is not None and (
                name not in self._owners or self._owners[name] is not owner
            ):
                return
            self._fragments[name] = fragment
            self._dirty = True
        self._write_while_dirty()

    def _write_while_dirty(self) -> None:
        """Write the file unless another thread is writing it (that one writes again, with
        everything, when it is done)."""
        with self._lock:
            if self._writing:
                return
            self._writing = True
        try:
            while True:
                with self._lock:
                    if not self._dirty:
                        # In the same hold of the lock as the check: a save coming after
                        # it writes for itself.
                        self._writing = False
                        return
                    self._dirty = False
                    document = _document(self._fragments)
                log.debug("writing the state file", extra={"bytes": len(document)})
                self._write(document)
        except BaseException:
            with self._lock:
                self._writing = False
            raise

    def retain(self, owners: Mapping[str, object]) -> None:
        """The targets the running configuration polls (name -> what polls it): any other
        leaves the file now, and no save can bring it back. The check and the insert of a
        save hold the same lock as this, so no interleaving undoes it."""
        with self._lock:
            self._owners = dict(owners)
            for name in [n for n in self._fragments if n not in owners]:
                del self._fragments[name]
                self._dirty = True
        self._write_while_dirty()

    def _write(self, document: bytes) -> None:
        try:
            _write_atomically(self.path, document)
        except OSError as error:
            problem = error.strerror or type(error).__name__
            if problem != self._failing:
                log.warning(
                    "cannot write the state file; a restart would start from a fresh baseline",
                    extra={"state_file": self.path, "error": problem},
                )
            self._failing = problem
            return
        if self._failing:
            log.info("state file written again", extra={"state_file": self.path})
            self._failing = ""


# -- reading -------------------------------------------------------------------------------


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


class _BadId(StateError):
    """A service, queue id, tag or JobId that is not one: its record is skipped, not the file."""


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


# -- strict types ----------------------------------------------------------------------------


def _object(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise StateError(f"{where}: expected an object, found {_kind(value)}")
    return value


def _list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise StateError(f"{where}: expected a list, found {_kind(value)}")
    return value


def _name(value: object, where: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_CHARS:
        raise StateError(f"{where}: expected a name of 1 to {MAX_NAME_CHARS} characters")
    if not value.isprintable():
        raise StateError(f"{where}: a name with unprintable characters")
    return value


def _id(value: object, where: str) -> str:
    """A stream's service, queue id or tag: a bad one skips its record (_BadId)."""
    try:
        return _name(value, where)
    except StateError as error:
        raise _BadId(str(error)) from None


def _job_id(value: object, where: str) -> str:
    # The id may be described by id again: it goes into a URL path.
    if not (isinstance(value, str) and 0 < len(value) <= MAX_NAME_CHARS and is_job_id(value)):
        raise _BadId(
            f"{where}: not a job id (1 to {MAX_NAME_CHARS} printable characters, no space,"
            " comma or slash)"
        )
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise StateError(f"{where}: expected true or false, found {_kind(value)}")
    return value


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_TIME:
        raise StateError(f"{where}: expected a whole number of seconds, found {_shown(value)}")
    return value


def _time(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StateError(f"{where}: expected a time, found {_kind(value)}")
    number = float(value)
    if not math.isfinite(number) or abs(number) > MAX_TIME:
        raise StateError(f"{where}: not a plausible time: {_shown(value)}")
    return number


def _optional_int(value: object, where: str) -> int | None:
    return None if value is None else _int(value, where)


def _optional_time(value: object, where: str) -> float | None:
    return None if value is None else _time(value, where)


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "text", bool: "true or false"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _shown(value: object) -> str:
    """A value of the file as a warning shows it: a short number as it is, anything else by
    its kind alone. The file's text is never quoted: it may not be this exporter's."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and len(repr(value)) <= 15:
        return repr(value)
    return _kind(value)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]
