"""Bounded HTTP/1.1 connection handling: one loop accepts and reads, a fixed pool serves.

Threads: the loop thread ("exporter-http") owns the listening socket, the selector and every
connection that is not with a worker (its buffer, its state, the limit episode). A worker
("exporter-http-worker") owns the one connection it serves, from the loop's hand-over (`_work`)
until it hands it back (`_returned`, under `_lock`, then a wake-up byte).

What a hostile client can take, and for how long:
- The loop reads TLS handshakes and request heads without blocking. A client that connects and
  says nothing, or trickles its head a byte at a time (slowloris), holds one file descriptor and
  at most httpconn.MAX_HEAD_BYTES for at most `header_timeout`, never a thread.
- Only a complete request head reaches a worker. `max_requests` workers serve at once; further
  requests wait their turn, unread. A client that reads nothing of its answer is dropped after
  `send_timeout`.
- At most `max_connections` connections are open (and never more than half the process's
  open-file limit, which the CI client needs too). At the limit, the oldest connection that
  has no request being served (still silent, mid-head, idle keep-alive, or draining) is closed
  to make room, so a real scrape gets in however many slow clients hang on. Only when every
  connection has a request in hand does accepting pause. One warning when an episode starts,
  one info line when it is over: never a line per connection.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import queue
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.httpconn import Connection, Step
from exporter.webconfig import TLSServerConfig

logger = logging.getLogger(__name__)

LINGER_SECONDS = 2.0  # how long an answered connection that closes is drained (half_close)
_LISTEN_BACKLOG = 512  # a burst of scrapers connecting at once waits in the kernel, not refused
_ACCEPTS_PER_WAKE = 64
_EPISODE_QUIET = 10.0  # seconds without hitting the limit that end an episode
_ACCEPT_BACKOFF = (0.05, 1.0)  # after accept() found no file descriptor: first and longest wait
# The kernel's answers to accept() that mean "no file descriptor or memory for one now".
_NO_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# Serves one request whose head has arrived: (connection, client address, head) -> whether the
# connection stays open for the next request. Runs on a worker, the socket blocking with a
# timeout; it must not close the socket.
Serve = Callable[[socket.socket, Any, bytes], bool]
TLSSource = Callable[[], "TLSServerConfig | None"]


def server_clock() -> float:
    """Seconds on the real monotonic clock, for connection deadlines: select() waits real
    time. Not time.monotonic(), which a test's freezegun replaces for some callers and not
    others (it looks a few frames up the stack), so that deadlines mixed the two clocks."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


@dataclass(frozen=True)
class ConnectionLimits:
    max_requests: int = 40  # requests served at once: the worker threads
    max_connections: int = 512  # open client connections
    # From accept (TLS handshake included), or from a keep-alive connection's first byte, to
    # the end of the request head.
    header_timeout: float = 5.0
    idle_timeout: float = 60.0  # a keep-alive connection with no request is closed after this
    # A client that takes none of its answer this long is dropped; Prometheus gives up on a
    # scrape after its scrape_timeout (10 s by default) anyway.
    send_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_connections < 1:
            raise ValueError("max_requests and max_connections must be at least 1")


