"""The HTTP side: the telemetry path, /healthz, /readyz, a landing page and /-/reload.

Threads: the pages are served on exporter.httpserver's workers (its loop thread owns the
connections); exporter.exposition's render thread renders /metrics, a reload runs
under `_App.reload_lock`, and `ExporterServer.web_config` is replaced whole by the reload thread
and read by the loop (at accept) and the workers (per request).

Nothing here calls the CI API: the telemetry path sends what exporter.exposition rendered of the
latest snapshot (and the self-metrics, rendered per scrape), and the other pages read the
snapshot source.

With a web config (exporter.webconfig), connections are TLS and every path but /healthz and
/readyz needs a basic-auth user. Those two stay open because kubelet probes carry no credentials,
and they tell nothing but "serving" and "every target polled once".

The listen address is parsed by exporter.listen (DEFAULT_PORT 9873, all interfaces).
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import math
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.exposition import choose_encoder

from exporter import __version__
from exporter.collector import SnapshotSource
from exporter.exposition import DEFAULT_PATIENCE, Expositions
from exporter.httpserver import BoundedHTTPServer, ConnectionLimits
from exporter.landing import landing_page_of
from exporter.webconfig import TLSServerConfig, WebConfig

RELOAD_PATH = "/-/reload"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes carry no credentials
REALM = "tencent-ci-exporter"

Reload = Callable[[], "tuple[bool, str]"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _App:
    source: SnapshotSource
    expositions: Expositions
    telemetry_path: str
    version: str
    reload: Reload | None
    # One reload at a time: two POSTs at once must not interleave two loads.
    reload_lock: threading.Lock


def check_telemetry_path(path: str) -> None:
    """A path requests can reach, and not one of the other pages: else one-line ValueError."""
    reachable = path.isascii() and path.isprintable() and not any(c in path for c in " ?#%")
    if not path.startswith("/") or not reachable:
        raise ValueError(f"{path!r} must be a plain path starting with / (no query, no spaces)")
    if path in ("/", "/healthz", "/readyz", RELOAD_PATH):
        raise ValueError(f"{path!r} is taken by another page; use e.g. /metrics")


class ExporterServer:
    """Serves the exporter's pages from a background thread and a pool of workers.

    `web_config`: TLS, basic-auth users and extra headers (exporter.webconfig); None serves
    plain HTTP to anyone. `reload`: what POST or PUT /-/reload calls, returning (ok, one-line
    message); None leaves /-/reload out (404). `limits`: workers, connections and timeouts
    (exporter.httpserver.ConnectionLimits).
    """

    def __init__(
        self,
        address: tuple[str, int],
        source: SnapshotSource,
        expositions: Expositions,
        telemetry_path: str = "/metrics",
        version: str = __version__,
        *,
        web_config: WebConfig | None = None,
        reload: Reload | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        check_telemetry_path(telemetry_path)
        self.app = _App(source, expositions, telemetry_path, version, reload, threading.Lock())
        # Replaced whole by set_web_config; a connection takes its TLS settings at accept and
        # a request its users and headers when it starts.
        self.web_config = web_config
        try:
            self._http = BoundedHTTPServer(
                address, self._serve, self._tls, limits or ConnectionLimits()
            )
        except OSError as exc:
            host, port = address
            reason = exc.strerror or str(exc)
            raise OSError(f"cannot listen on {host or '0.0.0.0'}:{port}: {reason}") from None
        self._started = False
        self._closed = False

    @property
    def port(self) -> int:
        return int(self._http.address[1])

    @property
    def scheme(self) -> str:
        """The URL scheme: https while a web config with TLS is in force, else http."""
        return "https" if self._tls() is not None else "http"

    def set_web_config(self, web_config: WebConfig | None) -> None:
        """Swap in a reloaded web config (new certificates, users, headers) without a restart.

        Connections already open keep the TLS session they have; new connections and every
        request from now on use the new one.
        """
        self.web_config = web_config

    def start(self) -> None:
        if self._started or self._closed:
            raise RuntimeError("ExporterServer.start() may be called once, before stop()")
        self._started = True
        self.app.expositions.start()
        self._http.start()
        logger.debug("serving on port %d", self.port)

    def stop(self) -> None:
        """Stops accepting requests and closes the socket; requests in flight are abandoned."""
        if self._closed:
            return
        self._closed = True
        self._http.stop()
        self.app.expositions.stop()

    def _tls(self) -> TLSServerConfig | None:
        web_config = self.web_config
        return web_config.tls if web_config is not None else None

    def _serve(self, connection: socket.socket, client: Any, head: bytes) -> bool:
        """One request on a worker; whether the connection stays open for the next one."""
        try:
            handler = _Handler(connection, client, head, self)
        except OSError as error:
            # A client that resets the connection or breaks off TLS mid-answer is its own
            # business: a debug line, not a traceback.
            logger.debug("connection from %s broke off: %s", client[0], error)
            return False
        return not handler.close_connection


class _SocketWriter(io.BufferedIOBase):
    """The handler's wfile: every write goes out whole (sendall), nothing is buffered."""

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._connection.sendall(data)
        with memoryview(data) as view:
            return view.nbytes


