"""/metrics, rendered once per published snapshot and format, off the scrape path.

Threads: the render thread (`Expositions._run`) renders; HTTP workers call `scrape`; a poll or
reload thread calls `published`. Everything mutable here (the formats, their renderings and
per-target parts) is guarded by `Expositions._changed`'s lock; a Rendering is immutable once
made, apart from its gzip form, which it guards itself.

The snapshot changes once per poll of a target, scrapes come every few seconds from one or two
Prometheus servers: rendering per scrape cost as much CPU as the scrape interval allowed at
10,000 streams. Here a rendering is made when a snapshot is published, for each format a scrape
asked for in the last WANTED_FOR seconds, and kept with its gzip form; scrapes of an unchanged
snapshot send those bytes. A target's families are rendered per target and kept while its
TargetSnapshot is unchanged, so a poll of one target re-renders that target only.

A scrape of a snapshot not yet rendered waits for the rendering that completes next, so it
never waits for more than one. What changes per scrape (the API call counters, the rendering
cost, process_* and python_*) is rendered per scrape and joined to the cached part: OpenMetrics'
`# EOF` once at the end, the gzip stream continued from a copy of the cached part's compressor.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.api_stats import ApiStats
from exporter.collector import SnapshotSource, snapshot_families, target_families
from exporter.self_metrics import live_registry
from exporter.snapshot import RenderCost, Snapshot, TargetSnapshot

logger = logging.getLogger("exporter.server")  # its lines are the server's

Encoder = Callable[[Collector], bytes]
TargetFamilies = Callable[[tuple[TargetSnapshot, ...]], Iterable[Metric]]
SnapshotFamilies = Callable[[Snapshot], Iterable[Metric]]

# A format nobody asked for in this long is no longer rendered at publish time (a person's
# curl asks for text once; Prometheus asks for OpenMetrics every scrape).
WANTED_FOR = 600.0
# Formats kept at once (content types differ by version and escaping, which clients choose).
MAX_FORMATS = 4
# Level 1 compresses exposition text ~8x at a fraction of the default level's CPU time.
GZIP_LEVEL = 1
_GZIP_WBITS = 31  # zlib's gzip container
EOF = b"# EOF\n"


class _Families:
    """The Collector an encoder renders: the given families, nothing else."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


class Rendering:
    """The cached part of one snapshot in one format; `failed` when rendering raised."""

    def __init__(self, snapshot: Snapshot, body: bytes, failed: bool = False) -> None:
        self.snapshot = snapshot
        self.body = body  # without OpenMetrics' # EOF
        self.failed = failed
        self._lock = threading.Lock()
        self._gzip: tuple[bytes, zlib._Compress] | None = None

    def gzip_prefix(self) -> tuple[bytes, zlib._Compress]:
        """The body compressed, and the compressor left open to continue the stream."""
        with self._lock:  # once, by the render thread or the first scrape that asks
            if self._gzip is None:
                compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
                self._gzip = (compressor.compress(self.body), compressor)
            return self._gzip

    def gzipped(self, tail: bytes) -> list[bytes]:
        """The gzip stream of body + tail: the cached prefix and what a copy of its
        compressor makes of `tail` (one gzip member, as every client reads)."""
        prefix, compressor = self.gzip_prefix()
        ending = compressor.copy()
        return [prefix, ending.compress(tail) + ending.flush(zlib.Z_FINISH)]


@dataclass
class _Format:
    """One content type: its encoder, who asked when, its rendering and per-target parts."""

    content_type: str
    encoder: Encoder
    asked: float
    gzip_asked: float = -WANTED_FOR
    rendering: Rendering | None = None
    completed: int = 0  # renderings made, failed ones too
    waiting: int = 0  # scrapes waiting for its next rendering: rendered first
    cost: RenderCost | None = None
    headers: tuple[bytes, ...] | None = None  # target families' headers, in family order
    # By id() of the TargetSnapshot they were rendered from, which the tuple keeps alive.
    parts: dict[int, tuple[TargetSnapshot, tuple[bytes, ...]]] = field(default_factory=dict)
    # Held while rendering: headers and parts are the renderer's, not the lock's.
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Response:
    """What a scrape sends: body chunks, and whether they are gzip."""

    chunks: list[bytes]
    gzip: bool
    ok: bool = True


