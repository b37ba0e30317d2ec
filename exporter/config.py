"""The configuration file, declared once: the records' annotations are its rules (types, ranges,
defaults, `${VAR}`), exporter.yamlfile turns their first error into one line naming the key
path, and config.schema.json is made from them for editors (`python3 -m exporter.config`).
No state: loading reads the file and the environment it is given and returns frozen records.

Durations are a plain number of seconds (90, 1.5, or the string "90" so that `${VAR}` works)
or a sequence of decimal amounts with units ms, s, m, h: "30s", "2m", "1h", "1m30s", "1.5s",
"500ms" (the forms Go's time.ParseDuration takes, without negatives). Upper bounds catch typos
(a missing unit, an extra digit): a huge wait or timeout would make the exporter look hung.

Strings expand `${VAR}` from the environment, also inside longer text; `${VAR:-default}` gives a
default when VAR is unset or empty; `$${` is a literal `${`; an unset variable without a default
is an error. Numbers, and true or false, may be text for the same reason. A setting given as
null takes its default. Under `credentials:` no error shows a value, nor a key that is not one
(a secret typed in the wrong field, or where a key belongs, would be printed back).
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import json
import math
import os
import re
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    TypeAdapter,
    ValidationInfo,
    WrapValidator,
    with_config,
)
from pydantic_core import PydanticCustomError, core_schema
from typing_extensions import TypedDict

from exporter.ci.buckets import is_bucket_id, is_region
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
from exporter.listen import parse_listen_address
from exporter.smallfile import FileError, read_text
from exporter.snapshot import HistogramLayout
from exporter.yamlfile import (
    FORBID,
    MAX_INT_DIGITS,
    OddNumber,
    Shaped,
    StrictLoader,
    clip,
    json_schema,
    load_yaml,
    problem,
    quote,
    section,
    type_name,
    validated,
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
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
DURATION_HINT = "use e.g. 30s, 2m, 1h, 1m30s, 500ms or a number of seconds"
_Loader = StrictLoader  # the name the tests reach the loader by


class ConfigError(FileError):
    """One line: `<source>: <key.path>: <problem>` (parts that are unknown are left out)."""


# --- the values: text from ${VAR}, numbers, durations -------------------------------------


def _expanded(value: object, info: ValidationInfo) -> object:
    return _expand(value, info.context or {}) if isinstance(value, str) else value


@dataclass(frozen=True)
class FromText:
    """A number or true/false that may also be text (from `${VAR}`): `parse` reads it, the
    annotated type (which takes no other text) checks it; the schema takes such text too."""

    parse: Callable[[object], object]
    pattern: str

    def __get_pydantic_core_schema__(
        self, source: object, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        read = lambda value, info: self.parse(_expanded(value, info))  # noqa: E731
        strict: Any = {**handler(source), "strict": True}
        return core_schema.with_info_before_validator_function(read, strict)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        text = {"type": "string", "pattern": self.pattern}
        inner: Any = schema
        return {"anyOf": [handler(inner["schema"]), text]}


class Digits(int):
    """A number of more digits than a setting takes (int() refuses over 4300): compared as
    10**30 (or its negative), shown as how many digits it has."""

    digits: int

    def __new__(cls, text: str) -> Digits:
        self = super().__new__(cls, (-1 if text.startswith("-") else 1) * 10**MAX_INT_DIGITS)
        self.digits = len(text.lstrip("+-").partition(".")[0])
        return self

    def __str__(self) -> str:
        return f"a {self.digits}-digit number"


def _number_of(value: object, form: re.Pattern[str], read: Callable[[str], object]) -> object:
    if isinstance(value, str) and form.fullmatch(value.strip()):
        text = value.strip()
        value = Digits(text) if len(text.partition(".")[0]) > MAX_INT_DIGITS else read(text)
    if isinstance(value, OddNumber) and not value.too_large:
        raise problem(_ambiguous(value.text))
    return Digits(value.text) if isinstance(value, OddNumber) else value


def _flag(value: object) -> object:
    word = value.strip().lower() if isinstance(value, str) else ""
    return word == "true" if word in ("true", "false") else value


# re.ASCII: \d would take any Unicode digit ("５s"), which float() then reads.
_DIGITS_RE = re.compile(r"[0-9]+", re.ASCII)
_NUMBER_RE = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)
_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)", re.ASCII)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_VARIABLE = r"|\$\{"  # the schema takes any text with a ${VAR} in it
_NUMBER = r"([0-9]+(\.[0-9]*)?|\.[0-9]+)"
DURATION_PATTERN = rf"^\s*({_NUMBER}|({_NUMBER}(ms|s|m|h))+)\s*${_VARIABLE}"
INTEGER = FromText(lambda v: _number_of(v, _DIGITS_RE, int), rf"^\s*[0-9]+\s*${_VARIABLE}")
NUMBER = FromText(lambda v: _number_of(v, _NUMBER_RE, float), rf"^\s*{_NUMBER}\s*${_VARIABLE}")
FLAG = FromText(_flag, rf"^\s*([Tt]rue|[Ff]alse)\s*${_VARIABLE}")


@dataclass(frozen=True)
class Duration:
    """Seconds from a number or text such as "1m30s", `minimum` to `maximum` (more than the
    minimum when `above`)."""

    minimum: float = 0.0
    maximum: float = math.inf
    above: bool = False

    def seconds(self, value: object) -> float:
        seconds = _seconds(value)
        if self.above and seconds <= self.minimum:
            raise problem(f"must be more than {_show_seconds(self.minimum)}")
        if seconds < self.minimum:
            least = _show_seconds(self.minimum)
            raise problem(f"{_show_seconds(seconds)} is too short (minimum {least})")
        if seconds > self.maximum:
            # Infinite here means digits too many for a float: show no number then.
            shown = f"{_show_seconds(seconds)} " if math.isfinite(seconds) else ""
            raise problem(f"{shown}is longer than the maximum of {_show_duration(self.maximum)}")
        return seconds

    def __get_pydantic_core_schema__(
        self, source: object, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        read = lambda value, info: self.seconds(_expanded(value, info))  # noqa: E731
        return core_schema.with_info_plain_validator_function(read)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        number = {"type": "number", ("exclusiveMinimum" if self.above else "minimum"): self.minimum}
        number.update({"maximum": self.maximum} if math.isfinite(self.maximum) else {})
        text = {"type": "string", "pattern": DURATION_PATTERN}
        return {"anyOf": [number, text], "description": f"a duration: {DURATION_HINT}"}


def _seconds(value: object) -> float:
    """Seconds, infinite when the digits are too many for a float (the maximum then refuses
    it); NaN, infinite and negative YAML numbers are refused."""
    if isinstance(value, str):
        seconds = _duration_text(value.strip())
        if seconds is None:  # the patterns take no sign, NaN or inf
            raise problem(f"bad duration {quote(clip(value))} ({DURATION_HINT})")
        return seconds
    if isinstance(value, OddNumber) and not value.too_large:
        raise problem(_ambiguous(value.text))
    if isinstance(value, OddNumber):
        seconds = -math.inf if value.text.startswith("-") else math.inf
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise problem(f"expected a duration, got {type_name(value)} ({DURATION_HINT})")
    else:
        try:
            seconds = float(value)
        except OverflowError:  # an int of more digits than a float holds
            seconds = math.inf if value > 0 else -math.inf
    if math.isnan(seconds) or seconds < 0 or (isinstance(value, float) and math.isinf(seconds)):
        why = "must be a finite amount of time, not negative"
        raise problem(f"bad duration {quote(clip(str(value)))} ({why})")
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


def _ambiguous(text: str) -> str:
    return (
        f"{clip(text)} is ambiguous in YAML (a leading 0, 0x, 0b, _ or : changes how it is "
        "read); write a plain decimal number"
    )


def _nonempty(text: str) -> str:
    if not text.strip():
        raise problem("must not be empty")
    return text


# A string with its ${VAR}s expanded; a Name is not blank either.
Text = Annotated[str, Field(strict=True), BeforeValidator(_expanded)]
Name = Annotated[str, Field(strict=True), AfterValidator(_nonempty), BeforeValidator(_expanded)]


def _or_null(schema: dict[str, Any]) -> None:
    inner = dict(schema)
    schema.clear()
    schema["anyOf"] = [inner, {"type": "null"}]


# A value the validator makes when the key is left out (or null).
MADE = Field(default=None, validate_default=True, json_schema_extra=_or_null)

# --- the records --------------------------------------------------------------------------


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


# The three forms of `credentials:`; a target's credentials use the keys of exactly one.
FORMS: tuple[tuple[str, ...], ...] = (
    ("secret_id", "secret_key", "token", "expiration"),
    ("file", "profile"),
    ("cvm_role", "metadata_endpoint"),
)


def _one_form_of_three(schema: dict[str, Any]) -> None:
    keys = schema["properties"]
    schema["oneOf"] = [
        {"properties": {k: keys[k] for k in form}, "required": list(form[: 1 + (i == 0)])}
        for i, form in enumerate(FORMS)
    ]


def _header_safe(text: str | None) -> str | None:
    if text and not header_safe(text):
        raise problem("must be printable ASCII without spaces (the value is not shown)")
    return text


def _expiration(value: object, info: ValidationInfo) -> float:
    if not isinstance(value, str):
        raise problem(f"expected {ISO_HINT}, got {type_name(value)}")
    expires = parse_iso_time(_expand(value, info.context or {}))
    if expires is None:
        raise problem(f"is not {ISO_HINT} (the value is not shown)")
    # Static keys are never refreshed: expired ones would fail every request.
    if expires <= time.time():
        raise problem(f"temporary credentials expired at {format_iso_time(expires)}")
    return expires


def _local_path(text: str) -> str:
    """Absolute (relative to the working directory), with ~ expanded."""
    if "\0" in text:
        raise problem("must not contain a NUL character")
    return os.path.abspath(os.path.expanduser(text.strip()))


LocalPath = Annotated[Name, AfterValidator(_local_path)]
Key = Annotated[Name, AfterValidator(_header_safe)]


def _readable(path: str) -> str:
    """A file that can be opened. It is not read here: its keys are checked each time it is
    read, and it may change before the first request. The path is not shown: a secret pasted
    into `file:` would be."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise problem(
            f"cannot read the file: {exc.strerror or type(exc).__name__}", "file"
        ) from None
    except ValueError:
        raise problem("cannot read the file: not a valid file name", "file") from None
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if not stat.S_ISREG(mode):
        why = os.strerror(errno.EISDIR) if stat.S_ISDIR(mode) else "not a regular file"
        raise problem(f"cannot read the file: {why}", "file")
    return path


