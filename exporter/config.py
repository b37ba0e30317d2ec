"""YAML -> frozen dataclasses. Every error is one line naming the key path.

The file's shape (all durations as below):

    poll_interval: 60s            # 1s to 24h, default 60s
    request_timeout: 10s          # more than 0, at most 10m, default 10s
    failure_code_limit: 50        # integer 1 to 10000, default 50
    max_queues_per_service: 100   # integer 1 to 10000, default 100
    clock_skew_tolerance: 30s     # 0 to 1h, default 30s
    idle_tag_backoff: 10m         # 0 (off) to 24h, default 10m
    rate_limit:                   # per credential, shared by the targets using it
      requests_per_second: 15     # more than 0, at most 10000, default 15
      burst: 15                   # 1 to 10000, default requests_per_second rounded up
      concurrency: 4              # 1 to 64, default 4
    retry:
      attempts: 3                 # tries in all, 1 to 10, default 3
      initial_backoff: 500ms      # at most max_backoff, default 500ms
      max_backoff: 10s            # at most 5m, default 10s
    histograms:                   # bucket bounds of every stream's histograms
      run_time_buckets: [5s, 30s, 1m, 5m, 15m, 1h, 4h]    # the default; 1 to 30 bounds,
      queue_wait_buckets: [1s, 10s, 1m, 5m, 1h]          # strictly ascending, > 0, <= 720h
    state_file: /var/lib/...      # optional; its directory must exist
    targets:                      # required, at least one
      - bucket: name-1250000000   # BucketName-APPID
        region: ap-chongqing
        endpoint: https://...     # optional: http(s)://host[:port], no path
        credentials: ...          # optional, exactly one form:
          # {secret_id: ..., secret_key: ..., token: ..., expiration: 2026-11-21T10:00:00Z}
          # {file: /path, profile: default}       (must exist and be readable)
          # {cvm_role: name | auto, metadata_endpoint: http://...}
        services: {media: {tags: [Transcode]}, speech: {}, ai: }     # optional
          # {histograms: false} under a service: its streams have no histograms (default true)

Durations are a plain number of seconds (90, 1.5, or the string "90" so that `${VAR}` works)
or a sequence of decimal amounts with units ms, s, m, h: "30s", "2m", "1h", "1m30s", "1.5s",
"500ms" (the forms Go's time.ParseDuration takes, without negatives).

Strings expand `${VAR}` from the environment, also inside longer text; `${VAR:-default}`
gives a default when VAR is unset or empty; `$${` is a literal `${`. An unset variable without
a default is an error. Integers accept a string of digits for the same reason, and true or
false the strings "true" and "false".

The YAML is read more strictly than YAML 1.1 does: integers are plain decimal (`010`, `0x1e`,
`1_000` and `1:30` are refused rather than read as 8, 30, 1000 and 90), dates stay text, keys
are always text (`yes:` is the key "yes", not True), a key given twice in one mapping is
refused (PyYAML keeps the last), and so are explicit tags (`!!int`, `!!python/...`). The
file must be a regular file of at most 1 MiB.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

from exporter.ci.services import SERVICES
from exporter.credentials import (
    DEFAULT_METADATA_ENDPOINT,
    DEFAULT_PROFILE,
    ENV_SECRET_ID,
    ENV_SECRET_KEY,
    ENV_SESSION_TOKEN,
    ISO_HINT,
    ROLE_NAME_RE,
    Credentials,
    CredentialsFile,
    CredentialSource,
    CVMRole,
    format_iso_time,
    from_environment,
    header_safe,
    parse_iso_time,
)
from exporter.snapshot import HistogramLayout
from exporter.yamlfile import (
    MAX_INT_DIGITS,
    Checks,
    FileError,
    OddNumber,
    StrictLoader,
    load_yaml,
    quote,
    read_text,
)

DEFAULT_POLL_INTERVAL = 60.0
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_FAILURE_CODE_LIMIT = 50
# Queues polled and exported per (target, service), the first by QueueId; the rest are counted
# (tencent_ci_queues_dropped). 100 queues of a service with its default tags (19 for media)
# are 1,900 streams, about 160,000 samples: within what one scrape renders in a few seconds
# (the collector is sized for ~10,000 streams in all) and what a poll lists at the default
# rate limit. A bucket with more queues than that is a mistake or an attack more often than not.
DEFAULT_MAX_QUEUES_PER_SERVICE = 100
DEFAULT_CLOCK_SKEW = 30.0
DEFAULT_IDLE_TAG_BACKOFF = 600.0
# Tencent's Cloud Monitor exporter polls at 15 requests/s by default; CI documents no limit.
DEFAULT_REQUESTS_PER_SECOND = 15.0
DEFAULT_CONCURRENCY = 4
DEFAULT_RETRY_ATTEMPTS = 3
DEFAULT_INITIAL_BACKOFF = 0.5
DEFAULT_MAX_BACKOFF = 10.0
MIN_POLL_INTERVAL = 1.0
# Upper bounds: beyond them a value is a typo (a missing unit, an extra digit), and a huge
# wait or timeout would make the exporter look hung.
MAX_POLL_INTERVAL = 24 * 3600.0
MAX_REQUEST_TIMEOUT = 10 * 60.0
MAX_CLOCK_SKEW = 3600.0
MAX_FAILURE_CODE_LIMIT = 10_000
MAX_QUEUES_PER_SERVICE = 10_000
MAX_IDLE_TAG_BACKOFF = 24 * 3600.0
MAX_REQUESTS_PER_SECOND = 10_000.0
MAX_BURST = 10_000
MAX_CONCURRENCY = 64
MAX_RETRY_ATTEMPTS = 10
MAX_BACKOFF = 5 * 60.0
# Histogram bounds: every bound is a series per stream (and per finished state), so a few;
# beyond 30 days a bound is a typo, not a job's run time or wait.
MAX_BUCKETS = 30
MAX_BUCKET_BOUND = 30 * 24 * 3600.0

TOP_KEYS = (
    "poll_interval",
    "request_timeout",
    "failure_code_limit",
    "max_queues_per_service",
    "clock_skew_tolerance",
    "idle_tag_backoff",
    "rate_limit",
    "retry",
    "histograms",
    "state_file",
    "targets",
)
RATE_LIMIT_KEYS = ("requests_per_second", "burst", "concurrency")
RETRY_KEYS = ("attempts", "initial_backoff", "max_backoff")
HISTOGRAM_KEYS = ("run_time_buckets", "queue_wait_buckets")
TARGET_KEYS = ("bucket", "region", "endpoint", "credentials", "services")
# The three forms of `credentials:`; a target's credentials use the keys of exactly one.
STATIC_CREDENTIAL_KEYS = ("secret_id", "secret_key", "token", "expiration")
FILE_CREDENTIAL_KEYS = ("file", "profile")
ROLE_CREDENTIAL_KEYS = ("cvm_role", "metadata_endpoint")
CREDENTIAL_KEYS = STATIC_CREDENTIAL_KEYS + FILE_CREDENTIAL_KEYS + ROLE_CREDENTIAL_KEYS
SERVICE_KEYS = ("tags", "histograms")
# Under `credentials:` no error shows a value (nor a key that is not one of the allowed):
# a secret typed in the wrong field, or where a key belongs, would be printed back.
_CREDENTIALS = ".credentials"
_NOT_SHOWN = "(the value is not shown)"
# The names an error under `credentials:` may show: a key in snake case, too short to be a
# secret, and an environment variable's name in capitals.
_SHOWN_KEY_RE = re.compile(r"[a-z_]{1,15}")
_SHOWN_VARIABLE_RE = re.compile(r"[A-Z_][A-Z0-9_]*")
_Loader = StrictLoader  # the name the tests reach the loader by


class ConfigError(FileError):
    """One line: `<source>: <key.path>: <problem>` (parts that are unknown are left out)."""


@dataclass(frozen=True)
class ServiceConfig:
    name: str  # a key of exporter.ci.services.SERVICES
    tags: tuple[str, ...]  # the documented tags of the service when the user named none
    histograms: bool = True  # False: its streams observe no run time or queue wait


@dataclass(frozen=True)
class TargetConfig:
    bucket: str
    region: str
    endpoint: str  # e.g. https://<bucket>.ci.<region>.myqcloud.com
    credentials: CredentialSource = field(repr=False)
    services: tuple[ServiceConfig, ...]


@dataclass(frozen=True)
class RateLimitConfig:
    """API calls per credential (exporter.credentials.credential_key), shared by every target
    that uses the same credentials: a token bucket, and at most `concurrency` calls at once."""

    requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND
    burst: int = math.ceil(DEFAULT_REQUESTS_PER_SECOND)
    concurrency: int = DEFAULT_CONCURRENCY


@dataclass(frozen=True)
class RetryConfig:
    attempts: int = DEFAULT_RETRY_ATTEMPTS  # tries in all, the first included
    initial_backoff: float = DEFAULT_INITIAL_BACKOFF  # seconds before the second try
    max_backoff: float = DEFAULT_MAX_BACKOFF  # the longest wait between two tries


@dataclass(frozen=True)
class Config:
    targets: tuple[TargetConfig, ...]
    poll_interval: float = DEFAULT_POLL_INTERVAL
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    failure_code_limit: int = DEFAULT_FAILURE_CODE_LIMIT
    # Queues polled per (target, service); the rest are left out and counted.
    max_queues_per_service: int = DEFAULT_MAX_QUEUES_PER_SERVICE
    # How far the clock stamping CI's jobs may be from our estimate of it (ours, centred by
    # CI's Date header); creation-time windows overlap by this much.
    clock_skew_tolerance: float = DEFAULT_CLOCK_SKEW
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    # The longest interval between polls of a stream that has been idle; 0: every poll.
    idle_tag_backoff: float = DEFAULT_IDLE_TAG_BACKOFF
    state_file: str | None = None  # absolute; its directory existed when the config was read
    # The bucket bounds of every stream's histograms (of the services that have them).
    histograms: HistogramLayout = field(default_factory=HistogramLayout)


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
        return _parse_top(document, environ)
    except FileError as exc:
        raise ConfigError(exc.where, exc.problem, source) from None


def parse_duration(
    value: object, path: str, minimum: float = 0.0, maximum: float = math.inf
) -> float:
    """A duration in seconds from a number or text such as "1m30s"; see the module doc."""
    seconds = _duration_seconds(value, path)
    if seconds < minimum:
        raise ConfigError(
            path, f"{_show_seconds(seconds)} is too short (minimum {_show_seconds(minimum)})"
        )
    if seconds > maximum:
        # Infinite here means digits too many for a float: show no number then.
        shown = f"{_show_seconds(seconds)} " if math.isfinite(seconds) else ""
        raise ConfigError(path, f"{shown}is longer than the maximum of {_show_limit(maximum)}")
    return seconds


# --- the schema ---------------------------------------------------------------------------


def _parse_top(document: object, environ: Mapping[str, str]) -> Config:
    if document is None:
        raise ConfigError("top level", "expected a mapping, got an empty document")
    top = _CHECKS.mapping(document, "top level")
    _check_keys(top, "", TOP_KEYS, required=("targets",))
    settings = _Section(top, "", environ)
    # The settings before the targets: the order a reader meets them in the file.
    poll_interval = _duration_key(
        settings, "poll_interval", DEFAULT_POLL_INTERVAL, MIN_POLL_INTERVAL, MAX_POLL_INTERVAL
    )
    request_timeout = _positive_duration(settings, "request_timeout")
    failure_code_limit = _int_key(
        settings,
        "failure_code_limit",
        DEFAULT_FAILURE_CODE_LIMIT,
        minimum=1,
        maximum=MAX_FAILURE_CODE_LIMIT,
    )
    max_queues = _int_key(
        settings,
        "max_queues_per_service",
        DEFAULT_MAX_QUEUES_PER_SERVICE,
        minimum=1,
        maximum=MAX_QUEUES_PER_SERVICE,
    )
    clock_skew = _duration_key(
        settings, "clock_skew_tolerance", DEFAULT_CLOCK_SKEW, 0.0, MAX_CLOCK_SKEW
    )
    idle_tag_backoff = _duration_key(
        settings, "idle_tag_backoff", DEFAULT_IDLE_TAG_BACKOFF, 0.0, MAX_IDLE_TAG_BACKOFF
    )
    rate_limit = _rate_limit(top.get("rate_limit"), environ)
    retry = _retry(top.get("retry"), environ)
    histograms = _histograms(top.get("histograms"), environ)
    state_file = _state_file(top.get("state_file"), environ)
    return Config(
        targets=_parse_targets(top["targets"], environ),
        poll_interval=poll_interval,
        request_timeout=request_timeout,
        failure_code_limit=failure_code_limit,
        max_queues_per_service=max_queues,
        clock_skew_tolerance=clock_skew,
        rate_limit=rate_limit,
        retry=retry,
        idle_tag_backoff=idle_tag_backoff,
        state_file=state_file,
        histograms=histograms,
    )


def _rate_limit(value: object, environ: Mapping[str, str]) -> RateLimitConfig:
    if value is None:
        return RateLimitConfig()
    settings = _section(value, "rate_limit", RATE_LIMIT_KEYS, environ)
    per_second = _positive_number_key(
        settings, "requests_per_second", DEFAULT_REQUESTS_PER_SECOND, MAX_REQUESTS_PER_SECOND
    )
    # A second's worth of calls at once by default: a poll's first calls need not queue.
    burst = _int_key(settings, "burst", max(1, math.ceil(per_second)), 1, MAX_BURST)
    concurrency = _int_key(settings, "concurrency", DEFAULT_CONCURRENCY, 1, MAX_CONCURRENCY)
    return RateLimitConfig(per_second, burst, concurrency)


def _retry(value: object, environ: Mapping[str, str]) -> RetryConfig:
    if value is None:
        return RetryConfig()
    settings = _section(value, "retry", RETRY_KEYS, environ)
    attempts = _int_key(settings, "attempts", DEFAULT_RETRY_ATTEMPTS, 1, MAX_RETRY_ATTEMPTS)
    initial = _duration_key(settings, "initial_backoff", DEFAULT_INITIAL_BACKOFF, 0.0, MAX_BACKOFF)
    longest = _duration_key(settings, "max_backoff", DEFAULT_MAX_BACKOFF, 0.0, MAX_BACKOFF)
    if initial > longest:
        raise ConfigError(
            "retry.initial_backoff",
            f"{_show_seconds(initial)} is longer than retry.max_backoff ({_show_seconds(longest)})",
        )
    return RetryConfig(attempts, initial, longest)


def _histograms(value: object, environ: Mapping[str, str]) -> HistogramLayout:
    if value is None:
        return HistogramLayout()
    settings = _section(value, "histograms", HISTOGRAM_KEYS, environ)
    default = HistogramLayout()
    return HistogramLayout(
        run_time=_bounds(settings, "run_time_buckets", default.run_time),
        queue_wait=_bounds(settings, "queue_wait_buckets", default.queue_wait),
    )


def _bounds(settings: _Section, key: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """A histogram's bucket bounds: durations, strictly ascending, more than 0."""
    path, value = settings.setting(key)
    if value is None:
        return default
    items = _CHECKS.items(value, path)
    if not items:
        raise ConfigError(path, "is empty (leave it out for the default bounds)")
    if len(items) > MAX_BUCKETS:
        raise ConfigError(path, f"must have at most {MAX_BUCKETS} bounds, got {len(items)}")
    bounds: list[float] = []
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        bound = _bound(item, item_path, settings.environ)
        if bounds and bound == bounds[-1]:
            raise ConfigError(
                item_path, f"duplicate of the bound before it ({_show_duration(bound)})"
            )
        if bounds and bound < bounds[-1]:
            shown = _show_duration(bounds[-1])
            raise ConfigError(item_path, f"must be greater than the bound before it ({shown})")
        bounds.append(bound)
    return tuple(bounds)


