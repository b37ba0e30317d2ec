"""The benchmark's other processes: the exporter (its real Poller, over HTTP) and the cron-script
baseline (cos-python-sdk-v5), each alone in a process, so that the CPU time, the traced memory
and the resident size measured are its own and not the simulator's.

Each agent runs with its own freezegun clock, moved to the instant the parent names, so that
both sides of every request agree on the time while the parent steps simulated time by the
poll interval. The parent talks to an agent over a pipe: ("init", spec) once, then
(command, argument) pairs; every answer is ("ok", value) or ("error", traceback text).

The exporter agent is in bench/agents_exporter.py; the specs and reports that go over the
pipe are in bench/agents_specs.py.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

from bench.agents_clock import Frozen
from bench.agents_exporter import ExporterAgent
from bench.agents_specs import BaselineReport, BaselineSpec, ExporterSpec

# How long the parent waits for an agent's answer before it gives up on it.
ANSWER_TIMEOUT = 900.0
CST = timezone(timedelta(hours=8))


class BaselineAgent:
    """What a user's cron script does: every run, for every queue and tag, list the jobs of all
    states created in the last `lookback` seconds, every page, through cos-python-sdk-v5, and
    count them by state."""

    def __init__(self, spec: BaselineSpec) -> None:
        # Imported here: only this process needs the SDK.
        from qcloud_cos import CosConfig, CosS3Client

        self.spec = spec
        self.clock = Frozen(spec.frozen_at)
        self.clients: dict[str, Any] = {}
        for target in spec.targets:
            parts = urlsplit(target.endpoint)
            host = parts.hostname or "127.0.0.1"
            # IP and Port say where to connect; Domain becomes the (signed) Host header.
            config = CosConfig(
                Region=target.region,
                SecretId=spec.secret_id,
                SecretKey=spec.secret_key,
                Scheme=parts.scheme,
                IP=host,
                Port=parts.port,
                Domain=parts.netloc,
                Timeout=30,
            )
            self.clients[target.bucket] = CosS3Client(config)

    def run(self, at: float) -> BaselineReport:
        self.clock.move_to(at)
        cpu = time.process_time()
        since = datetime.fromtimestamp(at - self.spec.lookback, CST)
        self._since = since.strftime("%Y-%m-%dT%H:%M:%S+0800")
        self._requests = 0
        states: Counter[str] = Counter()
        for target in self.spec.targets:
            client = self.clients[target.bucket]
            for queue_id in self._queue_ids(client, target.bucket):
                for tag in target.tags:
                    states.update(self._states(client, target.bucket, queue_id, tag))
        return BaselineReport(
            requests=self._requests,
            jobs=sum(states.values()),
            states=dict(states),
            cpu=time.process_time() - cpu,
        )

    def _queue_ids(self, client: Any, bucket: str) -> list[str]:
        ids: list[str] = []
        for page in range(1, 1001):
            answer = client.ci_get_media_queue(
                Bucket=bucket, State="All", PageNumber=str(page), PageSize="100"
            )
            self._requests += 1
            listed = answer.get("QueueList") or []
            ids.extend(queue["QueueId"] for queue in listed)
            if not listed or len(ids) >= int(answer.get("TotalCount") or 0):
                break
        return ids

    def _states(self, client: Any, bucket: str, queue_id: str, tag: str) -> Counter[str]:
        states: Counter[str] = Counter()
        token = ""
        while True:
            answer = client.ci_list_media_jobs(
                Bucket=bucket,
                Tag=tag,
                QueueId=queue_id,
                StartCreationTime=self._since,
                States="All",
                Size=self.spec.page_size,
                NextToken=token,
            )
            self._requests += 1
            states.update(job["State"] for job in answer.get("JobsDetail") or [])
            token = answer.get("NextToken") or ""
            if not token:
                return states

    def close(self) -> None:
        self.clock.stop()


def main(conn: Connection, role: str) -> None:
    """An agent process: build the agent from the spec sent first, then answer commands."""
    agent: ExporterAgent | BaselineAgent | None = None
    try:
        spec = conn.recv()
        if role == "exporter":
            exporter = agent = ExporterAgent(spec)
            commands: dict[str, Callable[[Any], object]] = {
                "poll": exporter.poll,
                "poll_twin": exporter.poll_twin,
                "finish": exporter.finish,
            }
        else:
            baseline = agent = BaselineAgent(spec)
            commands = {"run": baseline.run}
        conn.send(("ok", None))
        while True:
            command, argument = conn.recv()
            if command == "stop":
                agent.close()
                conn.send(("ok", None))
                return
            conn.send(("ok", commands[command](argument)))
    except EOFError:  # the parent went away
        return
    except BaseException:
        conn.send(("error", traceback.format_exc()))


class AgentError(Exception):
    pass


class Agent:
    """The parent's handle on one agent process (spawned, so it shares nothing with the
    parent: no simulator, no frozen clock, no threads)."""

    def __init__(self, role: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.role = role
        self._conn, child = context.Pipe()
        self._process = context.Process(target=main, args=(child, role), daemon=True)
        self._process.start()
        child.close()

    def init(self, spec: ExporterSpec | BaselineSpec) -> None:
        self._conn.send(spec)
        self._answer()

    def call(self, command: str, argument: object = None) -> Any:
        self._conn.send((command, argument))
        return self._answer()

    def _answer(self) -> Any:
        if not self._conn.poll(ANSWER_TIMEOUT):
            raise AgentError(f"{self.role} agent gave no answer within {ANSWER_TIMEOUT:g}s")
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError):
            raise AgentError(f"{self.role} agent died") from None
        if status != "ok":
            raise AgentError(f"{self.role} agent failed:\n{value}")
        return value

    def close(self) -> None:
        try:
            if self._process.is_alive():
                self.call("stop")
        except (AgentError, OSError):
            pass
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        self._conn.close()
