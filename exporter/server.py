"""The HTTP side: the telemetry path, /healthz, /readyz, a landing page and /-/reload.

Nothing here calls the CI API: the telemetry path renders the registry (whose collector reads the
latest snapshot), and the other pages read the snapshot source.

With a web config (exporter.webconfig), connections are TLS and every path but /healthz and
/readyz needs a basic-auth user. Those two stay open because kubelet probes carry no credentials,
and they tell nothing but "serving" and "every target polled once".

DEFAULT_PORT 9873 is the exporter's default listen port (":9873", all interfaces).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import html
import ipaddress
import logging
import socket
import socketserver
import ssl
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from exporter import __version__
from exporter.collector import SnapshotSource
from exporter.snapshot import FailedJob, Snapshot, TargetSnapshot
from exporter.webconfig import TLSServerConfig, WebConfig

DEFAULT_PORT = 9873
RECENT_FAILURES_SHOWN = 50

# Level 1 compresses exposition text ~8x at a fraction of the default level's CPU time; large
# deployments render over 100 MB per scrape.
_GZIP_LEVEL = 1
_STOP_POLL_INTERVAL = 0.1  # how often serve_forever looks for shutdown(): bounds stop() latency
_CONNECTION_TIMEOUT = 60.0  # idle keep-alive connections give their thread back after this
# A client that connects and says nothing (or stalls mid-handshake) holds only its own thread,
# and only this long.
TLS_HANDSHAKE_TIMEOUT = 10.0
# socketserver's default backlog is 5: a burst of scrapers connecting at once would see SYNs
# dropped and retried a second later.
_LISTEN_BACKLOG = 128

RELOAD_PATH = "/-/reload"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes carry no credentials
REALM = "tencent-ci-exporter"
_TLS_HANDSHAKE_RECORD = 0x16  # the first byte of every TLS ClientHello
_PLAIN_HTTP_ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\nContent-Length: 48\r\n\r\n"
    b"Client sent an HTTP request to an HTTPS server.\n"
)

Reload = Callable[[], "tuple[bool, str]"]

logger = logging.getLogger(__name__)


def parse_listen_address(text: str) -> tuple[str, int]:
    """ "host:port", ":port" (all IPv4 interfaces) or "[ipv6]:port" -> (host, port)."""
    value = text.strip()
    if value.startswith("["):
        host, port_text = _split_bracketed(value, text)
    else:
        host, colon, port_text = value.rpartition(":")
        if not colon:
            raise ValueError(
                f"invalid listen address {text!r}: expected host:port, :port or [ipv6]:port"
            )
        if ":" in host:
            raise ValueError(
                f"invalid listen address {text!r}: an IPv6 address needs brackets,"
                f" e.g. [::1]:{DEFAULT_PORT}"
            )
        if any(ch.isspace() for ch in host):
            raise ValueError(f"invalid listen address {text!r}: the host contains spaces")
        host = host or "0.0.0.0"
    return host, _parse_port(port_text, text)


def _split_bracketed(value: str, text: str) -> tuple[str, str]:
    end = value.find("]")
    if end == -1 or value[end + 1 : end + 2] != ":":
        raise ValueError(
            f"invalid listen address {text!r}: expected [ipv6]:port, e.g. [::1]:{DEFAULT_PORT}"
        )
    host = value[1:end]
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ValueError(
            f"invalid listen address {text!r}: {host!r} is not an IPv6 address"
        ) from None
    return host, value[end + 2 :]


def _parse_port(port_text: str, text: str) -> int:
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise ValueError(
            f"invalid listen address {text!r}: the port must be a number from 0 to 65535"
        )
    return int(port_text)


class _Exposition:
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


class _Renderer:
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
        self._under_way: dict[str, _Exposition] = {}  # by content type

    def render(
        self, encoder: Callable[[CollectorRegistry], bytes], content_type: str
    ) -> _Exposition:
        with self._lock:
            exposition = self._under_way.get(content_type)
            renders = exposition is None
            if exposition is None:
                exposition = self._under_way[content_type] = _Exposition()
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


@dataclass(frozen=True)
class _App:
    source: SnapshotSource
    registry: CollectorRegistry
    telemetry_path: str
    version: str
    reload: Reload | None
    # One reload at a time: two POSTs at once must not interleave two loads.
    reload_lock: threading.Lock
    renderer: _Renderer


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = _LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], app: _App, web_config: WebConfig | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.app = app
        # Replaced whole by set_web_config; a connection takes its TLS settings at accept and
        # a request its users and headers when it starts.
        self.web_config = web_config
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer's version resolves the host's FQDN, which can stall startup on slow DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback on stderr. A client that resets the connection or
        # breaks off TLS mid-request is its own business: a debug line. Anything else is a bug.
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            logger.debug("connection from %s broke off: %s", client_address[0], error)
        else:
            logger.error("error serving %s", client_address[0], exc_info=True)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs on the connection's own thread (process_request_thread), not in the accept
        # loop: a slow or silent TLS client delays no one else.
        tls = self.web_config.tls if self.web_config is not None else None
        if tls is None:
            super().finish_request(request, client_address)
            return
        connection = _tls_accept(request, tls, client_address)
        if connection is None:
            return
        try:
            _Handler(connection, client_address, self)
        finally:
            _close(connection)


def _tls_accept(sock: socket.socket, tls: TLSServerConfig, client: Any) -> ssl.SSLSocket | None:
    """The connection after a TLS handshake; None (the socket closed) when there was none."""
    sock.settimeout(TLS_HANDSHAKE_TIMEOUT)
    try:
        first = sock.recv(1, socket.MSG_PEEK)
        if first and first[0] != _TLS_HANDSHAKE_RECORD:
            _refuse_plain_http(sock)
            return None
        if not first:
            return None
        connection = tls.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    except OSError as error:
        logger.debug("TLS connection from %s failed before the handshake: %s", client, error)
        return None
    try:
        connection.do_handshake()
        if not tls.client_allowed(connection.getpeercert()):
            logger.debug("TLS client %s refused: no SAN in client_allowed_sans", client)
            _close(connection)
            return None
    except (OSError, ValueError) as error:  # ssl.SSLError and timeouts are OSErrors
        logger.debug("TLS handshake with %s failed: %s", client, error)
        _close(connection)
        return None
    return connection


def _refuse_plain_http(sock: socket.socket) -> None:
    """Say in plain text why http:// to a TLS port fails, as Go's servers do."""
    with contextlib.suppress(OSError):
        sock.recv(65536)  # the request head: unread, closing would reset the connection
        sock.sendall(_PLAIN_HTTP_ANSWER)
        sock.shutdown(socket.SHUT_WR)