def _bound(value: object, path: str, environ: Mapping[str, str]) -> float:
    text = _expand(value, path, environ) if isinstance(value, str) else value
    seconds = parse_duration(text, path, 0.0, MAX_BUCKET_BOUND)
    if seconds <= 0:
        raise ConfigError(path, "must be more than 0s")
    return seconds


def _state_file(value: object, environ: Mapping[str, str]) -> str | None:
    if value is None:
        return None
    path = _local_path(value, "state_file", environ)
    # The file itself may not exist yet (the first run writes it); its directory must.
    if _is_directory(path):
        raise ConfigError("state_file", f"{quote(path)} is a directory, not a file")
    directory = os.path.dirname(path)
    if not _is_directory(directory):
        raise ConfigError("state_file", f"directory {quote(directory)} does not exist")
    return path


def _local_path(value: object, path: str, environ: Mapping[str, str]) -> str:
    """Absolute (relative to the working directory), with ~ expanded."""
    text = _string(value, path, environ, nonempty=True).strip()
    if "\0" in text:
        raise ConfigError(path, "must not contain a NUL character")
    return os.path.abspath(os.path.expanduser(text))


def _is_directory(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):  # ValueError: not encodable as a file name
        return False


def _parse_targets(value: object, environ: Mapping[str, str]) -> tuple[TargetConfig, ...]:
    if value is None or (isinstance(value, list) and not value):
        raise ConfigError("targets", "must list at least one target")
    items = _CHECKS.items(value, "targets")
    targets: list[TargetConfig] = []
    first_seen: dict[tuple[str, str], int] = {}
    for index, item in enumerate(items):
        path = f"targets[{index}]"
        target = _parse_target(item, path, environ)
        key = (target.bucket, target.region)
        if key in first_seen:
            raise ConfigError(
                path, f"duplicate target: same bucket and region as targets[{first_seen[key]}]"
            )
        first_seen[key] = index
        targets.append(target)
    return tuple(targets)


