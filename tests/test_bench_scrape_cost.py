"""bench/scrape_cost.py (suite target 7) at its smoke size: every number is there and the
scrapes were of the unchanged snapshot. No timing is asserted: these machines are noisy, the
numbers belong in docs/benchmarks.md. And how a run of some targets edits that file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import COST_SECTION, SuiteResult, merge_docs, rows, table
from bench.scrape_cost import ScrapeCostResult, changed, run_scrape_cost, smoke_cost_options
from bench.scrape_cost import table as cost_table
from bench.suite import details

OPTIONS = smoke_cost_options()


@pytest.fixture(scope="module")
def cost() -> ScrapeCostResult:
    return run_scrape_cost(OPTIONS)


def test_every_level_scraped_the_unchanged_snapshot(cost: ScrapeCostResult) -> None:
    assert [level.scrapers for level in cost.levels] == list(OPTIONS.levels)
    for level in cost.levels:
        assert level.failed == 0, level.errors
        assert level.scrapes == level.scrapers * OPTIONS.scrapes
        assert level.renderings == 0  # no scrape made or waited for a rendering
        assert level.cpu > 0 and level.wall > 0 and level.received > 0
        assert len(level.latencies) == level.scrapes
        assert all(latency > 0 for latency in level.latencies)
    assert cost.clean


def test_renderings_and_sizes_are_measured(cost: ScrapeCostResult) -> None:
    targets, queues, tags = OPTIONS.shape
    assert (cost.targets, cost.streams) == (targets, targets * queues * tags)
    assert len(cost.renders) == OPTIONS.render_repetitions + len(OPTIONS.levels)
    assert all(p.cpu > 0 and p.seconds > 0 and p.size > 0 for p in cost.renders)
    assert cost.one_target.cpu > 0 and cost.one_target.size == cost.renders[-1].size
    sizes = cost.sizes
    assert sizes.problems == ()
    assert sizes.content_type.startswith("application/openmetrics-text")
    assert 0 < sizes.gzip_bytes < sizes.identity_bytes
    assert sizes.samples > 0 and cost.peak_rss > 0
    # The derived numbers are finite and consistent with their parts.
    first, last = cost.levels[0], cost.levels[-1]
    assert cost.lifetime(last) == pytest.approx(cost.render_cpu + last.scrapers * last.per_scrape)
    assert cost.growth == pytest.approx(cost.lifetime(last) / cost.lifetime(first))
    assert cost.latency_median <= cost.latency_max


def test_the_suite_reports_target_seven(cost: ScrapeCostResult) -> None:
    result = SuiteResult(command="python3 -m bench --only 7", cost=cost)
    printed = table(rows(result))
    assert f"\n7. CPU per scrape of an unchanged snapshot, {cost.streams} streams" in printed
    assert "lifetime of a snapshot" in printed and "latency of a scrape" in printed
    section = details(result)[COST_SECTION]
    assert cost_table(cost) in section
    assert len(cost_table(cost).splitlines()) == 2 + len(cost.levels)


def test_a_changed_snapshot_has_new_targets_only_where_asked() -> None:
    from bench.scrape import synthetic_snapshot

    snapshot = synthetic_snapshot(3, 1, 1, tracked_jobs=10)
    one, every = changed(snapshot, every=False), changed(snapshot, every=True)
    assert one.targets[0] is not snapshot.targets[0]
    assert one.targets[1:] == snapshot.targets[1:]
    assert all(a is b for a, b in zip(one.targets[1:], snapshot.targets[1:], strict=True))
    assert not any(a is b for a, b in zip(every.targets, snapshot.targets, strict=True))


EXISTING = """# Benchmarks

Latest run: `python3 -m bench --write-docs`, the full one.

## Summary

| target | measured | bound | ratio | result |
|---|---|---|---|---|
| 1. API requests per poll | 2074 | 1.25 x 2016 | 1.03x | pass |
| &nbsp;&nbsp;&nbsp;baseline | 1377 | 2016 | 0.68x |  |
| 5. /metrics render | 10.88 s | 1.2 x 14.29 s | 0.76x | pass |
| 7. an old target 7 row | 1 s | - | - | FAIL |
| &nbsp;&nbsp;&nbsp;its old second row | 1 s | - | - | FAIL |

A paragraph someone wrote under the table.

## 5. /metrics render time

Target 5's numbers.

## Method and caveats

How.

## Scrapes under load

Someone else's section.
"""


def test_a_run_of_one_target_rewrites_its_section_and_rows_only(
    cost: ScrapeCostResult, tmp_path: Path
) -> None:
    result = SuiteResult(command="python3 -m bench --only 7 --write-docs", cost=cost)
    found = details(result)
    text = merge_docs(EXISTING, result, found)
    assert merge_docs(text, result, found) == text  # twice: nothing doubles or moves

    assert text.startswith("# Benchmarks\n\nLatest run: `python3 -m bench --write-docs`, the full")
    for kept in (
        "| 1. API requests per poll | 2074 |",
        "| &nbsp;&nbsp;&nbsp;baseline | 1377 |",
        "| 5. /metrics render | 10.88 s |",
        "A paragraph someone wrote under the table.",
        "## 5. /metrics render time\n\nTarget 5's numbers.\n",
        "## Scrapes under load\n\nSomeone else's section.\n",
    ):
        assert text.count(kept) == 1, kept
    assert "old target 7" not in text and "its old second row" not in text
    new_rows = [line for line in text.splitlines() if "CPU per scrape of an unchanged" in line]
    assert len(new_rows) == 1
    assert text.index("| 5. /metrics render") < text.index(new_rows[0])
    assert text.index(new_rows[0]) < text.index("A paragraph someone wrote")
    # The new section goes between target 5's and the method, and says which run wrote it.
    assert (
        text.index("## 5. /metrics")
        < text.index(f"## {COST_SECTION}")
        < text.index("## Method and caveats")
        < text.index("## Scrapes under load")
    )
    section = text[text.index(f"## {COST_SECTION}") : text.index("## Method and caveats")]
    assert "`python3 -m bench --only 7 --write-docs`" in section
