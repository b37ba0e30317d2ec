"""The scrapes-under-load benchmark's scrapers (bench/scrape_load.py): a process of their own,
each on a thread with a persistent connection, scraping again as soon as an answer is in
(were they threads of the exporter's process, they would compete with it for its GIL)."""

from __future__ import annotations

import gzip
import http.client
import math
import threading
import time
from multiprocessing.connection import Connection

from bench.scrape_load_results import ScrapeReport
from bench.scraping import ACCEPT, SCRAPE_TIMEOUT, ScraperThread
from bench.spawned import Child


class _Scraper(ScraperThread):
    def __init__(self, port: int, path: str, start: threading.Barrier, deadline: list[float]):
        super().__init__()
        self.port, self.path, self.start_line, self.deadline = port, path, start, deadline
        self.checked = False

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=SCRAPE_TIMEOUT)
        try:
            connection.connect()
        except OSError as error:
            self._fail(f"connect: {error}")
        self.start_line.wait()
        while time.monotonic() < self.deadline[0]:
            began = time.perf_counter()
            try:
                body = self._scrape(connection)
            except (OSError, http.client.HTTPException, ValueError) as error:
                self._fail(f"{type(error).__name__}: {error}")
                connection.close()  # the next request connects again
                continue
            took = time.perf_counter() - began
            if took > SCRAPE_TIMEOUT:
                self._fail("took longer than the scrape timeout")
                continue
            self.latencies.append(took)
            self.received += len(body)
        connection.close()

    def _scrape(self, connection: http.client.HTTPConnection) -> bytes:
        connection.request("GET", self.path, headers={"Accept": ACCEPT, "Accept-Encoding": "gzip"})
        response = connection.getresponse()
        body = response.read()  # IncompleteRead when shorter than Content-Length
        if response.status != 200:
            raise ValueError(f"status {response.status}")
        if not self.checked:
            # Once per scraper: the body is a whole exposition, not just 200 bytes of something.
            text = gzip.decompress(body) if response.getheader("Content-Encoding") else body
            if b"tencent_ci_up{" not in text or not text.endswith(b"# EOF\n"):
                raise ValueError("the body is not the exporter's metrics")
            self.checked = True
        return body


def _scrape_for(port: int, path: str, scrapers: int, seconds: float) -> ScrapeReport:
    deadline = [math.inf]
    start = threading.Barrier(scrapers + 1)
    threads = [_Scraper(port, path, start, deadline) for _ in range(scrapers)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    deadline[0] = started + seconds
    start.wait()
    for thread in threads:
        thread.join()
    return ScrapeReport(
        started=started,
        ended=time.monotonic(),
        latencies=[x for t in threads for x in t.latencies],
        failures=sum(t.failures for t in threads),
        errors=sorted({e for t in threads for e in t.errors})[:5],
        bytes_received=sum(t.received for t in threads),
    )


def scraper_main(conn: Connection, port: int, path: str) -> None:
    """One phase per order, (scrapers, seconds), until None or the parent is gone."""
    try:
        while (order := conn.recv()) is not None:
            scrapers, seconds = order
            conn.send(_scrape_for(port, path, scrapers, seconds))
    except EOFError:
        pass


class Scrapers(Child):
    """The scraper process, started once (spawning one costs a second or two) for every phase."""

    def __init__(self, port: int) -> None:
        super().__init__(scraper_main, port, "/metrics")

    def scrape(self, scrapers: int, seconds: float) -> ScrapeReport:
        """`scrapers` scraping for `seconds`; none: just wait."""
        if scrapers == 0:
            started = time.monotonic()
            time.sleep(seconds)
            return ScrapeReport(started, time.monotonic(), [], 0, [], 0)
        self.conn.send((scrapers, seconds))
        report: ScrapeReport = self.conn.recv()
        return report
