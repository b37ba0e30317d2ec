"""The simulator's callbacks (exporter.simulator.callbacks) POSTed to a receiver on loopback: the
bodies read back (exporter.ci.callback) as the simulator's truth, retries, faults, unlisted jobs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from exporter.ci.callback import CallbackEvent, parse_callback
from exporter.ci.models import Job
from exporter.ci.workflows import parse_execution
from exporter.simulator import Simulator, Stream, Workload
from exporter.simulator.callback_queue import CALLBACK_FAULT_KINDS, CallbackFault
from exporter.simulator.callbacks import CallbackSender
from exporter.simulator.model import SimBucket
from exporter.simulator.records import JobQuery, SimJob
from exporter.simulator.render import execution_body
from exporter.simulator.workflows import add_batch_job, add_workflow, start_run, steps_of

BUCKET = "cb-1250000000"
T0 = 1_700_000_000
FILE_QUEUE = "pfile0123456789abcdef0123456789ab"
FAST = (0.01, 0.02, 0.04)  # backoff: retries in tests need not wait seconds
WAIT = 10.0  # bound of every wait; a passing test never waits it out


@dataclass(frozen=True)
class Received:
    path: str
    content_type: str
    body: bytes
    at: float  # time.monotonic() when it arrived

    def event(self) -> CallbackEvent:
        return parse_callback(self.body, self.content_type)


class Receiver:
    """A callback receiver on 127.0.0.1 (an OS-chosen port): it records every POST and answers
    `status(n)` to the n-th (1-based); `hold` keeps the n-th answers for which it is true
    waiting until `release` is set."""

    def __init__(
        self,
        status: Callable[[int], int] = lambda n: 200,
        hold: Callable[[int], bool] = lambda n: False,
    ) -> None:
        self.status, self.hold = status, hold
        self.release = threading.Event()
        self.received: list[Received] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._cond:
                    receiver.received.append(
                        Received(
                            self.path, self.headers.get("Content-Type", ""), body, time.monotonic()
                        )
                    )
                    n = len(receiver.received)
                    receiver._cond.notify_all()
                if receiver.hold(n):
                    receiver.release.wait(WAIT)
                self.send_response(receiver.status(n))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def url(self, path: str = "/callback/s3cret/{bucket}") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def wait_for(self, count: int) -> list[Received]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.received) >= count, WAIT)
            return list(self.received)

    def events(self) -> list[CallbackEvent]:
        with self._cond:
            return [r.event() for r in self.received]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(seed=5)
    simulator.add_bucket(BUCKET, "ap-chongqing", services=("media", "workflow", "batch"))
    yield simulator
    simulator.stop()


def send(sim: Simulator, receiver: Receiver, **options: object) -> CallbackSender:
    options.setdefault("backoff", FAST)
    return sim.send_callbacks(CallbackSender(receiver.url(), **options))  # type: ignore[arg-type]


def truth(job: SimJob) -> Job:
    """The Job a listing or describe answer gives for the simulator's job."""
    return Job(
        job_id=job.job_id,
        tag=job.tag,
        state=job.state,
        queue_id=job.queue_id,
        creation_time=float(job.creation_time),
        start_time=None if job.start_time is None else float(job.start_time),
        end_time=None if job.end_time is None else float(job.end_time),
        code=job.code,
        message=job.message,
    )


def finish_three(bucket: SimBucket, queue_id: str) -> list[str]:
    ok, failed, cancelled = (bucket.create_job(queue_id, "Transcode", at=T0 + i) for i in range(3))
    bucket.start_job(ok, at=T0 + 5)
    bucket.finish_job(ok, at=T0 + 9)
    bucket.start_job(failed, at=T0 + 6)
    bucket.finish_job(failed, "Failed", "InternalError", "internal error, please retry", T0 + 8)
    bucket.finish_job(cancelled, "Cancel", at=T0 + 7)  # never started: no StartTime
    return [ok, failed, cancelled]


# -- bodies read back as the simulator's truth ----------------------------------------------------


