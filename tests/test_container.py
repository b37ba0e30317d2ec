"""The image, built from the Dockerfile and run.

No registry is reachable from CI, so the base is made here from Debian's packages: mmdebstrap
puts python3, python3-venv, passwd and ca-certificates in a tarball, `podman import` makes it
an image, and the Dockerfile is built on it (`--build-arg PYTHON_IMAGE=`) by buildah (chroot
isolation).
pip inside the build reaches the package index with this machine's CA bundle and pip.conf
lent to it. The image then runs under podman with runc (crun fails on rlimits and cgroups on
these machines, so the rlimits are explicit too).

Everything podman and buildah store lies in this module's temporary directory (their config
files are written there and passed by CONTAINERS_CONF / CONTAINERS_STORAGE_CONF /
CONTAINERS_REGISTRIES_CONF), so the test depends on no machine configuration, pulls nothing, and
leaves nothing behind.

Run with `-s` to see the commands, their timings and the image size.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from test_packaging import CONSOLE_SCRIPT, VENV, final_stage, healthcheck_command, one_value, tool

from exporter.build import checkout_revision
from exporter.listen import DEFAULT_PORT

ROOT = Path(__file__).resolve().parent.parent
# The commit the image is stamped with (`--build-arg REVISION`), as a release build would be.
REVISION = getattr(checkout_revision(ROOT), "revision", "0123456789abcdef0123456789abcdef01234567")

TOOLS = (
    ("mmdebstrap", "Debian package mmdebstrap"),
    ("podman", "Debian package podman"),
    ("buildah", "Debian package buildah"),
    ("runc", "Debian package runc"),
)

# The Debian-python base: Essential packages, passwd (groupadd and useradd), python3 with its
# venv module, the CA bundle; no documentation (dpkg skips it: a smaller image, a faster build).
MMDEBSTRAP = (
    "mmdebstrap",
    "--quiet",
    "--variant=essential",
    "--include=passwd,python3,python3-venv,ca-certificates",
    "--dpkgopt=force-unsafe-io",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "bookworm",
)
BASE = "localhost/tencent-ci-exporter-test-base:bookworm"
IMAGE = "localhost/tencent-ci-exporter:test"

# What the build borrows from this machine to reach the package index (pip's settings and the
# CA bundle that trusts the way out), read-only; files that do not exist here are skipped.
LENT_TO_THE_BUILD = ("/etc/ssl/certs", "/etc/pip.conf")

# runc, not crun; rlimits given, not inherited.
RUN_OPTIONS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")

STARTUP_SECONDS = 30.0


@dataclass
class Engine:
    """podman and buildah on a storage of their own, each command logged with its duration."""

    root: Path
    env: dict[str, str]
    log: list[str] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)

    def run(
        self, *argv: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.root
        )
        elapsed = time.monotonic() - started
        self.log.append(f"[{elapsed:6.2f} s] {shlex.join(argv)}")
        if check:
            assert result.returncode == 0, (
                f"{shlex.join(argv)} exited {result.returncode}\n"
                f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
            )
        return result

    def timed(self, step: str, *argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = self.run(*argv, timeout=timeout)
        self.durations[step] = time.monotonic() - started
        return result

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        (found,) = json.loads(self.run("podman", kind, "inspect", name).stdout)
        assert isinstance(found, dict)
        return found


def write_configs(root: Path) -> dict[str, str]:
    """Config files replacing the machine's: storage (vfs: works on any filesystem and leaves
    no mounts behind), engine (runc, cgroupfs, no systemd, state under root) and registries
    (none: the base is local, nothing is pulled)."""
    files = {
        "CONTAINERS_STORAGE_CONF": f"""
            [storage]
            driver = "vfs"
            graphroot = "{root}/storage"
            runroot = "{root}/run"
            """,
        "CONTAINERS_CONF": f"""
            [engine]
            runtime = "runc"
            cgroup_manager = "cgroupfs"
            events_logger = "file"
            tmp_dir = "{root}/libpod"
            image_copy_tmp_dir = "{root}/tmp"
            [network]
            network_config_dir = "{root}/cni"
            """,
        "CONTAINERS_REGISTRIES_CONF": """
            unqualified-search-registries = []
            """,
    }
    (root / "tmp").mkdir()
    env = {}
    for variable, text in files.items():
        path = root / f"{variable.lower()}.conf"
        path.write_text(textwrap.dedent(text).lstrip())
        env[variable] = str(path)
    return env


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    for name, package in TOOLS:
        tool(name, package)
    root = tmp_path_factory.mktemp("containers")
    engine = Engine(root, {**os.environ, **write_configs(root)})
    try:
        yield engine
    finally:
        engine.run("podman", "rm", "--all", "--force", "--time", "0", check=False)
        engine.run("podman", "rmi", "--all", "--force", check=False)
        # Hundreds of MB that pytest would otherwise keep for three sessions.
        for leftover in ("storage", "run", "base.tar"):
            path = root / leftover
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        print("\n" + "\n".join(engine.log))


@pytest.fixture(scope="module")
def image(engine: Engine) -> str:
    """The Dockerfile built on a Debian-python base made here; the build context is the
    repository, as `docker build .` sends it (through .dockerignore)."""
    tarball = engine.root / "base.tar"
    engine.timed("mmdebstrap", *MMDEBSTRAP, str(tarball), timeout=900)
    engine.timed("podman import", "podman", "import", "--quiet", str(tarball), BASE, timeout=300)
    lent = [
        option
        for path in LENT_TO_THE_BUILD
        if os.path.exists(path)
        for option in ("--volume", f"{path}:{path}:ro")
    ]
    engine.timed(
        "buildah bud",
        "buildah",
        "bud",
        "--isolation",
        "chroot",
        "--format",
        "docker",  # OCI image configs have no HEALTHCHECK
        "--pull=never",
        "--build-arg",
        f"PYTHON_IMAGE={BASE}",
        "--build-arg",
        f"REVISION={REVISION}",
        *lent,
        "--tag",
        IMAGE,
        str(ROOT),
        timeout=900,
    )
    return IMAGE


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Running:
    name: str
    url: str  # the published port, on this machine


def logs(engine: Engine, name: str) -> str:
    result = engine.run("podman", "logs", name, check=False)
    return result.stdout + result.stderr


@contextmanager
def started(engine: Engine, image: str, name: str) -> Iterator[Running]:
    """`--demo` and nothing else: the image's own listen address and port, published on the
    loopback; yields once /healthz answers."""
    port = free_port()
    engine.run(
        "podman",
        "--runtime",
        "runc",
        "run",
        "--detach",
        "--name",
        name,
        *RUN_OPTIONS,
        "--publish",
        f"127.0.0.1:{port}:{DEFAULT_PORT}",
        image,
        "--demo",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            state = engine.inspect("container", name)["State"]
            assert state["Running"], f"the container exited:\n{logs(engine, name)}"
            assert time.monotonic() < deadline, f"no /healthz yet:\n{logs(engine, name)}"
            time.sleep(0.3)
        yield Running(name, url)
    finally:
        engine.run("podman", "rm", "--force", "--time", "0", name, check=False)


@pytest.fixture(scope="module")
def running(engine: Engine, image: str) -> Iterator[Running]:
    with started(engine, image, "tce-demo") as container:
        yield container


def exec_in(engine: Engine, container: Running, *argv: str) -> subprocess.CompletedProcess[str]:
    return engine.run("podman", "exec", container.name, *argv, check=False)


# --- the image ----------------------------------------------------------------------------


def test_the_image_carries_the_dockerfiles_user_entrypoint_and_healthcheck(
    engine: Engine, image: str
) -> None:
    inspected = engine.inspect("image", image)
    config = inspected["Config"]
    assert config["User"] == one_value(final_stage(), "USER")
    assert config["Entrypoint"] == [CONSOLE_SCRIPT]
    assert config["Labels"]["org.opencontainers.image.base.name"] == BASE
    assert config["Labels"]["org.opencontainers.image.revision"] == REVISION
    # podman reports the (Docker-format) healthcheck beside the OCI config, not in it.
    assert inspected["Healthcheck"]["Test"] == ["CMD", *healthcheck_command()]


def test_the_image_size_is_reported(engine: Engine, image: str) -> None:
    size = engine.inspect("image", image)["Size"]
    base = engine.inspect("image", BASE)["Size"]
    report = [
        f"image {image}: {size} bytes ({size / 1e6:.1f} MB); base {base / 1e6:.1f} MB, "
        f"the Dockerfile's layers {(size - base) / 1e6:.1f} MB",
        *(f"{step}: {seconds:.1f} s" for step, seconds in engine.durations.items()),
    ]
    print("\n" + "\n".join(report))
    # The venv and the users are all the Dockerfile adds: no wheels, compilers or caches.
    assert 0 < size - base < 100e6


# --- the running container ----------------------------------------------------------------


def test_it_runs_as_the_dockerfiles_non_root_uid(engine: Engine, running: Running) -> None:
    uid, gid = one_value(final_stage(), "USER").split(":")
    assert uid != "0" and gid != "0"
    status = exec_in(engine, running, "cat", "/proc/1/status").stdout
    ids = {line.split(":")[0]: line.split()[1:] for line in status.splitlines()[:10]}
    assert ids["Uid"] == [uid] * 4, status  # the exporter, PID 1: real, effective, saved, fs
    assert ids["Gid"] == [gid] * 4, status
    assert exec_in(engine, running, "id", "-u").stdout.strip() == uid


def test_the_image_holds_the_venv_and_nothing_that_built_it(
    engine: Engine, running: Running
) -> None:
    leftovers = "for p in /wheels /opt/build /src; do test ! -e $p || echo $p; done"
    assert exec_in(engine, running, "sh", "-c", leftovers).stdout == ""
    no_pip = "import importlib.util, sys; sys.exit(importlib.util.find_spec('pip') is not None)"
    assert exec_in(engine, running, f"{VENV}/bin/python", "-c", no_pip).returncode == 0
    which = exec_in(engine, running, "sh", "-c", f"command -v {CONSOLE_SCRIPT}")
    assert which.stdout.strip() == f"{VENV}/bin/{CONSOLE_SCRIPT}"


def test_version_names_the_revision_the_image_was_built_from(
    engine: Engine, running: Running
) -> None:
    version = exec_in(engine, running, CONSOLE_SCRIPT, "--version")
    assert version.returncode == 0, version.stderr
    assert f"revision: {REVISION})" in version.stdout, version.stdout


def families(text: str) -> set[str]:
    return {
        family.name
        for family in text_string_to_metric_families(text)
        if family.name.startswith("tencent_ci_")
    }


def reference_families() -> set[str]:
    """The catalogue as this checkout serves it: `--demo` run here, on the host."""
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--demo", "--web.listen-address", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "http://" in line, line
        url = line[line.index("http://") :].split()[0]
        # Ready: every target polled once, discovery's first round over (its families then).
        ready = url.rsplit("/", 1)[0] + "/readyz"
        deadline = time.monotonic() + 60
        while requests.get(ready, timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the reference demo was not ready in 60 s"
            time.sleep(0.2)
        return families(requests.get(url, timeout=10).text)
    finally:
        # Its shutdown is tests/test_cli.py's subject, not this one's.
        process.kill()
        process.wait(10)


def test_the_demo_serves_the_full_catalogue_and_polls_its_targets(
    engine: Engine, running: Running
) -> None:
    expected = reference_families()
    assert len(expected) >= 20, sorted(expected)
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        text = requests.get(f"{running.url}/metrics", timeout=10).text
        up = [
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "tencent_ci_up"
            for sample in family.samples
        ]
        if families(text) == expected and up and all(value == 1 for value in up):
            break
        assert time.monotonic() < deadline, (
            f"missing {sorted(expected - families(text))}, "
            f"unexpected {sorted(families(text) - expected)}, up {up}\n{logs(engine, running.name)}"
        )
        time.sleep(0.5)


def test_the_healthcheck_passes_inside_it_and_fails_on_a_dead_address(
    engine: Engine, running: Running
) -> None:
    check = engine.run("podman", "healthcheck", "run", running.name, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    dead = engine.run(
        "podman",
        "exec",
        "--env",
        "HEALTHCHECK_URL=http://127.0.0.1:1/healthz",
        running.name,
        *healthcheck_command(),
        check=False,
    )
    assert dead.returncode != 0


def test_sigterm_stops_it_with_exit_0_within_two_seconds(engine: Engine, image: str) -> None:
    """`podman stop --time 2` sends SIGTERM, then SIGKILL after 2 s (exit 137): exit 0 means
    the exporter stopped by itself in time; the measured time includes podman's own."""
    with started(engine, image, "tce-stop") as container:
        began = time.monotonic()
        engine.run("podman", "stop", "--time", "2", container.name)
        elapsed = time.monotonic() - began
        state = engine.inspect("container", container.name)["State"]
        output = logs(engine, container.name)
        print(f"\npodman stop --time 2: {elapsed:.2f} s, exit code {state['ExitCode']}")
        assert state["ExitCode"] == 0, output
        assert elapsed < 2.0
        assert "shutting down" in output and "Traceback" not in output
