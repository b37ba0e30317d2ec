"""Strict YAML for the exporter's own files (exporter.config, exporter.webconfig, the alert
rules' tests): read more strictly than YAML 1.1 does. Integers are plain decimal (`010`, `0x1e`,
`1_000` and `1:30` are kept as OddNumber rather than read as 8, 30, 1000 and 90), dates stay
text, keys are always text (`yes:` is the key "yes", not True), a key given twice in one
mapping is refused (PyYAML keeps the last), and so are explicit tags (`!!int`,
`!!python/...`). Errors are FileErrors naming the line and never the text there. No state.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from exporter.smallfile import FileError

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
