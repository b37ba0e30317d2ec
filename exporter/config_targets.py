"""What the configuration file polls, declared for pydantic: named `targets:` (a bucket in a
region) and `discovery:` entries (the buckets found in regions), with their credentials
(exporter.config_credentials), services and tags, and the services they opt in to (workflows,
batch jobs). No state: the records are frozen.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, with_config
from typing_extensions import TypedDict

from exporter.ci.buckets import is_bucket_id, is_region
from exporter.ci.services import SERVICES
from exporter.config_credentials import CredentialsSetting
from exporter.config_values import DAY, FLAG, INTEGER, MADE, MINUTE, Duration, Name, checked_url
from exporter.strictyaml import clip, quote
from exporter.yamlfile import FORBID, Shaped, problem, section


@with_config(FORBID)
class Service(TypedDict, total=False):
    tags: Annotated[tuple[Name, ...], AfterValidator(_tags)] | None
    histograms: Annotated[bool, FLAG] | None  # false: its streams observe no run time or queue wait


Services = with_config(FORBID)(
    TypedDict("Services", {n: Service | None for n in SERVICES}, total=False)  # type: ignore[operator]
)


@dataclass(frozen=True)
class ServiceConfig:
    name: str  # a key of exporter.ci.services.SERVICES
    tags: tuple[str, ...]  # the documented tags of the service when the user named none
    histograms: bool = True  # False: its streams observe no run time or queue wait


def _services(
    value: Any, validate: Callable[[Any], Any], info: object
) -> tuple[ServiceConfig, ...]:
    if value is None:
        return tuple(ServiceConfig(s.name, s.tags) for s in SERVICES.values())
    for name in value if isinstance(value, dict) else ():
        if name not in SERVICES:
            raise problem(f"unknown service (valid: {', '.join(SERVICES)})", name)
    given = validate(value)
    if not given:
        raise problem("names no service (leave it out to watch every service)")
    settings = {name: given[name] or {} for name in SERVICES if name in given}  # SERVICES order
    return tuple(
        ServiceConfig(n, s.get("tags") or SERVICES[n].tags, s.get("histograms") is not False)
        for n, s in settings.items()
    )


def _tags(tags: tuple[str, ...]) -> tuple[str, ...]:
    if not tags:
        raise problem("is empty (leave tags out for the service's documented tags)")
    for index, tag in enumerate(tags):
        if tag in tags[:index]:
            raise problem(f"duplicate tag {quote(tag)}", index)
    return tags


@with_config(FORBID)
class OptIn(TypedDict, total=False):
    """`workflows: {}` or `batch_jobs: {}`: polled as one more service of the target."""

    histograms: Annotated[bool, FLAG] | None


# The services a target opts in to (exporter.ci.services: not among SERVICES), and their tags:
# a workflow's runs, a batch job's type.
OPT_IN_TAGS: dict[str, tuple[str, ...]] = {"workflow": ("Workflow",), "batch": ("Workflow", "Job")}


def _opt_in(name: str) -> Callable[[Any, Callable[[Any], Any], object], ServiceConfig]:
    def build(value: Any, validate: Callable[[Any], Any], info: object) -> ServiceConfig:
        given = validate(value if value is not None else {})
        return ServiceConfig(name, OPT_IN_TAGS[name], given.get("histograms") is not False)

    return build


def _with_opt_ins(polled: Any) -> Any:
    """A target's (or discovery entry's) services, with the ones it opted in to after them."""
    extra = tuple(s for s in (polled.workflows, polled.batch_jobs) if s is not None)
    return replace(polled, services=polled.services + extra) if extra else polled


# What a target and a discovery entry poll: every service of SERVICES with its documented tags
# when the file names none, then workflows and batch jobs when opted in.
ServicesSetting = Annotated[tuple[ServiceConfig, ...], Shaped(Services, _services), MADE]
Workflows = Annotated[ServiceConfig, Shaped(OptIn, _opt_in("workflow"))] | None
BatchJobs = Annotated[ServiceConfig, Shaped(OptIn, _opt_in("batch"))] | None


_BUCKET_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?-[0-9]+")
_APPID_RE = re.compile(r".+-[0-9]+")
_REGION_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def _bucket(bucket: str) -> str:
    if not _APPID_RE.fullmatch(bucket):
        raise problem(f"{quote(bucket)} has no -APPID suffix (expected BucketName-APPID)")
    if not _BUCKET_RE.fullmatch(bucket):
        why = "lowercase letters, digits and dashes, then -APPID"
        raise problem(f"{quote(bucket)} is not a valid bucket name ({why})")
    return bucket


Bucket = Annotated[Name, AfterValidator(_bucket)]


def _region(region: str) -> str:
    if not _REGION_RE.fullmatch(region):
        why = "lowercase letters, digits and dashes, e.g. ap-guangzhou"
        raise problem(f"{quote(region)} is not a region ({why})")
    return region


def _default_endpoint(value: object, info: ValidationInfo) -> object:
    place = (info.data.get("bucket"), info.data.get("region"))
    return f"https://{place[0]}.ci.{place[1]}.myqcloud.com" if value is None else value


def _endpoint(text: str) -> str:
    parts = checked_url(text, "http(s)://host[:port]", with_path=False)
    return f"{parts.scheme}://{parts.netloc}"


@section
@dataclass(frozen=True)
class TargetConfig:
    bucket: Bucket
    region: Annotated[Name, AfterValidator(_region)]
    # e.g. https://<bucket>.ci.<region>.myqcloud.com, the default
    endpoint: Annotated[Name, AfterValidator(_endpoint), BeforeValidator(_default_endpoint), MADE]
    # The environment's (TENCENTCLOUD_SECRET_ID, ...) when the file gives none.
    credentials: CredentialsSetting = field(repr=False)
    services: ServicesSetting
    workflows: Workflows = None
    batch_jobs: BatchJobs = None


_PREFIX_RE = re.compile(r"[a-z0-9-]{1,60}")


def _prefix(prefix: str) -> str:
    if not _PREFIX_RE.fullmatch(prefix):
        why = "lowercase letters, digits and dashes, at most 60"
        raise problem(f"{quote(clip(prefix))} is not the start of a bucket name ({why})")
    return prefix


def _each_once(items: tuple[str, ...]) -> tuple[str, ...]:
    for index, item in enumerate(items):
        if item in items[:index]:
            raise problem(f"duplicate {quote(item)}", index)
    return items


def _some(items: tuple[str, ...]) -> tuple[str, ...]:
    if not items:
        raise problem("is empty (name at least one region)")
    return items


def _listable_region(region: str) -> str:
    if not is_region(region):  # the form bucket listings take (exporter.ci.buckets)
        raise problem(f"{quote(region)} is not a region (e.g. ap-guangzhou)")
    return region


def _listable_bucket(bucket: str) -> str:
    if not is_bucket_id(bucket):
        raise problem(f"{quote(bucket)} is longer than a COS bucket name (at most 60)")
    return bucket


Prefix = Annotated[Name, AfterValidator(_prefix)]


@section
@dataclass(frozen=True)
class DiscoveryConfig:
    """Targets found instead of named: every bucket of `regions` that a service of `services`
    is enabled on (narrowed to names starting with one of `prefixes` or equal to one of
    `buckets` when either is given), polled with these credentials and services."""

    regions: Annotated[
        tuple[Annotated[Name, AfterValidator(_region), AfterValidator(_listable_region)], ...],
        AfterValidator(_each_once),
        AfterValidator(_some),
    ]
    credentials: CredentialsSetting = field(repr=False)
    services: ServicesSetting
    prefixes: Annotated[tuple[Prefix, ...], AfterValidator(_each_once)] = ()
    buckets: Annotated[
        tuple[Annotated[Bucket, AfterValidator(_listable_bucket)], ...], AfterValidator(_each_once)
    ] = ()
    # Listed again this often; a bucket missing from the listings this long stops being polled.
    interval: Annotated[float, Duration(MINUTE, DAY)] = 10 * MINUTE
    grace: Annotated[float, Duration(0, 7 * DAY)] = 30 * MINUTE
    # Each bucket is a target with a thread and a connection pool: beyond this many (the first
    # by region and name), the rest are left out and logged.
    max_buckets: Annotated[int, Field(ge=1, le=10_000), INTEGER] = 1000
    workflows: Workflows = None
    batch_jobs: BatchJobs = None

    @property
    def listed(self) -> tuple[object, ...]:
        """What the entry lists: two entries alike in this list the same buckets."""
        return (self.regions, self.prefixes, self.buckets)


def _distinct(targets: tuple[TargetConfig, ...]) -> tuple[TargetConfig, ...]:
    first_seen: dict[tuple[str, str], int] = {}
    for index, target in enumerate(targets):
        first = first_seen.setdefault((target.bucket, target.region), index)
        if first != index:
            why = f"same bucket and region as targets[{first}]"
            raise problem(f"duplicate target: {why}", index)
    return targets


def _distinct_entries(entries: tuple[DiscoveryConfig, ...]) -> tuple[DiscoveryConfig, ...]:
    for index, entry in enumerate(entries):
        for first, earlier in enumerate(entries[:index]):
            if entry.listed == earlier.listed:
                why = f"lists what discovery[{first}] lists (the same regions, prefixes, buckets)"
                raise problem(f"duplicate entry: {why}", index)
    return entries


Targets = Annotated[
    tuple[Annotated[TargetConfig, AfterValidator(_with_opt_ins)], ...], AfterValidator(_distinct)
]
DiscoveryEntries = Annotated[
    tuple[Annotated[DiscoveryConfig, AfterValidator(_with_opt_ins)], ...],
    AfterValidator(_distinct_entries),
]
