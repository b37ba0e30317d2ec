"""Reading the exporter's own small files (configuration, web config, state, certificates):
a regular file of bounded size, opened once and checked on the open descriptor. No state.
"""

from __future__ import annotations

import errno
import os
import stat

MIB = 1 << 20
MAX_FILE_BYTES = MIB


class FileError(Exception):
    """One line: `<source>: <where>: <problem>` (parts that are unknown are left out)."""

    def __init__(self, where: str, problem: str, source: str | None = None) -> None:
        self.where = where
        self.problem = problem
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = (p for p in (self.source, self.where, self.problem) if p)
        # One line whatever a key, a value or a YAML message holds.
        return ": ".join(parts).replace("\r", " ").replace("\n", " ")


class FileShapeError(Exception):
    """The file opened, but is not one to read: its text is the problem, e.g. for a log."""


class NotRegularFile(FileShapeError):
    def __init__(self) -> None:
        super().__init__("not a regular file")


class FileTooLarge(FileShapeError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than {limit // MIB} MiB")


def read_regular_file(path: str, max_bytes: int, *, follow_symlinks: bool = True) -> bytes:
    """The file's bytes; OSError when it cannot be opened or is a directory (ELOOP: a symbolic
    link, with `follow_symlinks` False), FileShapeError when it is not a regular file or holds
    more than `max_bytes`."""
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. The type and
    # size are checked on the open descriptor, so the file cannot be swapped between check and
    # read, and a file too large is refused before a byte of it is read.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as handle:
        status = os.fstat(handle.fileno())
        if stat.S_ISDIR(status.st_mode):
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(status.st_mode):
            # /dev/zero would be read forever, a FIFO or a terminal would wait.
            raise NotRegularFile
        if status.st_size > max_bytes:
            raise FileTooLarge(max_bytes)
        data = handle.read(max_bytes + 1)  # it may have grown since
    if len(data) > max_bytes:
        raise FileTooLarge(max_bytes)
    return data


def read_small_file(path: str) -> bytes:
    """A file of at most 1 MiB; FileError("", problem) when it cannot be read."""
    try:
        return read_regular_file(path, MAX_FILE_BYTES)
    except OSError as exc:
        raise FileError("", f"cannot read file: {exc.strerror or exc}") from None
    except NotRegularFile as exc:
        raise FileError("", f"cannot read file: {exc}") from None
    except FileTooLarge as exc:
        raise FileError("", f"file is {exc} (not a configuration file?)") from None


def read_text(path: str) -> str:
    """A small file's UTF-8 text; FileError("", problem) when it cannot be read."""
    try:
        return read_small_file(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileError("", f"not UTF-8 text (bad byte at offset {exc.start})") from None
