"""Build facts: `--version` as Prometheus prints it, the revision read from a checkout, a stamp
or pip, tencent_ci_exporter_build_info's labels, and help for every flag."""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import exporter.build as build
from exporter import __version__
from exporter.build import (
    BuildInfo,
    Revision,
    build_info,
    checkout_revision,
    find_revision,
    stamp_text,
    version_text,
)
from exporter.cli import build_parser
from exporter.collector import snapshot_families
from exporter.families import BUILD_INFO
from exporter.snapshot import Snapshot

ROOT = Path(__file__).resolve().parent.parent
SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def repo(root: Path, head: str, files: dict[str, str] | None = None) -> Path:
    """A .git directory with just what the reader looks at."""
    git = root / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text(head + "\n")
    for name, text in (files or {}).items():
        (git / name).parent.mkdir(parents=True, exist_ok=True)
        (git / name).write_text(text)
    return root


# --version


def test_version_prints_version_revision_and_python_as_prometheus_does() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0 and result.stderr == ""
    first, *rest = result.stdout.splitlines()
    found = checkout_revision(ROOT) or find_revision()
    assert first == (
        f"tencent-ci-exporter, version {__version__} "
        f"(branch: {found.branch}, revision: {found.revision})"
    )
    assert [line.split(":", 1)[0] for line in rest] == [
        "  build user",
        "  build date",
        "  python version",
        "  platform",
    ]
    assert rest[2] == f"  python version:   {platform.python_version()}"
    assert re.fullmatch(r"  platform:         \S+/\S+", rest[3])


def test_from_a_checkout_the_revision_is_its_head() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    found = checkout_revision(ROOT)
    assert found is not None and re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", found.revision)
    git = shutil.which("git")
    if git is not None:
        head = subprocess.run(
            [git, "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=30
        )
        if head.returncode == 0:
            assert found.revision == head.stdout.strip()


def test_version_text_lines_up_as_prometheus_does() -> None:
    info = BuildInfo("1.2.3", SHA, "main", "ci@builder", "20250101-00:00:00", "3.12.8", "linux/x")
    assert version_text("tencent-ci-exporter", info) == (
        f"tencent-ci-exporter, version 1.2.3 (branch: main, revision: {SHA})\n"
        "  build user:       ci@builder\n"
        "  build date:       20250101-00:00:00\n"
        "  python version:   3.12.8\n"
        "  platform:         linux/x\n"
    )


def test_every_flag_has_help() -> None:
    parser = build_parser()
    for action in parser._actions:
        assert action.help, action.option_strings
    text = parser.format_help()
    assert "--log.level" in text and "(default info)" in text
    assert "(default logfmt)" in text


# The revision: from a checkout


def test_a_branch_checked_out(tmp_path: Path) -> None:
    root = repo(tmp_path, "ref: refs/heads/main", {"refs/heads/main": SHA + "\n"})
    assert checkout_revision(root) == Revision(SHA, "main")


def test_a_packed_branch(tmp_path: Path) -> None:
    packed = f"# pack-refs with: peeled fully-peeled sorted\n{OTHER} refs/heads/x\n"
    packed += f"{SHA} refs/heads/feature/y\n^{OTHER}\n"
    root = repo(tmp_path, "ref: refs/heads/feature/y", {"packed-refs": packed})
    assert checkout_revision(root) == Revision(SHA, "feature/y")


def test_a_loose_ref_wins_over_a_packed_one(tmp_path: Path) -> None:
    files = {"refs/heads/main": SHA, "packed-refs": f"{OTHER} refs/heads/main\n"}
    assert checkout_revision(repo(tmp_path, "ref: refs/heads/main", files)) == Revision(SHA, "main")


def test_a_detached_head(tmp_path: Path) -> None:
    assert checkout_revision(repo(tmp_path, SHA)) == Revision(SHA, "HEAD")


def test_a_symbolic_ref_is_followed(tmp_path: Path) -> None:
    files = {"refs/heads/alias": "ref: refs/heads/main\n", "refs/heads/main": SHA}
    root = repo(tmp_path, "ref: refs/heads/alias", files)
    assert checkout_revision(root) == Revision(SHA, "alias")


def test_a_worktree(tmp_path: Path) -> None:
    main = repo(tmp_path / "main", "ref: refs/heads/main", {"refs/heads/topic": SHA})
    worktree_git = main / ".git" / "worktrees" / "wt"
    worktree_git.mkdir(parents=True)
    (worktree_git / "HEAD").write_text("ref: refs/heads/topic\n")
    (worktree_git / "commondir").write_text("../..\n")
    checkout = tmp_path / "wt"
    checkout.mkdir()
    (checkout / ".git").write_text(f"gitdir: {worktree_git}\n")
    assert checkout_revision(checkout) == Revision(SHA, "topic")


@pytest.mark.parametrize(
    "head, files",
    [
        ("ref: refs/heads/main", {}),  # a branch with no commit yet
        ("ref: refs/heads/main", {"refs/heads/main": "not a commit"}),
        ("ref: refs/heads/../../../etc", {}),
        ("ref: refs/heads/a", {"refs/heads/a": "ref: refs/heads/a"}),  # a loop
        ("garbage", {}),
    ],
)
def test_what_is_not_a_commit_is_none(tmp_path: Path, head: str, files: dict[str, str]) -> None:
    assert checkout_revision(repo(tmp_path, head, files)) is None


def test_not_a_checkout_is_none(tmp_path: Path) -> None:
    assert checkout_revision(tmp_path) is None
    (tmp_path / ".git").write_text("not a gitdir line\n")
    assert checkout_revision(tmp_path) is None


# The revision: stamped, from pip, unknown


def test_a_checkout_wins_then_the_stamp_then_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamp = types.ModuleType("exporter._build")
    stamp.REVISION, stamp.BRANCH = OTHER, "release"  # type: ignore[attr-defined]
    stamp.BUILD_USER, stamp.BUILD_DATE = "ci@b", "20250101-00:00:00"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "exporter._build", stamp)
    monkeypatch.setattr(build, "pip_revision", lambda: Revision("pip", "pip"))
    checkout = repo(tmp_path / "c", SHA)
    assert find_revision(checkout) == Revision(SHA, "HEAD")
    assert find_revision(tmp_path) == Revision(OTHER, "release", "ci@b", "20250101-00:00:00")
    monkeypatch.delitem(sys.modules, "exporter._build")
    monkeypatch.setattr(build, "stamped_revision", lambda: None)
    assert find_revision(tmp_path) == Revision("pip", "pip")
    monkeypatch.setattr(build, "pip_revision", lambda: None)
    assert find_revision(tmp_path) == Revision("unknown", "unknown", "unknown", "unknown")