def _parse_target(value: object, path: str, environ: Mapping[str, str]) -> TargetConfig:
    raw = _CHECKS.mapping(value, path)
    _check_keys(raw, path, TARGET_KEYS, required=("bucket", "region"))
    bucket = _bucket(raw["bucket"], f"{path}.bucket", environ)
    region = _region(raw["region"], f"{path}.region", environ)
    endpoint_path = f"{path}.endpoint"
    endpoint = (
        _endpoint(raw["endpoint"], endpoint_path, environ)
        if raw.get("endpoint") is not None
        else f"https://{bucket}.ci.{region}.myqcloud.com"
    )
    return TargetConfig(
        bucket=bucket,
        region=region,
        endpoint=endpoint,
        credentials=_credentials(raw.get("credentials"), f"{path}.credentials", environ),
        services=_services(raw.get("services"), f"{path}.services", environ),
    )


_BUCKET_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?-[0-9]+")
_APPID_RE = re.compile(r".+-[0-9]+")
_REGION_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def _bucket(value: object, path: str, environ: Mapping[str, str]) -> str:
    bucket = _string(value, path, environ, nonempty=True)
    if not _APPID_RE.fullmatch(bucket):
        raise ConfigError(path, f"{quote(bucket)} has no -APPID suffix (expected BucketName-APPID)")
    if not _BUCKET_RE.fullmatch(bucket):
        raise ConfigError(
            path,
            f"{quote(bucket)} is not a valid bucket name "
            "(lowercase letters, digits and dashes, then -APPID)",
        )
    return bucket


