"""Flags, logging, signals: builds the exporter from its config and runs it until told to stop.

Threads: the main thread owns `_App` and waits for signals; a signal handler only sets events.
A reload (SIGHUP on the main thread, POST /-/reload on an HTTP worker) runs under
`_App._reload_lock`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from types import FrameType
from typing import Any

from exporter import __version__
from exporter.api_stats import ApiStats
from exporter.build import version_text
from exporter.config import Config, ConfigError, load_config
from exporter.config_warnings import config_warnings
from exporter.exposition import exporter_expositions
from exporter.httpserver import ConnectionLimits
from exporter.listen import DEFAULT_PORT, parse_listen_address
from exporter.logs import setup_logging
from exporter.poller import Poller
from exporter.receiver import CallbackReceiver, Callbacks
from exporter.server import ExporterServer, check_telemetry_path
from exporter.sharding import Shard, resolve_shard
from exporter.webconfig import WebConfig, WebConfigError, load_web_config

log = logging.getLogger("exporter")

EXIT_USAGE = 2
DEFAULT_LIMITS = ConnectionLimits()
MAX_REQUESTS_LIMIT = 1000  # worker threads
MAX_CONNECTIONS_LIMIT = 65536
RELOAD_FAILED = "configuration reload failed; keeping the running configuration"
RELOAD_FAILED_NO_RECEIVER = (
    "configuration reload failed; the callback receiver is stopped, the rest of the running "
    "configuration is kept"
)
NO_CONFIG_HINT = (
    "no configuration: pass --config.file=FILE to poll your buckets (see README.md), "
    "or --demo to try the exporter against the built-in CI simulator"
)


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, not the usage block: the flag and what is wrong with it.
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="tencent-ci-exporter",
        description="Prometheus exporter for Tencent Cloud CI (Cloud Infinite) queues and jobs.",
    )
    parser.add_argument(
        "--config.file", dest="config_file", metavar="FILE", help="YAML configuration file"
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=f":{DEFAULT_PORT}",
        metavar="[HOST]:PORT",
        help=f"address to serve on (default :{DEFAULT_PORT})",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="TLS and basic auth, in the Prometheus exporter-toolkit's web config format",
    )
    parser.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        metavar="PATH",
        help="path of the metrics (default /metrics)",
    )
    parser.add_argument(
        "--web.max-requests",
        dest="max_requests",
        type=_bounded_int(MAX_REQUESTS_LIMIT),
        default=DEFAULT_LIMITS.max_requests,
        metavar="N",
        help="requests served at once; more wait their turn"
        f" (default {DEFAULT_LIMITS.max_requests})",
    )
    parser.add_argument(
        "--web.max-connections",
        dest="max_connections",
        type=_bounded_int(MAX_CONNECTIONS_LIMIT),
        default=DEFAULT_LIMITS.max_connections,
        metavar="N",
        help="open client connections; at the limit the oldest without a request is closed"
        f" (default {DEFAULT_LIMITS.max_connections})",
    )
    parser.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        choices=["debug", "info", "warn", "error"],
        help="log only events of this level or above: debug, info, warn or error (default info)",
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        default="logfmt",
        choices=["logfmt", "json"],
        help="how each log line is written on stderr, one line per event: logfmt or json"
        " (default logfmt)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="run against the built-in CI simulator with a lively workload",
    )
    parser.add_argument(
        "--check-config",
        dest="check_config",
        action="store_true",
        help="validate the configuration file and exit",
    )
    parser.add_argument(
        "--shard.count",
        dest="shard_count",
        type=int,
        default=1,
        metavar="N",
        help="spread the configured buckets over N exporter processes (default 1)",
    )
    parser.add_argument(
        "--shard.index",
        dest="shard_index",
        type=int,
        default=None,
        metavar="I",
        help="which of the N shards this process is, 0 to N-1 (default: the ordinal at the"
        " end of HOSTNAME, as in a StatefulSet pod)",
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the version, the revision it was built from and the Python running it, and"
        " exit",
    )
    return parser


class _VersionAction(argparse.Action):
    """`--version` as Prometheus prints it: several lines, which argparse's own version action
    would run together into one paragraph."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        sys.stdout.write(version_text(parser.prog))
        parser.exit(0)


def _bounded_int(maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = text.strip()
        if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= maximum:
            raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {maximum}")
        return int(value)

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        check_telemetry_path(args.telemetry_path)
    except ValueError as error:
        return _usage(f"--web.telemetry-path: {error}")
    try:
        address = parse_listen_address(args.listen_address)
    except ValueError as error:
        return _usage(f"--web.listen-address: {error}")

    if args.check_config and not args.config_file:
        return _usage("--check-config needs --config.file")
    try:
        shard = resolve_shard(args.shard_count, args.shard_index, os.environ)
    except ValueError as error:
        return _usage(str(error))
    try:
        web_config = load_web_config(args.web_config_file) if args.web_config_file else None
    except WebConfigError as error:
        return _usage(f"--web.config.file: {error}")

    simulator = None
    if args.demo:
        from exporter.demo import demo_endpoints, send_demo_callbacks, start_demo

        simulator, config = start_demo()
    elif args.config_file:
        try:
            config = load_config(args.config_file)
        except ConfigError as error:
            return _usage(str(error))
        warnings = config_warnings(config)
        if args.check_config:
            for warning in warnings:
                print(f"{args.config_file}: warning: {warning}")
            print(f"{args.config_file}: OK ({len(config.targets)} target(s))")
            return 0
        _log_warnings(args.config_file, warnings)
    else:
        return _usage(NO_CONFIG_HINT)

    app = _App(
        config,
        address,
        args.telemetry_path,
        shard,
        config_file=args.config_file,
        web_config=web_config,
        web_config_file=args.web_config_file,
        limits=replace(
            DEFAULT_LIMITS,
            max_requests=args.max_requests,
            max_connections=args.max_connections,
        ),
        poller_options=demo_endpoints(simulator) if simulator is not None else {},
    )
    if simulator is not None:
        sim = simulator
        app.on_receiving = lambda receiver: send_demo_callbacks(sim, receiver)
    try:
        return app.serve(demo=simulator is not None)
    finally:
        if simulator is not None:
            simulator.stop()


def _usage(message: str) -> int:
    print(f"tencent-ci-exporter: {message}", file=sys.stderr)
    return EXIT_USAGE


class _App:
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
            _log_warnings(self.config_file, config_warnings(config))
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
            return _usage(f"--web.listen-address: {error}")
        try:
            self.callbacks.configure(self.config.callbacks)
        except OSError as error:
            server.stop()
            return _usage(f"callbacks.listen_address: {error}")
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


def _log_warnings(config_file: str, warnings: list[str]) -> None:
    """What is valid but probably wrong in the configuration: a warning line each."""
    for warning in warnings:
        log.warning("configuration probably wrong", extra={"file": config_file, "problem": warning})