def test_a_stamp_without_a_revision_does_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = types.ModuleType("exporter._build")
    stamp.REVISION = "\n"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "exporter._build", stamp)
    assert build.stamped_revision() is None


class _Distribution:
    def __init__(self, direct_url: str | None) -> None:
        self.direct_url = direct_url

    def read_text(self, name: str) -> str | None:
        assert name == "direct_url.json"
        return self.direct_url


@pytest.mark.parametrize(
    "direct_url, expected",
    [
        (
            {"url": "https://g/x.git", "vcs_info": {"vcs": "git", "commit_id": SHA}},
            Revision(SHA, "unknown"),
        ),
        (
            {"vcs_info": {"vcs": "git", "commit_id": SHA, "requested_revision": "v0.1.0"}},
            Revision(SHA, "v0.1.0"),
        ),
        ({"url": "file:///src", "dir_info": {}}, None),  # `pip install .`: the tree may be newer
        ({"vcs_info": {"commit_id": "abc"}}, None),
        (None, None),
        ([], None),
    ],
)
def test_the_commit_pip_recorded(
    monkeypatch: pytest.MonkeyPatch, direct_url: object, expected: Revision | None
) -> None:
    text = None if direct_url is None else json.dumps(direct_url)
    monkeypatch.setattr(build.metadata, "distribution", lambda name: _Distribution(text))
    assert build.pip_revision() == expected


def test_stamping_writes_a_module_ruff_leaves_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    output = tmp_path / "_build.py"
    assert build.main(["--revision", SHA, "--branch", "rel", "--output", str(output)]) == 0
    values: dict[str, object] = {}
    exec(output.read_text(), values)
    assert (values["REVISION"], values["BRANCH"]) == (SHA, "rel")
    assert values["BUILD_DATE"] == "19700101-00:00:00"
    assert isinstance(values["BUILD_USER"], str) and values["BUILD_USER"]
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", "_build.py", "-"],
        input=output.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert formatted.returncode == 0 and formatted.stdout == output.read_text()


def test_stamped_values_are_one_printable_line() -> None:
    text = stamp_text(Revision('a"b\\c', "main", "u@h", "d"))
    values: dict[str, object] = {}
    exec(text, values)
    assert values["REVISION"] == 'a"b\\c'


# tencent_ci_exporter_build_info


def test_build_info_carries_version_revision_and_python() -> None:
    (family,) = [f for f in snapshot_families(Snapshot(), "9.9.9") if f.name == BUILD_INFO]
    (sample,) = family.samples
    info = build_info()
    assert sample.labels == {
        "python_version": platform.python_version(),
        "revision": info.revision,
        "version": "9.9.9",
    }
    assert sample.value == 1
    assert info.revision == find_revision().revision