def _region(value: object, path: str, environ: Mapping[str, str]) -> str:
    region = _string(value, path, environ, nonempty=True)
    if not _REGION_RE.fullmatch(region):
        raise ConfigError(
            path,
            f"{quote(region)} is not a region "
            "(lowercase letters, digits and dashes, e.g. ap-guangzhou)",
        )
    return region


def _endpoint(value: object, path: str, environ: Mapping[str, str]) -> str:
    parts = _url(value, path, environ, "http(s)://host[:port]", with_path=False)
    return f"{parts.scheme}://{parts.netloc}"


def _metadata_endpoint(value: object, path: str, environ: Mapping[str, str]) -> str:
    parts = _url(value, path, environ, "http(s)://host[:port]/path/", with_path=True)
    # Paths under it are appended: cam/security-credentials/<role>.
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/"


def _url(
    value: object, path: str, environ: Mapping[str, str], form: str, with_path: bool
) -> SplitResult:
    text = _string(value, path, environ, nonempty=True)
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ConfigError(path, f"is not a URL of the form {form}") from None
    try:
        port = parts.port
    except ValueError:
        port = 0  # not a number, or out of range
    if "@" in parts.netloc:
        # user:password@host: never echo it.
        raise ConfigError(path, f"must not contain user info (expected {form})")
    problem = ""
    if parts.scheme not in ("http", "https"):
        problem = "must start with http:// or https://"
    elif not parts.hostname:
        problem = "has no host"
    elif port == 0:
        problem = "has a bad port"
    elif with_path and (parts.query or parts.fragment):
        problem = "must not have a query or fragment"
    elif not with_path and (parts.path not in ("", "/") or parts.query or parts.fragment):
        problem = "must not have a path, query or fragment"
    if problem:
        shown = "" if _CREDENTIALS in path else f"{quote(_clip(text, 80))} "
        raise ConfigError(path, f"{shown}{problem} (expected {form})")
    return parts


