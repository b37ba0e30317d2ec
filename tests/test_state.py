"""The state file: a restart takes up each stream's accounting where it stopped (every job that
finished while the exporter was down counted once, none twice), the file is replaced atomically,
and a file that is missing, damaged or foreign gives one log line and a fresh baseline."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import threading
from collections import Counter, deque
from pathlib import Path

import pytest
from test_accounting import STARTED, T0, FakeCI, FakeJob, new_tracker, poll

from exporter import state as state_module
from exporter.accounting import StreamKey, StreamListings, StreamTracker, listing_boundary
from exporter.ci.models import FINISHED_STATES
from exporter.snapshot import FailedJob
from exporter.state import (
    FORMAT,
    VERSION,
    StateFile,
    TargetState,
    load_state,
    save_state,
)
from exporter.stream_counts import CodeLimiter

TARGET = "examplebucket-1250000000/ap-chongqing"
KEY = StreamKey("media", "q1", "Transcode")


def load(path: Path) -> dict[str, TargetState]:
    return load_state(path, CodeLimiter(50), lambda name: deque(maxlen=50))


def hex_id(rng: random.Random) -> str:
    return f"j{rng.getrandbits(128):032x}"


def polled_state() -> TargetState:
    """A target with a stream that has active and counted jobs, a retired stream and one to
    resume, as a poller would hold them."""
    ci = FakeCI(inclusive=False)
    ci.add(FakeJob("j" + "1" * 32, T0 - 3600, T0 - 3500))  # a long runner
    ci.add(FakeJob("odd-id.7", T0 - 10))  # waiting, an id of another form
    tracker = new_tracker()
    poll(tracker, ci, T0)
    ci.add(FakeJob("j" + "2" * 32, T0 + 40, T0 + 41, T0 + 50))
    poll(tracker, ci, T0 + 60)
    retired = StreamTracker(StreamKey("media", "q2", "Transcode"), CodeLimiter(50))
    retired.begin(T0 - 100, T0 - 50.5)
    return TargetState(
        service_started={"media": T0 - 0.25, "media:Animation": T0 + 30.0},
        trackers={KEY: tracker},
        retired={retired.key: (T0 + 5.5, retired)},
        resume_at={StreamKey("media", "q3", "Transcode"): (T0 - 7200, T0 - 3600.0)},
        services={"media": ("Transcode", "Animation")},
    )


def test_round_trip_restores_the_accounting_but_not_the_counts(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    saved = polled_state()
    assert saved.trackers[KEY].counts.finished == {"Success": 1}
    save_state(path, {TARGET: saved})
    failures: deque[FailedJob] = deque(maxlen=50)
    loaded = load_state(path, CodeLimiter(50), lambda name: failures)
    assert list(loaded) == [TARGET]
    restored = loaded[TARGET]
    assert restored.service_started == saved.service_started
    assert restored.services == saved.services
    assert restored.resume_at == saved.resume_at
    assert list(restored.trackers) == [KEY]
    q2 = StreamKey("media", "q2", "Transcode")
    pairs = [
        (saved.trackers[KEY], restored.trackers[KEY]),
        (saved.retired[q2][1], restored.retired[q2][1]),
    ]
    for before, after in pairs:
        expected = before.to_state()
        if not before.counting:
            # Polls had begun but never succeeded: its baseline stays where it was.
            expected = dataclasses.replace(expected, baseline_fixed=True)
        assert after.to_state() == expected
        assert after.key == before.key
        assert after.counts.recent_failures is failures
        assert not after.counts.finished and not after.counts.failures
        assert after.counts.queue_wait is None and not after.counts.run_duration
    assert restored.retired[q2][0] == T0 + 5.5
    tracker = restored.trackers[KEY]
    assert tracker.tracked_jobs == 3
    assert dict(tracker.active) == dict(saved.trackers[KEY].active)
    assert "odd-id.7" in tracker.active and "j" + "2" * 32 in tracker.seen


def test_the_file_is_compact_json_naming_its_format_and_version(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save_state(path, {TARGET: polled_state()})
    text = path.read_text()
    document = json.loads(text)
    assert (document["format"], document["version"]) == (FORMAT, VERSION)
    assert list(document["targets"]) == [TARGET]
    assert "\n" not in text and ", " not in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_missing_file_is_a_quiet_fresh_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter.state")
    assert load(tmp_path / "state.json") == {}
    assert [r.levelno for r in caplog.records] == [logging.INFO]


def valid_document() -> dict[str, object]:
    stream = {
        "service": "media",
        "queue_id": "q1",
        "tag": "Transcode",
        "window_start": T0,
        "baseline_time": T0 + 0.5,
        "baseline_fixed": False,
        "last_boundary": T0,
        "counting": True,
        "active": [["j" + "1" * 32, "Running", T0 - 10, T0 - 5, True]],
        "counted": [["j" + "2" * 32, T0 + 1]],
    }
    return {
        "format": FORMAT,
        "version": VERSION,
        "saved_at": T0,
        "targets": {
            TARGET: {
                "service_started": {"media": T0},
                "services": {"media": ["Transcode"]},
                "streams": [stream],
                "retired": [{"since": T0, "stream": {**stream, "queue_id": "q9"}}],
                "resume_at": [
                    {
                        "service": "media",
                        "queue_id": "q8",
                        "tag": "Transcode",
                        "window_start": T0,
                        "since": T0,
                    }
                ],
            }
        },
    }


def changed(path: str, value: object) -> bytes:
    """The valid document with the value at `path` (dot-separated, ints index lists)
    replaced."""
    document = valid_document()
    *parents, last = path.split(".")
    node: object = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        assert isinstance(node, dict)
        node[last] = value
    return json.dumps(document).encode()


STREAM = f"targets.{TARGET}.streams.0"


def bad_files() -> dict[str, bytes]:
    stream = valid_document()["targets"][TARGET]["streams"][0]  # type: ignore[index]
    text = json.dumps(valid_document())
    return {
        "empty": b"",
        "not json": b"state: yes\n",
        "binary": bytes(range(256)),
        "not utf-8": b'{"format": "\xff\xfe"}',
        "a list": b"[1, 2, 3]",
        "a string": b'"state"',
        "a number": b"42",
        "null": b"null",
        "nested deeply": b"[" * 100_000 + b"]" * 100_000,
        "no format": json.dumps({"version": VERSION, "targets": {}}).encode(),
        "another format": changed("format", "prometheus"),
        "older version": changed("version", 0),
        "newer version": changed("version", VERSION + 1),
        "version as text": changed("version", str(VERSION)),
        "version true": changed("version", True),
        "targets a list": changed("targets", []),
        "target a list": changed(f"targets.{TARGET}", []),
        "streams missing": changed(f"targets.{TARGET}.streams", None),
        "a stream twice": changed(f"targets.{TARGET}.streams", [stream, stream]),
        "service started text": changed(f"targets.{TARGET}.service_started.media", "soon"),
        "service started NaN": changed(f"targets.{TARGET}.service_started.media", math.nan),
        "service started inf": changed(f"targets.{TARGET}.service_started.media", math.inf),
        "service started huge": changed(f"targets.{TARGET}.service_started.media", 1e300),
        "tags not a list": changed(f"targets.{TARGET}.services.media", "Transcode"),
        "window start float": changed(f"{STREAM}.window_start", T0 + 0.5),
        "window start huge int": changed(f"{STREAM}.window_start", 10**30),
        "window start beyond any time": changed(f"{STREAM}.window_start", 10**15),
        "window start bool": changed(f"{STREAM}.window_start", True),
        "a huge literal": text.replace(
            f'"window_start": {T0}', '"window_start": ' + "9" * 5000, 1
        ).encode(),
        "NaN literal": text.replace(
            f'"baseline_time": {T0 + 0.5}', '"baseline_time": NaN', 1
        ).encode(),
        "counting a number": changed(f"{STREAM}.counting", 1),
        "baseline time text": changed(f"{STREAM}.baseline_time", "1700000000"),
        "active not a list": changed(f"{STREAM}.active", {"j": 1}),
        "active job short": changed(f"{STREAM}.active.0", ["j" + "1" * 32, "Running"]),
        "active job finished": changed(f"{STREAM}.active.0.1", "Success"),
        "active job time text": changed(f"{STREAM}.active.0.2", "yesterday"),
        "active job observed null": changed(f"{STREAM}.active.0.4", None),
        "counted job time null": changed(f"{STREAM}.counted.0.1", None),
        "counted job three fields": changed(f"{STREAM}.counted.0", ["j" + "2" * 32, T0, T0]),
        "retired since missing": changed(f"targets.{TARGET}.retired.0.since", None),
        "resume window float": changed(f"targets.{TARGET}.resume_at.0.window_start", 1.5),
    }


BAD_FILES = bad_files()

# A record whose id is not one: that record is skipped (one warning), the rest taken up.
# (what is changed, the bad value, what is left of the stream: None when the stream is skipped)
BAD_IDS: dict[str, tuple[str, object, str | None]] = {
    "service an int": (f"{STREAM}.service", 3, None),
    "queue id empty": (f"{STREAM}.queue_id", "", None),
    "queue id too long": (f"{STREAM}.queue_id", "q" * 1025, None),
    "queue id with U+0085": (f"{STREAM}.queue_id", "q\u0085", None),
    "tag with a line break": (f"{STREAM}.tag", "Trans\ncode", None),
    "active job id with a slash": (f"{STREAM}.active.0.0", "../jobs", "counted"),
    "active job id with a comma": (f"{STREAM}.active.0.0", "a,b", "counted"),
    "active job id a number": (f"{STREAM}.active.0.0", 12345, "counted"),
    "active job id with U+0085": (f"{STREAM}.active.0.0", "j\u0085", "counted"),
    "counted job id too long": (f"{STREAM}.counted.0.0", "j" * 1025, "active"),
}


def test_the_valid_document_of_these_tests_loads(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(json.dumps(valid_document()).encode())
    loaded = load(path)
    assert set(loaded[TARGET].trackers) == {KEY}
    assert len(loaded[TARGET].retired) == 1 and len(loaded[TARGET].resume_at) == 1


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_file_gives_one_warning_and_a_fresh_baseline(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(BAD_FILES[name])
    caplog.set_level(logging.INFO, logger="exporter.state")
    assert load(path) == {}
    assert len(caplog.records) == 1
    record = caplog.records[0]
    assert record.levelno == logging.WARNING
    assert record.__dict__["state_file"] == str(path)
    assert record.__dict__["error"] and "\n" not in record.__dict__["error"]


@pytest.mark.parametrize("name", sorted(BAD_IDS))
def test_a_record_with_a_bad_id_is_skipped_not_the_file(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    at, value, left = BAD_IDS[name]
    path = tmp_path / "state.json"
    path.write_bytes(changed(at, value))
    caplog.set_level(logging.INFO, logger="exporter.state")
    loaded = load(path)[TARGET]
    # The other records are all there.
    assert len(loaded.retired) == 1 and len(loaded.resume_at) == 1
    if left is None:
        assert loaded.trackers == {}
    else:
        state = loaded.trackers[KEY].to_state()
        assert (len(state.active), len(state.counted)) == ((0, 1) if left == "counted" else (1, 0))
    [record] = caplog.records
    # The retired stream of these documents shares the stream's job lists: a bad JobId twice.
    assert record.levelno == logging.WARNING
    assert record.__dict__["skipped"] == (1 if left is None else 2)
    error = record.__dict__["error"]
    assert "\n" not in error and "\x85" not in error and "q" * 30 not in error


def test_every_truncation_of_a_state_file_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    save_state(path, {TARGET: polled_state()})
    whole = path.read_bytes()
    caplog.set_level(logging.INFO, logger="exporter.state")
    for cut in range(len(whole)):
        path.write_bytes(whole[:cut])
        assert load(path) == {}, cut
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * len(whole)


def test_a_directory_or_a_fifo_in_place_of_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "state.json"
    directory.mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    caplog.set_level(logging.INFO, logger="exporter.state")
    assert load(directory) == {} and load(fifo) == {}
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 2


def test_a_failed_rename_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    save_state(path, {TARGET: polled_state()})
    old = path.read_bytes()

    def failing_replace(source: str, destination: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state_module.os, "replace", failing_replace)
    monkeypatch.setattr(state_module.os, "rename", failing_replace)
    with pytest.raises(OSError):
        save_state(path, {"other-1250000000/ap-beijing": TargetState()})
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temporary left


def test_a_crash_while_writing_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    save_state(path, {TARGET: polled_state()})
    old = path.read_bytes()
    written: list[str] = []

    def crashing_fsync(fd: int) -> None:
        # The new content is half on disk when the process dies.
        written.append(os.readlink(f"/proc/self/fd/{fd}"))
        os.ftruncate(fd, 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(state_module.os, "fsync", crashing_fsync)
    with pytest.raises(KeyboardInterrupt):
        save_state(path, {"other-1250000000/ap-beijing": TargetState()})
    assert written and written[0] != str(path)
    assert path.read_bytes() == old
    assert list(load(path)) == [TARGET]


def test_a_stale_temporary_file_does_not_matter(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save_state(path, {TARGET: polled_state()})
    (tmp_path / ".state.json.x1y2.tmp").write_bytes(b'{"format": garbage')
    save_state(path, {TARGET: polled_state()})
    assert list(load(path)) == [TARGET]


def test_state_file_keeps_every_target_and_forgets_removed_ones(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state_file = StateFile(path)
    other = "other-1250000000/ap-beijing"
    state_file.save(TARGET, polled_state())
    state_file.save(other, TargetState(service_started={"speech": T0}))
    assert set(load(path)) == {TARGET, other}
    state_file.retain({TARGET: None})
    state_file.save(TARGET, polled_state())
    assert set(load(path)) == {TARGET}
    # A late save of the removed target (its poll was finishing) cannot bring it back.
    state_file.save(other, TargetState(service_started={"speech": T0}))
    state_file.save(TARGET, polled_state())
    assert set(load(path)) == {TARGET}


def test_a_save_by_a_replaced_owner_is_refused(tmp_path: Path) -> None:
    """A target re-created by a reload (a new endpoint) has a new owner: the old poller's
    last save cannot overwrite the new one's."""
    path = tmp_path / "state.json"
    state_file = StateFile(path)
    old, new = object(), object()
    state_file.retain({TARGET: old})
    state_file.save(TARGET, polled_state(), owner=old)
    state_file.retain({TARGET: new})
    state_file.save(TARGET, TargetState(service_started={"speech": T0}), owner=new)
    state_file.save(TARGET, polled_state(), owner=old)
    assert load(path)[TARGET].trackers == {}


