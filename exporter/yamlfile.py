"""What the exporter's own files share: reading a small regular file, strict YAML, and the
type checks whose errors name the key path. The configuration (exporter.config) and the web
config (exporter.webconfig) each say things in their own words and raise their own error;
the state file (exporter.state) only reads its file through here.

The YAML is read more strictly than YAML 1.1 does: integers are plain decimal (`010`, `0x1e`,
`1_000` and `1:30` are kept as OddNumber rather than read as 8, 30, 1000 and 90), dates stay
text, keys are always text (`yes:` is the key "yes", not True), a key given twice in one
mapping is refused (PyYAML keeps the last), and so are explicit tags (`!!int`,
`!!python/...`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

MIB = 1 << 20
MAX_FILE_BYTES = MIB

T = TypeVar("T")


class FileError(Exception):
    """One line: `<source>: <where>: <problem>` (parts that are unknown are left out)."""

    def __init__(self, where: str, problem: str, source: str | None = None) -> None:
        self.where = where
        self.problem = problem
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = (p for p in (self.source, self.where, self.problem) if p)
        # One line whatever a key, a value or a YAML message holds.
        return ": ".join(parts).replace("\r", " ").replace("\n", " ")


# --- small files --------------------------------------------------------------------------


class FileShapeError(Exception):
    """The file opened, but is not one to read: its text is the problem, e.g. for a log."""


class NotRegularFile(FileShapeError):
    def __init__(self) -> None:
        super().__init__("not a regular file")


class FileTooLarge(FileShapeError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than {limit // MIB} MiB")


def read_regular_file(path: str, max_bytes: int, *, follow_symlinks: bool = True) -> bytes:
    """The file's bytes; OSError when it cannot be opened or is a directory (ELOOP: a symbolic
    link, with `follow_symlinks` False), FileShapeError when it is not a regular file or holds
    more than `max_bytes`."""
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. The type and
    # size are checked on the open descriptor, so the file cannot be swapped between check and
    # read, and a file too large is refused before a byte of it is read.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as handle:
        status = os.fstat(handle.fileno())
        if stat.S_ISDIR(status.st_mode):
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(status.st_mode):
            # /dev/zero would be read forever, a FIFO or a terminal would wait.
            raise NotRegularFile
        if status.st_size > max_bytes:
            raise FileTooLarge(max_bytes)
        data = handle.read(max_bytes + 1)  # it may have grown since
    if len(data) > max_bytes:
        raise FileTooLarge(max_bytes)
    return data


def read_small_file(path: str) -> bytes:
    """A file of at most 1 MiB; FileError("", problem) when it cannot be read."""
    try:
        return read_regular_file(path, MAX_FILE_BYTES)
    except OSError as exc:
        raise FileError("", f"cannot read file: {exc.strerror or exc}") from None
    except NotRegularFile as exc:
        raise FileError("", f"cannot read file: {exc}") from None
    except FileTooLarge as exc:
        raise FileError("", f"file is {exc} (not a configuration file?)") from None


def read_text(path: str) -> str:
    """A small file's UTF-8 text; FileError("", problem) when it cannot be read."""
    try:
        return read_small_file(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileError("", f"not UTF-8 text (bad byte at offset {exc.start})") from None


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


# --- type checks --------------------------------------------------------------------------


@dataclass(frozen=True)
class Checks:
    """One file format's type checks: the error they raise, and the format's words for a
    YAML value's type (`names` in order, bool before int; `other` for anything else)."""

    error: Callable[[str, str], FileError]
    names: Mapping[type, str]
    other: Callable[[object], str]

    def type_name(self, value: object) -> str:
        for kind, name in self.names.items():
            if isinstance(value, kind):
                return name
        return self.other(value)

    def expect(self, value: object, kind: type[T], where: str, wanted: str) -> T:
        if not isinstance(value, kind):
            raise self.error(where, f"expected {wanted}, got {self.type_name(value)}")
        return value

    def mapping(self, value: object, where: str) -> dict[Any, Any]:
        return self.expect(value, dict, where, "a mapping")

    def items(self, value: object, where: str) -> list[Any]:
        return self.expect(value, list, where, "a list")

    def check_keys(
        self,
        raw: Mapping[Any, Any],
        allowed: tuple[str, ...],
        where_of: Callable[[Any], str],
        unsupported: Mapping[str, str] | None = None,
    ) -> None:
        """Refuse a key not `allowed` (with the reason, when `unsupported` names it)."""
        for key in raw:
            where = where_of(key)
            if unsupported and where in unsupported:
                raise self.error(where, unsupported[where])
            if key not in allowed:
                raise self.error(where, f"unknown key (allowed: {', '.join(allowed)})")


def quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
