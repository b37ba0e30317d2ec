"""The README's two commands are the ones a newcomer runs; CI must run the same test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_readme_gives_a_run_and_a_test_command() -> None:
    run, test = _commands()
    assert "tencent-ci-exporter --demo" in run
    assert "pytest" in test


def test_ci_runs_the_readme_test_command() -> None:
    _, test = _commands()
    ci = (ROOT / ".ci" / "run").read_text()
    install, _, runner = test.partition(" && ")
    assert install.replace("python3 -m pip install", "").strip() in ci
    assert runner in ci.splitlines()