def test_saves_during_a_write_are_written_together_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    state_file = StateFile(path)
    real_write = state_module._write_atomically
    writing, release = threading.Event(), threading.Event()
    writes: list[set[str]] = []

    def slow_write(where: str, data: bytes) -> None:
        writes.append(set(json.loads(data)["targets"]))
        writing.set()
        assert release.wait(10)
        real_write(where, data)

    monkeypatch.setattr(state_module, "_write_atomically", slow_write)
    first = threading.Thread(target=state_file.save, args=("a/r", TargetState()))
    first.start()
    assert writing.wait(10)
    state_file.save("b/r", TargetState())  # returns at once: the first thread writes it
    state_file.save("c/r", TargetState())
    release.set()
    first.join(10)
    assert writes == [{"a/r"}, {"a/r", "b/r", "c/r"}]
    assert set(load(path)) == {"a/r", "b/r", "c/r"}
    state_file.save("d/r", TargetState())  # nobody writing: written by its own thread
    assert len(writes) == 3 and set(load(path)) == {"a/r", "b/r", "c/r", "d/r"}


def test_state_file_warns_once_while_writes_fail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "gone"
    directory.mkdir()
    path = directory / "state.json"
    state_file = StateFile(path)
    directory.rmdir()
    caplog.set_level(logging.INFO, logger="exporter.state")
    state_file.save(TARGET, polled_state())
    state_file.save(TARGET, polled_state())
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert caplog.records[0].__dict__["state_file"] == str(path)
    directory.mkdir()
    state_file.save(TARGET, polled_state())
    state_file.save(TARGET, polled_state())
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]
    assert list(load(path)) == [TARGET]


