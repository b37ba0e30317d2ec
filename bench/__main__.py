"""`python3 -m bench`: run the suite, print the table; --write-docs updates docs/benchmarks.md."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from bench.report import command_line, rows, table, write_docs
from bench.suite import TARGETS, SuiteOptions, details, run_suite, smoke_options, with_shape

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _targets(text: str) -> list[str]:
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [t for t in wanted if t not in TARGETS]
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(f"targets are among {','.join(TARGETS)}, not {text!r}")
    return wanted


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (the test's run)")
    p.add_argument("--write-docs", action="store_true", help=f"rewrite {DOCS.name} with the run")
    p.add_argument("--only", type=_targets, help="targets to run, e.g. 1,3 (default: all)")
    p.add_argument("--polls", type=_positive, help="measured polls (default 10)")
    p.add_argument("--targets", type=_positive, help="targets (buckets) of the workload")
    p.add_argument("--queues", type=_positive, help="queues per target")
    p.add_argument("--tags", type=_positive, help="tags per queue")
    p.add_argument("--jobs-per-day", type=_positive, help="default 1000000")
    p.add_argument("--seed", type=int, help="the workload's seed")
    return p


def options_from(args: argparse.Namespace) -> SuiteOptions:
    options = smoke_options() if args.smoke else SuiteOptions()
    shape = {
        name: value
        for name, value in (
            ("targets", args.targets),
            ("queues", args.queues),
            ("tags", args.tags),
            ("jobs_per_day", args.jobs_per_day),
        )
        if value is not None
    }
    if shape:
        options = with_shape(options, **shape)
    scale = options.scale
    if args.polls is not None:
        scale = replace(scale, polls=args.polls)
    if args.seed is not None:
        scale = replace(scale, seed=args.seed)
    options = replace(options, scale=scale)
    if args.only:
        options = replace(options, only=tuple(args.only))
    return options


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    options = options_from(args)
    result = run_suite(options, command_line(), progress=lambda line: print(line, flush=True))
    print()
    print(table(rows(result)))
    print(f"\n{result.seconds:.0f} s")
    if args.write_docs:
        write_docs(DOCS, result, details(result))
        print(f"wrote {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