def _credentials(value: object, path: str, environ: Mapping[str, str]) -> CredentialSource:
    if value is None:
        return _environment_credentials(path, environ)
    raw = _CHECKS.mapping(value, path)
    for key in raw:
        if key not in CREDENTIAL_KEYS:
            # A key that is not one may be a secret written where a key belongs.
            shown = _join(path, key) if _SHOWN_KEY_RE.fullmatch(key) else path
            what = "unknown key" if shown != path else "a key that is not one, not shown"
            raise ConfigError(shown, f"{what} (allowed: {', '.join(CREDENTIAL_KEYS)})")
    forms = [
        keys
        for keys in (STATIC_CREDENTIAL_KEYS, FILE_CREDENTIAL_KEYS, ROLE_CREDENTIAL_KEYS)
        if any(key in raw for key in keys)
    ]
    if len(forms) > 1:
        # The first key of each form, in the order the file gives them.
        named = [next(key for key in raw if key in keys) for keys in forms]
        named.sort(key=list(raw).index)
        raise ConfigError(
            path,
            f"{_and(named)} cannot be used together "
            "(give secret_id and secret_key, or a file, or a cvm_role)",
        )
    if forms and forms[0] is FILE_CREDENTIAL_KEYS:
        return _credentials_file(raw, path, environ)
    if forms and forms[0] is ROLE_CREDENTIAL_KEYS:
        return _cvm_role(raw, path, environ)
    return _static_credentials(raw, path, environ)


def _static_credentials(
    raw: Mapping[Any, Any], path: str, environ: Mapping[str, str]
) -> Credentials:
    has_id, has_key = raw.get("secret_id") is not None, raw.get("secret_key") is not None
    if not has_id and not has_key:
        raise ConfigError(
            path,
            "give secret_id and secret_key, or a file, or a cvm_role, or leave credentials out "
            f"to use {ENV_SECRET_ID} and {ENV_SECRET_KEY}",
        )
    if not has_key:
        raise ConfigError(f"{path}.secret_key", "required when secret_id is given")
    if not has_id:
        raise ConfigError(f"{path}.secret_id", "required when secret_key is given")
    secret_id = _string(raw["secret_id"], f"{path}.secret_id", environ, nonempty=True)
    secret_key = _string(raw["secret_key"], f"{path}.secret_key", environ, nonempty=True)
    token = raw.get("token")
    token_text = None if token is None else _string(token, f"{path}.token", environ)
    expiration = raw.get("expiration")
    expires = None if expiration is None else _expiration(expiration, path, environ)
    # An empty token (e.g. `${TENCENTCLOUD_SESSION_TOKEN:-}`) means permanent keys.
    return _checked(
        Credentials(secret_id, secret_key, token_text or None, expires),
        path,
        {
            "secret_id": f"{path}.secret_id",
            "secret_key": f"{path}.secret_key",
            "token": f"{path}.token",
        },
    )


def _expiration(value: object, credentials_path: str, environ: Mapping[str, str]) -> float:
    path = f"{credentials_path}.expiration"
    if not isinstance(value, str):
        raise ConfigError(path, f"expected {ISO_HINT}, got {_CHECKS.type_name(value)}")
    text = _expand(value, path, environ)
    expires = parse_iso_time(text)
    if expires is None:
        raise ConfigError(path, f"is not {ISO_HINT} {_NOT_SHOWN}")
    # Static keys are never refreshed: expired ones would fail every request.
    if expires <= time.time():
        raise ConfigError(path, f"temporary credentials expired at {format_iso_time(expires)}")
    return expires