def test_a_changed_configuration_restores_only_the_streams_still_polled() -> None:
    saved = polled_state()
    saved.trackers[StreamKey("speech", "s1", "SpeechRecognition")] = new_tracker()
    now = {"media": ("Transcode", "Concat")}
    kept = saved.restricted_to(now)
    assert set(kept.trackers) == {KEY}
    assert set(kept.retired) == set(saved.retired)
    assert set(kept.resume_at) == set(saved.resume_at)
    assert kept.service_started == {"media": T0 - 0.25}  # Animation is no longer polled
    assert kept.services == {"media": ("Transcode",)}
    assert saved.added_tags(now) == {("media", "Concat")}
    # A service not polled before the restart begins as any new service does.
    assert saved.added_tags({"speech": ("SpeechRecognition",)}) == set()
    assert saved.restricted_to({"pic": ("PicProcess",)}).trackers == {}


# -- a restart at the accounting level ---------------------------------------------------------


def restarted(tracker: StreamTracker, path: Path, codes: CodeLimiter) -> StreamTracker:
    """Save the tracker's stream, start again from the file, return the new tracker."""
    save_state(path, {TARGET: TargetState(trackers={tracker.key: tracker})})
    loaded = load_state(path, codes, lambda name: deque(maxlen=50))
    restored = loaded[TARGET].trackers[tracker.key]
    STARTED.pop(id(restored), None)  # an id of a tracker gone before
    return restored


