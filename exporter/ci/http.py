"""Bounded HTTP under the CI client: a call ends by its deadline, or within STEP of `stopping`
being set, whatever the peer does; a body never grows past its cap, compressed or not. Also
the client's session (session_for) and how a failure of requests or urllib3 is told apart
(is_timeout, reason).

Thread ownership: a Deadline, and the reader built on it, belong to the one thread making the
call; the scope that hands the deadline down to the connection is thread-local. A _Guard is
shared by the connecting thread and its own watcher thread through an Event and a descriptor
that only the watcher uses and closes. The adapter and
its pools are requests' and urllib3's own (thread-safe) and hold no deadline.

requests and urllib3 bound each socket operation, not the call: a peer sending one byte a second
never trips a read timeout. So the call's deadline is carried down to where the waits happen:

- connect: non-blocking, waited for in steps of at most STEP (each checks the deadline and
  `stopping`), so neither a peer that never completes the handshake nor a shutdown waits for
  the full timeout;
- status line, headers and body: the http.client response reads through _DeadlineIO, whose
  every recv waits at most STEP, and which ends the call (TimeoutError, which urllib3 reports as
  a read timeout) once the deadline has passed or `stopping` is set;
- the TLS handshake (and a proxy's CONNECT), which urllib3 runs in one piece: CPython bounds
  a handshake as a whole by the socket's timeout, set to the time left; a guard thread,
  started with the connection, shuts the socket down (through a descriptor of its own, so
  never another's) once `stopping` is set or the deadline passes, which ends the blocked read.

The body is read raw and bounded by exporter.ci.body. Not covered: DNS resolution, bounded by
the resolver's own timeouts.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import io
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

from exporter.ci.parse import one_line

# The longest a single wait blocks before the deadline and `stopping` are looked at again.
STEP = 0.1
_IN_PROGRESS = frozenset((0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN))

if hasattr(time, "clock_gettime") and hasattr(time, "CLOCK_MONOTONIC"):

    def now() -> float:
        """Monotonic seconds that freezegun does not freeze: socket waits are real time."""
        return time.clock_gettime(time.CLOCK_MONOTONIC)

else:  # pragma: no cover - Windows

    def now() -> float:
        return time.monotonic()


class Deadline:
    """When one call must have ended, and the event that ends it sooner."""

    __slots__ = ("at", "stopping", "timeout")

    def __init__(self, timeout: float, stopping: threading.Event) -> None:
        self.timeout = timeout
        self.at = now() + timeout
        self.stopping = stopping

    def remaining(self) -> float:
        return self.at - now()

    def step(self) -> float:
        """How long the next wait may block; TimeoutError when the call must end now."""
        if self.stopping.is_set():
            raise TimeoutError("stopping")
        left = self.remaining()
        if left <= 0:
            raise TimeoutError(f"no complete answer within {self.timeout:g}s")
        return min(left, STEP)


_scope = threading.local()


@contextlib.contextmanager
def bounded_by(deadline: Deadline) -> Iterator[None]:
    """Connections opened and answers read by this thread inside the block obey `deadline`."""
    previous = getattr(_scope, "deadline", None)
    _scope.deadline = deadline
    try:
        yield
    finally:
        _scope.deadline = previous


def _current() -> Deadline | None:
    deadline: Deadline | None = getattr(_scope, "deadline", None)
    return deadline


class _DeadlineIO(io.RawIOBase):
    """A socket's read side where no recv outlives the deadline (see the module)."""

    def __init__(self, sock: socket.socket, wrapped: io.RawIOBase, deadline: Deadline) -> None:
        super().__init__()
        self._sock = sock
        self._wrapped = wrapped  # the SocketIO http.client made: closing it releases the socket
        self._deadline = deadline
        self._timeout = sock.gettimeout()

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._sock.fileno()

    def readinto(self, buffer: Any) -> int:
        while True:
            self._sock.settimeout(self._deadline.step())
            try:
                return self._sock.recv_into(buffer)
            except TimeoutError:
                continue  # a quiet STEP: look at the deadline and `stopping` again

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):
                self._sock.settimeout(self._timeout)
            self._wrapped.close()
        super().close()


