"""The suite's results as a table (printed) and as docs/benchmarks.md (--write-docs).

Each target is a row (bench/report_rows.py, with the suite's result): what was measured, the
bound it is held to, the ratio and a verdict.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path

from bench.report_rows import Row, SuiteResult, rows

# The names others import from here, where they were before the split.
__all__ = [
    "COST_SECTION",
    "OWN_SECTIONS",
    "Row",
    "SuiteResult",
    "command_line",
    "markdown_table",
    "merge_docs",
    "rows",
    "table",
    "write_docs",
]


def table(found: list[Row]) -> str:
    header = Row("target", "measured", "bound", "ratio", "result")
    widths = [
        max(len(getattr(row, name)) for row in [header, *found])
        for name in ("target", "measured", "bound", "ratio", "verdict")
    ]
    lines = []
    for row in [header, *found]:
        cells = (row.target, row.measured, row.bound, row.ratio, row.verdict)
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        )
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(found: list[Row]) -> str:
    lines = ["| target | measured | bound | ratio | result |", "|---|---|---|---|---|"]
    for row in found:
        target = row.target.strip()
        if row.target.startswith("   "):
            target = f"&nbsp;&nbsp;&nbsp;{target}"
        lines.append(f"| {target} | {row.measured} | {row.bound} | {row.ratio} | {row.verdict} |")
    return "\n".join(lines)


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs ({model or platform.processor() or 'unknown model'}), "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


# -- docs/benchmarks.md ------------------------------------------------------------------------

COST_SECTION = "7. Scrapes of an unchanged snapshot"
OWN_SECTIONS = (
    "Summary",
    "1. API requests per poll",
    "2. Idle tags",
    "3. CPU per 10,000 jobs",
    "4. Memory per tracked job",
    "5. /metrics render time",
    "6. Poll wall time under latency",
    COST_SECTION,
    "Method and caveats",
)
_HEADING = re.compile(r"^## (.+?)\s*$", re.MULTILINE)
_ROW_TARGET = re.compile(r"^\|\s*(\d+)\.")


def foreign_sections(text: str) -> list[str]:
    """The `## ` sections of an existing file that this suite does not write, verbatim."""
    kept: list[str] = []
    matches = list(_HEADING.finditer(text))
    for n, match in enumerate(matches):
        end = matches[n + 1].start() if n + 1 < len(matches) else len(text)
        if match.group(1) not in OWN_SECTIONS:
            kept.append(text[match.start() : end].rstrip() + "\n")
    return kept


def complete(result: SuiteResult) -> bool:
    """Whether every target ran."""
    parts = (result.scale, result.cpu, result.scrape, result.latency, result.cost)
    return all(part is not None for part in parts)


def write_docs(path: Path, result: SuiteResult, details: dict[str, str]) -> None:
    """A run of every target rewrites the file (keeping sections written by others); a run of
    some targets rewrites their sections and Summary rows in place (see merge_docs)."""
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if existing.strip() and not complete(result):
        text = merge_docs(existing, result, details)
    else:
        parts = [_preamble(result), f"## Summary\n\n{markdown_table(rows(result))}\n"]
        parts += [
            f"## {name}\n\n{details[name].strip()}\n" for name in OWN_SECTIONS if name in details
        ]
        parts += foreign_sections(existing)
        text = "\n".join(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The text before the first `## ` heading, and (name, text) of every section."""
    matches = list(_HEADING.finditer(text))
    if not matches:
        return text, []
    found = []
    for n, match in enumerate(matches):
        end = matches[n + 1].start() if n + 1 < len(matches) else len(text)
        found.append((match.group(1), text[match.start() : end].rstrip() + "\n"))
    return text[: matches[0].start()], found


def merge_docs(existing: str, result: SuiteResult, details: dict[str, str]) -> str:
    """`existing` with the run's sections rewritten in place (new ones where OWN_SECTIONS puts
    them) and its Summary rows replaced target by target; the numbered sections written say
    which run they come from. Everything else (the preamble, other targets' sections and rows,
    text under the Summary table, other people's sections) stays as it was."""
    preamble, sections = _sections(existing)
    stamp = (
        f"Latest run of this section: `{result.command}`, {result.started:%Y-%m-%d %H:%M} UTC;"
        f" load average {', '.join(f'{x:.1f}' for x in result.load)} when the run began.\n\n"
    )
    written = {
        name: f"## {name}\n\n{stamp if name[:1].isdigit() else ''}{body.strip()}\n"
        for name, body in details.items()
    }
    merged = [(name, written.pop(name, text)) for name, text in sections]
    merged = [
        (name, _merge_summary(text, rows(result)) if name == "Summary" else text)
        for name, text in merged
    ]
    for name in [n for n in OWN_SECTIONS if n in written]:
        later = OWN_SECTIONS[OWN_SECTIONS.index(name) + 1 :]
        at = next((i for i, (other, _) in enumerate(merged) if other in later), None)
        if at is None:  # after the last of ours, else at the end
            ours = [i for i, (other, _) in enumerate(merged) if other in OWN_SECTIONS]
            at = ours[-1] + 1 if ours else len(merged)
        merged.insert(at, (name, written.pop(name)))
    if not any(name == "Summary" for name, _ in merged):
        merged.insert(0, ("Summary", f"## Summary\n\n{markdown_table(rows(result))}\n"))
    return preamble + "\n".join(text for _, text in merged)


def _row_groups(lines: list[str]) -> dict[int, list[str]]:
    """Table rows by the target number of the row that starts each group (indented rows
    follow theirs); rows before the first numbered one are left out."""
    groups: dict[int, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        match = _ROW_TARGET.match(line)
        if match:
            current = groups.setdefault(int(match.group(1)), [])
        if current is not None:
            current.append(line)
    return groups


def _merge_summary(text: str, new_rows: list[Row]) -> str:
    """The Summary section with the table's rows of the targets in `new_rows` replaced."""
    lines = text.splitlines()
    table_at = [i for i, line in enumerate(lines) if line.startswith("|")]
    fresh = _row_groups(markdown_table(new_rows).splitlines()[2:])
    if not table_at:
        return text.rstrip() + "\n\n" + markdown_table(new_rows) + "\n"
    start = table_at[0]
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    groups = {**_row_groups(lines[start + 2 : end]), **fresh}
    body = [line for number in sorted(groups) for line in groups[number]]
    return "\n".join([*lines[: start + 2], *body, *lines[end:]]) + "\n"


def _preamble(result: SuiteResult) -> str:
    load = ", ".join(f"{x:.1f}" for x in result.load)
    return (
        "# Benchmarks\n\n"
        "What the exporter costs at scale (API calls first, then CPU, memory, scrape time and poll"
        " wall time), against the least work CI's API allows and against a cron script written"
        " with cos-python-sdk-v5. Everything runs against the built-in CI simulator.\n\n"
        f"Latest run: `{result.command}`, {result.started:%Y-%m-%d %H:%M} UTC, "
        f"{result.seconds:.0f} s.\n\n"
        f"Machine: {machine()}; load average {load} when the run began (other work shared the"
        " machine: CPU times, not wall times, are compared where they can be).\n"
    )


def command_line() -> str:
    return "python3 -m bench " + " ".join(sys.argv[1:]) if sys.argv[1:] else "python3 -m bench"
