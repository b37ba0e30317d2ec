"""The landing page's tables, as HTML: one target's facts, its queues, its failures by code and
its recent failed jobs. Every value goes through `cell`/`text` (html.escape): queue names, codes
and messages come from CI and may hold anything.

No state, no threads; exporter.landing puts the page together.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

from exporter.landing_model import (
    CODES_SHOWN_PER_QUEUE,
    RECENT_FAILURES_SHOWN,
    CodeRow,
    Hidden,
    QueueKey,
    QueueRow,
    Throttling,
    code_rows,
    fair_share,
    queue_names,
    queue_rows,
)
from exporter.snapshot import FailedJob, TargetSnapshot, cap_label

MESSAGE_CHARS = 300  # a failed job's message or a poll error, cut to this on the page

QUEUE_COLUMNS = (
    ("Service", 7), ("Queue", 17), ("Queue ID", 21), ("State", 7),
    ("Running / MaxConcurrent", 11), ("Submitted", 11), ("Oldest waiting", 16),
    ("Failed since start", 10),
)  # fmt: skip
CODE_COLUMNS = (
    ("Queue", 21), ("Code", 13), ("Failures since start", 9), ("Latest JobId", 21),
    ("Latest (UTC)", 13), ("Latest message", 23),
)  # fmt: skip
RECENT_COLUMNS = (
    ("Time (UTC)", 13), ("Queue", 21), ("Tag", 9), ("JobId", 21), ("Code", 13), ("Message", 23),
)  # fmt: skip


def text(value: object) -> str:
    return html.escape(str(value), quote=True)


def cell(value: object, css: str = "") -> str:
    attribute = f' class="{css}"' if css else ""
    return f"<td{attribute}>{text(value)}</td>"


Columns = Sequence[tuple[str, int]]  # (heading, percent of the table's width)


def table(css: str, columns: Columns, rows: Iterable[str]) -> str:
    """A table of fixed layout: long ids and hostile messages wrap inside their column."""
    head = "".join(f'<th style="width:{width}%">{text(name)}</th>' for name, width in columns)
    body = "\n".join(rows)
    return (
        f'<table class="{css}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>'
    )


def clip(message: str, limit: int = MESSAGE_CHARS) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def iso(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat(timespec="seconds")


def time_cell(timestamp: float) -> str:
    """A time in a table column: ISO 8601, free to wrap after the date (<wbr>)."""
    date, _, clock = iso(timestamp).partition("T")
    return f"<td>{date}T<wbr>{clock}</td>"


def age(seconds: float) -> str:
    """A duration as an operator reads it: "42 s", "7 min", "3 h", "12 d"."""
    whole = max(0, int(seconds))
    if whole < 120:
        return f"{whole} s"
    if whole < 2 * 3600:
        return f"{whole // 60} min"
    if whole < 2 * 86400:
        return f"{whole // 3600} h"
    return f"{whole // 86400} d"


def polled_ago(target: TargetSnapshot, now: float) -> str:
    if target.last_poll_time is None:
        return "not polled yet"
    return f"polled {age(now - target.last_poll_time)} ago"


def throttling_text(throttling: Throttling) -> str:
    parts = []
    if throttling.refused:
        parts.append("the last poll failed: CI said slow down")
    if throttling.now:
        parts.append(f"requests spaced {throttling.spacing:.2f} s apart")
    if throttling.answers:
        parts.append(f"{throttling.answers} slow-down answers since start")
    return "; ".join(parts) or "-"


def queue_label(service: str, queue_id: str, names: dict[QueueKey, str]) -> str:
    """The queue's name where it is known, so a runbook reader need not look the id up."""
    name = names.get((service, queue_id))
    where = f"{service}/{queue_id}"
    return f"{cap_label(name)} ({where})" if name else where


# -- one target's facts -------------------------------------------------------------------------


def _dropped(target: TargetSnapshot) -> str:
    """Queues over max_queues_per_service, per service: a capped target says so."""
    over = [f"{service}: {n}" for service, n in sorted(target.queues_dropped.items()) if n]
    if not over:
        return "-"
    return f"{', '.join(over)} (over max_queues_per_service, {target.max_queues})"


def _anomalies(target: TargetSnapshot) -> str:
    found = [f"{kind}: {n}" for kind, n in sorted(target.anomalies.items()) if n]
    return ", ".join(found) or "-"


def _took(target: TargetSnapshot) -> str:
    duration = target.last_poll_duration
    return "-" if duration is None else f"{duration:.2f} s"