def _credentials_file(
    raw: Mapping[Any, Any], path: str, environ: Mapping[str, str]
) -> CredentialsFile:
    if "file" not in raw:
        raise ConfigError(f"{path}.file", "required when profile is given")
    file_path = _local_path(raw["file"], f"{path}.file", environ)
    profile = raw.get("profile")
    name = DEFAULT_PROFILE if profile is None else _profile(profile, f"{path}.profile", environ)
    problem = _unreadable(file_path)
    if problem:
        # The path is not shown either: a secret pasted into `file:` would be.
        raise ConfigError(f"{path}.file", f"cannot read the file: {problem}")
    return CredentialsFile(file_path, name)


_PROFILE_RE = re.compile(r"[^\[\]\s](?:[^\[\]]*[^\[\]\s])?")


def _profile(value: object, path: str, environ: Mapping[str, str]) -> str:
    name = _string(value, path, environ, nonempty=True)
    if not name.isprintable() or not _PROFILE_RE.fullmatch(name):
        raise ConfigError(
            path,
            f"is not a profile name (the name of a [section] of the file) {_NOT_SHOWN}",
        )
    return name


def _unreadable(path: str) -> str:
    """Why the file at `path` cannot be read, or "" when it can. It is not read here: its keys
    are checked each time it is read, and it may change before the first request."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    except ValueError:
        return "not a valid file name"
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if stat.S_ISDIR(mode):
        return os.strerror(errno.EISDIR)
    return "" if stat.S_ISREG(mode) else "not a regular file"


def _cvm_role(raw: Mapping[Any, Any], path: str, environ: Mapping[str, str]) -> CVMRole:
    if "cvm_role" not in raw:
        raise ConfigError(
            f"{path}.cvm_role",
            "required when metadata_endpoint is given (auto asks the metadata service)",
        )
    role = _role_name(raw["cvm_role"], f"{path}.cvm_role", environ)
    endpoint = raw.get("metadata_endpoint")
    return CVMRole(
        role,
        DEFAULT_METADATA_ENDPOINT
        if endpoint is None
        else _metadata_endpoint(endpoint, f"{path}.metadata_endpoint", environ),
    )


def _role_name(value: object, path: str, environ: Mapping[str, str]) -> str | None:
    """The role's name; None (from `auto`, "" or nothing) asks the metadata service for it."""
    if value is None:
        return None
    name = _string(value, path, environ).strip()
    if name in ("", "auto"):
        return None
    if not ROLE_NAME_RE.fullmatch(name):
        raise ConfigError(
            path,
            "is not a CAM role name (up to 128 letters, digits and +=,.@_-; or auto to ask "
            f"the metadata service) {_NOT_SHOWN}",
        )
    return name


def _checked(credentials: Credentials, path: str, names: Mapping[str, str]) -> Credentials:
    """Keys travel in HTTP headers: anything but printable ASCII would fail every request."""
    for field_name, where in names.items():
        value = getattr(credentials, field_name)
        if value is not None and not header_safe(value):
            raise ConfigError(
                where, "must be printable ASCII without spaces (the value is not shown)"
            )
    return credentials


def _environment_credentials(path: str, environ: Mapping[str, str]) -> Credentials:
    found = from_environment(environ)
    if found is not None:
        return _checked(
            found,
            path,
            {
                "secret_id": f"{path} (from {ENV_SECRET_ID})",
                "secret_key": f"{path} (from {ENV_SECRET_KEY})",
                "token": f"{path} (from {ENV_SESSION_TOKEN})",
            },
        )
    has_id, has_key = bool(environ.get(ENV_SECRET_ID)), bool(environ.get(ENV_SECRET_KEY))
    if has_id != has_key:
        given, missing = (
            (ENV_SECRET_ID, ENV_SECRET_KEY) if has_id else (ENV_SECRET_KEY, ENV_SECRET_ID)
        )
        raise ConfigError(path, f"no credentials: {given} is set but {missing} is not")
    raise ConfigError(
        path,
        f"no credentials: set {ENV_SECRET_ID} and {ENV_SECRET_KEY} "
        f"(and {ENV_SESSION_TOKEN} for temporary keys) in the "
        "environment, or give secret_id and secret_key here",
    )


def _services(value: object, path: str, environ: Mapping[str, str]) -> tuple[ServiceConfig, ...]:
    if value is None:
        return tuple(ServiceConfig(s.name, s.tags) for s in SERVICES.values())
    raw = _CHECKS.mapping(value, path)
    if not raw:
        raise ConfigError(path, "names no service (leave it out to watch every service)")
    for name in raw:
        if name not in SERVICES:
            raise ConfigError(_join(path, name), f"unknown service (valid: {', '.join(SERVICES)})")
    # SERVICES order, whatever order the file lists them in.
    return tuple(_service(n, raw[n], _join(path, n), environ) for n in SERVICES if n in raw)


def _service(name: str, value: object, path: str, environ: Mapping[str, str]) -> ServiceConfig:
    if value is None:
        return ServiceConfig(name, SERVICES[name].tags)
    settings = _section(value, path, SERVICE_KEYS, environ)
    tags = settings.raw.get("tags")
    return ServiceConfig(
        name,
        SERVICES[name].tags if tags is None else _tags(tags, f"{path}.tags", environ),
        _bool_key(settings, "histograms", default=True),
    )