def counted_jobs(*trackers: StreamTracker) -> Counter[str]:
    """Every job of these tests fails with its own id as its code: the failure counts say which
    jobs were counted, and how often."""
    total: Counter[str] = Counter()
    for tracker in trackers:
        total.update(tracker.counts.failures)
    return total


def failing(job_id: str, created: int, started: int | None, ended: int | None) -> FakeJob:
    return FakeJob(job_id, created, started, ended, "Failed", job_id)


def test_jobs_that_finished_while_down_count_once(tmp_path: Path) -> None:
    codes = CodeLimiter(1000)
    ci = FakeCI(inclusive=True)
    long_runner = ci.add(failing("long", T0 - 3600, T0 - 3500, None))
    tracker = new_tracker()
    tracker.counts.codes = codes
    poll(tracker, ci, T0)
    ci.add(failing("before", T0 + 50, T0 + 51, T0 + 55))  # counted before the restart
    running = ci.add(failing("running", T0 + 70, T0 + 71, None))  # active at the save
    poll(tracker, ci, T0 + 60)
    ci.add(failing("edge", T0 + 100, T0 + 101, T0 + 110))  # counted; the window returns it
    poll(tracker, ci, T0 + 120)
    assert counted_jobs(tracker) == {"before": 1, "edge": 1}
    restored = restarted(tracker, tmp_path / "state.json", codes)
    # Down from T0+120 to T0+900.
    long_runner.ended = T0 + 300  # created long before any window: found by describe-by-id
    running.ended = T0 + 400
    ci.add(failing("down", T0 + 500, T0 + 501, T0 + 600))  # created and finished while down
    late = ci.add(failing("late", T0 + 800, T0 + 801, None))
    assert poll(restored, ci, T0 + 900) == 2  # the two jobs active at the save, described
    late.ended = T0 + 950
    poll(restored, ci, T0 + 960)
    poll(restored, ci, T0 + 1020)
    assert counted_jobs(restored) == {"long": 1, "running": 1, "down": 1, "late": 1}
    assert len(restored.active) == 0