class _Response(http.client.HTTPResponse):
    """http.client's response, reading through _DeadlineIO inside a bounded_by block."""

    def __init__(
        self, sock: socket.socket, debuglevel: int = 0, method: str | None = None, url: Any = None
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        deadline = _current()
        if deadline is not None:
            wrapped = self.fp.detach()
            assert isinstance(wrapped, io.RawIOBase)
            self.fp = io.BufferedReader(_DeadlineIO(sock, wrapped, deadline))


def _wait_connected(sock: socket.socket, deadline: Deadline) -> None:
    poller = select.poll() if hasattr(select, "poll") else None
    if poller is not None:
        poller.register(sock, select.POLLOUT | select.POLLERR | select.POLLHUP)
    while True:
        step = deadline.step()
        if poller is not None:
            if poller.poll(step * 1000):
                return
        elif any(select.select([], [sock], [sock], step)[1:]):  # pragma: no cover - Windows
            return


def _connect(conn: HTTPConnection, deadline: Deadline) -> socket.socket:
    """urllib3's create_connection, with the wait for the handshake in steps (see the module)."""
    host = conn._dns_host.strip("[]")
    error: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(
        host, conn.port, allowed_gai_family(), socket.SOCK_STREAM
    ):
        sock = socket.socket(family, kind, proto)
        try:
            for option in conn.socket_options or ():
                sock.setsockopt(*option)
            if conn.source_address:
                sock.bind(conn.source_address)
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code not in _IN_PROGRESS:
                raise OSError(code, os.strerror(code))
            if code:
                _wait_connected(sock, deadline)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, os.strerror(code))
            sock.settimeout(max(min(deadline.remaining(), deadline.timeout), 0.001))
            return sock
        except OSError as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise  # the deadline or `stopping`: no other address is tried
            error = exc
    try:
        raise error or OSError("getaddrinfo returns an empty list")
    finally:
        error = None  # not kept alive by its own traceback through this frame


def _new_conn(conn: HTTPConnection, deadline: Deadline) -> socket.socket:
    # The same failures as urllib3's own _new_conn, so that requests reports them alike.
    try:
        sock = _connect(conn, deadline)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    except TimeoutError as exc:
        raise ConnectTimeoutError(conn, f"Connection to {conn.host} timed out") from exc
    except OSError as exc:
        raise NewConnectionError(conn, f"Failed to establish a new connection: {exc}") from exc
    sys.audit("http.client.connect", conn, conn.host, conn.port)
    return sock


class _Guard:
    """Ends a blocking phase that urllib3 runs in one piece (the TLS handshake, a proxy's
    CONNECT): once the deadline passes or `stopping` is set, the connection is shut down, which
    wakes whatever read is blocked on it."""

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket) -> None:
        # A descriptor of the guard's own: it can never shut down a socket that reused the
        # number of a connection already closed.
        own = socket.socket(fileno=os.dup(sock.fileno()))
        self._thread = threading.Thread(
            target=self._run, args=(own,), name="ci-connect-guard", daemon=True
        )
        self._thread.start()

    def _run(self, own: socket.socket) -> None:
        with own:
            while not self._done.wait(STEP):
                if self._deadline.stopping.is_set() or self._deadline.remaining() <= 0:
                    with contextlib.suppress(OSError):
                        own.shutdown(socket.SHUT_RDWR)
                    return

    def finish(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()


class _HTTPConnection(HTTPConnection):
    response_class = _Response

    def _new_conn(self) -> socket.socket:
        deadline = _current()
        return super()._new_conn() if deadline is None else _new_conn(self, deadline)


class _HTTPSConnection(HTTPSConnection):
    response_class = _Response
    _guard: _Guard | None = None

    def connect(self) -> None:
        deadline = _current()
        if deadline is None:
            super().connect()
            return
        self._guard = _Guard(deadline)
        try:
            super().connect()
        finally:
            self._guard.finish()
            self._guard = None

    def _new_conn(self) -> socket.socket:
        deadline = _current()
        if deadline is None:
            return super()._new_conn()
        sock = _new_conn(self, deadline)
        if self._guard is not None:
            self._guard.watch(sock)
        return sock


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class BoundedAdapter(HTTPAdapter):
    """requests' adapter with connections that obey bounded_by (direct or through an HTTP
    proxy; a SOCKS proxy keeps urllib3's per-operation timeouts)."""

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _POOLS
        return manager


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it wraps (requests and urllib3 nest them in args and `reason`)."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending and len(seen) < 20:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [a for a in current.args if isinstance(a, BaseException)]
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            nested.append(reason)
        nested += [e for e in (current.__cause__, current.__context__) if e is not None]
        pending.extend(nested)


def reason(exc: BaseException) -> str:
    """The innermost cause, short: `ConnectionResetError: [Errno 104] Connection reset by peer`."""
    innermost = list(_causes(exc))[-1]
    text = one_line(str(innermost), 160)
    return f"{type(innermost).__name__}: {text}" if text else type(innermost).__name__


def is_timeout(exc: BaseException) -> bool:
    # requests reports a read timeout in the middle of a streamed body as a ConnectionError.
    return any(
        isinstance(e, (TimeoutError, requests.Timeout)) or type(e).__name__ == "ReadTimeoutError"
        for e in _causes(exc)
    )


def session_for(endpoint: str) -> requests.Session:
    """A session that reads the environment once. By default requests looks up proxies, netrc
    and CA bundles in the environment on every request: about 1 ms of CPU each, a fifth of a
    poll's CPU. The endpoint never changes, so the answers cannot either."""
    session = requests.Session()
    for prefix in ("http://", "https://"):
        session.mount(prefix, BoundedAdapter())  # calls end by their deadline
        session.proxies.update(requests.utils.get_environ_proxies(endpoint))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False
    return session


def http_date(value: str | None) -> float | None:
    """An HTTP Date header as epoch seconds; None when absent or not a date."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # an HTTP date is always GMT
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return moment.timestamp()
    except (OverflowError, ValueError, OSError):
        return None
