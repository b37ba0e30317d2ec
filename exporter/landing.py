"""The landing page `/`: per target, its health and its latest failed jobs, every value escaped.

Threads: none of its own and no mutable state; it renders on the HTTP worker that serves `/`.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone

from exporter.snapshot import FailedJob, Snapshot, TargetSnapshot

RECENT_FAILURES_SHOWN = 50


def _iso(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat(timespec="seconds")


def _status(target: TargetSnapshot) -> str:
    if not target.polled:
        return "not polled yet"
    return "up" if target.up else "down"


def _cell(value: object) -> str:
    return f"<td>{html.escape(str(value))}</td>"


def _failure_rows(failures: tuple[FailedJob, ...], queue_names: dict[str, str]) -> str:
    latest = sorted(failures, key=lambda job: job.time, reverse=True)[:RECENT_FAILURES_SHOWN]
    if not latest:
        return "<p>No failed jobs seen since start.</p>"
    rows = "".join(
        "<tr>"
        + _cell(_iso(job.time))
        + _cell(_queue_label(job, queue_names))
        + _cell(job.tag)
        + _cell(job.job_id)
        + _cell(job.code)
        + _cell(job.message)
        + "</tr>\n"
        for job in latest
    )
    return (
        "<table><tr><th>Time (UTC)</th><th>Queue</th><th>Tag</th><th>JobId</th><th>Code</th>"
        f"<th>Message</th></tr>\n{rows}</table>"
    )


def _queue_label(job: FailedJob, queue_names: dict[str, str]) -> str:
    """The queue's name where it is known, so a runbook reader need not look the id up."""
    name = queue_names.get(job.queue_id)
    where = f"{job.service}/{job.queue_id}"
    return f"{name} ({where})" if name else where


def _dropped(target: TargetSnapshot) -> str:
    """Queues over max_queues_per_service, per service: a capped target says so."""
    over = [f"{service}: {n}" for service, n in sorted(target.queues_dropped.items()) if n]
    if not over:
        return "-"
    return f"{', '.join(over)} (over max_queues_per_service, {target.max_queues})"


def _target_section(target: TargetSnapshot) -> str:
    name = html.escape(f"{target.bucket} ({target.region})")
    summary = (
        "<table>"
        f"<tr><th>Bucket</th>{_cell(target.bucket)}</tr>"
        f"<tr><th>Region</th>{_cell(target.region)}</tr>"
        f"<tr><th>Status</th>{_cell(_status(target))}</tr>"
        f"<tr><th>Last poll (UTC)</th>{_cell(_iso(target.last_poll_time))}</tr>"
        f"<tr><th>Last success (UTC)</th>{_cell(_iso(target.last_success_time))}</tr>"
        f"<tr><th>Last error</th>{_cell(target.last_error or '-')}</tr>"
        f"<tr><th>Queues not polled</th>{_cell(_dropped(target))}</tr>"
        "</table>"
    )
    names = {q.queue.queue_id: q.queue.name for q in target.queues}
    failures = _failure_rows(target.recent_failures, names)
    return f"<h2>{name}</h2>\n{summary}\n<h3>Recent failed jobs</h3>\n{failures}\n"


def render_landing_page(snapshot: Snapshot, telemetry_path: str, version: str) -> str:
    """The / page: per target, its health and its latest failed jobs; every value escaped."""
    path = html.escape(telemetry_path)
    sections = "".join(_target_section(target) for target in snapshot.targets)
    if not sections:
        sections = "<p>No targets configured.</p>\n"
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        "<title>Tencent CI exporter</title>"
        "<style>table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
        "text-align:left}</style></head>\n<body>\n"
        f"<h1>Tencent CI exporter {html.escape(version)}</h1>\n"
        f'<p>Metrics: <a href="{path}">{path}</a></p>\n'
        f"{sections}</body></html>\n"
    )