def _file_limit_share(wanted: int) -> int:
    try:
        import resource
    except ImportError:  # not Unix: no limit to read
        return wanted
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return min(wanted, max(16, soft // 2))


class BoundedHTTPServer:
    """Listens on `address` (bound in the constructor: OSError if it cannot be) and serves with
    `serve` once start() is called; see the module doc for the limits."""

    def __init__(
        self,
        address: tuple[str, int],
        serve: Serve,
        tls: TLSSource,
        limits: ConnectionLimits,
        *,
        with_body: bool = False,
    ) -> None:
        """`with_body`: `serve` gets the head and whatever came in after it (the start of a
        body), and the connection's buffer is left empty; for a server that answers one request
        per connection."""
        self._serve = serve
        self._with_body = with_body
        self._tls = tls
        self._limits = limits
        self._max_connections = _file_limit_share(limits.max_connections)
        if self._max_connections < limits.max_connections:
            logger.warning(
                "connection limit lowered to half the open-file limit",
                extra={"max_connections": self._max_connections},
            )
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(address)
            self._listener.listen(_LISTEN_BACKLOG)
            self._listener.setblocking(False)
        except OSError:
            self._listener.close()
            raise
        self.address: tuple[Any, ...] = self._listener.getsockname()
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        # The loop's tables, each in the order of `since`, so the first entry expires first.
        self._reading: OrderedDict[Connection, None] = OrderedDict()  # handshake and head
        self._idle: OrderedDict[Connection, None] = OrderedDict()  # keep-alive, no request
        self._lingering: OrderedDict[Connection, None] = OrderedDict()  # answered, closing
        self._busy: set[Connection] = set()  # with a worker, or waiting for one
        self._work: queue.SimpleQueue[tuple[Connection, bytes] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._returned: list[tuple[Connection, bool]] = []  # under _lock
        self._stopped = False  # under _lock
        self._accepting = False
        self._paused_until: float | None = None  # accept paused: until then, or a slot frees
        self._backoff = _ACCEPT_BACKOFF[0]
        self._episode_started: float | None = None  # the limit episode under way
        self._last_hit = 0.0
        self._closed_in_episode = 0
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []

    # -- the caller's side ---------------------------------------------------------------

    def start(self) -> None:
        self._selector.register(self._wake_read, selectors.EVENT_READ, "wake")
        self._listen(True)
        for number in range(self._limits.max_requests):
            worker = threading.Thread(
                target=self._work_loop, name=f"exporter-http-worker-{number}", daemon=True
            )
            worker.start()
            self._workers.append(worker)
        self._thread = threading.Thread(target=self._loop, name="exporter-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Closes the port and every connection; requests being served are cut off."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self._thread is None:
            self._close_all()
            return
        self._wake()
        self._thread.join()

    # -- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._stopped:
                        return
                now = server_clock()
                for key, _ in self._selector.select(self._next_deadline(now)):
                    self._dispatch(key)
                self._on_time(server_clock())
        except Exception:
            logger.error("the HTTP loop failed; no more requests are served", exc_info=True)
        finally:
            self._close_all()

    def _dispatch(self, key: selectors.SelectorKey) -> None:
        if key.data == "listen":
            self._accept()
        elif key.data == "wake":
            self._take_back()
        elif self._registered(key.fd, key.data):
            self._on_ready(key.data)
        # else: closed earlier in this round (an accept made room): its event is stale, and
        # its fd may already be a newer connection's

    def _registered(self, fd: int, connection: object) -> bool:
        """Whether `fd` is `connection`'s in the selector (not a closed one's, reused)."""
        try:
            return self._selector.get_key(fd).data is connection
        except (KeyError, ValueError):
            return False

    def _next_deadline(self, now: float) -> float | None:
        limits = self._limits
        deadlines = [
            next(iter(table)).since + timeout
            for table, timeout in (
                (self._reading, limits.header_timeout),
                (self._idle, limits.idle_timeout),
                (self._lingering, LINGER_SECONDS),
            )
            if table
        ]
        if self._paused_until is not None and self._paused_until != float("inf"):
            deadlines.append(self._paused_until)
        if self._episode_started is not None:
            deadlines.append(self._last_hit + _EPISODE_QUIET)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _on_time(self, now: float) -> None:
        limits = self._limits
        for table, timeout in (
            (self._reading, limits.header_timeout),
            (self._idle, limits.idle_timeout),
            (self._lingering, LINGER_SECONDS),
        ):
            while table:
                connection = next(iter(table))
                if connection.since + timeout > now:
                    break
                if table is self._reading:
                    logger.debug(
                        "%s sent no complete request within %gs: closed",
                        connection.client,
                        timeout,
                    )
                self._close(connection)
        paused = self._paused_until
        if paused is not None and (now >= paused or (paused == float("inf") and self._room())):
            self._listen(True)
        if self._episode_started is not None and now - self._last_hit >= _EPISODE_QUIET:
            logger.info(
                "connections back under the limit",
                extra={
                    "closed_to_make_room": self._closed_in_episode,
                    "seconds": round(self._last_hit - self._episode_started, 1),
                },
            )
            self._episode_started = None

    def _open(self) -> int:
        return len(self._reading) + len(self._idle) + len(self._lingering) + len(self._busy)

    def _room(self) -> bool:
        return self._open() < self._max_connections

    def _listen(self, on: bool, until: float | None = None) -> None:
        if on != self._accepting:
            if on:
                self._selector.register(self._listener, selectors.EVENT_READ, "listen")
            else:
                self._selector.unregister(self._listener)
            self._accepting = on
        self._paused_until = None if on else (until if until is not None else float("inf"))
        if on and until is None:
            self._backoff = _ACCEPT_BACKOFF[0]

    def _limit_hit(self, problem: str) -> None:
        now = server_clock()
        self._last_hit = now
        if self._episode_started is None:
            self._episode_started = now
            self._closed_in_episode = 0
            logger.warning(
                "connection limit reached: closing the oldest connections without a request",
                extra={
                    "problem": problem,
                    "open": self._open(),
                    "max_connections": self._max_connections,
                },
            )

    def _make_room(self, problem: str) -> bool:
        """Close the oldest connection without a request in hand; False if there is none."""
        self._limit_hit(problem)
        for table in (self._lingering, self._reading, self._idle):
            if table:
                self._closed_in_episode += 1
                self._close(next(iter(table)))
                return True
        return False

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            if not self._room() and not self._make_room("too many connections"):
                self._listen(False)  # until a connection closes
                return
            try:
                sock, address = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno not in _NO_RESOURCES:
                    logger.debug("accept failed: %s", error.strerror or error)
                    return
                if not self._make_room(error.strerror or "no file descriptor"):
                    # Without this wait the listener stays readable and the loop spins.
                    self._listen(False, server_clock() + self._backoff)
                    self._backoff = min(self._backoff * 2, _ACCEPT_BACKOFF[1])
                    return
                continue
            self._opened(sock, address)

    def _opened(self, sock: socket.socket, address: Any) -> None:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            # Headers and body go out in separate writes: without this the body would wait
            # for the client's delayed ACK, 40 ms on every keep-alive answer.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = Connection(sock, address, self._tls())
        self._enter(connection, self._reading)
        self._selector.register(connection.fd, selectors.EVENT_READ, connection)

    def _enter(self, connection: Connection, table: OrderedDict[Connection, None]) -> None:
        if connection.where is not None:
            del connection.where[connection]
        connection.since = server_clock()
        connection.where = table
        table[connection] = None

    def _close(self, connection: Connection) -> None:
        if connection.where is not None:
            del connection.where[connection]
            connection.where = None
        self._busy.discard(connection)
        if self._registered(connection.fd, connection):  # a reused fd is another's now
            self._selector.unregister(connection.fd)
        connection.close()

    def _on_ready(self, connection: Connection) -> None:
        if connection.where is self._lingering:
            if not connection.drain():
                self._close(connection)
            return
        self._follow(connection, connection.step())

    def _follow(self, connection: Connection, step: Step) -> None:
        if step is Step.READ or step is Step.WRITE:
            if connection.buffer and connection.where is self._idle:
                self._enter(connection, self._reading)  # a new request: its head is timed anew
            events = selectors.EVENT_READ if step is Step.READ else selectors.EVENT_WRITE
            self._selector.modify(connection.fd, events, connection)
        elif step is Step.SERVE:
            head = connection.take_head()
            if self._with_body:
                head += bytes(connection.buffer)
                connection.buffer.clear()
            self._selector.unregister(connection.fd)
            if connection.where is not None:
                del connection.where[connection]
                connection.where = None
            self._busy.add(connection)
            self._work.put((connection, head))
        elif step is Step.LINGER:
            connection.half_close()
            self._enter(connection, self._lingering)
            self._selector.modify(connection.fd, selectors.EVENT_READ, connection)
        else:
            self._close(connection)

    # -- workers -------------------------------------------------------------------------

    def _work_loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            connection, head = item
            keep = False
            with self._lock:
                stopped = self._stopped
            if not stopped:
                try:
                    connection.sock.settimeout(self._limits.send_timeout)
                    keep = self._serve(connection.sock, connection.address, head)
                except Exception:
                    logger.error("error serving %s", connection.client, exc_info=True)
            with self._lock:
                handed_back = not self._stopped
                if handed_back:
                    self._returned.append((connection, keep))
            if handed_back:
                self._wake()
            else:  # the loop is gone
                connection.sock.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full: the loop wakes anyway
            self._wake_write.send(b"\0")

    def _take_back(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_read.recv(4096):
                pass
        with self._lock:
            returned, self._returned = self._returned, []
        for connection, keep in returned:
            self._busy.discard(connection)
            try:
                connection.sock.setblocking(False)
            except OSError:
                connection.close()
                continue
            self._enter(connection, self._reading if connection.buffer else self._idle)
            self._selector.register(connection.fd, selectors.EVENT_READ, connection)
            if not keep:
                self._follow(connection, Step.LINGER)
            elif connection.buffer:  # a pipelined request
                self._follow(connection, connection.look_for_head())
            elif connection.pending():
                self._follow(connection, connection.read())

    def _close_all(self) -> None:
        with self._lock:
            self._stopped = True  # from now on a worker closes the connection it served
            busy = list(self._busy)
            returned, self._returned = self._returned, []
        for connection, _ in returned:
            connection.close()
        for connection in busy:
            # Wakes a worker blocked in send; the worker closes the socket.
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
        self._busy.clear()
        for table in (self._reading, self._idle, self._lingering):
            while table:
                self._close(next(iter(table)))
        for _ in self._workers:
            self._work.put(None)
        self._selector.close()
        self._listener.close()
        self._wake_read.close()
        self._wake_write.close()
