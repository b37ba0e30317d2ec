"""The running exporter: poller, collector, server and callback receiver, and the configuration
they share; reloads (SIGHUP, POST /-/reload) and the signals that stop it. exporter.cli builds
it from the flags.

Threads: the main thread owns `App` and waits for signals; a signal handler only sets events.
A reload (SIGHUP on the main thread, POST /-/reload on an HTTP worker) runs under
`App._reload_lock`.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from exporter import __version__
from exporter.api_stats import ApiStats
from exporter.config import Config, ConfigError, load_config
from exporter.config_warnings import config_warnings
from exporter.exposition import exporter_expositions
from exporter.httpserver import ConnectionLimits
from exporter.poller import Poller
from exporter.receiver import CallbackReceiver, Callbacks
from exporter.server import ExporterServer
from exporter.sharding import Shard
from exporter.webconfig import WebConfig, WebConfigError, load_web_config

log = logging.getLogger("exporter")

DEFAULT_LIMITS = ConnectionLimits()
RELOAD_FAILED = "configuration reload failed; keeping the running configuration"
RELOAD_FAILED_NO_RECEIVER = (
    "configuration reload failed; the callback receiver is stopped, the rest of the running "
    "configuration is kept"
)


class StartError(Exception):
    """The exporter cannot start: one line naming the flag or setting at fault."""


class App:
    """The running exporter: poller, collector, server, and the configuration they share."""

    def __init__(
        self,
        config: Config,
        address: tuple[str, int],
        telemetry_path: str,
        shard: Shard,
        *,
        config_file: str | None,
        web_config: WebConfig | None = None,
        web_config_file: str | None = None,
        limits: ConnectionLimits = DEFAULT_LIMITS,
        poller_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.limits = limits
        self.web_config = web_config
        self.web_config_file = web_config_file
        self.server: ExporterServer | None = None
        self.address = address
        self.telemetry_path = telemetry_path
        self.shard = shard
        self.config_file = config_file
        self.stats = ApiStats()
        self.poller = Poller(config, self.stats, shard=shard, **(poller_options or {}))
        self.callbacks = Callbacks(self.poller.deliver, self.stats.callbacks)
        # The demo: the simulator is told where to send its callbacks once they are received.
        self.on_receiving: Callable[[CallbackReceiver], object] = lambda receiver: None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._hangup = threading.Event()
        self._reload_lock = threading.Lock()

    def reload(self) -> tuple[bool, str]:
        """Re-read the configuration file (and the web config); both must be valid, or the
        running ones are kept."""
        if self.config_file is None:
            return False, "nothing to reload: the exporter runs without a configuration file"
        with self._reload_lock:
            try:
                config = load_config(self.config_file)
                web = load_web_config(self.web_config_file) if self.web_config_file else None
            except (ConfigError, WebConfigError) as error:
                self.poller.reload_failed()
                log.error(RELOAD_FAILED, extra={"error": str(error)})
                return False, str(error)
            log_warnings(self.config_file, config_warnings(config))
            try:
                self.callbacks.configure(config.callbacks)
            except OSError as error:
                self.poller.reload_failed()
                # A move whose old port was lost meanwhile leaves no receiver (the error says so).
                lost = self.config.callbacks is not None and self.callbacks.receiver is None
                log.error(
                    RELOAD_FAILED_NO_RECEIVER if lost else RELOAD_FAILED,
                    extra={"error": f"callbacks.listen_address: {error}"},
                )
                return False, f"callbacks.listen_address: {error}"
            self.poller.reload(config)
            self.config = config
            if self.web_config_file is not None and self.server is not None:
                self.server.set_web_config(web)
                self.web_config = web
            return True, "configuration reloaded"

    def serve(self, *, demo: bool) -> int:
        expositions = exporter_expositions(self.poller, self.stats, __version__)
        self.poller.board.on_swap = expositions.published
        try:
            # The constructor binds: a port in use fails here, not in start().
            server = ExporterServer(
                self.address,
                self.poller,
                expositions,
                self.telemetry_path,
                version=__version__,
                web_config=self.web_config,
                reload=None if self.config_file is None else self.reload,
                limits=self.limits,
            )
            server.start()
            self.server = server
        except OSError as error:
            # ExporterServer's message already says "cannot listen on host:port: reason".
            raise StartError(f"--web.listen-address: {error}") from None
        try:
            self.callbacks.configure(self.config.callbacks)
        except OSError as error:
            server.stop()
            raise StartError(f"callbacks.listen_address: {error}") from None
        if demo and self.callbacks.receiver is not None:
            self.on_receiving(self.callbacks.receiver)
        self._install_signals()
        self._announce(server.port, server.scheme, demo=demo)
        self.poller.start()
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                break
            if self._hangup.is_set():
                self._hangup.clear()
                self.reload()
        log.info("shutting down")
        server.stop()
        self.callbacks.stop()
        self.poller.stop()
        return 0

    def _install_signals(self) -> None:
        def _on_stop(signum: int, frame: FrameType | None) -> None:
            self._stop.set()
            self._wake.set()

        def _on_hangup(signum: int, frame: FrameType | None) -> None:
            self._hangup.set()
            self._wake.set()

        signal.signal(signal.SIGTERM, _on_stop)
        signal.signal(signal.SIGINT, _on_stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, _on_hangup)

    def _announce(self, port: int, scheme: str, *, demo: bool) -> None:
        host = "localhost" if self.address[0] in ("", "0.0.0.0", "::") else self.address[0]
        if ":" in host:
            host = f"[{host}]"
        url = f"{scheme}://{host}:{port}{self.telemetry_path}"
        if demo:
            print(
                f"Demo running against the built-in CI simulator; metrics at {url}\n"
                "(one demo bucket answers every 12th call with a 503, to show the throttling"
                " metrics)",
                flush=True,
            )
        extra: dict[str, object] = {
            "url": url,
            "targets": len(self.poller.targets),
            "poll_interval": self.config.poll_interval,
        }
        web = self.web_config
        if web is not None:
            extra["tls"] = "yes" if web.tls is not None else "no"
            extra["basic_auth"] = "yes" if web.auth is not None else "no"
            if web.auth is not None and web.tls is None:
                log.warning("basic auth without TLS: passwords cross the network in clear")
        if self.shard.count > 1:
            extra["shard"] = f"{self.shard.index}/{self.shard.count}"
            extra["configured_targets"] = len(self.config.targets)
        log.info("serving metrics", extra=extra)


def log_warnings(config_file: str, warnings: list[str]) -> None:
    """What is valid but probably wrong in the configuration: a warning line each."""
    for warning in warnings:
        log.warning("configuration probably wrong", extra={"file": config_file, "problem": warning})
