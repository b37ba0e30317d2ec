"""The state file read with suspicion, one value at a time: strict types and sizes for what a
state holds, and the errors that refuse the file (`StateError`) or skip one record (`_BadId`).
No error quotes the file's text: it may not be this exporter's.

No mutable state: constants and pure functions, called by the thread that loads the file.
"""

from __future__ import annotations

import math

from exporter.ci.parse import is_job_id

MAX_NAME_CHARS = 1024  # a target, service, queue id, tag or JobId
MAX_TIME = 1e11  # epoch seconds (year 5138): anything beyond is garbage, not a time
MAX_INT_DIGITS = 20


class StateError(ValueError):
    """The state file's content is not a state this exporter can take up."""


class _BadId(StateError):
    """A service, queue id, tag or JobId that is not one: its record is skipped, not the file."""


# -- strict types ----------------------------------------------------------------------------


def _object(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise StateError(f"{where}: expected an object, found {_kind(value)}")
    return value


def _list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise StateError(f"{where}: expected a list, found {_kind(value)}")
    return value


def _name(value: object, where: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_CHARS:
        raise StateError(f"{where}: expected a name of 1 to {MAX_NAME_CHARS} characters")
    if not value.isprintable():
        raise StateError(f"{where}: a name with unprintable characters")
    return value


def _id(value: object, where: str) -> str:
    """A stream's service, queue id or tag: a bad one skips its record (_BadId)."""
    try:
        return _name(value, where)
    except StateError as error:
        raise _BadId(str(error)) from None


def _job_id(value: object, where: str) -> str:
    # The id may be described by id again: it goes into a URL path.
    if not (isinstance(value, str) and 0 < len(value) <= MAX_NAME_CHARS and is_job_id(value)):
        raise _BadId(
            f"{where}: not a job id (1 to {MAX_NAME_CHARS} printable characters, no space,"
            " comma or slash)"
        )
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise StateError(f"{where}: expected true or false, found {_kind(value)}")
    return value


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > MAX_TIME:
        raise StateError(f"{where}: expected a whole number of seconds, found {_shown(value)}")
    return value


def _time(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StateError(f"{where}: expected a time, found {_kind(value)}")
    number = float(value)
    if not math.isfinite(number) or abs(number) > MAX_TIME:
        raise StateError(f"{where}: not a plausible time: {_shown(value)}")
    return number


def _optional_int(value: object, where: str) -> int | None:
    return None if value is None else _int(value, where)


def _optional_time(value: object, where: str) -> float | None:
    return None if value is None else _time(value, where)


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "text", bool: "true or false"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _shown(value: object) -> str:
    """A value of the file as a warning shows it: a short number as it is, anything else by
    its kind alone. The file's text is never quoted: it may not be this exporter's."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and len(repr(value)) <= 15:
        return repr(value)
    return _kind(value)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]
