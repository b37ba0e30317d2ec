"""YAML -> frozen dataclasses. Every error is one line naming the key path.

The file's shape (all durations as below):

    poll_interval: 60s            # >= 1s, default 60s
    request_timeout: 10s          # > 0, default 10s
    failure_code_limit: 50        # integer >= 1, default 50
    clock_skew_tolerance: 30s     # >= 0, default 30s
    targets:                      # required, at least one
      - bucket: name-1250000000   # BucketName-APPID
        region: ap-chongqing
        endpoint: https://...     # optional: http(s)://host[:port], no path
        credentials: {secret_id: ..., secret_key: ..., token: ...}   # optional
        services: {media: {tags: [Transcode]}, speech: {}, ai: }     # optional

Durations are a plain number of seconds (90, 1.5, or the string "90" so that `${VAR}` works)
or a sequence of decimal amounts with units ms, s, m, h: "30s", "2m", "1h", "1m30s", "1.5s",
"500ms" (the forms Go's time.ParseDuration takes, without negatives).

Strings expand `${VAR}` from the environment, also inside longer text; `${VAR:-default}`
gives a default when VAR is unset or empty; `$${` is a literal `${`. An unset variable without
a default is an error. Integers accept a string of digits for the same reason.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from exporter.ci.services import SERVICES
from exporter.credentials import (
    ENV_SECRET_ID,
    ENV_SECRET_KEY,
    ENV_SESSION_TOKEN,
    Credentials,
    from_environment,
)

DEFAULT_POLL_INTERVAL = 60.0
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_FAILURE_CODE_LIMIT = 50
DEFAULT_CLOCK_SKEW = 30.0
MIN_POLL_INTERVAL = 1.0

TOP_KEYS = (
    "poll_interval",
    "request_timeout",
    "failure_code_limit",
    "clock_skew_tolerance",
    "targets",
)
TARGET_KEYS = ("bucket", "region", "endpoint", "credentials", "services")
CREDENTIAL_KEYS = ("secret_id", "secret_key", "token")
SERVICE_KEYS = ("tags",)


class ConfigError(Exception):
    """One line: `<source>: <key.path>: <problem>` (parts that are unknown are left out)."""

    def __init__(self, where: str, problem: str, source: str | None = None) -> None:
        self.where = where
        self.problem = problem
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = (p for p in (self.source, self.where, self.problem) if p)
        # One line whatever a key, a value or a YAML message holds.
        return ": ".join(parts).replace("\r", " ").replace("\n", " ")

    def with_source(self, source: str) -> ConfigError:
        return ConfigError(self.where, self.problem, source)


@dataclass(frozen=True)
class ServiceConfig:
    name: str  # a key of exporter.ci.services.SERVICES
    tags: tuple[str, ...]  # the documented tags of the service when the user named none


@dataclass(frozen=True)
class TargetConfig:
    bucket: str
    region: str
    endpoint: str  # e.g. https://<bucket>.ci.<region>.myqcloud.com
    credentials: Credentials = field(repr=False)
    services: tuple[ServiceConfig, ...]


@dataclass(frozen=True)
class Config:
    targets: tuple[TargetConfig, ...]
    poll_interval: float = DEFAULT_POLL_INTERVAL
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    failure_code_limit: int = DEFAULT_FAILURE_CODE_LIMIT
    # How far the clock stamping CI's jobs may be from our estimate of it (ours, centred by
    # CI's Date header); creation-time windows overlap by this much.
    clock_skew_tolerance: float = DEFAULT_CLOCK_SKEW


# --- entry points -------------------------------------------------------------------------


def load_config(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read and parse the file at `path`; `environ` defaults to os.environ."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError("", f"cannot read file: {exc.strerror or exc}", path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"not UTF-8 text (bad byte at offset {exc.start})", path) from None
    return parse_config(text, path, os.environ if environ is None else environ)


def parse_config(text: str, source: str, environ: Mapping[str, str]) -> Config:
    """Parse YAML `text`; `source` names it in errors (usually the file's path)."""
    try:
        document = _load_yaml(text)
        return _parse_top(document, environ)
    except ConfigError as exc:
        raise exc.with_source(source) from None


def parse_duration(value: object, path: str, minimum: float = 0.0) -> float:
    """A duration in seconds from a number or text such as "1m30s"; see the module doc."""
    seconds = _duration_seconds(value, path)
    if seconds < minimum:
        raise ConfigError(
            path, f"{_show_seconds(seconds)} is too short (minimum {_show_seconds(minimum)})"
        )
    return seconds


# --- YAML ---------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[str] = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
            continue
        if key_node.value in seen:
            line = key_node.start_mark.line + 1
            raise ConfigError(f"line {line}", f"duplicate key {_quote(key_node.value)}")
        seen.add(key_node.value)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_yaml(text: str) -> object:
    try:
        # A SafeLoader subclass: no arbitrary objects.
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(where, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"YAML syntax error: {exc}") from None
    except RecursionError:
        # PyYAML composes and constructs nodes recursively: `[[[[...` thousands deep runs out
        # of stack. No real configuration nests more than a few levels.
        raise ConfigError("", "YAML nested too deeply") from None


# --- the schema ---------------------------------------------------------------------------


def _parse_top(document: object, environ: Mapping[str, str]) -> Config:
    if document is None:
        raise ConfigError("top level", "expected a mapping, got an empty document")
    top = _mapping(document, "top level")
    _check_keys(top, "", TOP_KEYS, required=("targets",))
    # The settings before the targets: the order a reader meets them in the file.
    poll_interval = _duration_key(
        top, "poll_interval", environ, DEFAULT_POLL_INTERVAL, MIN_POLL_INTERVAL
    )
    request_timeout = _positive_duration(top, "request_timeout", environ)
    failure_code_limit = _int_key(
        top, "failure_code_limit", environ, DEFAULT_FAILURE_CODE_LIMIT, minimum=1
    )
    clock_skew = _duration_key(top, "clock_skew_tolerance", environ, DEFAULT_CLOCK_SKEW, 0.0)
    return Config(
        targets=_parse_targets(top["targets"], environ),
        poll_interval=poll_interval,
        request_timeout=request_timeout,
        failure_code_limit=failure_code_limit,
        clock_skew_tolerance=clock_skew,
    )


def _parse_targets(value: object, environ: Mapping[str, str]) -> tuple[TargetConfig, ...]:
    if value is None or (isinstance(value, list) and not value):
        raise ConfigError("targets", "must list at least one target")
    items = _list(value, "targets")
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
    raw = _mapping(value, path)
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
        raise ConfigError(
            path, f"{_quote(bucket)} has no -APPID suffix (expected BucketName-APPID)"
        )
    if not _BUCKET_RE.fullmatch(bucket):
        raise ConfigError(
            path,
            f"{_quote(bucket)} is not a valid bucket name "
            "(lowercase letters, digits and dashes, then -APPID)",
        )
    return bucket


def _region(value: object, path: str, environ: Mapping[str, str]) -> str:
    region = _string(value, path, environ, nonempty=True)
    if not _REGION_RE.fullmatch(region):
        raise ConfigError(
            path,
            f"{_quote(region)} is not a region "
            "(lowercase letters, digits and dashes, e.g. ap-guangzhou)",
        )
    return region


def _endpoint(value: object, path: str, environ: Mapping[str, str]) -> str:
    text = _string(value, path, environ, nonempty=True)
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ConfigError(path, "is not a URL of the form http(s)://host[:port]") from None
    try:
        port = parts.port
    except ValueError:
        port = 0  # not a number, or out of range
    if "@" in parts.netloc:
        # user:password@host: never echo it.
        raise ConfigError(path, "must not contain user info (expected http(s)://host[:port])")
    problem = ""
    if parts.scheme not in ("http", "https"):
        problem = "must start with http:// or https://"
    elif not parts.hostname:
        problem = "has no host"
    elif port == 0:
        problem = "has a bad port"
    elif parts.path not in ("", "/") or parts.query or parts.fragment:
        problem = "must not have a path, query or fragment"
    if problem:
        raise ConfigError(path, f"{_quote(text)} {problem} (expected http(s)://host[:port])")
    return f"{parts.scheme}://{parts.netloc}"


def _credentials(value: object, path: str, environ: Mapping[str, str]) -> Credentials:
    if value is None:
        return _environment_credentials(path, environ)
    raw = _mapping(value, path)
    _check_keys(raw, path, CREDENTIAL_KEYS, required=())
    has_id, has_key = raw.get("secret_id") is not None, raw.get("secret_key") is not None
    if not has_id and not has_key:
        raise ConfigError(
            path,
            "give secret_id and secret_key, or leave credentials out to "
            f"use {ENV_SECRET_ID} and {ENV_SECRET_KEY}",
        )
    if not has_key:
        raise ConfigError(f"{path}.secret_key", "required when secret_id is given")
    if not has_id:
        raise ConfigError(f"{path}.secret_id", "required when secret_key is given")
    secret_id = _string(raw["secret_id"], f"{path}.secret_id", environ, nonempty=True)
    secret_key = _string(raw["secret_key"], f"{path}.secret_key", environ, nonempty=True)
    token = raw.get("token")
    token_text = None if token is None else _string(token, f"{path}.token", environ)
    # An empty token (e.g. `${TENCENTCLOUD_SESSION_TOKEN:-}`) means permanent keys.
    return _checked(
        Credentials(secret_id, secret_key, token_text or None),
        path,
        {
            "secret_id": f"{path}.secret_id",
            "secret_key": f"{path}.secret_key",
            "token": f"{path}.token",
        },
    )


def _checked(credentials: Credentials, path: str, names: Mapping[str, str]) -> Credentials:
    """Keys travel in HTTP headers: anything but printable ASCII would fail every request."""
    for field_name, where in names.items():
        value = getattr(credentials, field_name)
        if value is not None and not (value.isascii() and value.isprintable() and " " not in value):
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
    raw = _mapping(value, path)
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
    raw = _mapping(value, path)
    _check_keys(raw, path, SERVICE_KEYS, required=())
    tags = raw.get("tags")
    if tags is None:
        return ServiceConfig(name, SERVICES[name].tags)
    return ServiceConfig(name, _tags(tags, f"{path}.tags", environ))


def _tags(value: object, path: str, environ: Mapping[str, str]) -> tuple[str, ...]:
    items = _list(value, path)
    if not items:
        raise ConfigError(path, "is empty (leave tags out for the service's documented tags)")
    tags: list[str] = []
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        tag = _string(item, item_path, environ, nonempty=True)
        if tag in tags:
            raise ConfigError(item_path, f"duplicate tag {_quote(tag)}")
        tags.append(tag)
    return tuple(tags)


# --- typed values -------------------------------------------------------------------------


def _duration_key(
    top: Mapping[Any, Any], key: str, environ: Mapping[str, str], default: float, minimum: float
) -> float:
    value = top.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        value = _expand(value, key, environ)
    return parse_duration(value, key, minimum)


def _positive_duration(top: Mapping[Any, Any], key: str, environ: Mapping[str, str]) -> float:
    seconds = _duration_key(top, key, environ, DEFAULT_REQUEST_TIMEOUT, 0.0)
    if seconds <= 0:
        raise ConfigError(key, "must be more than 0s")
    return seconds


_NUMBER_RE = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)")
_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_HINT = "use e.g. 30s, 2m, 1h, 1m30s, 500ms or a number of seconds"


