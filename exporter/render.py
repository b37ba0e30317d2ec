"""Renderings of the registry for /metrics, shared by the scrapes that arrive during one.

Threads: any HTTP worker calls Renderer.render; `_under_way` is guarded by the renderer's lock,
an Exposition's gzipped copy by its own, and its body is written once, before `done` is set.
"""

from __future__ import annotations

import gzip
import logging
import threading
from collections.abc import Callable

from prometheus_client.registry import CollectorRegistry

logger = logging.getLogger("exporter.server")  # its lines are the server's

# Level 1 compresses exposition text ~8x at a fraction of the default level's CPU time; large
# deployments render over 100 MB per scrape.
_GZIP_LEVEL = 1


class Exposition:
    """One rendering of the registry in one format, shared by the scrapes waiting for it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.body: bytes | None = None  # None: rendering failed
        self._gzipped: bytes | None = None
        self._lock = threading.Lock()

    def gzipped(self) -> bytes:
        if self.body is None:
            raise ValueError("nothing was rendered")
        with self._lock:  # compressed once, by the first scrape that asks
            if self._gzipped is None:
                self._gzipped = gzip.compress(self.body, compresslevel=_GZIP_LEVEL)
            return self._gzipped


class Renderer:
    """Renders the registry for scrapes, one rendering per format at a time.

    Rendering is CPU-bound and holds the GIL (prometheus_client takes tens of microseconds a
    series): ten scrapers arriving together would each render, and each wait for all ten. A
    scrape that arrives while its format is being rendered waits for that rendering and shares
    it instead. Its values are then at most one rendering older than its arrival; they come
    from the last poll anyway. A scrape that arrives when none is under way renders anew, so
    scrapes one after the other always see the latest snapshot.
    """

    def __init__(self, registry: CollectorRegistry, telemetry_path: str) -> None:
        self._registry = registry
        self._telemetry_path = telemetry_path
        self._lock = threading.Lock()
        self._under_way: dict[str, Exposition] = {}  # by content type

    def render(
        self, encoder: Callable[[CollectorRegistry], bytes], content_type: str
    ) -> Exposition:
        with self._lock:
            exposition = self._under_way.get(content_type)
            renders = exposition is None
            if exposition is None:
                exposition = self._under_way[content_type] = Exposition()
        if not renders:
            exposition.done.wait()
            return exposition
        try:
            exposition.body = encoder(self._registry)
        except Exception:
            logger.exception("rendering %s failed", self._telemetry_path)
        finally:
            with self._lock:
                del self._under_way[content_type]
            exposition.done.set()
        return exposition


def gzip_accepted(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() != "gzip":
            continue
        quality = params.strip().lower().removeprefix("q=").strip()
        return quality not in ("0", "0.0", "0.00", "0.000")
    return False