_PROFILE_RE = re.compile(r"[^\[\]\s](?:[^\[\]]*[^\[\]\s])?")


def _profile(name: str) -> str:
    if not name.isprintable() or not _PROFILE_RE.fullmatch(name):
        why = "is not a profile name (the name of a [section] of the file)"
        raise problem(f"{why} (the value is not shown)")
    return name


def _role(name: str) -> str | None:
    """The role's name; None (from `auto`, "" or nothing) asks the metadata service for it."""
    if name.strip() in ("", "auto"):
        return None
    if not ROLE_NAME_RE.fullmatch(name.strip()):
        raise problem(
            "is not a CAM role name (up to 128 letters, digits and +=,.@_-; or auto to ask "
            "the metadata service) (the value is not shown)"
        )
    return name.strip()


def _metadata_endpoint(text: str) -> str:
    parts = _url(text, "http(s)://host[:port]/path/", with_path=True)
    # Paths under it are appended: cam/security-credentials/<role>.
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/"


@with_config({**FORBID, "json_schema_extra": _one_form_of_three})
class CredentialKeys(TypedDict, total=False):
    secret_id: Key | None
    secret_key: Key | None
    token: Annotated[Text, AfterValidator(_header_safe)] | None
    expiration: Annotated[float, BeforeValidator(_expiration, json_schema_input_type=str)] | None
    file: LocalPath
    profile: Annotated[Name, AfterValidator(_profile)] | None
    cvm_role: Annotated[Text, AfterValidator(_role)] | None
    metadata_endpoint: Annotated[Name, AfterValidator(_metadata_endpoint)] | None