def _close(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already gone
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()


def check_telemetry_path(path: str) -> None:
    """A path requests can reach, and not one of the other pages: else one-line ValueError."""
    reachable = path.isascii() and path.isprintable() and not any(c in path for c in " ?#%")
    if not path.startswith("/") or not reachable:
        raise ValueError(f"{path!r} must be a plain path starting with / (no query, no spaces)")
    if path in ("/", "/healthz", "/readyz", RELOAD_PATH):
        raise ValueError(f"{path!r} is taken by another page; use e.g. /metrics")


class ExporterServer:
    """Serves the exporter's pages from a background thread.

    `web_config`: TLS, basic-auth users and extra headers (exporter.webconfig); None serves
    plain HTTP to anyone. `reload`: what POST or PUT /-/reload calls, returning (ok, one-line
    message); None leaves /-/reload out (404).
    """

    def __init__(
        self,
        address: tuple[str, int],
        source: SnapshotSource,
        registry: CollectorRegistry,
        telemetry_path: str = "/metrics",
        version: str = __version__,
        *,
        web_config: WebConfig | None = None,
        reload: Reload | None = None,
    ) -> None:
        check_telemetry_path(telemetry_path)
        app = _App(
            source,
            registry,
            telemetry_path,
            version,
            reload,
            threading.Lock(),
            _Renderer(registry, telemetry_path),
        )
        try:
            self._httpd = _HTTPServer(address, app, web_config)
        except OSError as exc:
            host, port = address
            reason = exc.strerror or str(exc)
            raise OSError(f"cannot listen on {host or '0.0.0.0'}:{port}: {reason}") from None
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def scheme(self) -> str:
        """The URL scheme: https while a web config with TLS is in force, else http."""
        web_config = self._httpd.web_config
        return "https" if web_config is not None and web_config.tls is not None else "http"

    def set_web_config(self, web_config: WebConfig | None) -> None:
        """Swap in a reloaded web config (new certificates, users, headers) without a restart.

        Connections already open keep the TLS session they have; new connections and every
        request from now on use the new one.
        """
        self._httpd.web_config = web_config

    def start(self) -> None:
        if self._thread is not None or self._closed:
            raise RuntimeError("ExporterServer.start() may be called once, before stop()")
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": _STOP_POLL_INTERVAL},
            name="exporter-http",
            daemon=True,
        )
        self._thread.start()
        logger.debug(
            "serving on %s port %d", self._httpd.server_name or "all interfaces", self.port
        )

    def stop(self) -> None:
        """Stops accepting requests and closes the socket; requests in flight are abandoned."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            # shutdown() waits for serve_forever to return, so only when it is running.
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    server_version = "tencent-ci-exporter"
    # Headers and body go out in separate writes; with Nagle's algorithm the body then waits
    # for the client's delayed ACK, 40 ms on every keep-alive answer.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    timeout = _CONNECTION_TIMEOUT

    # The web config in force when the request started: a reload mid-request changes nothing.
    _web: WebConfig | None = None

    @property
    def app(self) -> _App:
        return cast(_HTTPServer, self.server).app

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def __getattr__(self, name: str) -> Callable[[], None]:
        # BaseHTTPRequestHandler answers 501 to methods without a do_* handler; here every
        # method reaches _dispatch, which answers 401, 404 or 405 as the path and user say.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        # The base writes every request to stderr; here it is debug logging. Only the request
        # line and status reach it, never a header (Authorization).
        logger.debug("%s " + format, self.address_string(), *args)

    def _dispatch(self) -> None:
        self._web = cast(_HTTPServer, self.server).web_config
        path = urlsplit(self.path).path
        if path not in OPEN_PATHS and not self._authenticated():
            self._send(
                401,
                "text/plain; charset=utf-8",
                b"unauthorized\n",
                {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
            )
        elif path == RELOAD_PATH:
            self._reload_page()
        elif self.command in ("GET", "HEAD"):
            self._route(path)
        else:
            self._method_not_allowed("GET, HEAD")

    def _authenticated(self) -> bool:
        auth = self._web.auth if self._web is not None else None
        if auth is None:
            return True
        credentials = _basic_credentials(self.headers.get("Authorization"))
        if credentials is None:
            return False
        user, password = credentials
        if auth.verify(user, password):
            return True
        # The user name is left out: people type passwords into it.
        logger.debug("%s: wrong user or password for %s", self.address_string(), self.command)
        return False

    def _route(self, path: str) -> None:
        app = self.app
        if path == app.telemetry_path:
            self._metrics()
        elif path == "/healthz":
            self._send(200, "text/plain; charset=utf-8", b"ok\n")
        elif path == "/readyz":
            self._readyz()
        elif path == "/":
            page = render_landing_page(app.source.snapshot(), app.telemetry_path, app.version)
            self._send(200, "text/html; charset=utf-8", page.encode("utf-8"))
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _reload_page(self) -> None:
        reload = self.app.reload
        if reload is None:
            self._send(
                404,
                "text/plain; charset=utf-8",
                b"not found: this exporter has nothing to reload\n",
            )
        elif self.command not in ("POST", "PUT"):
            self._method_not_allowed("POST, PUT")
        else:
            ok, message = self._run_reload(reload)
            if ok:
                self._send(200, "text/plain; charset=utf-8", b"config reloaded\n")
            else:
                self._send(500, "text/plain; charset=utf-8", f"{_one_line(message)}\n".encode())

    def _run_reload(self, reload: Reload) -> tuple[bool, str]:
        with self.app.reload_lock:
            try:
                return reload()
            except Exception:
                logger.exception("reload failed")
                return False, "reload failed: internal error (see the log)"

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        exposition = self.app.renderer.render(encoder, content_type)
        if exposition.body is None:
            self._send(500, "text/plain; charset=utf-8", b"error rendering metrics, see log\n")
            return
        body = exposition.body
        headers = {"Vary": "Accept, Accept-Encoding"}
        if _gzip_accepted(self.headers.get("Accept-Encoding", "")):
            body = exposition.gzipped()
            headers["Content-Encoding"] = "gzip"
        self._send(200, content_type, body, headers)

    def _readyz(self) -> None:
        if self.app.source.ready():
            self._send(200, "text/plain; charset=utf-8", b"ready\n")
        else:
            self._send(
                503, "text/plain; charset=utf-8", b"not ready: not every target polled yet\n"
            )

    def _method_not_allowed(self, allow: str) -> None:
        self._send(405, "text/plain; charset=utf-8", b"method not allowed\n", {"Allow": allow})

    def _send(
        self,
        status: int,
        content_type: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        for name, value in self._web.headers if self._web is not None else ():
            self.send_header(name, value)
        if self._request_has_body():
            # Unread, it would be parsed as the next request on this keep-alive connection.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _request_has_body(self) -> bool:
        length = self.headers.get("Content-Length", "0").strip()
        return length not in ("", "0") or "Transfer-Encoding" in self.headers


def _basic_credentials(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from `Authorization: Basic ...`; None when absent or malformed."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "reload failed"


def _gzip_accepted(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() != "gzip":
            continue
        quality = params.strip().lower().removeprefix("q=").strip()
        return quality not in ("0", "0.0", "0.00", "0.000")
    return False


def _iso(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat(timespec="seconds")


def _status(target: TargetSnapshot) -> str:
    if not target.polled:
        return "not polled yet"
    return "up" if target.up else "down"


def _cell(value: object) -> str:
    return f"<td>{html.escape(str(value))}</td>"


def _failure_rows(failures: tuple[FailedJob, ...], queue_names: dict[str, str]) -> str:
    latest = sorted(failures, key=lambda job: job.time, reverse=True)[:RECENT_FAILURES_SHOWN]
    if not latest:
        return "<p>No failed jobs seen since start.</p>"
    rows = "".join(
        "<tr>"
        + _cell(_iso(job.time))
        + _cell(_queue_label(job, queue_names))
        + _cell(job.tag)
        + _cell(job.job_id)
        + _cell(job.code)
        + _cell(job.message)
        + "</tr>\n"
        for job in latest
    )
    return (
        "<table><tr><th>Time (UTC)</th><th>Queue</th><th>Tag</th><th>JobId</th><th>Code</th>"
        f"<th>Message</th></tr>\n{rows}</table>"
    )


def _queue_label(job: FailedJob, queue_names: dict[str, str]) -> str:
    """The queue's name where it is known, so a runbook reader need not look the id up."""
    name = queue_names.get(job.queue_id)
    where = f"{job.service}/{job.queue_id}"
    return f"{name} ({where})" if name else where


