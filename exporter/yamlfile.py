"""What the exporter's YAML files share: strict YAML, and validation against the declarations
of exporter.config and exporter.webconfig, whose first error becomes one line
`file: key.path: problem`. No state: every function works on its arguments.

The YAML is read more strictly than YAML 1.1 does: integers are plain decimal (`010`, `0x1e`,
`1_000` and `1:30` are kept as OddNumber rather than read as 8, 30, 1000 and 90), dates stay
text, keys are always text (`yes:` is the key "yes", not True), a key given twice in one
mapping is refused (PyYAML keeps the last), and so are explicit tags (`!!int`,
`!!python/...`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar

import yaml
from pydantic import ConfigDict, GetCoreSchemaHandler, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema

from exporter.smallfile import FileError

T = TypeVar("T")


# --- strict YAML --------------------------------------------------------------------------


_STR_TAG = "tag:yaml.org,2002:str"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
# Integers in this form only: YAML 1.1 reads 010, 0x1e, 0b101, 1_000 and 1:30 as 8, 30, 5,
# 1000 and 90, which no reader of the file expects, so those are refused.
_PLAIN_INT_RE = re.compile(r"[-+]?(?:0|[1-9][0-9]*)", re.ASCII)
# More digits than any setting needs; int() refuses over 4300 and float() overflows at 309.
MAX_INT_DIGITS = 30


@dataclass(frozen=True)
class OddNumber:
    """A YAML number kept as its source text: ambiguous (010, 0x1e, 1_000, 1:30) or too large.

    It is not an int or float, so every type check refuses it; the numeric settings say why.
    """

    text: str
    kind: str  # "integer" or "number"
    too_large: bool = False

    def __str__(self) -> str:
        return self.text


class StrictLoader(yaml.SafeLoader):
    """SafeLoader made stricter; see the module doc. Errors are FileErrors naming the line."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        tag = getattr(event, "tag", None)
        # `!` changes nothing in PyYAML and `!!str` only makes a scalar text; every other tag
        # runs a constructor on text the user chose (`!!int SECRET` fails quoting it) or
        # names a Python object.
        harmless = tag is None or (isinstance(event, yaml.ScalarEvent) and tag in ("!", _STR_TAG))
        if not harmless:
            raise FileError(
                at(event.start_mark),
                "explicit YAML tags (!!int, !!binary, !foo, ...) are not supported; "
                "write the plain value",
            )
        return super().compose_node(parent, index)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (FileError, yaml.YAMLError, RecursionError, MemoryError):
            raise
        except Exception:
            # Any other constructor failure: its text may quote the value (a secret).
            raise FileError(at(node.start_mark), "cannot read this value") from None


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict[str, Any]:
    seen: set[str] = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
            continue
        if key_node.value in seen:
            line = key_node.start_mark.line + 1
            raise FileError(f"line {line}", f"duplicate key {quote(key_node.value)}")
        seen.add(key_node.value)
    loader.flatten_mapping(node)  # `<<: *anchor` merges; keys given here win
    mapping: dict[str, Any] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise FileError(at(key_node.start_mark), "a key must be text, not a list or mapping")
        # Every key is its text: `1:`, `~:` and `yes:` are the keys "1", "~" and "yes".
        mapping[key_node.value] = loader.construct_object(value_node, deep=True)
    return mapping


def _construct_int(loader: StrictLoader, node: yaml.ScalarNode) -> int | OddNumber:
    text = str(node.value)
    if not _PLAIN_INT_RE.fullmatch(text):
        return OddNumber(text, "integer")
    if len(text.lstrip("+-")) > MAX_INT_DIGITS:
        return OddNumber(text, "integer", too_large=True)
    return int(text)


def _construct_float(loader: StrictLoader, node: yaml.ScalarNode) -> float | OddNumber:
    text = str(node.value)
    if "_" in text or ":" in text:
        return OddNumber(text, "number")
    return loader.construct_yaml_float(node)


# Dates stay text: no setting is a date, and an impossible one (2001-13-45) fails in the
# constructor.
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
StrictLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def load_yaml(text: str) -> object:
    """The document in `text`; FileError(where, problem) when it is not strict YAML."""
    try:
        # A SafeLoader subclass: no arbitrary objects.
        return yaml.load(text, Loader=StrictLoader)
    except FileError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        # `*name` and `&name` are the user's text (a secret after a stray * is one): unnamed.
        problem = _NAMED_RE.sub(r"\1 (its name is not shown)", problem)
        raise FileError(at(mark), f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise FileError("", f"YAML syntax error: {exc}") from None
    except RecursionError:
        # PyYAML composes and constructs nodes recursively: `[[[[...` thousands deep runs out
        # of stack. No real configuration nests more than a few levels.
        raise FileError("", "YAML nested too deeply") from None
    except Exception:
        # Not expected past the Loader's own guard; the text may hold a value, so not shown.
        raise FileError("", "cannot read the YAML") from None


_NAMED_RE = re.compile(r"\b(alias|anchor|tag handle) ('[^']*'|\"[^\"]*\")")


def at(mark: yaml.Mark | None) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def clip(text: str, limit: int = 40) -> str:
    """Enough of a long value to recognise it; the whole may be megabytes."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- validation against the declarations --------------------------------------------------

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
    """10000, not 10000.0; 1e+30 digits as the count of them (exporter.config.Digits)."""
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
