"""The landing page `/`: an operator's console, rendered on the server and readable without
JavaScript. At the top the links to the other pages, the shard and the configuration's status;
then every target's state (coloured) and how long ago it was polled; then per target its queues
(state, running against MaxConcurrent, backlog and its oldest job's wait), its failures grouped
by code and its recent failed jobs, a bounded share per queue.

Every value is escaped (exporter.landing_html): queue names, codes and messages come from CI.
Threads: none of its own and no mutable state; it renders on the HTTP worker that serves `/`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from exporter.api_stats import ApiStats
from exporter.collector import SnapshotSource
from exporter.config import Config
from exporter.landing_html import (
    cell,
    clip,
    codes_table,
    facts_table,
    iso,
    polled_ago,
    queues_table,
    recent_table,
    state_class,
    table,
    text,
    throttling_text,
)
from exporter.landing_model import State, Throttling, target_state, throttling_of
from exporter.sharding import Shard
from exporter.snapshot import ApiSnapshot, ReloadStatus, Snapshot, TargetSnapshot

__all__ = ["landing_page_of", "render_landing_page"]

OVERVIEW_ERROR_CHARS = 160  # a poll error in the targets table; the target's section has more

TARGET_COLUMNS = (
    ("State", 8), ("Bucket", 15), ("Region", 9), ("Polled", 8), ("Queues", 6), ("Running", 6),
    ("Submitted", 7), ("Failed since start", 7), ("Throttling", 13), ("Last error", 21),
)  # fmt: skip

STYLE = """
body{font-family:system-ui,sans-serif;margin:1em 2em;color:#212529;background:#fff}
h1{font-size:1.5em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #dee2e6}
nav a{margin-right:1em;font-weight:bold}
table{border-collapse:collapse;margin:.4em 0}
td,th{border:1px solid #ced4da;padding:3px 8px;text-align:left;vertical-align:top}
table.targets,table.queues,table.codes,table.recent{width:100%;table-layout:fixed}
table.targets td,table.queues td,table.codes td,table.recent td{overflow-wrap:anywhere}
thead th,table.facts th{background:#f1f3f5}
tr.st-up>td:first-of-type{background:#d1e7dd;color:#0f5132;font-weight:bold}
tr.st-throttled>td:first-of-type{background:#fff3cd;color:#664d03;font-weight:bold}
tr.st-down>td:first-of-type{background:#f8d7da;color:#842029;font-weight:bold}
tr.st-not-polled-yet>td:first-of-type{background:#e2e3e5;color:#41464b;font-weight:bold}
td.ok{background:#d1e7dd;color:#0f5132}td.bad{background:#f8d7da;color:#842029;font-weight:bold}
td.warn{background:#fff3cd;color:#664d03;font-weight:bold}
.note{color:#6c757d;font-size:.9em;margin:.2em 0}
"""


def render_landing_page(
    snapshot: Snapshot,
    telemetry_path: str,
    version: str,
    *,
    api: ApiSnapshot | None = None,
    shard: Shard | None = None,
    configured_targets: int | None = None,
    now: float | None = None,
) -> str:
    """The / page. `api` (ApiStats.snapshot()) tells which targets CI throttles; `shard` and
    `configured_targets` which share of the configuration this process polls; `now` is the
    time "polled N s ago" counts from (the wall clock by default)."""
    at = time.time() if now is None else now
    throttling = [throttling_of(target, api) for target in snapshot.targets]
    sections = "".join(
        _target_section(i, target, t, at)
        for i, (target, t) in enumerate(zip(snapshot.targets, throttling, strict=True))
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Tencent CI exporter</title><style>{STYLE}</style></head>\n<body>\n"
        f"<h1>Tencent CI exporter {text(version)}</h1>\n"
        f"{_nav(telemetry_path)}\n"
        f"{_status(snapshot, shard, configured_targets, at)}\n"
        f"<h2>Targets</h2>\n{_overview(snapshot.targets, throttling, at)}\n"
        f"{sections}</body></html>\n"
    )


def landing_page_of(source: SnapshotSource, telemetry_path: str, version: str) -> str:
    """The / page of a running exporter: with a Poller (exporter.poller) as `source`, its API
    stats, shard, configuration and clock fill in throttling, the shard and "N s ago"; any
    other source gets the page of its snapshot alone."""
    stats = getattr(source, "stats", None)
    shard = getattr(source, "shard", None)
    config = getattr(source, "config", None)
    clock: Callable[[], float] | None = getattr(source, "clock", None)
    return render_landing_page(
        source.snapshot(),
        telemetry_path,
        version,
        api=stats.snapshot() if isinstance(stats, ApiStats) else None,
        shard=shard if isinstance(shard, Shard) else None,
        configured_targets=len(config.targets) if isinstance(config, Config) else None,
        now=float(clock()) if callable(clock) else None,
    )


def _nav(telemetry_path: str) -> str:
    links = (telemetry_path, "/healthz", "/readyz")
    return "<nav>" + " ".join(f'<a href="{text(p)}">{text(p)}</a>' for p in links) + "</nav>"


def _shard_text(shard: Shard, polled: int, configured: int | None) -> str:
    of = f" of {configured} configured" if configured is not None else ""
    if shard.count == 1:
        return f"one shard: this process polls every target ({polled}{of})"
    where = f"shard {shard.index} (of {shard.count}, numbered from 0)"
    return f"{where}: this process polls {polled}{of} targets"


def _config_cell(reload: ReloadStatus) -> str:
    loaded = iso(reload.last_success_time)
    if reload.successful:
        return cell(f"loaded; last successful load {loaded} UTC", "ok")
    return cell(
        f"the last reload FAILED: still running the configuration loaded {loaded} UTC", "bad"
    )


def _status(snapshot: Snapshot, shard: Shard | None, configured: int | None, now: float) -> str:
    polled = len(snapshot.targets)
    rows = []
    if shard is not None:
        rows.append(f"<tr><th>Shard</th>{cell(_shard_text(shard, polled, configured))}</tr>")
    else:
        rows.append(f"<tr><th>Targets</th>{cell(polled)}</tr>")
    rows.append(f"<tr><th>Configuration</th>{_config_cell(snapshot.reload)}</tr>")
    rows.append(f"<tr><th>Page rendered (UTC)</th>{cell(iso(now))}</tr>")
    return '<table class="facts">\n' + "\n".join(rows) + "\n</table>"


def _overview_row(index: int, target: TargetSnapshot, throttling: Throttling, now: float) -> str:
    state = target_state(target, throttling)
    active = [s.active for s in target.streams]
    failed = sum(s.finished.get("Failed", 0) for s in target.streams)
    link = f'<td><a href="#target-{index}">{text(target.bucket)}</a></td>'
    return (
        f'<tr class="{state_class(state)}">'
        + cell(state)
        + link
        + cell(target.region)
        + cell(polled_ago(target, now))
        + cell(len(target.queues))
        + cell(sum(a.get("Running", 0) for a in active))
        + cell(sum(a.get("Submitted", 0) for a in active))
        + cell(failed)
        + cell(throttling_text(throttling))
        + cell(clip(target.last_error, OVERVIEW_ERROR_CHARS) or "-")
        + "</tr>"
    )


def _overview(targets: tuple[TargetSnapshot, ...], throttling: list[Throttling], now: float) -> str:
    if not targets:
        return "<p>No targets configured.</p>"
    rows = (
        _overview_row(i, target, t, now)
        for i, (target, t) in enumerate(zip(targets, throttling, strict=True))
    )
    return table("targets", TARGET_COLUMNS, rows)


def _target_section(index: int, target: TargetSnapshot, throttling: Throttling, now: float) -> str:
    state = target_state(target, throttling)
    name = text(f"{target.bucket} ({target.region})")
    mark = "" if state == State.UP else f" <small>{text(state)}</small>"
    return (
        f'<section id="target-{index}">\n<h2>{name}{mark}</h2>\n'
        f"{facts_table(target, state, throttling, now)}\n"
        f"<h3>Queues</h3>\n{queues_table(target, now)}\n"
        f"<h3>Failures by code</h3>\n{codes_table(target)}\n"
        f"<h3>Recent failed jobs</h3>\n{recent_table(target)}\n</section>\n"
    )
