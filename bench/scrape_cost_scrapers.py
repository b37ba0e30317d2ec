"""Target 7's scrapers (bench/scrape_cost.py), in a spawned process of their own: threads with
persistent connections, asking as Prometheus does (OpenMetrics, gzip), so that they do not
compete with the exporter for its GIL nor count in its CPU."""

from __future__ import annotations

import gzip
import http.client
import math
import threading
import time
from multiprocessing.connection import Connection

from bench.scrape import count_samples
from bench.scrape_cost_exporter import FIRST_RENDER_TIMEOUT
from bench.scrape_cost_results import Level, Sizes
from bench.scraping import ACCEPT, SCRAPE_TIMEOUT, ScraperThread


def _request(connection: http.client.HTTPConnection, compressed: bool) -> tuple[str, bytes]:
    headers = {"Accept": ACCEPT, "Accept-Encoding": "gzip" if compressed else "identity"}
    connection.request("GET", "/metrics", headers=headers)
    response = connection.getresponse()
    body = response.read()  # IncompleteRead when shorter than Content-Length
    if response.status != 200:
        raise ValueError(f"status {response.status}")
    if compressed and response.getheader("Content-Encoding") != "gzip":
        raise ValueError("asked for gzip, answered without")
    return response.getheader("Content-Type", ""), body


class _Scraper(ScraperThread):
    """One connection: connects (and asks /healthz, so the server has taken it in), waits at
    the start line, then scrapes `scrapes` times."""

    def __init__(self, port: int, scrapes: int, start: threading.Barrier) -> None:
        super().__init__()
        self.port, self.scrapes, self.start_line = port, scrapes, start
        self.connected = threading.Event()

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=SCRAPE_TIMEOUT)
        try:
            connection.request("GET", "/healthz")
            connection.getresponse().read()
        except (OSError, http.client.HTTPException) as error:
            self._fail(f"connect: {error}")
        self.connected.set()
        self.start_line.wait()
        for _ in range(self.scrapes):
            began = time.perf_counter()
            try:
                _, body = _request(connection, compressed=True)
            except (OSError, http.client.HTTPException, ValueError) as error:
                self._fail(f"{type(error).__name__}: {error}")
                connection.close()  # the next request connects again
                continue
            took = time.perf_counter() - began
            if took > SCRAPE_TIMEOUT or not body.startswith(b"\x1f\x8b"):
                self._fail("slower than the scrape timeout" if body else "empty body")
                continue
            self.latencies.append(took)
            self.received += len(body)
        connection.close()


def _level(conn: Connection, port: int, scrapers: int, scrapes: int) -> Level:
    """Connects the scrapers, says "ready", and on "go" lets them scrape."""
    start = threading.Barrier(scrapers + 1)
    crew = [_Scraper(port, scrapes, start) for _ in range(scrapers)]
    for scraper in crew:
        scraper.start()
    for scraper in crew:
        scraper.connected.wait()
    conn.send("ready")
    conn.recv()
    began = time.perf_counter()
    start.wait()
    for scraper in crew:
        scraper.join()
    return Level(
        scrapers=scrapers,
        scrapes=sum(len(s.latencies) for s in crew),
        failed=sum(s.failures for s in crew),
        errors=tuple(sorted({e for s in crew for e in s.errors})[:5]),
        cpu=math.nan,  # the parent fills it in from the exporter's process
        wall=time.perf_counter() - began,
        renderings=0,
        latencies=tuple(x for s in crew for x in s.latencies),
        received=sum(s.received for s in crew),
    )


def _sizes(port: int) -> Sizes:
    """A gzip scrape (the first waits for the first rendering) and an identity one."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=FIRST_RENDER_TIMEOUT)
    try:
        content_type, packed = _request(connection, compressed=True)
        _, plain = _request(connection, compressed=False)
    finally:
        connection.close()
    problems: list[str] = []
    try:
        unpacked = gzip.decompress(packed)
    except (OSError, EOFError) as error:
        problems.append(f"the gzip body does not decompress: {error}")
        unpacked = b""
    for name, text in (("gzip", unpacked), ("identity", plain)):
        if not text.startswith(b"# HELP ") or not text.endswith(b"# EOF\n"):
            problems.append(f"the {name} body is not a whole OpenMetrics exposition")
        elif text.count(b"# EOF\n") != 1 or b"tencent_ci_up{" not in text:
            problems.append(f"the {name} body is not the exporter's metrics")
    if not content_type.startswith("application/openmetrics-text"):
        problems.append(f"answered {content_type!r}, not OpenMetrics")
    return Sizes(content_type, len(packed), len(plain), count_samples(plain), tuple(problems))


def scrapers_main(conn: Connection, port: int) -> None:
    """("level", K, S) or ("sizes",), until None or the parent is gone."""
    try:
        while (order := conn.recv()) is not None:
            if order[0] == "sizes":
                conn.send(_sizes(port))
            else:
                _, scrapers, scrapes = order
                conn.send(_level(conn, port, scrapers, scrapes))
    except EOFError:
        pass