def test_a_stream_whose_polls_had_not_yet_succeeded_keeps_its_baseline(tmp_path: Path) -> None:
    codes = CodeLimiter(1000)
    ci = FakeCI(inclusive=False)
    ci.add(failing("baseline", T0 - 40, T0 - 35, T0 - 31))
    tracker = new_tracker()
    tracker.counts.codes = codes
    # The first poll began at T0 and failed: the baseline is fixed, nothing committed.
    tracker.begin(listing_boundary(T0, None, 30), T0 + 30)
    restored = restarted(tracker, tmp_path / "state.json", codes)
    assert not restored.counting
    ci.add(failing("while-down", T0 + 100, T0 + 101, T0 + 200))
    # After the restart the poller's `begin` would put the baseline at the restart.
    restored.begin(listing_boundary(T0 + 600, None, 30), T0 + 630)
    boundary = listing_boundary(T0 + 600, None, 30)
    finished = ci.list(FINISHED_STATES, T0 + 600, restored.finished_listing_start(boundary))
    restored.commit(StreamListings([], finished), boundary, T0 + 600)
    assert counted_jobs(restored) == {"while-down": 1}


def run_restart_scenario(seed: int, path: Path) -> int:
    """Random jobs over random polls, some failing; the exporter restarts from its state file
    at random moments and stays down a while. Every job that finished after the first
    baseline is counted exactly once, by one process or another. Returns how many active
    jobs were carried over restarts."""
    rng = random.Random(seed)
    codes = CodeLimiter(100_000)
    ci = FakeCI(inclusive=rng.random() < 0.5, skew=rng.uniform(-30, 30))
    offset = ci.skew if rng.random() < 0.5 else None
    for _ in range(rng.randint(0, 30)):
        ci.add(random_job(rng, int(T0 + ci.skew) - rng.randint(0, 4000)))
    tracker = new_tracker()
    tracker.counts.codes = codes
    processes = [tracker]
    carried = 0
    poll(tracker, ci, T0, offset=offset)
    t = float(T0)
    for _ in range(rng.randint(50, 250)):
        ci.add(random_job(rng, int(t + ci.skew) + rng.randint(0, 300)))
        if rng.random() < 0.1:
            t += rng.uniform(0.5, 90)
            if rng.random() < 0.2:
                carried += len(tracker.active)
                tracker = restarted(tracker, path, codes)
                processes.append(tracker)
                t += rng.uniform(0, 900)  # down
            if rng.random() < 0.2:
                continue  # this poll failed
            poll(tracker, ci, t, offset=offset, race=rng.choice([0, 0, 0.7]))
    drain = max(j.ended or 0 for j in ci.jobs) - ci.skew + 1
    for k in range(6):
        poll(tracker, ci, max(t, drain) + 61 * k, offset=offset)
    expected = {j.job_id: 1 for j in ci.jobs if j.ended is not None and j.ended > T0 + ci.skew}
    assert counted_jobs(*processes) == expected, seed
    assert tracker.tracked_jobs == 0
    return carried


def random_job(rng: random.Random, created: int) -> FakeJob:
    started = created + int(rng.expovariate(1 / 20)) if rng.random() < 0.9 else None
    ended = (started if started is not None else created) + int(rng.lognormvariate(3, 1.5))
    job_id = hex_id(rng) if rng.random() < 0.9 else f"id-{rng.randrange(10**9)}"
    return failing(job_id, created, started, ended)


def test_restarts_count_every_job_exactly_once(tmp_path: Path) -> None:
    carried = [run_restart_scenario(seed, tmp_path / "state.json") for seed in range(40)]
    # Worth something only if restarts happened with jobs in flight.
    assert sum(1 for n in carried if n > 0) >= 10