@pytest.mark.parametrize("fmt", ["XML", "JSON"])
def test_task_finish_bodies_read_back_as_the_jobs_are(
    sim: Simulator, receiver: Receiver, fmt: str
) -> None:
    bucket = sim.bucket(BUCKET)
    queue_id = bucket.add_queue("media", at=T0)
    sender = send(sim, receiver, format=fmt)
    job_ids = finish_three(bucket, queue_id)
    assert sender.drain(WAIT)
    received = receiver.wait_for(3)
    assert [r.path for r in received] == [f"/callback/s3cret/{BUCKET}"] * 3
    assert {r.content_type for r in received} == {f"application/{fmt.lower()}"}
    events = receiver.events()
    assert [e.job for e in events] == [truth(bucket.job(j)) for j in job_ids]
    assert {(e.event, e.format, e.bucket, e.run_id) for e in events} == {
        ("TaskFinish", fmt, BUCKET, "")
    }
    counts = sender.counts()
    assert (counts.queued, counts.sent, counts.delivered, counts.failed) == (3, 3, 3, 0)


@pytest.mark.parametrize("fmt", ["XML", "JSON"])
def test_workflow_finish_reads_as_describing_the_run_does(
    sim: Simulator, receiver: Receiver, fmt: str
) -> None:
    bucket = sim.bucket(BUCKET)
    workflow_id = add_workflow(bucket, "ingest-flow", at=T0)
    sender = send(sim, receiver, format=fmt)
    runs = [start_run(bucket, workflow_id, at=T0 + i) for i in range(3)]
    bucket.finish_job(runs[0], at=T0 + 40)
    bucket.finish_job(runs[1], "Failed", "InternalError", "step failed", T0 + 50)
    bucket.finish_job(runs[2], "Cancel", at=T0 + 60)
    assert sender.drain(WAIT)
    events = [r.event() for r in receiver.wait_for(3)]
    for run_id, event in zip(runs, events, strict=True):
        run = bucket.job(run_id)
        described = execution_body("rid", run, "ingest-flow", steps_of(run, bucket.now()))
        assert event.job == parse_execution(described, run_id).jobs[0]
        assert (event.event, event.run_id, event.workflow_id, event.workflow_name) == (
            "WorkflowFinish",
            run_id,
            workflow_id,
            "ingest-flow",
        )
    assert events[1].job is not None and events[1].job.code  # the Type of the failed step


def test_steps_send_task_finish_naming_their_run_before_the_run(
    sim: Simulator, receiver: Receiver
) -> None:
    bucket = sim.bucket(BUCKET)
    workflow_id = add_workflow(bucket, "ingest-flow", at=T0)
    sender = send(sim, receiver, format="JSON", steps=True)
    run_id = start_run(bucket, workflow_id, at=T0)
    bucket.finish_job(run_id, "Failed", "E1", "boom", at=T0 + 30)
    steps = steps_of(bucket.job(run_id), bucket.now())
    assert sender.drain(WAIT)
    events = [r.event() for r in receiver.wait_for(len(steps) + 1)]
    *step_events, run_event = events
    assert run_event.event == "WorkflowFinish"
    assert [e.job.job_id for e in step_events if e.job] == [s.job_id for s in steps]
    for step, event in zip(steps, step_events, strict=True):
        assert event.job is not None
        assert (event.run_id, event.workflow_id, event.workflow_name) == (
            run_id,
            workflow_id,
            "ingest-flow",
        )
        assert (event.job.state, event.job.tag, event.job.queue_id) == (step.state, step.type, "")
    assert step_events[-1].job is not None and step_events[-1].job.code == "E1"


def test_only_the_events_and_queues_asked_for_are_sent(sim: Simulator, receiver: Receiver) -> None:
    bucket = sim.bucket(BUCKET)
    wanted, other = bucket.add_queue("media", at=T0), bucket.add_queue("media", at=T0)
    workflow_id = add_workflow(bucket, at=T0)
    sender = send(sim, receiver, events=("TaskFinish",), queues=(wanted, workflow_id))
    kept = bucket.create_job(wanted, "Transcode", at=T0)
    bucket.finish_job(kept, "Cancel", at=T0 + 1)
    bucket.finish_job(bucket.create_job(other, "Transcode", at=T0), "Cancel", at=T0 + 1)
    bucket.finish_job(start_run(bucket, workflow_id, at=T0), at=T0 + 2)  # WorkflowFinish not asked
    batch = add_batch_job(bucket, "Job", at=T0)  # batch jobs send no callback
    bucket.finish_job(batch, "Cancel", at=T0 + 3)
    assert sender.drain(WAIT)
    assert [e.job.job_id for e in receiver.events() if e.job] == [kept]
    assert sender.counts().queued == 1


