"""/metrics, rendered once per published snapshot and format, off the scrape path.

Threads: the render thread (`Expositions._run`) renders; HTTP workers call `scrape`; a poll or
reload thread calls `published`. The formats and their renderings are guarded by
`Expositions._changed`'s lock; a format's parts and caches belong to whoever holds its own
`lock` (the render thread, or a scrape rendering on its own thread when there is none); a
Rendering is immutable once made, apart from a gzip form made on demand under its own lock.

The snapshot changes once per poll of a target, scrapes come every few seconds from one or two
Prometheus servers: rendering per scrape cost as much CPU as the scrape interval allowed at
10,000 streams. Here a snapshot is rendered when it is published, for each format scrapes
asked for more than once, the last time within WANTED_FOR seconds, and kept as pieces: each
family's header, then each target's samples of it. A target's pieces (and their deflated
copies) are reused while its TargetSnapshot is the same object, so a poll of one target
renders, and compresses, that target only; the pieces are sent as they are, never joined
into one copy.

A scrape of a snapshot not yet rendered waits for the rendering that completes next (never for
two), and for at most `patience` seconds when an older rendering can be sent instead. What
changes per scrape (API calls, rendering costs, process_* and python_*) is rendered per scrape
and sent last: OpenMetrics' `# EOF` ends it, and its gzip form ends the one gzip member the
pieces' raw deflate blocks (each ended by a sync flush) began.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporter.api_stats import ApiStats
from exporter.collector import SnapshotSource, snapshot_families, target_families
from exporter.encode import sample_lines
from exporter.self_metrics import live_registry
from exporter.snapshot import RenderCost, Snapshot, TargetSnapshot

logger = logging.getLogger("exporter.server")  # its lines are the server's

Encoder = Callable[[Collector], bytes]
TargetFamilies = Callable[[tuple[TargetSnapshot, ...]], Iterable[Metric]]
SnapshotFamilies = Callable[[Snapshot], Iterable[Metric]]

# A format nobody asked for in this long is no longer rendered at publish time (a person's
# curl asks for text once; Prometheus asks for OpenMetrics every scrape).
WANTED_FOR = 600.0
# How long a scrape waits for the rendering of a new snapshot when an older one can be sent.
DEFAULT_PATIENCE = 5.0
# Level 1 compresses exposition text ~20x at a fraction of the default level's CPU time.
GZIP_LEVEL = 1
# A gzip member's header: no name, no time, OS unknown (RFC 1952).
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"
EOF = b"# EOF\n"


def format_of(content_type: str) -> str:
    """The format a content type's bytes are in: what the cache is keyed and labelled by.

    Clients choose versions and escapings; for this exporter's names (all legacy-valid) only
    OpenMetrics vs text and the `dots` escaping change a byte, so there are four formats at
    most, whatever clients send (and no client text becomes a label value)."""
    name = "openmetrics" if content_type.startswith("application/openmetrics-text") else "text"
    return name + "-dots" if "escaping=dots" in content_type else name


def _deflated(piece: bytes) -> bytes:
    """`piece` as raw deflate blocks ending in a sync flush: such runs join into one stream."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(piece) + compressor.flush(zlib.Z_SYNC_FLUSH)


def _identity(family: Metric) -> tuple[str, str, str, str]:
    """What a family's header is rendered from."""
    return (family.name, family.documentation, family.type, family.unit)


class _Families:
    """The Collector an encoder renders: the given families, nothing else."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


class Rendering:
    """The cached part of one snapshot in one format: its pieces, in order; `failed` when
    rendering raised."""

    def __init__(self, snapshot: Snapshot, pieces: list[bytes], failed: bool = False) -> None:
        self.snapshot = snapshot
        self.pieces = pieces  # without OpenMetrics' # EOF
        self.size = sum(len(piece) for piece in pieces)
        self.failed = failed
        self._lock = threading.Lock()
        self._gzip: tuple[list[bytes], int] | None = None  # deflated pieces, CRC-32 of all

    def deflate(self, cache: Callable[[bytes], bytes] = _deflated) -> None:
        """Makes the gzip form (once), `cache` giving each piece's deflated copy."""
        with self._lock:
            if self._gzip is None:
                crc = 0
                for piece in self.pieces:
                    crc = zlib.crc32(piece, crc)
                self._gzip = ([cache(piece) for piece in self.pieces], crc)

    def identity(self, tail: bytes) -> list[bytes]:
        return [*self.pieces, tail]

    def gzipped(self, tail: bytes) -> list[bytes]:
        """One gzip member: the pieces' deflate blocks, then `tail` in the final block."""
        self.deflate()
        assert self._gzip is not None
        deflated, crc = self._gzip
        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        ending = compressor.compress(tail) + compressor.flush(zlib.Z_FINISH)
        trailer = struct.pack("<II", zlib.crc32(tail, crc), (self.size + len(tail)) & 0xFFFFFFFF)
        return [GZIP_HEADER, *deflated, ending + trailer]


