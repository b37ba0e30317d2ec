"""The landing page rendered from hand-made snapshots: target states, throttling, the shard and
configuration status, queue load, failures by code and the fair share of recent failed jobs,
each bounded, and every value from CI escaped. (tests/test_landing_browser.py reads the page of
a live exporter in a real browser.)"""

from __future__ import annotations

from dataclasses import replace

import lxml.html
import pytest
from lxml.html import HtmlElement

from exporter.api_stats import ApiStats
from exporter.ci.models import Queue
from exporter.config import Config, ServiceConfig, TargetConfig
from exporter.credentials import Credentials
from exporter.landing import landing_page_of, render_landing_page
from exporter.landing_model import CODES_SHOWN_PER_QUEUE, RECENT_FAILURES_SHOWN
from exporter.poller import Poller
from exporter.sharding import Shard, shard_of
from exporter.snapshot import (
    MAX_LABEL_CHARS,
    ApiSnapshot,
    FailedJob,
    QueueSnapshot,
    ReloadStatus,
    Snapshot,
    StreamSnapshot,
    TargetSnapshot,
)

NOW = 1_800_000_000.0
BUCKET = "alpha-1250000000"
REGION = "ap-guangzhou"
HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>&amp;"


def queue(queue_id: str, name: str = "", state: str = "Active", max_concurrent: int = 5) -> Queue:
    return Queue(queue_id, name or queue_id, state, 1000, max_concurrent, "CateAll", False)


def stream(
    queue_id: str,
    tag: str = "Transcode",
    *,
    active: dict[str, int] | None = None,
    failures: dict[str, int] | None = None,
    oldest: dict[str, float] | None = None,
    last_failed: tuple[str, str] = ("", ""),
) -> StreamSnapshot:
    counts = failures or {}
    return StreamSnapshot(
        service="media",
        queue_id=queue_id,
        tag=tag,
        active=active or {},
        finished={"Failed": sum(counts.values())} if counts else {},
        failures=counts,
        run_duration={},
        queue_wait=None,
        oldest=oldest or {},
        last_failed_job=last_failed[0],
        last_failed_code=last_failed[1],
    )


def failed(queue_id: str, index: int, code: str = "InternalError", message: str = "m") -> FailedJob:
    return FailedJob(NOW - 1000 + index, "media", queue_id, "Transcode", f"{queue_id}-{index:03d}",
                     code, message)  # fmt: skip


def target(**changes: object) -> TargetSnapshot:
    base = TargetSnapshot(
        bucket=BUCKET,
        region=REGION,
        up=True,
        polled=True,
        last_poll_time=NOW - 12,
        last_success_time=NOW - 12,
        last_poll_duration=0.4,
        last_error="",
        queues=(),
        streams=(),
        tracked_jobs=0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def render(*targets: TargetSnapshot, **options: object) -> HtmlElement:
    snapshot = options.pop("snapshot", None) or Snapshot(targets)
    page = render_landing_page(snapshot, "/metrics", "1.2.3", now=NOW, **options)  # type: ignore[arg-type]
    return lxml.html.fromstring(page)


def table(page: HtmlElement, css: str, index: int = 0) -> list[list[str]]:
    """The body rows of the index-th table of that class, as cell text."""
    found = page.find_class(css)[index]
    return [[td.text_content() for td in tr.findall("td")] for tr in found.iter("tr")][1:]


def facts(page: HtmlElement, index: int) -> dict[str, str]:
    rows = page.find_class("facts")[index].iter("tr")
    return {tr.find("th").text_content(): tr.find("td").text_content() for tr in rows}


def test_a_target_polled_12_s_ago_says_so() -> None:
    page = render(target())
    (row,) = table(page, "targets")
    assert row[:4] == ["up", BUCKET, REGION, "polled 12 s ago"]
    assert facts(page, 1)["Polled"] == "polled 12 s ago"
    assert facts(page, 1)["Last poll took"] == "0.40 s"


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0 s"), (119, "119 s"), (600, "10 min"), (7300, "2 h"),
                           (3 * 86400, "3 d")]
)  # fmt: skip
def test_poll_ages_read_in_the_largest_sensible_unit(seconds: float, shown: str) -> None:
    page = render(target(last_poll_time=NOW - seconds))
    assert table(page, "targets")[0][3] == f"polled {shown} ago"


def test_states_and_their_colour_classes() -> None:
    waiting = target(bucket="w", polled=False, up=False, last_poll_time=None)
    down = target(bucket="d", up=False, last_error="jobs listing: HTTP 503 SlowDown: slow down")
    paced = target(bucket="p")
    api = ApiSnapshot(
        {}, {}, {}, throttled={("p", REGION, "/jobs"): 3, ("d", REGION, "/jobs"): 2},
        spacing={("p", REGION): 0.4},
    )  # fmt: skip
    page = render(waiting, down, paced, target(bucket="u"), api=api)
    rows = page.find_class("targets")[0].findall("tbody/tr")
    states = [(tr.get("class"), tr.findall("td")[0].text_content()) for tr in rows]
    assert states == [
        ("st-not-polled-yet", "not polled yet"),
        ("st-down", "down"),
        ("st-throttled", "throttled"),
        ("st-up", "up"),
    ]
    throttling = [row[8] for row in table(page, "targets")]
    assert throttling == [
        "-",
        "the last poll failed: CI said slow down; 2 slow-down answers since start",
        "requests spaced 0.40 s apart; 3 slow-down answers since start",
        "-",
    ]
    assert [h.text_content() for h in page.iter("h2")][1:] == [
        f"w ({REGION}) not polled yet", f"d ({REGION}) down", f"p ({REGION}) throttled",
        f"u ({REGION})",
    ]  # fmt: skip