def test_buckets_added_later_send_and_stop_ends_sending(receiver: Receiver) -> None:
    simulator = Simulator(seed=1)
    sender = send(simulator, receiver)
    bucket = simulator.add_bucket("later-1250000000")
    queue_id = bucket.add_queue("pic", at=T0)
    bucket.finish_job(bucket.create_job(queue_id, "PicProcess", at=T0), "Cancel", at=T0 + 1)
    assert sender.drain(WAIT)
    assert receiver.wait_for(1)[0].path == "/callback/s3cret/later-1250000000"
    simulator.stop()
    with pytest.raises(RuntimeError, match="not started"):
        sender.drain(0.1)
    simulator.start()  # sends again
    bucket.finish_job(bucket.create_job(queue_id, "PicProcess", at=T0), "Cancel", at=T0 + 1)
    assert sender.drain(WAIT) and len(receiver.wait_for(2)) == 2
    simulator.stop()
    assert "s3cret" not in repr(sender)


def test_a_workload_calls_back_every_job_it_finishes(sim: Simulator, receiver: Receiver) -> None:
    bucket = sim.bucket(BUCKET)
    queue_id = bucket.add_queue("media", max_concurrent=3, at=T0)
    sender = send(sim, receiver)
    workload = Workload(bucket, seed=4, streams=[Stream(queue_id, "Transcode", rate=0.2)], start=T0)
    workload.advance(T0 + 600)
    finished = [j for j in bucket.jobs() if j.state in ("Success", "Failed", "Cancel")]
    assert len(finished) > 20
    assert sender.drain(WAIT)
    events = [r.event() for r in receiver.wait_for(len(finished))]
    assert sorted(e.job.job_id for e in events if e.job) == sorted(j.job_id for j in finished)
    assert {e.job for e in events} == {truth(j) for j in finished}


# -- retries ---------------------------------------------------------------------------------------


def test_a_500_is_retried_until_it_is_delivered(sim: Simulator) -> None:
    receiver = Receiver(status=lambda n: 500 if n <= 2 else 200)
    try:
        bucket = sim.bucket(BUCKET)
        sender = send(sim, receiver)
        bucket.finish_job(bucket.create_job(bucket.add_queue("media"), "Transcode"), "Cancel")
        assert sender.drain(WAIT)
        received = receiver.wait_for(3)
        assert len({r.body for r in received}) == 1  # the same callback, three times
        counts = sender.counts()
        assert (counts.sent, counts.retried, counts.delivered, counts.failed) == (3, 2, 1, 0)
    finally:
        receiver.close()


def test_a_callback_is_given_up_after_its_retries(sim: Simulator) -> None:
    receiver = Receiver(status=lambda n: 503)
    try:
        bucket = sim.bucket(BUCKET)
        sender = send(sim, receiver, retries=2)
        queue_id = bucket.add_queue("media")
        for _ in range(2):
            bucket.finish_job(bucket.create_job(queue_id, "Transcode"), "Cancel")
        assert sender.drain(WAIT)
        counts = sender.counts()
        assert (counts.sent, counts.retried, counts.delivered, counts.failed) == (6, 4, 0, 2)
        assert counts.sent == counts.delivered + counts.failed + counts.retried
        assert [outcome for _, _, outcome in sender.history] == ["failed", "failed"]
    finally:
        receiver.close()


def test_no_answer_within_the_timeout_is_retried(sim: Simulator) -> None:
    receiver = Receiver(hold=lambda n: n == 1)  # the first answer waits until released
    try:
        bucket = sim.bucket(BUCKET)
        sender = send(sim, receiver, timeout=0.2)
        bucket.finish_job(bucket.create_job(bucket.add_queue("media"), "Transcode"), "Cancel")
        assert sender.drain(WAIT)
        counts = sender.counts()
        assert (counts.sent, counts.retried, counts.delivered) == (2, 1, 1)
    finally:
        receiver.close()


def test_an_unreachable_receiver_is_given_up(sim: Simulator) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bucket = sim.bucket(BUCKET)
    sender = sim.send_callbacks(
        CallbackSender(f"http://127.0.0.1:{port}/cb", retries=1, backoff=FAST, timeout=1.0)
    )
    bucket.finish_job(bucket.create_job(bucket.add_queue("media"), "Transcode"), "Cancel")
    assert sender.drain(WAIT)
    counts = sender.counts()
    assert (counts.sent, counts.retried, counts.failed) == (2, 1, 1)


# -- faults ----------------------------------------------------------------------------------------