def _tags(value: object, path: str, environ: Mapping[str, str]) -> tuple[str, ...]:
    items = _CHECKS.items(value, path)
    if not items:
        raise ConfigError(path, "is empty (leave tags out for the service's documented tags)")
    tags: list[str] = []
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        tag = _string(item, item_path, environ, nonempty=True)
        if tag in tags:
            raise ConfigError(item_path, f"duplicate tag {quote(tag)}")
        tags.append(tag)
    return tuple(tags)


# --- typed values -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Section:
    """A mapping of settings, the path to it, and the environment its `${VAR}`s come from."""

    raw: Mapping[Any, Any]
    path: str
    environ: Mapping[str, str]

    def setting(self, key: str) -> tuple[str, object]:
        """The key's path and value, text with its `${VAR}`s expanded; None when not set."""
        path = _join(self.path, key)
        value = self.raw.get(key)
        return path, _expand(value, path, self.environ) if isinstance(value, str) else value


def _section(
    value: object, path: str, allowed: tuple[str, ...], environ: Mapping[str, str]
) -> _Section:
    raw = _CHECKS.mapping(value, path)
    _check_keys(raw, path, allowed, required=())
    return _Section(raw, path, environ)


def _duration_key(
    settings: _Section, key: str, default: float, minimum: float, maximum: float
) -> float:
    path, value = settings.setting(key)
    return default if value is None else parse_duration(value, path, minimum, maximum)


def _positive_duration(settings: _Section, key: str) -> float:
    seconds = _duration_key(settings, key, DEFAULT_REQUEST_TIMEOUT, 0.0, MAX_REQUEST_TIMEOUT)
    if seconds <= 0:
        raise ConfigError(key, "must be more than 0s")
    return seconds


# re.ASCII: \d would take any Unicode digit ("５s"), which float() then reads.
_NUMBER_RE = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)
_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)", re.ASCII)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_HINT = "use e.g. 30s, 2m, 1h, 1m30s, 500ms or a number of seconds"


def _duration_seconds(value: object, path: str) -> float:
    """Seconds, infinite when the digits are too many for a float (the caller's maximum
    then refuses it); NaN, infinite and negative YAML numbers are refused here."""
    if isinstance(value, OddNumber):
        if not value.too_large:
            raise ConfigError(path, _ambiguous_number(value.text))
        seconds = -math.inf if value.text.startswith("-") else math.inf
    elif isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(
            path, f"expected a duration, got {_CHECKS.type_name(value)} ({DURATION_HINT})"
        )
    elif isinstance(value, str):
        seconds_or_none = _duration_text(value.strip())
        if seconds_or_none is None:
            raise ConfigError(path, f"bad duration {quote(_clip(value))} ({DURATION_HINT})")
        return seconds_or_none  # the patterns take no sign, NaN or inf
    else:
        seconds = _float(value)
    if math.isnan(seconds) or seconds < 0 or (isinstance(value, float) and math.isinf(seconds)):
        raise ConfigError(
            path,
            f"bad duration {quote(_clip(str(value)))} "
            "(must be a finite amount of time, not negative)",
        )
    return seconds


def _float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _duration_text(text: str) -> float | None:
    if _NUMBER_RE.fullmatch(text):
        return float(text)
    total, position = 0.0, 0
    for match in _PART_RE.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return total if position == len(text) and text else None


def _int_key(settings: _Section, key: str, default: int, minimum: int, maximum: int) -> int:
    path, value = settings.setting(key)
    if value is None:
        return default
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii() or not text.isdigit():
            raise ConfigError(path, f"expected an integer, got string {quote(_clip(text))}")
        too_large = len(text) > MAX_INT_DIGITS  # int() refuses over 4300 digits
        value = OddNumber(text, "integer", too_large=True) if too_large else int(text)
    if isinstance(value, OddNumber):
        if not value.too_large:
            raise ConfigError(path, _ambiguous_number(value.text))
        digits = len(value.text.lstrip("+-"))
        if value.text.startswith("-"):
            raise ConfigError(path, f"must be at least {minimum}, got a {digits}-digit number")
        raise ConfigError(path, f"must be at most {maximum}, got a {digits}-digit number")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"expected an integer, got {_CHECKS.type_name(value)}")
    if value < minimum:
        raise ConfigError(path, f"must be at least {minimum}, got {value}")
    if value > maximum:
        raise ConfigError(path, f"must be at most {maximum}, got {value}")
    return value


def _bool_key(settings: _Section, key: str, default: bool) -> bool:
    """true or false, or the text "true" or "false" (from `${VAR}`)."""
    path, value = settings.setting(key)
    if value is None:
        return default
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, str):
        raise ConfigError(path, f"expected true or false, got string {quote(_clip(value))}")
    return _CHECKS.expect(value, bool, path, "true or false")


