"""The README's two commands are the ones a newcomer runs; CI must run the same test command."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_collector import FakeSource, full_snapshot, registry_for

from exporter.api_stats import ApiStats

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
METRICS = (ROOT / "docs" / "metrics.md").read_text()


def _commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section, re.S)


def test_readme_gives_a_run_and_a_test_command() -> None:
    run, test = _commands()
    assert "tencent-ci-exporter --demo" in run
    assert "pytest" in test


def test_ci_runs_the_readme_test_command() -> None:
    _, test = _commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test.splitlines()[-1] in ci.splitlines()


def test_the_test_command_installs_the_debian_packages_ci_installs() -> None:
    """The README's test block says how the real tools come, and they are the ones CI gets."""
    _, test = _commands()
    readme_line = next(line for line in test.splitlines() if "apt-get install" in line)
    documented = set(readme_line.split("apt-get install", 1)[1].split()) - {"-y"}
    ci = (ROOT / ".ci" / "run").read_text()
    installed = {
        word
        for line in ci.splitlines()
        if "apt-get install" in line
        for word in line.split("--no-install-recommends", 1)[-1].split()
        if re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", word) and word not in ("python3-venv",)
    }
    assert documented == installed


def test_the_commands_work_with_a_system_python_that_refuses_pip() -> None:
    """PEP 668: Debian's and Ubuntu's python3 refuse `pip install` outside a virtual
    environment, so both commands make one and install into it."""
    for block in _commands():
        command = block.splitlines()[-1]
        steps = command.split(" && ")
        assert steps[0] == "python3 -m venv .venv"
        assert all(not s.startswith(("python3 -m pip", "pip ")) for s in steps)


def test_the_configuration_example_loads() -> None:
    from exporter.config import parse_config

    example = re.search(r"## Configuration\n\n```yaml\n(.*?)```", CONFIGURATION, re.S)
    assert example is not None
    env = {"TENCENTCLOUD_SECRET_ID": "AKIDdoc", "TENCENTCLOUD_SECRET_KEY": "doc-key"}
    environ = {**env, "TENCENTCLOUD_SESSION_TOKEN": "t"}
    config = parse_config(example.group(1), "docs/configuration.md", environ)
    assert [s.name for s in config.targets[0].services] == ["media", "ai", "speech"]


def test_the_metric_table_names_what_the_collector_serves() -> None:
    table = METRICS.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(tencent_ci_\w+)`", table, re.M))
    stats = ApiStats()
    stats.record("b-1250000000", "ap-guangzhou", "media_jobs", "error", "timeout", 5.0)
    stats.record_retry("b-1250000000", "ap-guangzhou", "media_jobs")
    stats.record_throttle("b-1250000000", "ap-guangzhou", "media_jobs")
    stats.set_spacing("b-1250000000", "ap-guangzhou", 0.5)
    stats.callbacks.enabled = True  # a receiver runs: its families are served
    stats.callbacks.last_callback("b-1250000000", "ap-guangzhou", 1_700_000_000.0)
    registry = registry_for(FakeSource(full_snapshot()), stats)
    text = generate_latest(registry).decode()
    served = {
        f.name + "_total" if f.type == "counter" else f.name
        for f in text_string_to_metric_families(text)
        if f.name.startswith("tencent_ci_")
    }
    assert documented == served


def test_the_run_command_is_the_console_script_of_the_cli() -> None:
    """The README runs `tencent-ci-exporter`; the CLI tests run `python -m exporter`: both are
    exporter.cli:main."""
    pyproject = (ROOT / "pyproject.toml").read_text()  # no tomllib: Python 3.10 is supported
    scripts = pyproject.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert scripts.strip() == 'tencent-ci-exporter = "exporter.cli:main"'
    main_module = (ROOT / "exporter" / "__main__.py").read_text()
    assert "from exporter.cli import main" in main_module


def test_the_readme_links_every_reference_page_and_each_link_resolves() -> None:
    """The README is the front door: the long references are pages in docs/, each linked."""
    links = set(re.findall(r"\]\((docs/[^)#]+)\)", README))
    assert {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} <= links
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\((?!https?://|#)([^)#]+)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to {target}"