def jobs_in_order(bucket: SimBucket, count: int) -> list[str]:
    queue_id = bucket.add_queue("media", at=T0)
    return [bucket.create_job(queue_id, "Transcode", at=T0 + i) for i in range(count)]


def delivered_ids(receiver: Receiver) -> list[str]:
    return [e.job.job_id for e in receiver.events() if e.job]


def test_fault_kinds_are_checked() -> None:
    assert CALLBACK_FAULT_KINDS == ("drop", "duplicate", "reorder", "delay")
    for bad in (
        {"kind": "lose"},
        {"kind": "drop", "probability": 2.0},
        {"kind": "drop", "times": 0},
        {"kind": "reorder", "after": 0},
    ):
        with pytest.raises(ValueError):
            CallbackFault(**bad)  # type: ignore[arg-type]


def test_drop(sim: Simulator, receiver: Receiver) -> None:
    bucket = sim.bucket(BUCKET)
    a, b, c = jobs_in_order(bucket, 3)
    sender = send(sim, receiver)
    sender.add_fault(CallbackFault("drop", job_id=b))
    for job_id in (a, b, c):
        bucket.finish_job(job_id, "Cancel")
    assert sender.drain(WAIT)
    assert delivered_ids(receiver) == [a, c]
    assert sender.counts().dropped == 1 and ("TaskFinish", b, "drop") in sender.history


@pytest.mark.parametrize("kind", ["drop", "delay"])
def test_a_drain_ends_when_nothing_is_left_to_send(
    sim: Simulator, receiver: Receiver, kind: str
) -> None:
    bucket = sim.bucket(BUCKET)
    (a,) = jobs_in_order(bucket, 1)
    sender = send(sim, receiver)
    sender.add_fault(CallbackFault(kind))  # the only callback: dropped, or held until release
    bucket.finish_job(a, "Cancel")
    began = time.monotonic()
    assert sender.drain(WAIT) and time.monotonic() - began < WAIT / 2
    assert receiver.events() == [] and sender.held == (kind == "delay")


def test_duplicate(sim: Simulator, receiver: Receiver) -> None:
    bucket = sim.bucket(BUCKET)
    a, b = jobs_in_order(bucket, 2)
    sender = send(sim, receiver)
    sender.add_fault(CallbackFault("duplicate", times=1))
    for job_id in (a, b):
        bucket.finish_job(job_id, "Cancel")
    assert sender.drain(WAIT)
    assert delivered_ids(receiver) == [a, a, b]
    counts = sender.counts()
    assert (counts.duplicated, counts.delivered, counts.sent) == (1, 3, 3)


def test_reorder_sends_one_after_later_ones(sim: Simulator, receiver: Receiver) -> None:
    bucket = sim.bucket(BUCKET)
    a, b, c, d = jobs_in_order(bucket, 4)
    sender = send(sim, receiver)
    sender.add_fault(CallbackFault("reorder", job_id=a, after=2))
    for job_id in (a, b, c, d):
        bucket.finish_job(job_id, "Cancel")
    assert sender.drain(WAIT)
    assert delivered_ids(receiver) == [b, c, a, d]


def test_a_reordered_callback_with_nothing_after_it_goes_at_drain(
    sim: Simulator, receiver: Receiver
) -> None:
    bucket = sim.bucket(BUCKET)
    (a,) = jobs_in_order(bucket, 1)
    sender = send(sim, receiver)
    sender.add_fault(CallbackFault("reorder", after=5))
    bucket.finish_job(a, "Cancel")
    assert sender.drain(WAIT)
    assert delivered_ids(receiver) == [a]


def test_delay_until_released(sim: Simulator, receiver: Receiver) -> None:
    bucket = sim.bucket(BUCKET)
    a, b = jobs_in_order(bucket, 2)
    sender = send(sim, receiver)
    sender.add_fault(CallbackFault("delay", job_id=a))
    for job_id in (a, b):
        bucket.finish_job(job_id, "Cancel")
    assert sender.drain(WAIT)  # everything but what is held
    assert delivered_ids(receiver) == [b] and sender.held == 1
    assert sender.release() == 1 and sender.held == 0
    assert sender.drain(WAIT)
    assert delivered_ids(receiver) == [b, a]


