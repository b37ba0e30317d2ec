"""YAML -> frozen dataclasses. Every error is one line naming the key path."""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.credentials import Credentials

DEFAULT_POLL_INTERVAL = 60.0
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_FAILURE_CODE_LIMIT = 50
DEFAULT_CLOCK_SKEW = 30.0


class ConfigError(Exception):
    """One line: `<source>: <key.path>: <problem>`."""


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
    # How far CI's clock may be from ours; creation-time windows overlap by this much when
    # CI's answers carry no Date header to measure the offset from.
    clock_skew_tolerance: float = DEFAULT_CLOCK_SKEW