def test_links_shard_and_a_failed_reload() -> None:
    reload = ReloadStatus(successful=False, last_success_time=NOW - 3600)
    snapshot = Snapshot((target(), target(bucket="b")), reload=reload)
    page = render(snapshot=snapshot, shard=Shard(2, 3), configured_targets=7)
    assert [(a.get("href"), a.text) for a in page.find(".//nav").iter("a")] == [
        ("/metrics", "/metrics"), ("/healthz", "/healthz"), ("/readyz", "/readyz"),
    ]  # fmt: skip
    status = facts(page, 0)
    assert (
        status["Shard"]
        == "shard 2 (of 3, numbered from 0): this process polls 2 of 7 configured targets"
    )
    assert status["Configuration"] == (
        "the last reload FAILED: still running the configuration loaded"
        " 2027-01-15T07:00:00+00:00 UTC"
    )
    cell = page.find_class("facts")[0].findall("tr")[1].find("td")
    assert cell.get("class") == "bad"


def test_no_targets() -> None:
    page = render()
    assert "No targets configured." in page.text_content()
    assert facts(page, 0)["Targets"] == "0"


def test_queues_show_load_backlog_and_waiting() -> None:
    queues = (
        QueueSnapshot("media", queue("q1", "main", max_concurrent=2)),
        QueueSnapshot("media", queue("q2", "held", state="Paused")),
    )
    streams = (
        stream("q1", "Transcode", active={"Running": 1, "Submitted": 4},
               oldest={"Submitted": NOW - 900}),
        stream("q1", "Snapshot", active={"Running": 1, "Submitted": 1},
               oldest={"Submitted": NOW - 60}),
        stream("q2", active={"Pause": 7}, failures={"E": 2}),
    )  # fmt: skip
    page = render(target(queues=queues, streams=streams))
    assert table(page, "queues") == [
        ["media", "held", "q2", "Paused", "0 / 5", "0 (+7 held by pause)", "-", "2"],
        ["media", "main", "q1", "Active", "2 / 2", "5",
         "15 min (since 2027-01-15T07:45:00+00:00)", "0"],
    ]  # fmt: skip
    held, main = page.find_class("queues")[0].findall("tbody/tr")
    assert held.findall("td")[3].get("class") == "warn"  # paused
    assert main.findall("td")[4].get("class") == "warn"  # at MaxConcurrent
    assert table(page, "targets")[0][4:8] == ["2", "2", "5", "2"]


def test_failures_by_code_most_first_with_the_latest_job_and_message() -> None:
    streams = (
        stream("q1", "Transcode", failures={"A": 3, "B": 1}, last_failed=("q1-x", "A")),
        stream("q1", "Snapshot", failures={"A": 2}),
        stream("q2", failures={"C": 9}, last_failed=("q2-only", "C")),
    )
    recent = (failed("q1", 5, "A", "newest A"), failed("q1", 4, "B", "b"), failed("q1", 3, "A"))
    page = render(target(streams=streams, recent_failures=recent))
    rows = table(page, "codes")
    assert [row[:4] for row in rows] == [
        ["media/q2", "C", "9", "q2-only"],  # none among the recent: the exemplar, no message
        ["media/q1", "A", "5", "q1-005"],
        ["media/q1", "B", "1", "q1-004"],
    ]
    assert rows[0][4:] == ["-", "-"]
    assert rows[1][5] == "newest A"
    assert rows[1][4] == "2027-01-15T07:43:25+00:00"


def test_failures_by_code_are_bounded_per_queue() -> None:
    many = {f"E{n:02d}": 100 - n for n in range(CODES_SHOWN_PER_QUEUE + 5)}
    streams = (stream("noisy", failures=many), stream("quiet", failures={"Q": 1}))
    page = render(target(streams=streams))
    rows = table(page, "codes")
    shown = sorted(many)[:CODES_SHOWN_PER_QUEUE]
    assert [row[1] for row in rows if row[0] == "media/noisy"] == shown
    assert ["media/quiet", "Q", "1"] in [row[:3] for row in rows]
    hidden = sum(n for code, n in many.items() if code not in shown)
    notes = [li.text_content() for li in page.find_class("note")[0].iter("li")]
    assert notes == [f"media/noisy: 5 more codes ({hidden} failures) not shown"]