def _positive_number_key(settings: _Section, key: str, default: float, maximum: float) -> float:
    """A number more than 0: 15, 0.5, or a string of them (from `${VAR}`)."""
    path, value = settings.setting(key)
    if value is None:
        return default
    if isinstance(value, str):
        text = value.strip()
        if not _NUMBER_RE.fullmatch(text):
            raise ConfigError(path, f"expected a number, got string {quote(_clip(text))}")
        digits = len(text.partition(".")[0])
        value = (
            OddNumber(text, "number", too_large=True) if digits > MAX_INT_DIGITS else (float(text))
        )
    if isinstance(value, OddNumber):
        if not value.too_large:
            raise ConfigError(path, _ambiguous_number(value.text))
        if value.text.startswith("-"):
            raise ConfigError(path, "must be more than 0")
        digits = len(value.text.lstrip("+-").partition(".")[0])
        raise ConfigError(
            path, f"must be at most {_show_number(maximum)}, got a {digits}-digit number"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, f"expected a number, got {_CHECKS.type_name(value)}")
    number = _float(value)
    if not math.isfinite(number):
        raise ConfigError(path, f"must be a finite number, got {_show_number(number)}")
    if number <= 0:
        raise ConfigError(path, f"must be more than 0, got {_show_number(value)}")
    if number > maximum:
        raise ConfigError(
            path, f"must be at most {_show_number(maximum)}, got {_show_number(value)}"
        )
    return number


def _show_number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))  # 10000, not 10000.0
    return f"{value:.12g}"


def _ambiguous_number(text: str) -> str:
    return (
        f"{_clip(text)} is ambiguous in YAML (a leading 0, 0x, 0b, _ or : changes how it is "
        "read); write a plain decimal number"
    )


# This file's words for a YAML value's type: "expected a mapping, got list".
_CHECKS = Checks(
    ConfigError,
    {
        type(None): "null",
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "mapping",
    },
    lambda value: value.kind if isinstance(value, OddNumber) else type(value).__name__,
)


def _string(value: object, path: str, environ: Mapping[str, str], nonempty: bool = False) -> str:
    # The value itself is never shown here: it may be a secret.
    text = _expand(_CHECKS.expect(value, str, path, "a string"), path, environ)
    if nonempty and not text.strip():
        raise ConfigError(path, "must not be empty")
    return text


def _check_keys(
    raw: Mapping[Any, Any], path: str, allowed: tuple[str, ...], required: tuple[str, ...]
) -> None:
    _CHECKS.check_keys(raw, allowed, lambda key: _join(path, key))
    for key in required:
        if key not in raw:
            raise ConfigError(_join(path, key), "required key is missing")


# --- ${VAR} expansion ---------------------------------------------------------------------

_VAR_START_RE = re.compile(r"\$\$\{|\$\{")
_VAR_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expand(text: str, path: str, environ: Mapping[str, str]) -> str:
    out: list[str] = []
    position = 0
    for match in _VAR_START_RE.finditer(text):
        if match.start() < position:
            continue  # inside a ${...} already replaced
        out.append(text[position : match.start()])
        if match.group() == "$${":
            out.append("${")
            position = match.end()
            continue
        close = text.find("}", match.end())
        if close < 0:
            raise ConfigError(path, "unterminated ${ (write $${ for a literal ${)")
        out.append(_variable(text[match.end() : close], path, environ))
        position = close + 1
    out.append(text[position:])
    return "".join(out)


def _variable(body: str, path: str, environ: Mapping[str, str]) -> str:
    name, sep, default = body.partition(":-")
    # A secret that happens to hold `${` is no variable name: under credentials only a name in
    # capitals is shown.
    secret = _CREDENTIALS in path and not _SHOWN_VARIABLE_RE.fullmatch(name)
    if not _VAR_NAME_RE.fullmatch(name):
        shown = "" if secret else f" {quote(_clip(name))}"
        raise ConfigError(
            path,
            f"bad variable name{shown} in ${{...}} "
            "(letters, digits and _; write $${ for a literal ${)",
        )
    value = environ.get(name)
    if sep:
        return value if value else default
    if value is None:
        shown = "named there" if secret else name
        raise ConfigError(path, f"environment variable {shown} is not set")
    return value


# --- small helpers ------------------------------------------------------------------------


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _join(path: str, key: object) -> str:
    shown = str(key) or '""'
    return f"{path}.{shown}" if path else shown


def _clip(text: str, limit: int = 40) -> str:
    """Enough of a long value to recognise it; the whole may be megabytes."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show_seconds(seconds: float) -> str:
    if seconds.is_integer() and abs(seconds) < 1e16:
        return f"{int(seconds)}s"  # 10000000000s, not 1e+10s
    return f"{seconds:.12g}s"  # 86400.001s, not 86400s, against a 24h maximum


def _show_duration(seconds: float) -> str:
    """A duration as people write it: 1h30m, 5m, 1.5s, 250ms."""
    if seconds < 1:
        return f"{seconds * 1000:.12g}ms"
    whole, fraction = divmod(seconds, 1)
    if fraction:
        return _show_seconds(seconds)
    hours, rest = divmod(int(whole), 3600)
    minutes, rest = divmod(rest, 60)
    parts = ((hours, "h"), (minutes, "m"), (rest, "s"))
    return "".join(f"{amount}{unit}" for amount, unit in parts if amount)


def _show_limit(seconds: float) -> str:
    """A round limit as people write it: 24h, 10m, 1h."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return _show_seconds(seconds)