def _target_section(target: TargetSnapshot) -> str:
    name = html.escape(f"{target.bucket} ({target.region})")
    summary = (
        "<table>"
        f"<tr><th>Bucket</th>{_cell(target.bucket)}</tr>"
        f"<tr><th>Region</th>{_cell(target.region)}</tr>"
        f"<tr><th>Status</th>{_cell(_status(target))}</tr>"
        f"<tr><th>Last poll (UTC)</th>{_cell(_iso(target.last_poll_time))}</tr>"
        f"<tr><th>Last success (UTC)</th>{_cell(_iso(target.last_success_time))}</tr>"
        f"<tr><th>Last error</th>{_cell(target.last_error or '-')}</tr>"
        "</table>"
    )
    names = {q.queue.queue_id: q.queue.name for q in target.queues}
    failures = _failure_rows(target.recent_failures, names)
    return f"<h2>{name}</h2>\n{summary}\n<h3>Recent failed jobs</h3>\n{failures}\n"


def render_landing_page(snapshot: Snapshot, telemetry_path: str, version: str) -> str:
    """The / page: per target, its health and its latest failed jobs; every value escaped."""
    path = html.escape(telemetry_path)
    sections = "".join(_target_section(target) for target in snapshot.targets)
    if not sections:
        sections = "<p>No targets configured.</p>\n"
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        "<title>Tencent CI exporter</title>"
        "<style>table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
        "text-align:left}</style></head>\n<body>\n"
        f"<h1>Tencent CI exporter {html.escape(version)}</h1>\n"
        f'<p>Metrics: <a href="{path}">{path}</a></p>\n'
        f"{sections}</body></html>\n"
    )
