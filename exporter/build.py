"""What this build is: version, revision, Python and platform, for `--version` and
tencent_ci_exporter_build_info.

The revision (and branch) is the first of:

1. the commit checked out where the package was loaded from, when that is a git checkout (read
   from `.git`; git is not run, so a missing or broken git changes nothing);
2. the one stamped into exporter/_build.py when the package was built:
   `python -m exporter.build [--revision R] [--branch B]` writes it (by default from the
   checkout's `.git`), and a wheel or image built after that carries it;
3. the commit pip recorded when it installed from a VCS URL (`pip install git+https://...`);
4. "unknown".

Build user and date are known only when stamped. Nothing here raises: a value that cannot be
read is "unknown".
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from exporter import __version__

UNKNOWN = "unknown"
DISTRIBUTION = "tencent-ci-exporter"
PACKAGE = Path(__file__).resolve().parent
STAMP = PACKAGE / "_build.py"
_MAX_READ = 1 << 20  # a HEAD or a ref file is tiny; packed-refs is read line by line
_MAX_REF_HOPS = 5  # symbolic refs followed at most


@dataclass(frozen=True, slots=True)
class Revision:
    revision: str = UNKNOWN
    branch: str = UNKNOWN
    build_user: str = UNKNOWN
    build_date: str = UNKNOWN


@dataclass(frozen=True, slots=True)
class BuildInfo:
    version: str
    revision: str
    branch: str
    build_user: str
    build_date: str
    python_version: str
    platform: str


def _clean(text: str) -> str:
    """`text` when it is one short printable line, else "unknown"."""
    text = text.strip()
    return text if text and len(text) <= 200 and text.isprintable() else UNKNOWN


def _is_commit(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


def _read(path: Path) -> str:
    with path.open("rb") as file:
        return file.read(_MAX_READ).decode("utf-8", "replace").strip()


def _git_dirs(root: Path) -> tuple[Path, Path]:
    """(the checkout's git directory, the one holding its shared refs); OSError when none."""
    dot_git = root / ".git"
    if dot_git.is_file():  # a worktree or a submodule: "gitdir: <path>"
        text = _read(dot_git)
        if not text.startswith("gitdir:"):
            raise OSError(f"{dot_git}: no gitdir line")
        git_dir = (root / text.removeprefix("gitdir:").strip()).resolve()
    else:
        git_dir = dot_git
    common = git_dir / "commondir"
    shared = (git_dir / _read(common)).resolve() if common.is_file() else git_dir
    if not (git_dir / "HEAD").is_file():
        raise OSError(f"{git_dir}: no HEAD")
    return git_dir, shared


def _packed_ref(shared: Path, ref: str) -> str:
    packed = shared / "packed-refs"
    if not packed.is_file():
        return ""
    with packed.open("rb") as file:
        for raw in file:
            sha, _, name = raw.decode("utf-8", "replace").strip().partition(" ")
            if name == ref:
                return sha
    return ""


def _resolve(git_dir: Path, shared: Path, ref: str) -> str:
    """The commit `ref` names (following symbolic refs), or "" when it names none."""
    for _ in range(_MAX_REF_HOPS):
        if not ref.startswith("refs/") or ".." in ref.split("/"):
            return ""
        loose = next((d / ref for d in (git_dir, shared) if (d / ref).is_file()), None)
        value = _read(loose) if loose is not None else _packed_ref(shared, ref)
        if not value.startswith("ref:"):
            return value
        ref = value.removeprefix("ref:").strip()
    return ""


def checkout_revision(root: Path) -> Revision | None:
    """The commit (and branch) checked out in `root`, read from its `.git`; None when `root` is
    not a git checkout or its HEAD cannot be read."""
    try:
        git_dir, shared = _git_dirs(root)
        head = _read(git_dir / "HEAD")
        if head.startswith("ref:"):
            ref = head.removeprefix("ref:").strip()
            commit, branch = _resolve(git_dir, shared, ref), ref.removeprefix("refs/heads/")
        else:
            commit, branch = head, "HEAD"  # detached, as Prometheus' own builds say
    except (OSError, UnicodeError):
        return None
    return Revision(commit, _clean(branch)) if _is_commit(commit) else None


def stamped_revision() -> Revision | None:
    """What `python -m exporter.build` wrote into exporter/_build.py, if it ran."""
    try:
        module = importlib.import_module("exporter._build")
    except Exception:  # absent (the usual case), or broken: either way not known
        return None

    def field(name: str) -> str:
        value = getattr(module, name, None)
        return _clean(value) if isinstance(value, str) else UNKNOWN

    stamp = Revision(field("REVISION"), field("BRANCH"), field("BUILD_USER"), field("BUILD_DATE"))
    return stamp if stamp.revision != UNKNOWN else None


def pip_revision() -> Revision | None:
    """The commit pip recorded installing this package from a VCS URL (PEP 610)."""
    try:
        text = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
        vcs = json.loads(text or "{}").get("vcs_info", {})
        commit, requested = vcs.get("commit_id", ""), vcs.get("requested_revision", "")
    except (metadata.PackageNotFoundError, OSError, ValueError, AttributeError):
        return None
    if not (isinstance(commit, str) and _is_commit(commit)):
        return None
    return Revision(commit, _clean(requested) if isinstance(requested, str) else UNKNOWN)


def find_revision(root: Path = PACKAGE.parent) -> Revision:
    return checkout_revision(root) or stamped_revision() or pip_revision() or Revision()


@lru_cache(maxsize=1)
def build_info() -> BuildInfo:
    """This process's build facts, read once."""
    found = find_revision()
    return BuildInfo(
        version=__version__,
        revision=found.revision,
        branch=found.branch,
        build_user=found.build_user,
        build_date=found.build_date,
        python_version=platform.python_version(),
        platform=f"{sys.platform}/{platform.machine() or UNKNOWN}",
    )


def version_text(program: str, info: BuildInfo | None = None) -> str:
    """`--version`, in the form Prometheus and its exporters print."""
    i = info or build_info()
    return (
        f"{program}, version {i.version} (branch: {i.branch}, revision: {i.revision})\n"
        f"  build user:       {i.build_user}\n"
        f"  build date:       {i.build_date}\n"
        f"  python version:   {i.python_version}\n"
        f"  platform:         {i.platform}\n"
    )


# Stamping (at build time)


def _build_user() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # no user name in this container, say
        return UNKNOWN


def _build_date() -> str:
    """Now, or SOURCE_DATE_EPOCH for a reproducible build; Prometheus' form."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    moment = int(epoch) if epoch.isascii() and epoch.isdigit() else int(time.time())
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(moment))


def stamp_text(stamp: Revision) -> str:
    """exporter/_build.py for `stamp` (double-quoted, so ruff format leaves it as it is)."""
    lines = [
        '"""Written by `python -m exporter.build` when this package was built."""',
        "",
        f"REVISION = {json.dumps(stamp.revision)}",
        f"BRANCH = {json.dumps(stamp.branch)}",
        f"BUILD_USER = {json.dumps(stamp.build_user)}",
        f"BUILD_DATE = {json.dumps(stamp.build_date)}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.build",
        description="Stamp the revision into exporter/_build.py before building a wheel or an"
        " image from a tree without .git.",
    )
    parser.add_argument("--revision", help="the commit (default: the checkout's HEAD)")
    parser.add_argument("--branch", help="the branch (default: the checkout's)")
    parser.add_argument("--output", type=Path, default=STAMP, help=f"default {STAMP}")
    args = parser.parse_args(argv)
    found = checkout_revision(PACKAGE.parent) or Revision()
    stamp = Revision(
        _clean(args.revision) if args.revision else found.revision,
        _clean(args.branch) if args.branch else found.branch,
        _build_user(),
        _build_date(),
    )
    args.output.write_text(stamp_text(stamp))
    print(f"{args.output}: revision {stamp.revision}, branch {stamp.branch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
