"""The configuration file, declared once: the records' annotations are its rules (types, ranges,
defaults, `${VAR}`), exporter.yamlfile turns their first error into one line naming the key
path, and config.schema.json is made from them for editors (`python3 -m exporter.config`).
What is polled is declared in exporter.config_targets (with exporter.config_credentials), the
values settings take in exporter.config_values; this module holds the rest and the entry
points. No state: loading reads the file and the environment it is given and returns frozen
records. A setting given as null takes its default.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

from pydantic import AfterValidator, Field, TypeAdapter, WrapValidator, with_config
from typing_extensions import TypedDict

from exporter.config_targets import (
    DiscoveryConfig,
    DiscoveryEntries,
    ServiceConfig,
    TargetConfig,
    Targets,
)
from exporter.config_values import (
    DAY,
    HOUR,
    INTEGER,
    MINUTE,
    NUMBER,
    Duration,
    LocalPath,
    Name,
    Text,
    show_duration,
    show_seconds,
)
from exporter.listen import parse_listen_address
from exporter.smallfile import FileError, read_text
from exporter.snapshot import HistogramLayout
from exporter.strictyaml import clip, load_yaml, quote
from exporter.yamlfile import FORBID, Shaped, json_schema, problem, section, validated

__all__ = [  # the records the rest of the exporter reads, declared in exporter.config_targets
    "CallbacksConfig",
    "Config",
    "ConfigError",
    "DiscoveryConfig",
    "RateLimitConfig",
    "RetryConfig",
    "ServiceConfig",
    "TargetConfig",
    "config_schema",
    "load_config",
    "parse_config",
]


class ConfigError(FileError):
    """One line: `<source>: <key.path>: <problem>` (parts that are unknown are left out)."""


@section
@dataclass(frozen=True)
class RateLimitConfig:
    """API calls per credential (exporter.credentials.credential_key), shared by every target
    that uses the same credentials: a token bucket, and at most `concurrency` calls at once."""

    # Tencent's Cloud Monitor exporter polls at 15 requests/s by default; CI documents no limit.
    requests_per_second: Annotated[float, Field(gt=0, le=10_000, allow_inf_nan=False), NUMBER] = (
        15.0
    )
    # A second's worth of calls at once by default (Config.rate_limit): a poll's first calls
    # need not queue.
    burst: Annotated[int, Field(ge=1, le=10_000), INTEGER] = 15
    concurrency: Annotated[int, Field(ge=1, le=64), INTEGER] = 4


@section
@dataclass(frozen=True)
class RetryConfig:
    attempts: Annotated[int, Field(ge=1, le=10), INTEGER] = 3  # tries in all, the first included
    # Seconds before the second try, and the longest wait between two tries.
    initial_backoff: Annotated[float, Duration(0, 5 * MINUTE)] = 0.5
    max_backoff: Annotated[float, Duration(0, 5 * MINUTE)] = 10.0


def _burst(value: Any, validate: Callable[[Any], RateLimitConfig]) -> RateLimitConfig:
    limits = validate(value)
    if isinstance(value, dict) and value.get("burst") is None:
        return replace(limits, burst=max(1, math.ceil(limits.requests_per_second)))
    return limits


def _backoffs(retry: RetryConfig) -> RetryConfig:
    if retry.initial_backoff > retry.max_backoff:
        first, longest = show_seconds(retry.initial_backoff), show_seconds(retry.max_backoff)
        raise problem(f"{first} is longer than retry.max_backoff ({longest})", "initial_backoff")
    return retry


def _ascending(bounds: tuple[float, ...]) -> tuple[float, ...]:
    """Every bound is a series per stream (and per finished state), so a few."""
    if not bounds:
        raise problem("is empty (leave it out for the default bounds)")
    if len(bounds) > 30:
        raise problem(f"must have at most 30 bounds, got {len(bounds)}")
    for index, (before, bound) in enumerate(itertools.pairwise(bounds), 1):
        if bound == before:
            raise problem(f"duplicate of the bound before it ({show_duration(before)})", index)
        if bound < before:
            shown = show_duration(before)
            raise problem(f"must be greater than the bound before it ({shown})", index)
    return bounds


# Beyond 30 days a bound is a typo, not a job's run time or wait.
Bounds = Annotated[
    tuple[Annotated[float, Duration(0, 30 * DAY, above=True)], ...], AfterValidator(_ascending)
]


@with_config(FORBID)
class Histograms(TypedDict, total=False):
    run_time_buckets: Bounds | None
    queue_wait_buckets: Bounds | None


def _layout(value: Any, validate: Callable[[Any], Any], info: object) -> HistogramLayout:
    given, default = validate(value), HistogramLayout()
    return HistogramLayout(
        given.get("run_time_buckets") or default.run_time,
        given.get("queue_wait_buckets") or default.queue_wait,
    )


def _state_file(path: str) -> str:
    # The file itself may not exist yet (the first run writes it); its directory must.
    if _is_directory(path):
        raise problem(f"{quote(path)} is a directory, not a file")
    if not _is_directory(os.path.dirname(path)):
        raise problem(f"directory {quote(os.path.dirname(path))} does not exist")
    return path


def _is_directory(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):  # ValueError: not encodable as a file name
        return False


def _listen_address(text: str) -> str:
    try:
        parse_listen_address(text)
    except ValueError as error:
        raise problem(str(error).removeprefix("invalid listen address ")) from None
    return text


_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")


def _callback_secret(text: str) -> str:
    if not _SECRET_RE.fullmatch(text):
        why = "16 to 128 letters, digits, _ or -: it goes in the callback URL"
        raise problem(f"must be {why} (the value is not shown)")
    return text


def _network(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise problem(
            f"{quote(clip(text))} is not an address or network (e.g. 10.0.0.0/8)"
        ) from None


@section
@dataclass(frozen=True)
class CallbacksConfig:
    """The callback receiver (exporter.receiver): off unless the file has `callbacks:`."""

    # Its own port, so that CI can reach it without reaching /metrics.
    listen_address: Annotated[Name, AfterValidator(_listen_address)]
    # The part of the callback URL that proves a request comes from CI: /callback/<secret>.
    secret: Annotated[Text, AfterValidator(_callback_secret)] = field(repr=False)
    # Source networks allowed to call; none: any (the secret still decides).
    allow: tuple[Annotated[Name, AfterValidator(_network)], ...] = ()
    max_body_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024), INTEGER] = 64 * 1024
    # How long a request's body may take to arrive once its head has.
    body_timeout: Annotated[float, Duration(0, MINUTE, above=True)] = 5.0


@section
@dataclass(frozen=True)
class Config:
    targets: Targets = ()
    # Targets found by listing the buckets CI's services are enabled on (exporter.poll.discovery).
    discovery: DiscoveryEntries = ()
    poll_interval: Annotated[float, Duration(1, DAY)] = 60.0
    request_timeout: Annotated[float, Duration(0, 10 * MINUTE, above=True)] = 10.0
    failure_code_limit: Annotated[int, Field(ge=1, le=10_000), INTEGER] = 50
    # Queues polled and exported per (target, service), the first by QueueId; the rest are counted
    # (tencent_ci_queues_dropped). 100 queues of a service with its default tags (19 for media)
    # are 1,900 streams, about 160,000 samples: within what one scrape renders in a few seconds
    # (the collector is sized for ~10,000 streams in all) and what a poll lists at the default
    # rate limit. A bucket with more queues than that is a mistake or an attack more often than not.
    max_queues_per_service: Annotated[int, Field(ge=1, le=10_000), INTEGER] = 100
    # How far the clock stamping CI's jobs may be from our estimate of it (ours, centred by
    # CI's Date header); creation-time windows overlap by this much.
    clock_skew_tolerance: Annotated[float, Duration(0, HOUR)] = 30.0
    rate_limit: Annotated[RateLimitConfig, WrapValidator(_burst)] = field(
        default_factory=RateLimitConfig
    )
    retry: Annotated[RetryConfig, AfterValidator(_backoffs)] = field(default_factory=RetryConfig)
    # The longest interval between polls of a stream that has been idle; 0: every poll.
    idle_tag_backoff: Annotated[float, Duration(0, DAY)] = 10 * MINUTE
    # Absolute; its directory existed when the config was read.
    state_file: Annotated[LocalPath, AfterValidator(_state_file)] | None = None
    # The bucket bounds of every stream's histograms (of the services that have them).
    histograms: Annotated[HistogramLayout, Shaped(Histograms, _layout)] = field(
        default_factory=HistogramLayout
    )
    # Finished jobs and runs pushed by CI, counted with the polls' (exporter.receiver).
    callbacks: CallbacksConfig | None = None


# --- entry points -------------------------------------------------------------------------


def load_config(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read and parse the file at `path`; `environ` defaults to os.environ."""
    try:
        text = read_text(path)
    except FileError as exc:
        raise ConfigError(exc.where, exc.problem, path) from None
    return parse_config(text, path, os.environ if environ is None else environ)


def parse_config(text: str, source: str, environ: Mapping[str, str]) -> Config:
    """Parse YAML `text`; `source` names it in errors (usually the file's path)."""
    try:
        document = load_yaml(text)
        if document is None:
            raise FileError("top level", "expected a mapping, got an empty document")
        return validated(_CONFIG, document, environ, secret=("credentials", "secret"))
    except FileError as exc:
        raise ConfigError(exc.where, exc.problem, source) from None


def config_schema() -> dict[str, Any]:
    """config.schema.json: `python3 -m exporter.config > config.schema.json`."""
    schema = json_schema(_CONFIG, "Configuration of tencent-ci-exporter (README.md, Configuration)")
    schema["anyOf"] = [  # at least one target or one discovery entry
        {"required": [key], "properties": {key: {"minItems": 1}}}
        for key in ("targets", "discovery")
    ]
    return schema


def _polls_something(config: Config) -> Config:
    if not config.targets and not config.discovery:
        raise problem("must list at least one target (or give discovery)", "targets")
    return config


_CONFIG: TypeAdapter[Config] = TypeAdapter(Annotated[Config, AfterValidator(_polls_something)])

if __name__ == "__main__":
    print(json.dumps(config_schema(), indent=2, ensure_ascii=False))