def facts_table(target: TargetSnapshot, state: str, throttling: Throttling, now: float) -> str:
    rows = (
        f"<tr><th>Bucket</th>{cell(target.bucket)}</tr>",
        f"<tr><th>Region</th>{cell(target.region)}</tr>",
        f'<tr class="{state_class(state)}"><th>Status</th>{cell(state)}</tr>',
        f"<tr><th>Polled</th>{cell(polled_ago(target, now))}</tr>",
        f"<tr><th>Last poll (UTC)</th>{cell(iso(target.last_poll_time))}</tr>",
        f"<tr><th>Last success (UTC)</th>{cell(iso(target.last_success_time))}</tr>",
        f"<tr><th>Last poll took</th>{cell(_took(target))}</tr>",
        f"<tr><th>Last error</th>{cell(clip(target.last_error) or '-')}</tr>",
        f"<tr><th>Throttling</th>{cell(throttling_text(throttling))}</tr>",
        f"<tr><th>Jobs tracked</th>{cell(target.tracked_jobs)}</tr>",
        f"<tr><th>Streams idle (back-off)</th>{cell(target.idle_streams)}</tr>",
        f"<tr><th>Queues not polled</th>{cell(_dropped(target))}</tr>",
        f"<tr><th>Jobs listed oddly by CI</th>{cell(_anomalies(target))}</tr>",
    )
    return '<table class="facts">\n' + "\n".join(rows) + "\n</table>"


def state_class(state: str) -> str:
    return "st-" + state.replace(" ", "-")


# -- queues ---------------------------------------------------------------------------------------


def _submitted(row: QueueRow) -> str:
    held = f" (+{row.paused_jobs} held by pause)" if row.paused_jobs else ""
    return f"{row.submitted}{held}"


def _waiting(row: QueueRow, now: float) -> str:
    if row.oldest_submitted is None:
        return "-"
    return f"{age(now - row.oldest_submitted)} (since {iso(row.oldest_submitted)})"


def _queue_row(row: QueueRow, now: float) -> str:
    state_css = "warn" if row.paused else ""
    load_css = "warn" if row.saturated else ""
    return (
        "<tr>"
        + cell(row.service)
        + cell(cap_label(row.name))
        + cell(row.queue_id)
        + cell(row.state, state_css)
        + cell(f"{row.running} / {row.max_concurrent}", load_css)
        + cell(_submitted(row))
        + cell(_waiting(row, now))
        + cell(row.failed)
        + "</tr>"
    )


def queues_table(target: TargetSnapshot, now: float) -> str:
    rows = queue_rows(target)
    if not rows:
        return "<p>No queues listed yet.</p>"
    return table("queues", QUEUE_COLUMNS, (_queue_row(row, now) for row in rows))


# -- failures -------------------------------------------------------------------------------------


def _code_row(row: CodeRow, names: dict[QueueKey, str]) -> str:
    latest = row.latest
    return (
        "<tr>"
        + cell(queue_label(row.service, row.queue_id, names))
        + cell(row.code)
        + cell(row.count)
        + cell(row.latest_job_id or "-")
        + (time_cell(latest.time) if latest is not None else cell("-"))
        + cell(clip(latest.message) if latest is not None else "-")
        + "</tr>"
    )


def _hidden_notes(hidden: Sequence[Hidden], names: dict[QueueKey, str], what: str) -> str:
    notes = (
        f"<li>{text(queue_label(h.service, h.queue_id, names))}: {text(what.format(h=h))}</li>"
        for h in hidden
    )
    return f'<ul class="note">{"".join(notes)}</ul>' if hidden else ""


def codes_table(target: TargetSnapshot) -> str:
    rows, hidden = code_rows(target)
    if not rows:
        return "<p>No failed jobs counted since start.</p>"
    names = queue_names(target)
    notes = _hidden_notes(hidden, names, "{h.rows} more codes ({h.jobs} failures) not shown")
    limit = f'<p class="note">At most {CODES_SHOWN_PER_QUEUE} codes per queue.</p>'
    return table("codes", CODE_COLUMNS, (_code_row(row, names) for row in rows)) + notes + limit


def _failure_row(job: FailedJob, names: dict[QueueKey, str]) -> str:
    return (
        "<tr>"
        + time_cell(job.time)
        + cell(queue_label(job.service, job.queue_id, names))
        + cell(job.tag)
        + cell(job.job_id)
        + cell(cap_label(job.code))
        + cell(clip(job.message))
        + "</tr>"
    )


def recent_table(target: TargetSnapshot) -> str:
    shown, hidden = fair_share(target.recent_failures)
    if not shown:
        return "<p>No failed jobs seen since start.</p>"
    names = queue_names(target)
    notes = _hidden_notes(hidden, names, "{h.jobs} older failed jobs not shown")
    limit = (
        f'<p class="note">Newest first; at most {RECENT_FAILURES_SHOWN} per target, shared'
        " between its queues.</p>"
    )
    return (
        table("recent", RECENT_COLUMNS, (_failure_row(job, names) for job in shown)) + notes + limit
    )
