"""Target 7's exporter (bench/scrape_cost.py), in a spawned process of its own:
exporter_expositions + ExporterServer over a synthetic snapshot of bench/scrape.py, publishing
changed snapshots when told to; its CPU is time.process_time() there, every thread."""

from __future__ import annotations

import resource
import time
from dataclasses import replace
from multiprocessing.connection import Connection

from bench.scrape import SnapshotSource, synthetic_snapshot
from bench.scrape_cost_results import Publish
from exporter.api_stats import ApiStats
from exporter.exposition import Expositions, exporter_expositions
from exporter.server import ExporterServer
from exporter.snapshot import Snapshot

FIRST_RENDER_TIMEOUT = 600.0  # seconds: the first scrape waits for the first rendering
POLL_EVERY = 0.01  # seconds between two looks at the renderings, while one is awaited


def changed(snapshot: Snapshot, every: bool) -> Snapshot:
    """A copy where every target (or the first) is a new TargetSnapshot: re-rendered."""
    targets = list(snapshot.targets)
    for index in range(len(targets) if every else min(1, len(targets))):
        target = targets[index]
        targets[index] = replace(target, last_poll_time=(target.last_poll_time or 0.0) + 1.0)
    return replace(snapshot, targets=tuple(targets))


def _renders(expositions: Expositions) -> dict[str, int]:
    return {cost.format: cost.renders for cost in expositions.costs()}


def _publish(board: SnapshotSource, expositions: Expositions, every: bool) -> Publish:
    """Swaps in a changed snapshot and waits until every format in demand rendered it."""
    before = _renders(expositions)
    if not before:
        raise RuntimeError("no format in demand: scrape before publishing")
    new = changed(board.current, every)
    cpu = time.process_time()
    board.current = new
    expositions.published()
    deadline = time.monotonic() + FIRST_RENDER_TIMEOUT
    while any(_renders(expositions).get(kind, 0) <= n for kind, n in before.items()):
        if time.monotonic() > deadline:
            raise RuntimeError("the published snapshot was not rendered in time")
        time.sleep(POLL_EVERY)
    cpu = time.process_time() - cpu
    costs = expositions.costs()
    return Publish(cpu, max(c.seconds for c in costs), max(c.size for c in costs))


def exporter_main(conn: Connection, shape: tuple[int, int, int]) -> None:
    """Serves a synthetic snapshot; answers "state" with (CPU seconds, renderings) and
    "publish" with a Publish, until None or the parent is gone."""
    targets, queues, tags = shape
    board = SnapshotSource(synthetic_snapshot(targets, queues, tags, tracked_jobs=1_000))
    expositions = exporter_expositions(board, ApiStats(), "bench")
    server = ExporterServer(("127.0.0.1", 0), board, expositions, version="bench")
    server.start()
    try:
        conn.send(server.port)
        while (order := conn.recv()) is not None:
            if order == "state":
                conn.send((time.process_time(), sum(_renders(expositions).values())))
            elif order == "peak rss":
                conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
            else:
                conn.send(_publish(board, expositions, every=order == "publish all"))
    except EOFError:
        pass
    finally:
        server.stop()
