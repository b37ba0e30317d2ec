"""ISO 8601 times as the credentials file, the configuration and the metadata service give
them: parsed only when they name their zone, shown in UTC, and kept within year 9999.

No mutable state: constants and pure functions, callable from any thread.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

# The last second of year 9999: later expirations are shown and kept as this one.
MAX_EPOCH = 253402300799.0

_ISO_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))",
    re.ASCII,
)
ISO_HINT = "an ISO 8601 time with a zone, e.g. 2026-11-21T10:00:00Z"


def parse_iso_time(text: str) -> float | None:
    """Epoch seconds of an ISO 8601 time that names its zone; None when it is not one.

    Without a zone a time means different instants on different hosts, so it is refused."""
    match = _ISO_RE.fullmatch(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute = (int(match.group(i)) for i in range(1, 6))
    second = int(match.group(6) or 0)
    fraction = float(f"0.{match.group(7)}") if match.group(7) else 0.0
    offset = timedelta(0)
    if match.group(9):
        sign = 1 if match.group(9) == "+" else -1
        offset = sign * timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
        return min(moment.timestamp() + fraction, MAX_EPOCH)
    except (ValueError, OverflowError):  # month 13, an offset of 24h or more, year 0, ...
        return None


def format_iso_time(epoch: float) -> str:
    moment = datetime.fromtimestamp(int(min(max(epoch, 0), MAX_EPOCH)), tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
