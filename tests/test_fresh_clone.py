"""The README's two command blocks, as a newcomer runs them: in a fresh clone, with Debian's own
/usr/bin/python3 first on PATH (externally managed: it refuses `pip install` outside a virtual
environment, PEP 668). The demo serves /metrics; the test command's install works and its test
runner runs (a test file of the clone, not the whole suite again)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")
INSTALL_TIMEOUT = 600.0  # pip from the package index, cold cache
START_TIMEOUT = 60.0


def readme_blocks(readme: str) -> list[str]:
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section, re.S)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert (ROOT / ".git").exists(), "the test clones the repository: run it from a git checkout"
    target = tmp_path_factory.mktemp("fresh") / "tencent-ci-exporter"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True, timeout=120)
    return target


@pytest.fixture(scope="module")
def system_env() -> dict[str, str]:
    """PATH with /usr/bin first: `python3` is the system's, as on a fresh Debian machine."""
    assert SYSTEM_PYTHON.exists(), "Debian's python3 (/usr/bin/python3) is not installed"
    managed = list(Path("/usr/lib").glob("python3*/EXTERNALLY-MANAGED"))
    assert managed, "the system Python is expected to be externally managed (PEP 668)"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(["/usr/bin", "/bin", env.get("PATH", "")])
    return env


def run_block(command: str, clone: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def blocks(clone: Path) -> list[str]:
    run, test = readme_blocks((clone / "README.md").read_text())
    return [run, test]


@pytest.fixture(scope="module")
def demo(clone: Path, system_env: dict[str, str], blocks: list[str]) -> Iterator[str]:
    """The first block as written, its last command given a port the OS chooses."""
    *install, start = blocks[0].split(" && ")
    assert start.endswith("tencent-ci-exporter --demo")
    assert shutil.which("python3", path=system_env["PATH"]) == str(SYSTEM_PYTHON)
    run_block(" && ".join(install), clone, system_env)
    process = subprocess.Popen(
        [*start.split(), "--web.listen-address=127.0.0.1:0"],
        cwd=clone,
        env=system_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # the demo announces where its metrics are
            found = re.search(r"metrics at (http://\S+)", line)
            if found:
                yield found.group(1)
                break
        else:
            raise AssertionError("the demo exited without saying where its metrics are")
    finally:
        process.terminate()
        process.wait(timeout=START_TIMEOUT)


def test_the_demo_command_serves_metrics_from_a_fresh_clone(demo: str) -> None:
    response = requests.get(demo, timeout=START_TIMEOUT)

    assert response.status_code == 200
    assert "tencent_ci_exporter_build_info" in response.text


def test_the_test_command_installs_and_runs_its_tests_from_a_fresh_clone(
    clone: Path, system_env: dict[str, str], blocks: list[str]
) -> None:
    *tools, command = blocks[1].splitlines()
    assert command.endswith(".venv/bin/python -m pytest")
    assert any("apt-get install" in line and "prometheus-alertmanager" in line for line in tools)
    # The whole suite is what runs this test; in the clone, one file of it proves the runner.
    run_block(command + " -q -p no:cacheprovider tests/test_readme.py", clone, system_env)