def _credentials(
    value: Any, validate: Callable[[Any], Any], info: ValidationInfo
) -> CredentialSource:
    if value is None:
        return _from_environment(info.context or {})
    named = (
        [next(k for k in value if k in f) for f in FORMS if set(f) & set(value)]
        if isinstance(value, dict)
        else []
    )
    if len(named) > 1:
        named.sort(key=list(value).index)  # the first key of each form, in the file's order
        listed = f"{', '.join(named[:-1])} and {named[-1]}"
        why = "give secret_id and secret_key, or a file, or a cvm_role"
        raise problem(f"{listed} cannot be used together ({why})")
    keys = validate(value)
    if "profile" in keys and "file" not in keys:
        raise problem("required when profile is given", "file")
    if "file" in keys:
        return CredentialsFile(_readable(keys["file"]), keys.get("profile") or DEFAULT_PROFILE)
    if "metadata_endpoint" in keys and "cvm_role" not in keys:
        why = "required when metadata_endpoint is given (auto asks the metadata service)"
        raise problem(why, "cvm_role")
    if "cvm_role" in keys:
        endpoint = keys.get("metadata_endpoint") or DEFAULT_METADATA_ENDPOINT
        return CVMRole(keys["cvm_role"], endpoint)
    secret_id, secret_key = keys.get("secret_id"), keys.get("secret_key")
    if secret_id is None and secret_key is None:
        raise problem(
            "give secret_id and secret_key, or a file, or a cvm_role, or leave credentials out "
            f"to use {ENV_SECRET_ID} and {ENV_SECRET_KEY}"
        )
    if secret_id is None or secret_key is None:
        given, missing = ("secret_key", "secret_id") if secret_id is None else FORMS[0][:2]
        raise problem(f"required when {given} is given", missing)
    # An empty token (e.g. `${TENCENTCLOUD_SESSION_TOKEN:-}`) means permanent keys.
    return Credentials(secret_id, secret_key, keys.get("token") or None, keys.get("expiration"))


