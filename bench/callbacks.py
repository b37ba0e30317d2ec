"""`python3 -m bench.callbacks`: how long a failed job takes to show on /metrics, with CI's
callbacks and with polling alone, side by side in one run, and what polling costs in API calls.

Two exporters run at once in this process, each as the CLI builds it (Poller, expositions,
ExporterServer over loopback HTTP), each polling a bucket of its own on the same simulator,
every `--interval` seconds; one also receives the simulator's callbacks. Every so often (at
times that do not line up with the polls) a job fails in both buckets at once, and each
exporter's /metrics is scraped every 20 ms until its failure counter moves: that wait is the
latency. The API calls a poll makes are counted at the simulator.

Nothing here is asserted: the numbers are printed (and written to docs/benchmarks.md by hand).
"""

from __future__ import annotations

import argparse
import statistics
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from exporter import __version__
from exporter.api_stats import ApiStats
from exporter.config import CallbacksConfig, Config, ServiceConfig, TargetConfig
from exporter.credentials import Credentials
from exporter.exposition import exporter_expositions
from exporter.poller import Poller
from exporter.receiver import Callbacks
from exporter.server import ExporterServer
from exporter.simulator import SimBucket, Simulator
from exporter.simulator.callbacks import CallbackSender

SID, KEY = "AKIDbenchcallbacks000000000000000000", "bench-callbacks-key-000000000000000"
SECRET = "bench-callback-secret-0123456789"
REGION = "ap-guangzhou"
TAGS = ("Transcode", "Snapshot", "Animation")
FAILED = 'tencent_ci_jobs_finished_total{bucket="%s",queue_id="%s",region="%s",service="media"'


@dataclass
class Side:
    name: str
    bucket: SimBucket
    queue: str
    port: int = 0
    latencies: list[float] = field(default_factory=list)

    def failed(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        prefix = FAILED % (self.bucket.name, self.queue, REGION)
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(prefix) and 'state="Failed"' in line
        )


@contextmanager
def exporter(sim: Simulator, side: Side, interval: float, callbacks: bool) -> Iterator[None]:
    target = TargetConfig(
        side.bucket.name,
        REGION,
        sim.endpoint(side.bucket.name),
        Credentials(SID, KEY),
        (ServiceConfig("media", TAGS),),
    )
    receiving = CallbacksConfig("127.0.0.1:0", SECRET) if callbacks else None
    config = Config(
        targets=(target,),
        poll_interval=interval,
        clock_skew_tolerance=1.0,
        idle_tag_backoff=0,
        callbacks=receiving,
    )
    stats = ApiStats()
    poller = Poller(config, stats)
    expositions = exporter_expositions(poller, stats, __version__)
    poller.board.on_swap = expositions.published
    server = ExporterServer(("127.0.0.1", 0), poller, expositions, version=__version__)
    receiver = Callbacks(poller.deliver, stats.callbacks)
    try:
        server.start()
        receiver.configure(receiving)
        if receiver.receiver is not None:
            url = f"http://127.0.0.1:{receiver.receiver.port}/callback/{SECRET}/{{bucket}}"
            sim.send_callbacks(CallbackSender(url, queues=[side.queue]))
        side.port = server.port
        poller.start()
        yield
    finally:
        poller.stop()
        receiver.stop()
        server.stop()


def fail_and_wait(sides: Sequence[Side], timeout: float) -> None:
    before = {side.name: side.failed() for side in sides}
    started = time.monotonic()
    for side in sides:
        job = side.bucket.create_job(side.queue, TAGS[0])
        side.bucket.start_job(job)
        side.bucket.finish_job(job, "Failed", "InternalError", "bench")
    waiting = list(sides)
    while waiting and time.monotonic() - started < timeout:
        for side in list(waiting):
            if side.failed() > before[side.name]:
                side.latencies.append(time.monotonic() - started)
                waiting.remove(side)
        time.sleep(0.02)


def run(interval: float, failures: int) -> tuple[list[Side], dict[str, float]]:
    sim = Simulator({SID: KEY}, seed=8)
    sides = []
    for name in ("callbacks", "polling"):
        bucket = sim.add_bucket(f"bench-{name}-1250000000", REGION)
        sides.append(Side(name, bucket, bucket.add_queue("media", max_concurrent=50)))
    with sim, ExitStack() as stack:
        for side in sides:
            stack.enter_context(exporter(sim, side, interval, side.name == "callbacks"))
        time.sleep(1.0)  # the first polls: the baseline
        calls_before = sim.request_count(sides[1].bucket.name)
        polls_before = sim.request_count(sides[1].bucket.name, "/queue")
        for index in range(failures):
            time.sleep(interval * (0.23 + 0.61 * (index % 3) / 2))  # out of step with polls
            fail_and_wait(sides, timeout=3 * interval)
        polls = sim.request_count(sides[1].bucket.name, "/queue") - polls_before
        calls = sim.request_count(sides[1].bucket.name) - calls_before
    return sides, {"polls": polls, "calls_per_poll": calls / max(polls, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.callbacks", description=__doc__)
    p.add_argument("--interval", type=float, default=10.0, help="poll interval, seconds")
    p.add_argument("--failures", type=int, default=10, help="failed jobs measured")
    args = p.parse_args(argv)
    sides, polling = run(args.interval, args.failures)
    print(f"poll interval {args.interval:g} s, {args.failures} failed jobs per side")
    for side in sides:
        got = side.latencies
        if not got:
            print(f"{side.name:>10}: never seen")
            continue
        print(
            f"{side.name:>10}: failure to /metrics median {statistics.median(got):.3f} s,"
            f" max {max(got):.3f} s ({len(got)} seen)"
        )
    per_poll = polling["calls_per_poll"]
    polls = polling["polls"]
    print(f"API calls per poll: {per_poll:.1f} (1 queue, {len(TAGS)} tags; {polls:.0f} polls)")
    for seconds in (60, 300, 600):
        print(f"  polling every {seconds:>3} s: {per_poll * 3600 / seconds:,.0f} calls an hour")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
