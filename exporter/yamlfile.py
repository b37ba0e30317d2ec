"""Validation of the exporter's YAML files (read by exporter.strictyaml) against the
declarations of exporter.config and exporter.webconfig: their first error becomes one line
`file: key.path: problem`, and their JSON Schemas are made for editors. No state: every
function works on its arguments.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar

from pydantic import ConfigDict, GetCoreSchemaHandler, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema

from exporter.smallfile import FileError
from exporter.strictyaml import OddNumber, clip, quote

T = TypeVar("T")

FORBID = ConfigDict(extra="forbid")
_TYPE_NAMES = {type(None): "null", bool: "boolean", int: "integer", float: "number"}
_TYPE_NAMES.update({str: "string", list: "list", dict: "mapping"})
_WANTED = {"string_type": "a string", "int_type": "an integer", "float_type": "a number"}
_WANTED.update(bool_type="true or false", tuple_type="a list", list_type="a list")
_WANTED.update(dict_type="a mapping", dataclass_type="a mapping")
_LIMITS = {
    "greater_than_equal": "at least",
    "greater_than": "more than",
    "less_than_equal": "at most",
}
_UNKNOWN = ("extra_forbidden", "unexpected_keyword_argument")
# A key under the secret section shown when wrong: snake case, too short to be a secret.
_SHOWN_KEY_RE = re.compile(r"[a-z_]{1,15}")


def problem(text: str, *at: str | int, hidden: str | None = None) -> PydanticCustomError:
    """A validator's error, at `at` below the value it validates; under the secret section
    `hidden` is said instead (by default `text`, which must then show no value)."""
    context = {"text": text, "at": at, "hidden": text if hidden is None else hidden}
    return PydanticCustomError("file", "{text}", context)


@dataclass(frozen=True)
class Shaped:
    """Validated as `shape` (the file's form of the value), then made the record by
    `build(value, validate, info)`, which calls `validate(value)` for the shape's checks."""

    shape: object
    build: core_schema.WithInfoWrapValidatorFunction

    def __get_pydantic_core_schema__(
        self, source: object, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_wrap_validator_function(
            self.build, handler.generate_schema(self.shape)
        )


def section(cls: type[T]) -> type[T]:
    """A dataclass read from a mapping of the file: unknown keys are refused, and a key given
    as null takes its default."""
    defaults = {
        f.name
        for f in fields(cls)  # type: ignore[arg-type]
        if (f.default, f.default_factory) != (MISSING, MISSING)
    }

    def unset(raw: object) -> object:
        if not isinstance(raw, dict):
            return raw
        return {
            key: value for key, value in raw.items() if value is not None or key not in defaults
        }

    def schema(source: object, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(unset, handler(source))

    cls.__pydantic_config__ = FORBID  # type: ignore[attr-defined]
    cls.__get_pydantic_core_schema__ = schema  # type: ignore[attr-defined]
    return cls


def validated(
    adapter: TypeAdapter[T],
    document: object,
    context: object = None,
    secret: str | tuple[str, ...] = "",
    refused: Mapping[str, str] | None = None,
) -> T:
    """`document` made what `adapter` declares; its first error as FileError(where, problem).
    Nothing under the key `secret` (or any of them) is shown, nor a key there that is not
    one; a key path in `refused` is refused with the reason it maps to."""
    try:
        return adapter.validate_python(document, context=context)
    except ValidationError as exc:
        error = _first(exc.errors(include_url=False))
        raise _one_line(error, adapter.json_schema(), secret, refused or {}) from None


def _first(errors: list[ErrorDetails]) -> ErrorDetails:
    """The first error, or an unknown key in a mapping that holds it: the likelier cause."""
    first = errors[0]
    unknown = [
        e
        for e in errors
        if e["type"] in _UNKNOWN and first["loc"][: len(e["loc"]) - 1] == e["loc"][:-1]
    ]
    return min(unknown, key=lambda e: len(e["loc"]), default=first)


def _one_line(
    error: ErrorDetails,
    schema: dict[str, Any],
    secret: str | tuple[str, ...],
    refused: Mapping[str, str],
) -> FileError:
    loc, kind, value = list(error["loc"]), error["type"], error["input"]
    context: dict[str, Any] = error.get("ctx") or {}
    secrets = (secret,) if isinstance(secret, str) else secret
    hidden = any(key and key in loc for key in secrets)
    if kind == "file":
        loc += context["at"]
        text = context["hidden" if hidden else "text"]
    elif kind in _UNKNOWN:
        allowed = f"(allowed: {', '.join(_node(schema, loc[:-1]).get('properties', ()))})"
        text = refused.get(key_path(loc)) or f"unknown key {allowed}"
        if hidden and not _SHOWN_KEY_RE.fullmatch(str(loc[-1])):
            loc, text = loc[:-1], f"a key that is not one, not shown {allowed}"
    elif kind == "missing":
        text = "required key is missing"
    elif kind in _WANTED:
        shown = (
            not hidden
            and isinstance(value, str)
            and kind in ("int_type", "float_type", "bool_type")
        )
        text = f"expected {_WANTED[kind]}, got {type_name(value)}"
        text += f" {quote(clip(value))}" if shown else ""
    elif kind in _LIMITS:
        limit = next(iter(context.values()))
        text = f"must be {_LIMITS[kind]} {show_number(limit)}, got {show_number(value)}"
    elif kind == "finite_number":
        text = f"must be a finite number, got {show_number(value)}"
    elif kind == "literal_error" and not hidden:
        allowed = ", ".join(_node(schema, loc).get("enum", ()))
        text = f"unknown value {quote(clip(str(value)))} (allowed: {allowed})"
    else:  # pydantic's words, which show no value (under the secret section, not even those)
        text = "is not valid (the value is not shown)" if hidden else error["msg"]
    return FileError(key_path(loc), text)


def _node(root: dict[str, Any], loc: Sequence[str | int]) -> dict[str, Any]:
    """The part of the JSON schema `root` that describes the value at `loc`."""
    node = _merged(root, root)
    for part in loc:
        if isinstance(part, int):
            child = node.get("items")
        else:
            child = node.get("properties", {}).get(part, node.get("additionalProperties"))
        node = _merged(root, child if isinstance(child, dict) else {})
    return node


def _merged(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """`node` with its reference followed and its alternatives (`X | None`) merged in."""
    if "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[1]]
    merged = dict(node)
    for option in node.get("anyOf", ()):
        for key, part in _merged(root, option).items():
            merged.setdefault(key, part)
    return merged


def key_path(loc: Sequence[str | int]) -> str:
    """`targets[0].services.media`, a key that could be misread quoted; a part starting with
    " (" is a note on the path, e.g. " (from TENCENTCLOUD_SECRET_KEY)"."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith(" ("):
            path += part
        else:
            plain = part.isprintable() and part.strip() == part != "" and not set(".: ") & set(part)
            path += ("." if path else "") + (part if plain else quote(part))
    return path or "top level"


def type_name(value: object) -> str:
    """A YAML value's type, as the messages say it: "expected a mapping, got list"."""
    if isinstance(value, OddNumber):
        return value.kind
    return next((n for t, n in _TYPE_NAMES.items() if isinstance(value, t)), type(value).__name__)


def show_number(value: object) -> str:
    """10000, not 10000.0; 1e+30 digits as the count of them (exporter.config_values.Digits)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return f"{value:.12g}" if isinstance(value, float) else str(value)


def json_schema(adapter: TypeAdapter[Any], title: str) -> dict[str, Any]:
    """The JSON Schema of a file's declarations, for editors."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title}
    return {**schema, **_untitled(adapter.json_schema())}


def _untitled(schema: Any) -> Any:
    """Without pydantic's titles (the field names again) and the defaults it cannot show."""
    if isinstance(schema, list):
        return [_untitled(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    drop = ("title",) + (("default",) if schema.get("default", 0) is None else ())
    return {key: _untitled(value) for key, value in schema.items() if key not in drop}
