"""Field values from CI's answers, checked or cleaned where they enter: times, counts, ids and
free text.

Thread ownership: no mutable state but the cache of converted times (functools, thread-safe).

Ids (JobId, QueueId) are kept in the state file, shown as labels and sent back in URL paths:
control and separator characters (U+0085 and U+2028 among them: not printable), whitespace,
commas, slashes and more than MAX_ID characters are refused. Free text goes through the
caller's redactor before it is cut to length (exporter.ci.redact), so a long echo cannot leave
the tail of a secret behind.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone

from exporter.ci.models import CIInvalidResponse

Redact = Callable[[str], str]

MAX_TEXT = 256  # Code and Message are free text of any length; keep what a human reads.
MAX_ID = 128  # JobIds and QueueIds are 33 characters; Tags are short words
_PRE_CUT = 8192  # free text is redacted (a Python pass over it) only this far, then cut

_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?"
    r"(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)\Z",
    re.ASCII,  # \d would otherwise take any script's digits
)
_SPACE_RE = re.compile(r"\s+")


def one_line(text: str, limit: int = MAX_TEXT) -> str:
    """Collapse whitespace and control characters so a message stays a single line."""
    if len(text) <= limit and text.isprintable() and "  " not in text:
        return text.strip()  # the common case (`Success`, ``), without a regex pass
    text = _SPACE_RE.sub(" ", text).strip()
    if not text.isprintable():
        text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def free_text(text: str, redact: Redact | None, limit: int = MAX_TEXT) -> str:
    """Free text from CI, redacted before it is cut to `limit` (see the module)."""
    if redact is not None and text:
        text = redact(text[:_PRE_CUT])
    return one_line(text, limit)


@functools.lru_cache(maxsize=8192)
def _time_value(text: str) -> float | None:
    # Cached: the same creation/start times come back on every poll of the active jobs.
    if text in ("", "-"):
        return None
    match = _TIME_RE.match(text)
    if match is None:
        raise CIInvalidResponse(f"not a time: {one_line(repr(text), 60)}")
    year, month, day, hour, minute, second, frac, zulu, sign, off_h, off_m = match.groups()
    offset = 0
    if not zulu:
        off_hours, off_minutes = int(off_h), int(off_m or 0)
        if off_hours > 23 or off_minutes > 59:
            raise CIInvalidResponse(f"not a time: {one_line(repr(text), 60)}")
        offset = (off_hours * 3600 + off_minutes * 60) * (-1 if sign == "-" else 1)
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=timezone.utc,
        )
    except ValueError:
        raise CIInvalidResponse(f"not a time: {one_line(repr(text), 60)}") from None
    return moment.timestamp() - offset + (float(frac) if frac else 0.0)


def parse_time(text: str | None) -> float | None:
    """`2022-07-07T12:12:12+0800` (or `Z`, `+08:00`) -> epoch seconds; `-`, empty, None -> None.

    A time without a zone is refused rather than guessed.
    """
    if text is None:
        return None
    return _time_value(text.strip())


def field_time(fields: Mapping[str, str], name: str, where: str) -> float | None:
    try:
        return parse_time(fields.get(name))
    except CIInvalidResponse as exc:
        raise CIInvalidResponse(f"{where}: {name}: {exc}") from None


def job_time(fields: Mapping[str, str], name: str, where: str) -> float | None:
    # child_texts has stripped the text already; the cached conversion is all that is left.
    try:
        return _time_value(fields.get(name, ""))
    except CIInvalidResponse as exc:
        raise CIInvalidResponse(f"{where}: {name}: {exc}") from None


def count(text: str | None, where: str) -> int:
    """A non-negative integer; missing or empty is 0."""
    text = (text or "").strip()
    if not text:
        return 0
    # Eighteen digits hold any count CI can have, and keep int() far from its size limit.
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise CIInvalidResponse(f"{where}: not a non-negative integer: {one_line(repr(text), 60)}")
    return int(text)


def is_job_id(text: str) -> bool:
    """Whether `text` can be a job (or queue) id.

    Describe puts ids in the URL path, comma-separated: a comma, a slash, a dot-only segment or
    whitespace would ask for other jobs or another path, so such an id is refused wherever it
    comes from rather than sent. Ids are kept in the state file and shown as labels: control
    and separator characters (U+0085, U+2028: not printable) and more than MAX_ID characters
    are refused too.
    """
    return (
        len(text) <= MAX_ID
        and bool(text.strip("."))
        and text.isprintable()
        and " " not in text
        and "," not in text
        and "/" not in text
    )


def id_field(fields: Mapping[str, str], name: str, where: str, what: str) -> str:
    """An id field that must be present and pass is_job_id."""
    value = fields.get(name)
    if not value:
        raise CIInvalidResponse(f"{where}: missing {name}")
    if not is_job_id(value):
        raise CIInvalidResponse(
            f"{where}: {name}: not a {what}: {one_line(repr(value), 80)}", retryable=False
        )
    return value


def label_text(fields: Mapping[str, str], name: str, where: str) -> str:
    """An optional short field kept as a label or in the state file (QueueId, Tag of a job)."""
    value = fields.get(name, "")
    if value and (len(value) > MAX_ID or not value.isprintable()):
        raise CIInvalidResponse(
            f"{where}: {name}: not a valid value: {one_line(repr(value), 80)}", retryable=False
        )
    return value
