"""What every simulated call shares: CI's error answer, a reply, and the checks of the query
parameters (integers in range, id lists, states, creation-time bounds).

Thread ownership: no mutable state.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from exporter.simulator import render

MAX_IDS = 10  # ids per describe call of /jobs (and queueIds of a queue listing)


class ApiError(Exception):
    """An answer with CI's error body."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/xml"
    headers: dict[str, str] = field(default_factory=dict)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "InvalidArgument", message)


def not_found(path: str) -> ApiError:
    return ApiError(404, "ResourceNotFound", f"no such resource {path}")


def error_reply(err: ApiError, request_id: str) -> Reply:
    return Reply(
        err.status, render.error_body(err.code, err.message, request_id), headers=err.headers
    )


def id_list(text: str, what: str, limit: int = MAX_IDS) -> list[str] | None:
    """Comma-separated ids, at most `limit`; None when there are none."""
    if not text:
        return None
    ids = [i for i in text.split(",") if i]
    if len(ids) > limit:
        raise bad_request(f"{what}: at most {limit} ids, got {len(ids)}")
    return ids


def int_param(
    params: Mapping[str, str], name: str, default: int, low: int, high: int | None
) -> int:
    text = params.get(name, "")
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise bad_request(f"{name} {text!r} is not an integer") from None
    if value < low or (high is not None and value > high):
        raise bad_request(f"{name} {value} is out of range")
    return value


def states_param(text: str, known: Collection[str]) -> frozenset[str]:
    """The states asked for (`All`, or none, is every one of `known`)."""
    wanted = {s.strip() for s in text.split(",") if s.strip()} or {"All"}
    unknown = wanted - set(known) - {"All"}
    if unknown:
        raise bad_request(f"states: unknown {', '.join(sorted(unknown))}")
    return frozenset(known) if "All" in wanted else frozenset(wanted)


def time_param(params: Mapping[str, str], name: str) -> int | None:
    text = params.get(name, "")
    if not text:
        return None
    try:
        return int(datetime.strptime(text, render.TIME_FORMAT).timestamp())
    except ValueError:
        raise bad_request(f"{name} {text!r} is not like 2001-01-01T00:00:00+0800") from None


def order_param(params: Mapping[str, str]) -> bool:
    """Whether the listing is newest first (orderByTime Desc, the default)."""
    order = params.get("orderByTime", "") or "Desc"
    if order not in ("Desc", "Asc"):
        raise bad_request(f"orderByTime {order!r} is not Desc or Asc")
    return order == "Desc"
