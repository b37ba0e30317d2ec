"""What a configuration says that is valid but probably wrong: one line each, for
`--check-config` to print and the exporter to log when it loads a configuration.

No state: every function reads a loaded Config and returns text.
"""

from __future__ import annotations

import difflib
import math
from collections import defaultdict

from exporter.ci.services import SERVICES
from exporter.config import Config, ServiceConfig, TargetConfig
from exporter.credentials import credential_key

# Tencent Cloud's regions (CVM "Regions and Availability Zones", the COS "Regions and Access
# Endpoints" page for the finance-cloud regions). A region not here is usually a typo; a new
# region is one the list has not caught up with, hence a warning, not an error.
REGIONS: frozenset[str] = frozenset(
    {
        "ap-guangzhou",
        "ap-shanghai",
        "ap-nanjing",
        "ap-beijing",
        "ap-chengdu",
        "ap-chongqing",
        "ap-hongkong",
        "ap-shenzhen-fsi",
        "ap-shanghai-fsi",
        "ap-beijing-fsi",
        "ap-singapore",
        "ap-jakarta",
        "ap-seoul",
        "ap-tokyo",
        "ap-bangkok",
        "ap-mumbai",
        "na-siliconvalley",
        "na-ashburn",
        "na-toronto",
        "sa-saopaulo",
        "eu-frankfurt",
    }
)
# A poll lists a service's queues (one page at least) and, for every queue and tag, the active
# jobs and the finished ones (one page each at least).
CALLS_PER_STREAM = 2


def config_warnings(config: Config) -> list[str]:
    """`key.path: what is probably wrong`, in the order of the file."""
    warnings: list[str] = []
    for index, target in enumerate(config.targets):
        warnings.extend(_region(target.region, f"targets[{index}].region"))
        warnings.extend(_tags(target.services, f"targets[{index}]"))
    for index, entry in enumerate(config.discovery):
        for number, region in enumerate(entry.regions):
            warnings.extend(_region(region, f"discovery[{index}].regions[{number}]"))
        warnings.extend(_tags(entry.services, f"discovery[{index}]"))
    warnings.extend(_poll_interval(config))
    return warnings


def _region(region: str, path: str) -> list[str]:
    if region in REGIONS:
        return []
    return [f"{path}: {region!r} is not a Tencent Cloud region{_hint(region, REGIONS)}"]


def _tags(services: tuple[ServiceConfig, ...], path: str) -> list[str]:
    warnings = []
    for service in services:
        if service.name not in SERVICES:
            continue  # workflows and batch jobs: their tags are fixed
        documented = SERVICES[service.name].tags
        for index, tag in enumerate(service.tags):
            if tag not in documented:
                where = f"{path}.services.{service.name}.tags[{index}]"
                warnings.append(
                    f"{where}: {tag!r} is not a documented tag of {service.name}"
                    f"{_hint(tag, documented)}"
                )
    return warnings


def _hint(value: str, known: frozenset[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(value, sorted(known), n=1, cutoff=0.8)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _poll_interval(config: Config) -> list[str]:
    """The least time a poll of every configured stream takes at the configured rate limit,
    per set of credentials (they share one limit), against the poll interval."""
    calls: dict[str, int] = defaultdict(int)
    for target in config.targets:
        calls[credential_key(target.credentials)] += _least_calls(target)
    limit = config.rate_limit
    worst = max(calls.values(), default=0)
    seconds = max(0.0, (worst - limit.burst) / limit.requests_per_second)
    if seconds <= config.poll_interval:
        return []
    return [
        f"poll_interval: {_seconds(config.poll_interval)} is shorter than the"
        f" {_seconds(math.ceil(seconds))} a poll takes at least: {worst} calls (one queue a"
        f" service, every tag) at rate_limit.requests_per_second {limit.requests_per_second:g};"
        " polls will run back to back"
    ]


def _least_calls(target: TargetConfig) -> int:
    return sum(1 + CALLS_PER_STREAM * len(service.tags) for service in target.services)


def _seconds(value: float) -> str:
    return f"{value:g}s"