class _Handler(BaseHTTPRequestHandler):
    """Answers the one request whose head the connection loop has read."""

    server_version = "tencent-ci-exporter"
    protocol_version = "HTTP/1.1"

    # The web config in force when the request started: a reload mid-request changes nothing.
    _web: WebConfig | None = None

    def __init__(
        self, connection: socket.socket, client: Any, head: bytes, site: ExporterServer
    ) -> None:
        # Not BaseRequestHandler's constructor: the head has been read already, and the
        # connection belongs to the loop again once this request is answered.
        self.request = self.connection = connection
        self.client_address = client
        self.site = site
        self.rfile = io.BytesIO(head)
        self.wfile = _SocketWriter(connection)
        self.close_connection = True
        self.handle_one_request()

    @property
    def app(self) -> _App:
        return self.site.app

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
        self._web = self.site.web_config
        path = urlsplit(self.path).path
        if self.headers.defects:
            # A header line the parser could not read (e.g. a space before the colon): a proxy
            # may read it otherwise, so the request is refused (RFC 9112, section 5.1).
            self._send(400, "text/plain; charset=utf-8", b"bad request: a malformed header\n")
        elif path not in OPEN_PATHS and not self._authenticated():
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
            page = landing_page_of(app.source, app.telemetry_path, app.version)
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
        try:
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        except Exception:  # e.g. a version that is not one: the default format, as curl gets
            encoder, content_type = choose_encoder("")
        gzip = gzip_accepted(self.headers.get("Accept-Encoding", ""))
        patience = _patience(self.headers.get("X-Prometheus-Scrape-Timeout-Seconds"))
        response = self.app.expositions.scrape(encoder, content_type, gzip, patience)
        if not response.ok:
            self._send(500, "text/plain; charset=utf-8", b"error rendering metrics, see log\n")
            return
        headers = {"Vary": "Accept, Accept-Encoding"}
        if response.gzip:
            headers["Content-Encoding"] = "gzip"
        self._send(200, content_type, response.chunks, headers)

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
        body: bytes | list[bytes],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        chunks = body if isinstance(body, list) else [body]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(len(chunk) for chunk in chunks)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        for name, value in self._web.headers if self._web is not None else ():
            self.send_header(name, value)
        if self._request_has_body() or self.headers.defects:
            # Unread, it would be parsed as the next request on this keep-alive connection.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            _write_all(self.wfile, chunks)

    def _request_has_body(self) -> bool:
        """Whether the request may have a body, by any reading of its framing headers: two
        lengths, a length and a Transfer-Encoding, or a name with a space before its colon
        are each read one way by a proxy and another by us (request smuggling)."""
        framing = [
            (name.strip().lower(), value.strip())
            for name, value in self.headers.items()
            if name.strip().lower() in ("content-length", "transfer-encoding")
        ]
        return bool(framing) and framing != [("content-length", "0")]


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


def _patience(scrape_timeout: str | None) -> float:
    """How long a scrape waits for the rendering of a new snapshot before it takes the one
    before: half the time its scraper gives it (Prometheus says how long), else the default."""
    try:
        seconds = float(scrape_timeout or "")
    except ValueError:
        return DEFAULT_PATIENCE
    return min(seconds / 2, DEFAULT_PATIENCE) if math.isfinite(seconds) and seconds > 0 else 0.0


# Pieces of an exposition smaller than this are sent together, up to _BATCH bytes a write.
_SMALL = 64 << 10
_BATCH = 256 << 10


def _write_all(wfile: io.BufferedIOBase, chunks: list[bytes]) -> None:
    """Writes the chunks in order: big ones as they are, small runs joined (a rendering is
    thousands of pieces; a write each would be a system call each)."""
    batch: list[bytes] = []
    size = 0
    for chunk in chunks:
        if len(chunk) >= _SMALL:
            if batch:
                wfile.write(b"".join(batch))
                batch, size = [], 0
            wfile.write(chunk)
            continue
        batch.append(chunk)
        size += len(chunk)
        if size >= _BATCH:
            wfile.write(b"".join(batch))
            batch, size = [], 0
    if batch:
        wfile.write(b"".join(batch))


def gzip_accepted(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() != "gzip":
            continue
        quality = params.strip().lower().removeprefix("q=").strip()
        return quality not in ("0", "0.0", "0.00", "0.000")
    return False
