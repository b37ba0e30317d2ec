"""The HTTP side: the telemetry path, /healthz, /readyz and a landing page.

Nothing here calls the CI API: the telemetry path renders the registry (whose collector reads the
latest snapshot), and the other pages read the snapshot source.

DEFAULT_PORT 9873 is the exporter's default listen port (":9873", all interfaces).
"""

from __future__ import annotations

import gzip
import html
import ipaddress
import logging
import socket
import socketserver
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

DEFAULT_PORT = 9873
RECENT_FAILURES_SHOWN = 50

# Level 1 compresses exposition text ~8x at a fraction of the default level's CPU time; large
# deployments render over 100 MB per scrape.
_GZIP_LEVEL = 1
_STOP_POLL_INTERVAL = 0.1  # how often serve_forever looks for shutdown(): bounds stop() latency
_CONNECTION_TIMEOUT = 60.0  # idle keep-alive connections give their thread back after this

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


@dataclass(frozen=True)
class _App:
    source: SnapshotSource
    registry: CollectorRegistry
    telemetry_path: str
    version: str


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: _App) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.app = app
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer's version resolves the host's FQDN, which can stall startup on slow DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])


def check_telemetry_path(path: str) -> None:
    """A path requests can reach, and not one of the other pages: else one-line ValueError."""
    reachable = path.isascii() and path.isprintable() and not any(c in path for c in " ?#%")
    if not path.startswith("/") or not reachable:
        raise ValueError(f"{path!r} must be a plain path starting with / (no query, no spaces)")
    if path in ("/", "/healthz", "/readyz"):
        raise ValueError(f"{path!r} is taken by another page; use e.g. /metrics")


class ExporterServer:
    """Serves the exporter's pages from a background thread."""

    def __init__(
        self,
        address: tuple[str, int],
        source: SnapshotSource,
        registry: CollectorRegistry,
        telemetry_path: str = "/metrics",
        version: str = __version__,
    ) -> None:
        check_telemetry_path(telemetry_path)
        app = _App(source, registry, telemetry_path, version)
        try:
            self._httpd = _HTTPServer(address, app)
        except OSError as exc:
            host, port = address
            reason = exc.strerror or str(exc)
            raise OSError(f"cannot listen on {host or '0.0.0.0'}:{port}: {reason}") from None
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

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

    @property
    def app(self) -> _App:
        return cast(_HTTPServer, self.server).app

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def __getattr__(self, name: str) -> Callable[[], None]:
        # BaseHTTPRequestHandler answers 501 to methods without a do_* handler; every method
        # but GET and HEAD is known and refused here.
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        # The base writes every request to stderr; here it is debug logging.
        logger.debug("%s " + format, self.address_string(), *args)

    def _route(self) -> None:
        path = urlsplit(self.path).path
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

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encoder(self.app.registry)
        except Exception:
            logger.exception("rendering %s failed", self.app.telemetry_path)
            self._send(500, "text/plain; charset=utf-8", b"error rendering metrics, see log\n")
            return
        headers = {"Vary": "Accept, Accept-Encoding"}
        if _gzip_accepted(self.headers.get("Accept-Encoding", "")):
            body = gzip.compress(body, compresslevel=_GZIP_LEVEL)
            headers["Content-Encoding"] = "gzip"
        self._send(200, content_type, body, headers)

    def _readyz(self) -> None:
        if self.app.source.ready():
            self._send(200, "text/plain; charset=utf-8", b"ready\n")
        else:
            self._send(
                503, "text/plain; charset=utf-8", b"not ready: not every target polled yet\n"
            )

    def _method_not_allowed(self) -> None:
        self._send(
            405, "text/plain; charset=utf-8", b"method not allowed\n", {"Allow": "GET, HEAD"}
        )

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