@dataclass
class _Format:
    """One format: its encoder, who asked when, its rendering, and what renderings reuse."""

    name: str
    encoder: Encoder
    asked: float
    gzip_asked: float = -WANTED_FOR
    rendering: Rendering | None = None
    completed: int = 0  # renderings made, failed ones too
    waiting: int = 0  # scrapes waiting for its next rendering: rendered first, never dropped
    # Scrapes that asked for it: a format asked for once (a person's curl) is rendered when
    # asked, one asked for again (a scraper) also at every publish.
    asks: int = 0
    cost: RenderCost | None = None
    # Held while rendering; what follows is the renderer's, not `_changed`'s.
    lock: threading.Lock = field(default_factory=threading.Lock)
    headers: tuple[bytes, ...] | None = None  # target families' headers, in family order
    families: tuple[tuple[str, str, str, str], ...] = ()  # what each header was rendered from
    # By id() of the TargetSnapshot they were rendered from, which the tuple keeps alive.
    parts: dict[int, tuple[TargetSnapshot, tuple[bytes, ...]]] = field(default_factory=dict)
    # id() of a piece -> (the piece, its deflated copy), for the pieces of the last rendering.
    deflated: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)


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
        """The format to render next: one a scrape waits for, else any asked for more than
        once whose rendering is not of the current snapshot. Formats out of demand are
        dropped."""
        now = self._clock()
        snapshot = self._source()
        for name, fmt in list(self._formats.items()):
            if now - fmt.asked > WANTED_FOR and not fmt.waiting:
                del self._formats[name]  # and its pieces and rendering with it
        stale = [
            f
            for f in self._formats.values()
            if (f.waiting or f.asks > 1)
            and (f.rendering is None or f.rendering.snapshot is not snapshot)
        ]
        if not stale:
            return None
        return max(stale, key=lambda f: f.waiting > 0), snapshot

    def _render(self, fmt: _Format, snapshot: Snapshot) -> None:
        """Renders `snapshot` in `fmt` unless that is done already; one at a time per format."""
        with fmt.lock:
            with self._changed:
                if fmt.rendering is not None and fmt.rendering.snapshot is snapshot:
                    return
                zipped = self._clock() - fmt.gzip_asked <= WANTED_FOR
            started = time.perf_counter()
            try:
                rendering = Rendering(snapshot, self._pieces(fmt, snapshot))
                if zipped:
                    rendering.deflate(self._deflate_cache(fmt, rendering.pieces))
            except Exception:
                logger.exception("rendering %s failed", fmt.name)
                rendering = Rendering(snapshot, [], failed=True)
            seconds = time.perf_counter() - started
            with self._changed:
                fmt.rendering = rendering
                fmt.completed += 1
                fmt.cost = RenderCost(fmt.name, seconds, rendering.size, fmt.completed)
                self._changed.notify_all()

    # -- rendering (under the format's lock) ----------------------------------------------

    def _pieces(self, fmt: _Format, snapshot: Snapshot) -> list[bytes]:
        """The snapshot's pieces in `fmt`: target parts reused where the target's snapshot is
        the one they were rendered from, interleaved family by family."""
        if fmt.headers is None:
            empty = list(self._target_families(()))
            fmt.families = tuple(_identity(m) for m in empty)
            fmt.headers = tuple(self._encode(fmt, [m]) for m in empty)
        parts: dict[int, tuple[TargetSnapshot, tuple[bytes, ...]]] = {}
        for target in snapshot.targets:
            kept = fmt.parts.get(id(target))
            if kept is None or kept[0] is not target:
                kept = (target, self._part(fmt, target))
            parts[id(target)] = kept
        fmt.parts = parts
        ordered = [parts[id(target)][1] for target in snapshot.targets]
        pieces: list[bytes] = []
        for index, header in enumerate(fmt.headers):
            pieces.append(header)
            pieces.extend(chunks[index] for chunks in ordered if chunks[index])
        pieces.append(self._encode(fmt, self._snapshot_families(snapshot)))
        return pieces

    def _part(self, fmt: _Format, target: TargetSnapshot) -> tuple[bytes, ...]:
        """One target's sample lines, family by family (each family's header cut off)."""
        assert fmt.headers is not None
        families = list(self._target_families((target,)))
        if len(families) != len(fmt.headers):
            raise ValueError("target_families must yield the same families for every target")
        chunks = []
        fast = fmt.name in ("text", "openmetrics")  # names as they are (not dots-escaped)
        for header, expected, family in zip(fmt.headers, fmt.families, families, strict=True):
            if _identity(family) != expected:
                raise ValueError(f"family {family.name} is not the one expected here")
            lines = sample_lines(family, fmt.name == "openmetrics") if fast else None
            if lines is None:
                lines = self._encode(fmt, [family])[len(header) :]
            chunks.append(lines)
        return tuple(chunks)

    @staticmethod
    def _encode(fmt: _Format, families: Iterable[Metric]) -> bytes:
        """Rendered without OpenMetrics' # EOF: the live part, rendered last, ends with it."""
        return fmt.encoder(_Families(families)).removesuffix(EOF)

    @staticmethod
    def _deflate_cache(fmt: _Format, pieces: list[bytes]) -> Callable[[bytes], bytes]:
        """Deflated pieces of the last rendering reused; the cache then holds this one's."""
        previous, fmt.deflated = fmt.deflated, {}

        def deflated(piece: bytes) -> bytes:
            kept = previous.get(id(piece))
            copy = kept[1] if kept is not None and kept[0] is piece else _deflated(piece)
            fmt.deflated[id(piece)] = (piece, copy)
            return copy

        return deflated

    # -- scrapes --------------------------------------------------------------------------

    def scrape(
        self,
        encoder: Encoder,
        content_type: str,
        gzip: bool,
        patience: float = DEFAULT_PATIENCE,
    ) -> Response:
        """The exposition in this format: the cached part of the current snapshot (waiting
        for the rendering that completes next when it is not there yet, at most `patience`
        seconds when an older one can be sent) and the live part."""
        rendering = self._cached(encoder, content_type, gzip, patience)
        if rendering.failed:
            return Response([], gzip=False, ok=False)
        try:
            tail = encoder(self._live)
        except Exception:
            logger.exception("rendering %s failed", content_type)
            return Response([], gzip=False, ok=False)
        if gzip:
            return Response(rendering.gzipped(tail), gzip=True)
        return Response(rendering.identity(tail), gzip=False)

    def _cached(
        self, encoder: Encoder, content_type: str, gzip: bool, patience: float
    ) -> Rendering:
        with self._changed:
            snapshot = self._source()
            fmt = self._format(encoder, content_type, gzip)
            older = fmt.rendering
            if older is not None and older.snapshot is snapshot:
                return older
            if self._thread is not None and self._thread.is_alive() and not self._stopping:
                return self._wait(fmt, older, patience) or Rendering(snapshot, [], failed=True)
        # No render thread (not started, stopped, or dead): rendered on this thread.
        self._render(fmt, snapshot)
        with self._changed:
            return fmt.rendering or Rendering(snapshot, [], failed=True)

    def _wait(self, fmt: _Format, older: Rendering | None, patience: float) -> Rendering | None:
        """The next rendering of `fmt`, or `older` after `patience` seconds when it is a
        rendering to send (a failed one is not). Called under `_changed`."""
        seen = fmt.completed
        fmt.waiting += 1
        self._changed.notify_all()
        deadline = time.monotonic() + patience
        try:
            while fmt.completed == seen and not self._stopping:
                left = deadline - time.monotonic()
                if older is not None and not older.failed and left <= 0:
                    return older
                self._changed.wait(left if older is not None and not older.failed else None)
        finally:
            fmt.waiting -= 1
        return fmt.rendering

    def _format(self, encoder: Encoder, content_type: str, gzip: bool) -> _Format:
        now = self._clock()
        name = format_of(content_type)
        fmt = self._formats.get(name)
        if fmt is None:
            fmt = self._formats[name] = _Format(name, encoder, now)
        fmt.asked = now
        fmt.asks += 1
        if gzip:
            fmt.gzip_asked = now
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
