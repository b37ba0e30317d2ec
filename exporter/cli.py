"""Flags and logging: checks them, loads the configuration (or starts the demo), and runs the
exporter (exporter.app) until told to stop. Runs on the main thread; no state of its own.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace

from exporter.app import DEFAULT_LIMITS, App, StartError, log_warnings
from exporter.build import version_text
from exporter.config import ConfigError, load_config
from exporter.config_warnings import config_warnings
from exporter.listen import DEFAULT_PORT, parse_listen_address
from exporter.logs import setup_logging
from exporter.server import check_telemetry_path
from exporter.sharding import resolve_shard
from exporter.webconfig import WebConfigError, load_web_config

EXIT_USAGE = 2
MAX_REQUESTS_LIMIT = 1000  # worker threads
MAX_CONNECTIONS_LIMIT = 65536
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
        log_warnings(args.config_file, warnings)
    else:
        return _usage(NO_CONFIG_HINT)

    app = App(
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
    except StartError as error:
        return _usage(str(error))
    finally:
        if simulator is not None:
            simulator.stop()


def _usage(message: str) -> int:
    print(f"tencent-ci-exporter: {message}", file=sys.stderr)
    return EXIT_USAGE