class Expositions:
    """The cached renderings of the published snapshot; see the module's docstring.

    `target_families(targets)` yields the same families in the same order for any targets,
    their samples target by target (so per-target renderings join); `snapshot_families` yields
    the rest that comes from the snapshot; `live` is rendered on every scrape.
    """

    def __init__(
        self,
        source: Callable[[], Snapshot],
        target_families: TargetFamilies,
        snapshot_families: SnapshotFamilies,
        live: Collector,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._target_families = target_families
        self._snapshot_families = snapshot_families
        self._live = live
        self._clock = clock
        self._changed = threading.Condition()
        self._formats: dict[str, _Format] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False

    # -- the render thread ----------------------------------------------------------------

    def start(self) -> None:
        with self._changed:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="render", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()

    def published(self) -> None:
        """A new snapshot is in place: render it for the formats in demand."""
        with self._changed:
            self._changed.notify_all()

    def _run(self) -> None:
        while True:
            with self._changed:
                work = self._next_work()
                while work is None and not self._stopping:
                    self._changed.wait()
                    work = self._next_work()
                if self._stopping:
                    self._changed.notify_all()
                    return
            assert work is not None
            self._render(*work)

    def _next_work(self) -> tuple[_Format, Snapshot] | None:
        """The first format in demand whose rendering is not of the current snapshot."""
        now = self._clock()
        snapshot = self._source()
        for content_type, fmt in list(self._formats.items()):
            if now - fmt.asked > WANTED_FOR:
                del self._formats[content_type]  # and its parts and rendering with it
        stale = [
            f
            for f in self._formats.values()
            if f.rendering is None or f.rendering.snapshot is not snapshot
        ]
        if not stale:
            return None
        return max(stale, key=lambda f: f.waiting > 0), snapshot

    def _render(self, fmt: _Format, snapshot: Snapshot) -> None:
        """Renders `snapshot` in `fmt` unless that is done already; one at a time per format
        (its lock), as the parts it reuses are the format's."""
        with fmt.lock:
            with self._changed:
                if fmt.rendering is not None and fmt.rendering.snapshot is snapshot:
                    return
            started = time.perf_counter()
            try:
                rendering = Rendering(snapshot, self._body(fmt, snapshot))
                if self._clock() - fmt.gzip_asked <= WANTED_FOR:
                    rendering.gzip_prefix()
            except Exception:
                logger.exception("rendering %s failed", fmt.content_type)
                rendering = Rendering(snapshot, b"", failed=True)
            seconds = time.perf_counter() - started
            with self._changed:
                fmt.rendering = rendering
                fmt.completed += 1
                fmt.cost = RenderCost(fmt.content_type, seconds, len(rendering.body), fmt.completed)
                self._changed.notify_all()

    # -- rendering ------------------------------------------------------------------------

    def _body(self, fmt: _Format, snapshot: Snapshot) -> bytes:
        """The snapshot's part in `fmt`: per-target parts reused where the target's snapshot is
        the one they were rendered from, joined family by family."""
        if fmt.headers is None:
            fmt.headers = tuple(self._encode(fmt, [m]) for m in self._target_families(()))
        parts: dict[int, tuple[TargetSnapshot, tuple[bytes, ...]]] = {}
        for target in snapshot.targets:
            kept = fmt.parts.get(id(target))
            parts[id(target)] = (
                kept
                if kept is not None and kept[0] is target
                else (target, self._part(fmt, target))
            )
        fmt.parts = parts
        pieces: list[bytes] = []
        for index, header in enumerate(fmt.headers):
            pieces.append(header)
            pieces.extend(part[1][index] for part in parts.values())
        pieces.append(self._encode(fmt, self._snapshot_families(snapshot)))
        return b"".join(pieces)

    def _part(self, fmt: _Format, target: TargetSnapshot) -> tuple[bytes, ...]:
        """One target's sample lines, family by family (each family's header cut off)."""
        assert fmt.headers is not None
        chunks = []
        families = list(self._target_families((target,)))
        if len(families) != len(fmt.headers):
            raise ValueError("target_families must yield the same families for every target")
        for header, family in zip(fmt.headers, families, strict=True):
            text = self._encode(fmt, [family])
            if not text.startswith(header):
                raise ValueError(f"family {family.name} is not the one expected in this place")
            chunks.append(text[len(header) :])
        return tuple(chunks)

    @staticmethod
    def _encode(fmt: _Format, families: Iterable[Metric]) -> bytes:
        """Rendered without OpenMetrics' # EOF: the live part, rendered last, ends with it."""
        return fmt.encoder(_Families(families)).removesuffix(EOF)

    # -- scrapes --------------------------------------------------------------------------

    def scrape(self, encoder: Encoder, content_type: str, gzip: bool) -> Response:
        """The exposition in this format: the cached part of the current snapshot (waiting
        for the rendering that completes next when it is not there yet) and the live part."""
        rendering = self._cached(encoder, content_type, gzip)
        if rendering.failed:
            return Response([], gzip=False, ok=False)
        try:
            tail = encoder(self._live)
        except Exception:
            logger.exception("rendering %s failed", content_type)
            return Response([], gzip=False, ok=False)
        if gzip:
            return Response(rendering.gzipped(tail), gzip=True)
        return Response([rendering.body, tail], gzip=False)

    def _cached(self, encoder: Encoder, content_type: str, gzip: bool) -> Rendering:
        snapshot = self._source()
        now = self._clock()
        with self._changed:
            fmt = self._format(encoder, content_type, now)
            if gzip:
                fmt.gzip_asked = now
            rendering = fmt.rendering
            if rendering is not None and rendering.snapshot is snapshot:
                return rendering
            if self._thread is not None and not self._stopping:
                seen = fmt.completed
                fmt.waiting += 1
                self._changed.notify_all()
                while fmt.completed == seen and not self._stopping:
                    self._changed.wait()
                fmt.waiting -= 1
                return fmt.rendering or Rendering(snapshot, b"", failed=True)
        # No render thread (not started, or stopping): rendered on the scrape's own thread.
        self._render(fmt, snapshot)
        with self._changed:
            return fmt.rendering or Rendering(snapshot, b"", failed=True)

    def _format(self, encoder: Encoder, content_type: str, now: float) -> _Format:
        fmt = self._formats.get(content_type)
        if fmt is None:
            if len(self._formats) >= MAX_FORMATS:
                oldest = min(self._formats.values(), key=lambda f: f.asked)
                del self._formats[oldest.content_type]
            fmt = self._formats[content_type] = _Format(content_type, encoder, now)
        fmt.asked = now
        return fmt

    def waiting(self) -> int:
        """Scrapes now waiting for a rendering."""
        with self._changed:
            return sum(f.waiting for f in self._formats.values())

    def costs(self) -> list[RenderCost]:
        """The last rendering of each format kept: for the self metrics."""
        with self._changed:
            return [f.cost for f in self._formats.values() if f.cost is not None]


def exporter_expositions(source: SnapshotSource, stats: ApiStats, version: str) -> Expositions:
    """The exporter's /metrics: the snapshot's families cached, the self-metrics live."""

    def costs() -> list[RenderCost]:
        return expositions.costs()

    def rest(snapshot: Snapshot) -> Iterator[Metric]:
        return snapshot_families(snapshot, version)

    expositions = Expositions(source.snapshot, target_families, rest, live_registry(stats, costs))
    return expositions
