"""Expositions for server tests: the exporter's own, or one collector rendered per scrape."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.api_stats import ApiStats
from exporter.collector import SnapshotSource
from exporter.exposition import Expositions, exporter_expositions
from exporter.snapshot import Snapshot, TargetSnapshot


def exporter_metrics(source: SnapshotSource, version: str = "9.9") -> Expositions:
    return exporter_expositions(source, ApiStats(), version)


def nothing(*_: object) -> Iterator[Metric]:
    return iter(())


def only(collector: Collector) -> Expositions:
    """`collector` as the whole of /metrics, rendered on every scrape."""
    empty = Snapshot()

    def no_targets(_: tuple[TargetSnapshot, ...]) -> Iterator[Metric]:
        return iter(())

    return Expositions(lambda: empty, no_targets, nothing, collector)


def steady(text: str) -> str:
    """`text` without process_* and python_gc_* lines (memory, CPU and garbage collections
    change between any two scrapes)."""
    lines = text.splitlines(keepends=True)
    return "".join(line for line in lines if not _of_process(line))


def _of_process(line: str) -> bool:
    words = line.split(" ")
    name = words[2] if line.startswith("# ") and len(words) > 2 else words[0]
    return name.startswith(("process_", "python_gc_"))


class FixedSource:
    """A SnapshotSource whose snapshot tests set (`current`), always ready."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.current = snapshot

    def snapshot(self) -> Snapshot:
        return self.current

    def ready(self) -> bool:
        return True
