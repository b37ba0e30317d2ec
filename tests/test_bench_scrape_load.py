"""bench/scrape_load.py: a short run end to end (numbers, no failed scrape; no timing
assertions: speed claims live in docs/benchmarks.md), and how it edits its docs section."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from bench.scrape_load import (
    SECTION,
    Cadence,
    Latency,
    LoadSpec,
    Phase,
    Result,
    section,
    table,
    write_docs,
)

ROOT = Path(__file__).resolve().parent.parent


def test_a_short_run_scrapes_without_failure() -> None:
    command = [
        sys.executable,
        "-m",
        "bench.scrape_load",
        "--targets=2",
        "--scrapers=5",
        "--duration=2",
        "--baseline=0.5",
        "--json",
    ]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)

    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["series"] > 100  # histograms appear with their first observation
    assert result["streams"] == 2 * 6  # per bucket: 2 media queues x 2 tags, ai, speech
    names = [phase["name"] for phase in result["phases"]]
    assert names == ["no scraper", "1 scraper", "5 scrapers"]
    loaded = result["phases"][2]
    assert loaded["failed"] == 0, loaded["errors"]
    assert loaded["scrapes"] > 0
    assert 0 < loaded["latency"]["p50"] <= loaded["latency"]["p99"] <= loaded["latency"]["max"]
    assert loaded["mean_body_bytes"] > 0
    assert loaded["exporter_cpu"] > 0
    assert loaded["renderings"] >= 0  # renderings follow the polls, not the scrapes
    assert sum(phase["cadence"]["polls"] for phase in result["phases"]) > 0


def result() -> Result:
    cadence = Cadence(polls=10, mean=1.0, p99=1.1, max=1.2, late=0, mean_duration=0.2)
    phase = Phase(
        name="5 scrapers",
        scrapers=5,
        seconds=2.0,
        exporter_cpu=0.5,
        scrapes=100,
        failed=0,
        errors=[],
        scrapes_per_second=50.0,
        mean_body_bytes=2048.0,
        latency=Latency(0.1, 0.2, 0.3),
        cadence=cadence,
        renderings=20,
    )
    return Result(LoadSpec(), series=5000, metrics_bytes=10240, streams=50, phases=[phase])


def test_the_table() -> None:
    lines = table(result()).splitlines()

    assert lines[0].split("|")[2].strip() == "5 scrapers"
    assert "| failed scrapes " in lines[5]
    assert any(line.startswith("| scrape latency p99 ") and "200 ms" in line for line in lines)


def test_write_docs_adds_the_section_to_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "docs" / "benchmarks.md"

    write_docs(result(), path)

    text = path.read_text()
    assert text.startswith(f"{SECTION}\n\n`python3 -m bench.scrape_load --write-docs`")
    assert "| scrapes done " in text


def test_write_docs_appends_after_other_sections(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\n## API cost\n\nsomeone else's table\n")

    write_docs(result(), path)

    text = path.read_text()
    assert text.startswith("# Benchmarks\n\n## API cost\n\nsomeone else's table\n\n## Scrapes")
    assert text.count(SECTION) == 1


def test_write_docs_replaces_only_its_own_section(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text(
        f"# Benchmarks\n\n## API cost\n\nA\n\n{SECTION}\n\nold numbers\n\n## Memory\n\nB\n"
    )

    write_docs(result(), path)
    write_docs(result(), path)  # twice: still one section, nothing else moved

    text = path.read_text()
    assert "old numbers" not in text
    assert text.count(SECTION) == 1
    assert text.startswith("# Benchmarks\n\n## API cost\n\nA\n\n## Scrapes under load\n")
    assert text.endswith("\n\n## Memory\n\nB\n")


def test_the_summary_says_renderings_follow_the_polls() -> None:
    loaded = result()
    idle = replace(
        loaded.phases[0],
        name="no scraper",
        scrapers=0,
        scrapes=0,
        scrapes_per_second=0.0,
        renderings=18,
        cadence=replace(loaded.phases[0].cadence, mean_duration=0.1),
    )
    both = replace(loaded, spec=replace(loaded.spec, scrapers=5), phases=[idle, *loaded.phases])

    text = " ".join(section(both).split())

    assert (
        "With 5 scrapers the exporter served 50 scrapes per second at a p99 latency of 200 ms, "
        "with 0 failed scrapes, and rendered /metrics 10.0 times per second, against 9.0 with no "
        "scraper: renderings follow the polls, not the scrapes. Polls took 0.20 s on average "
        "against 0.10 s."
    ) in text
    assert "renderings follow the polls" not in section(loaded)  # no phase without scrapers
