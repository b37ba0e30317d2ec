"""The state file: what each target's accounting needs to take up where it stopped after a
restart, so that jobs that finished while the exporter was down are counted once and none twice.

Written after every poll, atomically: a temporary file in the same directory, flushed to disk,
renamed over the old one, and the directory flushed, so a crash at any moment leaves either the
old state or the new one. Counts are not kept: counters start at 0 in a new process, as
Prometheus expects. Only where each stream's window stands, its baseline, its active jobs and
the counted jobs a window can still return.

Threads: each target's poll thread encodes its own state (it owns the trackers) and hands the
text to the shared StateFile, whose fragments, owners and writer flag are guarded by its lock;
one thread at a time writes the file, for everyone.

The format and the JSON encoding are in exporter.state_format, reading the file back and
restoring the targets in exporter.state_restore (with the strict checks of its values in
exporter.state_checks); this module saves, and every name of theirs the rest of the exporter
uses is importable from here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Mapping

from exporter.snapshot import FailedJob
from exporter.state_checks import MAX_INT_DIGITS, MAX_NAME_CHARS, MAX_TIME, StateError
from exporter.state_format import FORMAT, VERSION, TargetState, encode_target, state_document
from exporter.state_restore import MAX_STATE_BYTES, load_state
from exporter.stream_counts import CodeLimiter

__all__ = [
    "FORMAT",
    "MAX_INT_DIGITS",
    "MAX_NAME_CHARS",
    "MAX_STATE_BYTES",
    "MAX_TIME",
    "VERSION",
    "StateError",
    "StateFile",
    "TargetState",
    "encode_target",
    "load_state",
    "save_state",
]

log = logging.getLogger(__name__)


# -- writing -------------------------------------------------------------------------------


def save_state(path: str | os.PathLike[str], targets: Mapping[str, TargetState]) -> None:
    """Write every target's state to `path` atomically. Raises OSError."""
    fragments = {name: encode_target(state) for name, state in targets.items()}
    _write_atomically(os.fspath(path), state_document(fragments))


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
                    document = state_document(self._fragments)
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