def test_delay_for_a_time(sim: Simulator, receiver: Receiver) -> None:
    bucket = sim.bucket(BUCKET)
    a, b = jobs_in_order(bucket, 2)
    sender = send(sim, receiver)
    sender.add_fault(CallbackFault("delay", event="TaskFinish", times=1, seconds=0.3))
    began = time.monotonic()
    for job_id in (a, b):
        bucket.finish_job(job_id, "Cancel")
    assert sender.drain(WAIT)  # waits for the delayed one
    received = {r.event().job.job_id: r.at for r in receiver.wait_for(2)}  # type: ignore[union-attr]
    assert set(received) == {a, b} and received[a] - began >= 0.3


def test_faults_match_their_event(sim: Simulator, receiver: Receiver) -> None:
    bucket = sim.bucket(BUCKET)
    (job_id,) = jobs_in_order(bucket, 1)
    workflow_id = add_workflow(bucket, at=T0)
    sender = send(sim, receiver)
    sender.add_fault(CallbackFault("drop", event="WorkflowFinish"))
    bucket.finish_job(start_run(bucket, workflow_id, at=T0), at=T0 + 1)
    bucket.finish_job(job_id, "Cancel")
    assert sender.drain(WAIT)
    assert [e.event for e in receiver.events()] == ["TaskFinish"]


def dropped_with(seed: int, receiver: Receiver) -> list[str]:
    simulator = Simulator(seed=9)
    bucket = simulator.add_bucket(BUCKET)
    job_ids = jobs_in_order(bucket, 30)
    sender = send(simulator, receiver, seed=seed)
    sender.add_fault(CallbackFault("drop", probability=0.5))
    try:
        for job_id in job_ids:
            bucket.finish_job(job_id, "Cancel")
        assert sender.drain(WAIT)
        return [job_id for _, job_id, outcome in sender.history if outcome == "drop"]
    finally:
        simulator.stop()


def test_partial_faults_are_seeded(receiver: Receiver) -> None:
    first, again, other = (dropped_with(s, receiver) for s in (1, 1, 2))
    assert first == again and 0 < len(first) < 30
    assert first != other


# -- jobs no listing shows ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["XML", "JSON"])
def test_an_unlisted_job_is_known_by_its_callback_alone(
    sim: Simulator, receiver: Receiver, fmt: str
) -> None:
    bucket = sim.bucket(BUCKET)
    listed_queue = bucket.add_queue("media", at=T0)
    sender = send(sim, receiver, format=fmt)
    job_id = bucket.create_unlisted_job(FILE_QUEUE, "FileHash", at=T0)
    bucket.start_job(job_id, at=T0 + 1)
    bucket.finish_job(job_id, "Failed", "FileNotFound", "no such object", at=T0 + 2)
    everywhere = frozenset(("media", "ai", "speech", "pic", "doc", "workflow", "batch", "file"))
    for queue_id in (FILE_QUEUE, listed_queue):
        query = JobQuery(everywhere, queue_id, "FileHash", frozenset(("Failed",)))
        assert bucket.list_jobs(query, 100) == ([], False)
    assert bucket.describe_jobs(everywhere, [job_id]) == ([], [job_id])
    assert bucket.jobs() == [] and bucket.job_count() == 0
    assert bucket.count(FILE_QUEUE, "Failed") == 0
    assert [j.job_id for j in bucket.unlisted_jobs()] == [job_id]
    assert sender.drain(WAIT)
    (event,) = receiver.events()
    assert event.job == truth(bucket.job(job_id))
    assert event.job is not None and event.job.queue_id == FILE_QUEUE
    bucket.delete_job(job_id)
    assert bucket.unlisted_jobs() == []


def test_unlisted_and_listed_jobs_keep_their_life_cycles_apart(sim: Simulator) -> None:
    bucket = sim.bucket(BUCKET)
    queue_id = bucket.add_queue("media", at=T0)
    listed = bucket.create_job(queue_id, "Transcode", at=T0)
    unlisted = bucket.create_unlisted_job(queue_id, "Transcode", at=T0)  # even in a listed queue
    assert listed != unlisted
    bucket.start_job(unlisted, at=T0 + 1)
    assert bucket.job_state(unlisted) == "Running"
    assert bucket.count(queue_id, "Running") == 0 and bucket.count(queue_id, "Submitted") == 1
    bucket.finish_job(unlisted, at=T0 + 2)
    with pytest.raises(ValueError, match="already finished"):
        bucket.finish_job(unlisted)
    with pytest.raises(ValueError, match="needs a queue id"):
        bucket.create_unlisted_job("", "Transcode")
    assert [j.job_id for j in bucket.jobs()] == [listed]