def _duration_seconds(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(path, f"expected a duration, got {_type_name(value)} ({DURATION_HINT})")
    if isinstance(value, str):
        seconds = _duration_text(value.strip())
        if seconds is None:
            raise ConfigError(path, f"bad duration {_quote(value)} ({DURATION_HINT})")
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(
            path,
            f"bad duration {_quote(str(value))} (must be a finite amount of time, not negative)",
        )
    return seconds


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


def _int_key(
    top: Mapping[Any, Any], key: str, environ: Mapping[str, str], default: int, minimum: int
) -> int:
    value = top.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        text = _expand(value, key, environ).strip()
        if not text.isascii() or not text.isdigit():
            raise ConfigError(key, f"expected an integer, got string {_quote(text)}")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected an integer, got {_type_name(value)}")
    if value < minimum:
        raise ConfigError(key, f"must be at least {minimum}, got {value}")
    return value


def _string(value: object, path: str, environ: Mapping[str, str], nonempty: bool = False) -> str:
    # The value itself is never shown here: it may be a secret.
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a string, got {_type_name(value)}")
    text = _expand(value, path, environ)
    if nonempty and not text.strip():
        raise ConfigError(path, "must not be empty")
    return text


def _mapping(value: object, path: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise ConfigError(path, f"expected a mapping, got {_type_name(value)}")
    return value


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(path, f"expected a list, got {_type_name(value)}")
    return value


def _check_keys(
    raw: Mapping[Any, Any], path: str, allowed: tuple[str, ...], required: tuple[str, ...]
) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError(_join(path, key), f"unknown key (allowed: {', '.join(allowed)})")
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
    if not _VAR_NAME_RE.fullmatch(name):
        raise ConfigError(
            path,
            f"bad variable name {_quote(name)} in ${{...}} "
            "(letters, digits and _; write $${ for a literal ${)",
        )
    value = environ.get(name)
    if sep:
        return value if value else default
    if value is None:
        raise ConfigError(path, f"environment variable {name} is not set")
    return value


# --- small helpers ------------------------------------------------------------------------


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _show_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__