def _from_environment(environ: Mapping[str, str]) -> Credentials:
    found = from_environment(environ)
    if found is None:
        has_id, has_key = bool(environ.get(ENV_SECRET_ID)), bool(environ.get(ENV_SECRET_KEY))
        if has_id != has_key:
            given, missing = (ENV_SECRET_ID, ENV_SECRET_KEY)[:: 1 if has_id else -1]
            raise problem(f"no credentials: {given} is set but {missing} is not")
        raise problem(
            f"no credentials: set {ENV_SECRET_ID} and {ENV_SECRET_KEY} (and {ENV_SESSION_TOKEN} "
            "for temporary keys) in the environment, or give secret_id and secret_key here"
        )
    for name, variable in zip(
        FORMS[0], (ENV_SECRET_ID, ENV_SECRET_KEY, ENV_SESSION_TOKEN), strict=False
    ):
        try:
            _header_safe(getattr(found, name))
        except PydanticCustomError as exc:
            raise problem(exc.message(), f" (from {variable})") from None
    return found


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
    parts = _url(text, "http(s)://host[:port]", with_path=False)
    return f"{parts.scheme}://{parts.netloc}"


def _url(text: str, form: str, with_path: bool) -> Any:
    try:
        parts = urlsplit(text)
    except ValueError:
        raise problem(f"is not a URL of the form {form}") from None
    try:
        port = parts.port
    except ValueError:
        port = 0  # not a number, or out of range
    why = ""
    if "@" in parts.netloc:  # user:password@host: never echoed
        raise problem(f"must not contain user info (expected {form})")
    if parts.scheme not in ("http", "https"):
        why = "must start with http:// or https://"
    elif not parts.hostname:
        why = "has no host"
    elif port == 0:
        why = "has a bad port"
    elif with_path and (parts.query or parts.fragment):
        why = "must not have a query or fragment"
    elif not with_path and (parts.path not in ("", "/") or parts.query or parts.fragment):
        why = "must not have a path, query or fragment"
    if why:
        raise problem(
            f"{quote(clip(text, 80))} {why} (expected {form})", hidden=f"{why} (expected {form})"
        )
    return parts


@section
@dataclass(frozen=True)
class TargetConfig:
    bucket: Bucket
    region: Annotated[Name, AfterValidator(_region)]
    # e.g. https://<bucket>.ci.<region>.myqcloud.com, the default
    endpoint: Annotated[Name, AfterValidator(_endpoint), BeforeValidator(_default_endpoint), MADE]
    # The environment's (TENCENTCLOUD_SECRET_ID, ...) when the file gives none.
    credentials: Annotated[CredentialSource, Shaped(CredentialKeys, _credentials), MADE] = field(
        repr=False
    )
    # Every service of SERVICES, with its documented tags, when the file names none; then
    # workflows and batch jobs when opted in (below).
    services: Annotated[tuple[ServiceConfig, ...], Shaped(Services, _services), MADE]
    workflows: Annotated[ServiceConfig, Shaped(OptIn, _opt_in("workflow"))] | None = None
    batch_jobs: Annotated[ServiceConfig, Shaped(OptIn, _opt_in("batch"))] | None = None


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
    credentials: Annotated[CredentialSource, Shaped(CredentialKeys, _credentials), MADE] = field(
        repr=False
    )
    services: Annotated[tuple[ServiceConfig, ...], Shaped(Services, _services), MADE]
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
    workflows: Annotated[ServiceConfig, Shaped(OptIn, _opt_in("workflow"))] | None = None
    batch_jobs: Annotated[ServiceConfig, Shaped(OptIn, _opt_in("batch"))] | None = None

    @property
    def listed(self) -> tuple[object, ...]:
        """What the entry lists: two entries alike in this list the same buckets."""
        return (self.regions, self.prefixes, self.buckets)


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
        first, longest = _show_seconds(retry.initial_backoff), _show_seconds(retry.max_backoff)
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
            raise problem(f"duplicate of the bound before it ({_show_duration(before)})", index)
        if bound < before:
            shown = _show_duration(before)
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
    targets: Annotated[
        tuple[Annotated[TargetConfig, AfterValidator(_with_opt_ins)], ...],
        AfterValidator(_distinct),
    ] = ()
    # Targets found by listing the buckets CI's services are enabled on (exporter.poll.discovery).
    discovery: Annotated[
        tuple[Annotated[DiscoveryConfig, AfterValidator(_with_opt_ins)], ...],
        AfterValidator(_distinct_entries),
    ] = ()
    poll_interval: Annotated[float, Duration(1, DAY)] = DEFAULT_POLL_INTERVAL
    request_timeout: Annotated[float, Duration(0, 10 * MINUTE, above=True)] = (
        DEFAULT_REQUEST_TIMEOUT
    )
    failure_code_limit: Annotated[int, Field(ge=1, le=10_000), INTEGER] = DEFAULT_FAILURE_CODE_LIMIT
    # Queues polled per (target, service); the rest are left out and counted.
    max_queues_per_service: Annotated[int, Field(ge=1, le=10_000), INTEGER] = (
        DEFAULT_MAX_QUEUES_PER_SERVICE
    )
    # How far the clock stamping CI's jobs may be from our estimate of it (ours, centred by
    # CI's Date header); creation-time windows overlap by this much.
    clock_skew_tolerance: Annotated[float, Duration(0, HOUR)] = DEFAULT_CLOCK_SKEW
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


