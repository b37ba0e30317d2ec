"""CI's callbacks from the simulator: a TaskFinish or WorkflowFinish POSTed for every job or run
that finishes in the buckets a CallbackSender is attached to, with retries and faults.

Thread ownership: a sender's queue, held callbacks, faults and counters are shared under
`_cond`'s lock by the threads finishing jobs (they only append, through a bucket's on_finish,
exporter.simulator.model), the caller (faults, release, drain, counters) and the sender's own
thread, which alone renders and POSTs (its HTTP connections are its own).

What is sent: a TaskFinish for each job of the media, ai, speech, pic and doc services and for
unlisted jobs (SimBucket.create_unlisted_job), a WorkflowFinish for each run, none for batch
jobs; only the `events` asked for (CI's NotifyConfig Event), of every queue or of `queues`
only. With `steps`, a finished run also sends a TaskFinish for each of its steps (the jobs it
started, with `<Workflow>`; in no queue: QueueId absent), before its WorkflowFinish. The body is
XML or JSON (CI's ResultFormat, exporter.simulator.callback_bodies); a `{bucket}` in the URL is
the job's bucket.

Retries: CI's pages say nothing of them. A POST that fails (no connection, no answer within
`timeout`, a status other than 2xx) is tried again `retries` times (3 by default) after
`backoff` seconds (1, 2, 4 by default; the last repeats), then given up. Counters: `sent`
requests, `delivered` callbacks (a 2xx), `failed` callbacks (given up), `retried` requests
beyond a callback's first; settled, sent == delivered + failed + retried.

Faults: CallbackFault, drawn as each callback is taken (exporter.simulator.callback_queue).
drain() waits until everything taken was delivered or given up, callbacks held until release()
excepted (`held` counts them). stop() abandons what is not sent; callbacks of jobs finishing
while stopped are sent after start().
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from exporter.simulator.callback_bodies import CONTENT_TYPES, FORMATS, WorkflowRef
from exporter.simulator.callback_queue import (
    EVENTS,
    TASK_FINISH,
    WORKFLOW_FINISH,
    Callback,
    CallbackQueue,
)
from exporter.simulator.model import SimBucket
from exporter.simulator.records import SimJob
from exporter.simulator.workflows import steps_of

RETRIES = 3
BACKOFF: tuple[float, ...] = (1.0, 2.0, 4.0)
TIMEOUT = 2.0
USER_AGENT = "ci-simulator-callback"
_SILENT = frozenset(("batch",))  # services whose jobs send no callback here


class CallbackSender(CallbackQueue):
    """POSTs the callbacks of the buckets it is attached to (attach, or
    Simulator.send_callbacks) from a thread of its own (start, stop)."""

    def __init__(
        self,
        url: str,
        *,
        format: str = "XML",
        events: Iterable[str] = EVENTS,
        queues: Iterable[str] | None = None,
        steps: bool = False,
        retries: int = RETRIES,
        backoff: Sequence[float] = BACKOFF,
        timeout: float = TIMEOUT,
        seed: int = 0,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"callback format must be one of {FORMATS}, not {format!r}")
        self.events = frozenset(events)
        if not self.events <= set(EVENTS):
            raise ValueError(f"callback events must be among {EVENTS}")
        target = urlsplit(url.replace("{bucket}", "bucket"))
        if target.scheme not in ("http", "https") or not target.hostname:
            raise ValueError("the callback URL must be http:// or https:// with a host")
        if retries < 0 or not backoff or min(backoff) < 0 or timeout <= 0:
            raise ValueError("retries >= 0, a non-empty non-negative backoff, timeout > 0")
        self.url, self.format, self.steps = url, format, steps
        self.queues = None if queues is None else frozenset(queues)
        self.retries, self.backoff, self.timeout = retries, tuple(backoff), timeout
        super().__init__(seed)
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:  # not the URL: it holds the receiver's secret
        return f"CallbackSender({self.format}, events={sorted(self.events)})"

    # -- wiring --------------------------------------------------------------------------

    def attach(self, bucket: SimBucket) -> None:
        """Send the callbacks of `bucket`'s jobs and runs as they finish."""

        def finished(job: SimJob) -> None:
            self._finished(bucket, job)

        bucket.on_finish = finished

    @staticmethod
    def detach(bucket: SimBucket) -> None:
        bucket.on_finish = None

    def _finished(self, bucket: SimBucket, job: SimJob) -> None:
        """On the thread finishing the job, under the bucket's lock: queue, nothing more."""
        if job.service in _SILENT or (self.queues is not None and job.queue_id not in self.queues):
            return
        found: list[Callback] = []
        if job.service != "workflow":
            if TASK_FINISH in self.events:
                found.append(Callback(TASK_FINISH, job, bucket.name, bucket.region))
        else:
            try:
                name = bucket.queue(job.queue_id).name
            except KeyError:
                name = ""
            if self.steps and TASK_FINISH in self.events:
                found.extend(self._steps(bucket, job, name))
            if WORKFLOW_FINISH in self.events:
                found.append(Callback(WORKFLOW_FINISH, job, bucket.name, bucket.region, name))
        if found:
            with self._cond:
                self._queue.extend(found)
                self._counts["queued"] += len(found)
                self._cond.notify_all()

    @staticmethod
    def _steps(bucket: SimBucket, run: SimJob, name: str) -> list[Callback]:
        found: list[Callback] = []
        for step in steps_of(run, run.end_time or run.creation_time):
            failed = step.state == "Failed"
            job = SimJob(
                step.job_id, "", "media", step.type, step.state, step.start, step.start, step.end
            )
            job.code, job.message = (step.code, step.message) if failed else ("Success", "")
            ref = WorkflowRef(run.job_id, run.queue_id, name, step.name)
            found.append(Callback(TASK_FINISH, job, bucket.name, bucket.region, workflow=ref))
        return found

    # -- control ----------------------------------------------------------------------------

    def start(self) -> CallbackSender:
        if self._thread is None:
            self._halt.clear()
            self._thread = threading.Thread(target=self._run, name="ci-sim-callbacks", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stops sending: what is not sent yet is not sent (a retry's wait is cut short)."""
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._halt.set()
            self._cond.notify_all()
        thread.join(timeout=self.timeout + 1.0)
        self._thread = None

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every callback taken was delivered or given up (those held until
        release() excepted); False when `timeout` came first."""
        if self._thread is None:
            raise RuntimeError("the callback sender is not started")
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flush += 1
            self._cond.notify_all()
            try:
                while self._queue or self._ready or self._timed or self._reordered or self._busy:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._halt.is_set():
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._flush -= 1

    # -- the sender thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                callback = self._take()
                while callback is None:
                    if self._halt.is_set():
                        return
                    self._cond.notify_all()  # a drain waits for what was dropped or held too
                    self._cond.wait(self._next_deadline())
                    callback = self._take()
                self._busy += 1
            try:
                self._deliver(callback)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._count_down()
                    self._cond.notify_all()

    def _deliver(self, callback: Callback) -> None:
        url = self.url.replace("{bucket}", callback.bucket)
        body = callback.body(self.format)
        for _ in range(callback.copies):
            outcome = "failed"
            for attempt in range(self.retries + 1):
                if attempt and self._halt.wait(self.backoff[min(attempt, len(self.backoff)) - 1]):
                    break
                status = self._post(url, body)
                with self._cond:
                    self._counts["sent"] += 1
                    self._counts["retried"] += 1 if attempt else 0
                if status is not None and 200 <= status < 300:
                    outcome = "delivered"
                    break
            with self._cond:
                self._counts[outcome] += 1
                self.history.append((callback.event, callback.job.job_id, outcome))

    def _post(self, url: str, body: bytes) -> int | None:
        """The answer's status, or None when there was none."""
        target = urlsplit(url)
        path = (target.path or "/") + (f"?{target.query}" if target.query else "")
        https = target.scheme == "https"
        kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
        connection = kind(target.hostname or "", target.port, timeout=self.timeout)
        headers = {"Content-Type": CONTENT_TYPES[self.format], "User-Agent": USER_AGENT}
        try:
            connection.request("POST", path, body=body, headers=headers)
            answer = connection.getresponse()
            answer.read()
            return answer.status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            connection.close()
