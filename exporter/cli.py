"""Flags, logging, signals: builds the exporter from its config and runs it until told to stop."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.api_stats import ApiStats
from exporter.collector import CICollector
from exporter.config import Config, ConfigError, load_config
from exporter.logs import setup_logging
from exporter.poller import Poller
from exporter.server import (
    DEFAULT_PORT,
    ExporterServer,
    check_telemetry_path,
    parse_listen_address,
)

log = logging.getLogger("exporter")

EXIT_USAGE = 2
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
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        metavar="PATH",
        help="path of the metrics (default /metrics)",
    )
    parser.add_argument(
        "--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"]
    )
    parser.add_argument(
        "--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"]
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
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


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

    simulator = None
    if args.demo:
        from exporter.demo import start_demo

        simulator, config = start_demo()
    elif args.config_file:
        try:
            config = load_config(args.config_file)
        except ConfigError as error:
            return _usage(str(error))
        if args.check_config:
            print(f"{args.config_file}: OK ({len(config.targets)} target(s))")
            return 0
    else:
        return _usage(NO_CONFIG_HINT)

    try:
        return _serve(config, address, args.telemetry_path, demo=simulator is not None)
    finally:
        if simulator is not None:
            simulator.stop()


def _usage(message: str) -> int:
    print(f"tencent-ci-exporter: {message}", file=sys.stderr)
    return EXIT_USAGE


def _serve(config: Config, address: tuple[str, int], telemetry_path: str, *, demo: bool) -> int:
    stats = ApiStats()
    poller = Poller(config, stats)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CICollector(poller, stats, __version__))
    try:
        # The constructor binds: a port in use fails here, not in start().
        server = ExporterServer(address, poller, registry, telemetry_path, version=__version__)
        server.start()
    except OSError as error:
        # ExporterServer's message already says "cannot listen on host:port: reason".
        return _usage(f"--web.listen-address: {error}")
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    host = "localhost" if address[0] in ("", "0.0.0.0", "::") else address[0]
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{server.port}{telemetry_path}"
    if demo:
        print(
            f"Demo running against the built-in CI simulator; metrics at {url}\n"
            "(one demo bucket is throttled now and then, to show the error metrics)",
            flush=True,
        )
    log.info(
        "serving metrics",
        extra={"url": url, "targets": len(config.targets), "poll_interval": config.poll_interval},
    )
    poller.start()
    stop.wait()
    log.info("shutting down")
    server.stop()
    poller.stop(timeout=1.0)
    return 0