def parse_duration(
    value: object, path: str, minimum: float = 0.0, maximum: float = math.inf
) -> float:
    """A duration in seconds from a number or text such as "1m30s"; see the module doc."""
    try:
        return Duration(minimum, maximum).seconds(value)
    except PydanticCustomError as exc:
        raise ConfigError(path, exc.message()) from None


def config_schema() -> dict[str, Any]:
    """config.schema.json: `python3 -m exporter.config > config.schema.json`."""
    schema = json_schema(_CONFIG, "Configuration of tencent-ci-exporter (README.md, Configuration)")
    schema["anyOf"] = [  # at least one target or one discovery entry
        {"required": [key], "properties": {key: {"minItems": 1}}}
        for key in ("targets", "discovery")
    ]
    return schema


# --- ${VAR} expansion ---------------------------------------------------------------------

_VAR_START_RE = re.compile(r"\$\$\{|\$\{")
_VAR_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A secret that happens to hold `${` is no variable name: under credentials only a name in
# capitals is shown.
_SHOWN_VARIABLE_RE = re.compile(r"[A-Z_][A-Z0-9_]*")


def _expand(text: str, environ: Mapping[str, str]) -> str:
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
            raise problem("unterminated ${ (write $${ for a literal ${)")
        out.append(_variable(text[match.end() : close], environ))
        position = close + 1
    out.append(text[position:])
    return "".join(out)


def _variable(body: str, environ: Mapping[str, str]) -> str:
    name, sep, default = body.partition(":-")
    shown = _SHOWN_VARIABLE_RE.fullmatch(name) is not None
    if not _VAR_NAME_RE.fullmatch(name):
        why = "in ${...} (letters, digits and _; write $${ for a literal ${)"
        named = f"bad variable name {quote(clip(name))} {why}"
        raise problem(named, hidden=named if shown else f"bad variable name {why}")
    value = environ.get(name)
    if sep:
        return value if value else default
    if value is None:
        named = f"environment variable {name} is not set"
        raise problem(
            named, hidden=named if shown else "environment variable named there is not set"
        )
    return value


# --- how numbers are shown ----------------------------------------------------------------


def _show_seconds(seconds: float) -> str:
    if float(seconds).is_integer() and abs(seconds) < 1e16:
        return f"{int(seconds)}s"  # 10000000000s, not 1e+10s
    return f"{seconds:.12g}s"  # 86400.001s, not 86400s, against a 24h maximum


def _show_duration(seconds: float) -> str:
    """A duration as people write it: 1h30m, 5m, 1.5s, 250ms."""
    if seconds < 1:
        return f"{seconds * 1000:.12g}ms"
    if seconds % 1:
        return _show_seconds(seconds)
    hours, rest = divmod(int(seconds), 3600)
    parts = ((hours, "h"), (rest // 60, "m"), (rest % 60, "s"))
    return "".join(f"{amount}{unit}" for amount, unit in parts if amount)


def _polls_something(config: Config) -> Config:
    if not config.targets and not config.discovery:
        raise problem("must list at least one target (or give discovery)", "targets")
    return config


_CONFIG: TypeAdapter[Config] = TypeAdapter(Annotated[Config, AfterValidator(_polls_something)])

if __name__ == "__main__":
    print(json.dumps(config_schema(), indent=2, ensure_ascii=False))
