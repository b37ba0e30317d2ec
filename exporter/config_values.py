"""The values settings of exporter.config take, declared for pydantic: text with `${VAR}`
expanded, names that are not blank, numbers and true/false that may be text, durations, paths
and URLs; and how numbers are shown in its messages. No state.

Durations are a plain number of seconds (90, 1.5, or the string "90" so that `${VAR}` works)
or a sequence of decimal amounts with units ms, s, m, h: "30s", "2m", "1h", "1m30s", "1.5s",
"500ms" (the forms Go's time.ParseDuration takes, without negatives). Upper bounds catch typos
(a missing unit, an extra digit): a huge wait or timeout would make the exporter look hung.

Strings expand `${VAR}` from the environment, also inside longer text; `${VAR:-default}` gives a
default when VAR is unset or empty; `$${` is a literal `${`; an unset variable without a default
is an error. Numbers, and true or false, may be text for the same reason. Under `credentials:`
an error names a variable only when its name looks like one (capitals), never a value.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import SplitResult, urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationInfo,
)
from pydantic_core import core_schema

from exporter.strictyaml import MAX_INT_DIGITS, OddNumber, clip, quote
from exporter.yamlfile import problem, type_name

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
DURATION_HINT = "use e.g. 30s, 2m, 1h, 1m30s, 500ms or a number of seconds"


def _expanded(value: object, info: ValidationInfo) -> object:
    return expand(value, info.context or {}) if isinstance(value, str) else value


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
            raise problem(f"must be more than {show_seconds(self.minimum)}")
        if seconds < self.minimum:
            least = show_seconds(self.minimum)
            raise problem(f"{show_seconds(seconds)} is too short (minimum {least})")
        if seconds > self.maximum:
            # Infinite here means digits too many for a float: show no number then.
            shown = f"{show_seconds(seconds)} " if math.isfinite(seconds) else ""
            raise problem(f"{shown}is longer than the maximum of {show_duration(self.maximum)}")
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


def _local_path(text: str) -> str:
    """Absolute (relative to the working directory), with ~ expanded."""
    if "\0" in text:
        raise problem("must not contain a NUL character")
    return os.path.abspath(os.path.expanduser(text.strip()))


LocalPath = Annotated[Name, AfterValidator(_local_path)]


def checked_url(text: str, form: str, with_path: bool) -> SplitResult:
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


# --- ${VAR} expansion ---------------------------------------------------------------------

_VAR_START_RE = re.compile(r"\$\$\{|\$\{")
_VAR_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A secret that happens to hold `${` is no variable name: under credentials only a name in
# capitals is shown.
_SHOWN_VARIABLE_RE = re.compile(r"[A-Z_][A-Z0-9_]*")


def expand(text: str, environ: Mapping[str, str]) -> str:
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


def show_seconds(seconds: float) -> str:
    if float(seconds).is_integer() and abs(seconds) < 1e16:
        return f"{int(seconds)}s"  # 10000000000s, not 1e+10s
    return f"{seconds:.12g}s"  # 86400.001s, not 86400s, against a 24h maximum


def show_duration(seconds: float) -> str:
    """A duration as people write it: 1h30m, 5m, 1.5s, 250ms."""
    if seconds < 1:
        return f"{seconds * 1000:.12g}ms"
    if seconds % 1:
        return show_seconds(seconds)
    hours, rest = divmod(int(seconds), 3600)
    parts = ((hours, "h"), (rest // 60, "m"), (rest % 60, "s"))
    return "".join(f"{amount}{unit}" for amount, unit in parts if amount)
