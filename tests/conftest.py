"""Test-wide settings."""

import os
import sys

import freezegun
import freezegun.config
import pytest

# The request gate and the throttle pacer measure real elapsed time: under a frozen clock a
# token bucket would never refill and a poll would wait forever. Tests that move time do so
# for the accounting, not for the rate limit.
freezegun.configure(extend_ignore_list=["exporter.ratelimit"])

# Tools the tests run (ruff, mypy, hadolint, kubernetes-validate) are installed beside the
# interpreter running them: in a virtual environment that is its bin/, which need not be on
# PATH when the tests are run as `.venv/bin/python -m pytest`.
_here = os.path.dirname(sys.executable)
if _here not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _here + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture
def frozen_on_every_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """freezegun gives the real time to callers a few frames below `threading` (a pool
    thread's task, say) and to the ignored modules above: for tests whose clock must be the
    frozen one everywhere (virtual time, the pipeline's pool threads)."""
    monkeypatch.setattr(freezegun.config.settings, "default_ignore_list", [])