def test_codes_over_the_limit_and_long_codes_find_their_latest_job() -> None:
    long = "C" * 200
    capped = long[: MAX_LABEL_CHARS - 3] + "..."
    streams = (stream("q1", failures={"other": 2, capped: 1}),)
    recent = (failed("q1", 2, "Unheard", "over the limit"), failed("q1", 1, long, "long"))
    rows = table(render(target(streams=streams, recent_failures=recent)), "codes")
    assert [(row[1], row[3], row[5]) for row in rows] == [
        ("other", "q1-002", "over the limit"),
        (capped, "q1-001", "long"),
    ]


def test_recent_failed_jobs_are_shared_fairly_between_queues() -> None:
    noisy = tuple(failed("noisy", 100 + i) for i in range(100))  # the newest
    quiet = tuple(failed("quiet", i) for i in range(3))
    middle = tuple(failed("middle", 50 + i) for i in range(30))
    recent = tuple(sorted(noisy + quiet + middle, key=lambda job: -job.time))
    page = render(target(recent_failures=recent))
    rows = table(page, "recent")
    assert len(rows) == RECENT_FAILURES_SHOWN
    by_queue = {
        name: [row[3] for row in rows if row[1] == f"media/{name}"]
        for name in ("noisy", "quiet", "middle")
    }
    assert by_queue["quiet"] == [job.job_id for job in reversed(quiet)]  # all of them
    assert len(by_queue["middle"]) == len(by_queue["noisy"]) - 1 == 23
    assert by_queue["noisy"] == [job.job_id for job in reversed(noisy)][:24]  # its newest
    times = [row[0] for row in rows]
    assert times == sorted(times, reverse=True)
    notes = [li.text_content() for li in page.find_class("note")[0].iter("li")]
    assert notes == [
        "media/noisy: 76 older failed jobs not shown",
        "media/middle: 7 older failed jobs not shown",
    ]


def test_one_queue_alone_may_use_the_whole_budget() -> None:
    recent = tuple(failed("q1", i) for i in reversed(range(60)))
    rows = table(render(target(recent_failures=recent)), "recent")
    assert [row[3] for row in rows] == [f"q1-{i:03d}" for i in reversed(range(10, 60))]


def test_every_value_from_ci_is_escaped_and_long_ones_cut() -> None:
    hostile_queue = QueueSnapshot("media", queue("q1", HOSTILE))
    streams = (stream("q1", HOSTILE, failures={HOSTILE: 1}),)
    recent = (replace(failed("q1", 1, HOSTILE, HOSTILE * 100), tag=HOSTILE, job_id=HOSTILE),)
    bad = target(
        bucket=HOSTILE, region=HOSTILE, queues=(hostile_queue,), streams=streams,
        recent_failures=recent, up=False, last_error=HOSTILE * 10,
    )  # fmt: skip
    html = render_landing_page(Snapshot((bad,)), "/m<x>", HOSTILE, now=NOW)
    page = lxml.html.fromstring(html)
    assert list(page.iter("script", "img")) == []
    assert "<script>" not in html and "<img" not in html
    text = page.text_content()
    assert text.count(HOSTILE) >= 8
    (row,) = table(page, "recent")
    assert row[1:5] == [f"{HOSTILE} (media/q1)", HOSTILE, HOSTILE, HOSTILE]
    assert len(row[5]) == 300 and row[5].endswith("...")
    assert page.find(".//nav/a").get("href") == "/m<x>"


def test_the_page_of_a_running_poller_knows_its_throttling_shard_and_clock() -> None:
    stats = ApiStats()
    credentials = Credentials("AKIDlanding00000000000000000000000000", "k" * 32)
    services = (ServiceConfig("media", ("Transcode",)),)
    names = [f"b{n}-1250000000" for n in range(20)]
    mine = next(name for name in names if shard_of(name, 2) == 0)
    theirs = next(name for name in names if shard_of(name, 2) == 1)
    targets = tuple(
        TargetConfig(name, REGION, "http://127.0.0.1:9", credentials, services)
        for name in (mine, theirs)
    )
    poller = Poller(Config(targets=targets), stats, clock=lambda: NOW, shard=Shard(0, 2))
    stats.set_spacing(mine, REGION, 0.8)

    page = lxml.html.fromstring(landing_page_of(poller, "/metrics", "1.2.3"))

    status = facts(page, 0)
    expected = "shard 0 (of 2, numbered from 0): this process polls 1 of 2 configured targets"
    assert status["Shard"] == expected
    assert status["Page rendered (UTC)"] == "2027-01-15T08:00:00+00:00"
    (row,) = table(page, "targets")
    assert row[1] == mine
    assert row[8] == "requests spaced 0.80 s apart"


def test_the_page_of_any_other_source_is_that_of_its_snapshot() -> None:
    class Source:
        def snapshot(self) -> Snapshot:
            return Snapshot((target(),))

        def ready(self) -> bool:
            return True

    page = lxml.html.fromstring(landing_page_of(Source(), "/metrics", "1.2.3"))
    assert facts(page, 0)["Targets"] == "1"
    assert table(page, "targets")[0][0] == "up"
