"""Log lines for machines and people: logfmt or JSON, one record per line, on stderr.

    ts=2026-01-01T00:00:00.000Z level=info logger=exporter.poller msg="poll done" target=b-1

Fields passed with `extra={...}` follow the message as key=value. An exception shows as one
`exc="Type: message"` field; at level debug a `stack` field adds the traceback (escaped, so
the record still takes one line).
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import traceback
from datetime import datetime, timezone
from typing import TextIO

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
FORMATS: tuple[str, ...] = ("logfmt", "json")

_LEVEL_NAMES = {logging.WARNING: "warn", logging.CRITICAL: "critical"}
_CORE_KEYS = ("ts", "level", "logger", "msg", "exc", "stack")
# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_BARE_VALUE_RE = re.compile(r'[^\s"=\\]+')
_KEY_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_.\-]")
# Every character str.splitlines breaks at. json.dumps escapes the ASCII ones but leaves
# U+0085, U+2028 and U+2029 raw, and some log shippers split records there.
_LINE_BREAK_RE = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def parse_level(text: str) -> int:
    """ "debug" | "info" | "warn" | "error" (any case; "warning" too) -> a logging level."""
    name = text.strip().lower()
    name = "warn" if name == "warning" else name
    if name not in LEVELS:
        raise ValueError(f"unknown log level {text!r} (use one of: {', '.join(LEVELS)})")
    return LEVELS[name]


def parse_format(text: str) -> str:
    """ "logfmt" | "json" (any case) -> the canonical name."""
    name = text.strip().lower()
    if name not in FORMATS:
        raise ValueError(f"unknown log format {text!r} (use one of: {', '.join(FORMATS)})")
    return name


def setup_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Point the root logger at `stream` (stderr) in `fmt`; calling it again replaces ours."""
    numeric = parse_level(level)
    formatter = _make_formatter(parse_format(fmt), numeric <= logging.DEBUG)
    root = logging.getLogger()
    for handler in list(root.handlers):
        # Only handlers this module installed: others (pytest's caplog) keep working.
        if isinstance(handler, _ExporterHandler):
            root.removeHandler(handler)
            handler.close()
    handler = _ExporterHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(numeric)


class _ExporterHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler we can recognise to replace."""


def _make_formatter(fmt: str, with_stack: bool) -> logging.Formatter:
    return JsonFormatter(with_stack) if fmt == "json" else LogfmtFormatter(with_stack)


class _FieldsFormatter(logging.Formatter):
    """Turns a record into ordered (key, value) fields; subclasses write them out."""

    def __init__(self, with_stack: bool = False) -> None:
        super().__init__()
        self.with_stack = with_stack

    def fields(self, record: logging.LogRecord) -> dict[str, object]:
        out: dict[str, object] = {
            "ts": _timestamp(record),
            "level": _LEVEL_NAMES.get(record.levelno, record.levelname.lower()),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS:
                # An extra named like a core field must not hide it.
                out[f"{key}_" if key in _CORE_KEYS else key] = value
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out["exc"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self.with_stack:
                out["stack"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.stack_info and self.with_stack:
            out["stack"] = record.stack_info
        return out


class LogfmtFormatter(_FieldsFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(
            f"{_logfmt_key(k)}={_logfmt_value(v)}" for k, v in self.fields(record).items()
        )


class JsonFormatter(_FieldsFormatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields(record)
        try:
            # allow_nan=False: NaN and Infinity are not JSON, and strict readers drop the line.
            text = json.dumps(fields, ensure_ascii=False, allow_nan=False, default=str)
        except ValueError:
            # A NaN or infinity somewhere, or a structure that contains itself.
            safe = {key: _json_safe(value) for key, value in fields.items()}
            text = json.dumps(safe, ensure_ascii=False, allow_nan=False, default=str)
        return _escape_line_breaks(text)


def _json_safe(value: object) -> object:
    """Scalars JSON can hold as they are; anything else as its text."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return str(value)


def _escape_line_breaks(text: str) -> str:
    # Only ever inside a JSON string here, where \uXXXX means the same character.
    return _LINE_BREAK_RE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def _timestamp(record: logging.LogRecord) -> str:
    # From whole milliseconds: record.msecs truncates a float and can read .122 for .123.
    seconds, millis = divmod(round(record.created * 1000), 1000)
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def _logfmt_key(key: str) -> str:
    return _KEY_UNSAFE_RE.sub("_", key) or "_"


def _logfmt_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if _BARE_VALUE_RE.fullmatch(text) and text.isprintable():
        return text
    return _escape_line_breaks(json.dumps(text, ensure_ascii=False))
