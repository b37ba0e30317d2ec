"""SIGTERM while a large state is being saved: the process exits within 2 s, the file is
whole, and a restart counts no job twice (nor loses one)."""

from __future__ import annotations

import queue
import signal
import threading
import time
from pathlib import Path

from test_cli import RELOAD_ID, RELOAD_KEY, exporter_process

from exporter.api_stats import ApiStats
from exporter.config import load_config
from exporter.poller import Poller
from exporter.simulator import Simulator

BUCKET = "large-1250000000"
RUNNING_PER_QUEUE = 1200


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)


def _wait_for_line(lines: queue.Queue[str], text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        assert "Traceback" not in line
        if text in line:
            return


def _finished(poller: Poller) -> int:
    return sum(sum(s.finished.values()) for t in poller.snapshot().targets for s in t.streams)


def test_sigterm_during_a_large_save_exits_fast_and_a_restart_counts_nothing_twice(
    tmp_path: Path,
) -> None:
    sim = Simulator({RELOAD_ID: RELOAD_KEY})
    ci = sim.add_bucket(BUCKET, "ap-beijing")
    running: list[str] = []
    for n in range(3):
        queue_id = ci.add_queue("speech", name=f"asr-{n}", max_concurrent=RUNNING_PER_QUEUE)
        for _ in range(RUNNING_PER_QUEUE):
            job_id = ci.create_job(queue_id, "SpeechRecognition")
            ci.start_job(job_id)
            running.append(job_id)
    state = tmp_path / "state.json"
    config = tmp_path / "config.yml"
    with sim.start():
        config.write_text(
            "poll_interval: 1s\n"
            f"state_file: {state}\n"
            "targets:\n"
            f"  - bucket: {BUCKET}\n"
            "    region: ap-beijing\n"
            f"    endpoint: {sim.endpoint(BUCKET)}\n"
            "    services: {speech: {}}\n"
        )
        with exporter_process(config, "--log.level", "debug") as (process, _):
            lines: queue.Queue[str] = queue.Queue()
            assert process.stderr is not None
            threading.Thread(target=_lines, args=(process.stderr, lines), daemon=True).start()
            _wait_for_line(lines, "writing the state file")  # the baseline poll, saved
            # Ten jobs end; the next poll counts them, publishes, then saves: the signal comes
            # as that save begins.
            for job_id in running[:10]:
                ci.finish_job(job_id, "Success")
            _wait_for_line(lines, "writing the state file")
            process.send_signal(signal.SIGTERM)
            began = time.monotonic()
            assert process.wait(10) == 0
            assert time.monotonic() - began <= 2.0
        assert state.stat().st_size > 100_000  # a large state: 3,600 tracked jobs

        # The restart takes up the state the signal interrupted the saving of.
        restarted = Poller(
            load_config(
                str(config),
                {"TENCENTCLOUD_SECRET_ID": RELOAD_ID, "TENCENTCLOUD_SECRET_KEY": RELOAD_KEY},
            ),
            ApiStats(),
        )
        restarted.poll_once()
        assert _finished(restarted) == 0  # the ten were counted before the signal
        for job_id in running[10:15]:
            ci.finish_job(job_id, "Failed", "InternalError")
        restarted.poll_once()
        assert _finished(restarted) == 5
        restarted.stop()
