"""Keys from a credentials file in the Tencent Cloud SDK's INI profile format
(`FileCredentials`, described in exporter.credentials), read again whenever the file changes.
No error quotes a line of the file: it may hold a key.

Threads: any thread may call get(); the fingerprint last acted on, the keys of the last good
read and the last read's error are guarded by the provider's lock, so one thread at a time
checks and reads the file.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import threading
from collections.abc import Callable
from typing import TypeAlias

from exporter.credentials_keys import (
    MAX_CREDENTIALS_BYTES,
    Clock,
    Credentials,
    CredentialsError,
    clock_now,
    expiry_text,
    has_expired,
    header_safe,
)
from exporter.isotime import ISO_HINT, format_iso_time, parse_iso_time

# Its lines keep the logger name exporter.credentials: log lines show it, and filters use it.
log = logging.getLogger("exporter.credentials")

DEFAULT_PROFILE = "default"

_SECTION_RE = re.compile(r"\[([^\]]*)\]")
_FILE_KEYS = ("secret_id", "secret_key", "token", "expiration")

# What identifies one version of the file: a rewrite in place changes the size or mtime, an
# atomic rename (or Kubernetes' symlink swap) changes the inode.
_Fingerprint: TypeAlias = tuple[int, int, int, int]


class FileCredentials:
    """Keys from a credentials file, read again whenever it changes.

    A file that cannot be used (half written, removed, wrong) is an error only when there are
    no good keys from an earlier read: those are kept until they expire, with one warning.
    """

    def __init__(
        self, path: str, profile: str = DEFAULT_PROFILE, *, clock: Clock | None = None
    ) -> None:
        self.path = os.path.abspath(path)
        self.profile = profile
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: object = None  # the fingerprint (or failure) last acted on
        self._good: Credentials | None = None  # from the last read that succeeded
        self._error: str | None = None  # why the last read failed, when it did

    def __repr__(self) -> str:
        return f"FileCredentials(path={self.path!r}, profile={self.profile!r})"

    def get(self) -> Credentials:
        with self._lock:
            now = clock_now(self._clock)
            try:
                current: object = _fingerprint(os.stat(self.path))
            except OSError as exc:
                current = ("unreadable", exc.errno)
            stale = self._good is not None and self._error is None and has_expired(self._good, now)
            if current != self._seen or stale:
                self._reread(current, now)
            return self._usable(now)

    def _reread(self, current: object, now: float) -> None:
        try:
            self._seen, credentials = self._read()
        except CredentialsError as error:
            # What was seen before reading: if the file changes after, it is read again.
            self._seen = current
            self._note_failure(error, now)
            return
        if self._error is not None and self._good is not None:
            log.info("credentials file usable again", extra={"file": self.path})
        self._good, self._error = credentials, None

    def _note_failure(self, error: CredentialsError, now: float) -> None:
        self._error = str(error)
        if self._good is not None and not has_expired(self._good, now):
            # Once per change of the file: it is read again only when it changes.
            log.warning(
                "credentials file unusable; keeping the keys read before until they expire",
                extra={"error": str(error), "expires": expiry_text(self._good)},
            )

    def _usable(self, now: float) -> Credentials:
        good = self._good
        if good is not None and not has_expired(good, now):
            return good
        if self._error is not None:
            # A new exception each time: raising one object again grows its traceback.
            raise CredentialsError(self._error)
        assert good is not None and good.expiration is not None  # read, and expired
        raise CredentialsError(
            f"credentials file {self.path} [{self.profile}]: temporary credentials expired "
            f"at {format_iso_time(good.expiration)}"
        )

    def _read(self) -> tuple[_Fingerprint, Credentials]:
        try:
            fingerprint, data = _read_small_file(self.path)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise self._error_at("", f"cannot read it: {reason}") from None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise self._error_at("", f"not UTF-8 text (bad byte at offset {exc.start})") from None
        return fingerprint, self._parse(text)

    def _parse(self, text: str) -> Credentials:
        values, lines = _profile_values(text, self.profile, self._error_at)
        for key in ("secret_id", "secret_key"):
            if key not in values:
                raise self._error_at(f"[{self.profile}]", f"{key} is missing")
        # An empty token or expiration means permanent keys, as in the configuration.
        values = {k: v for k, v in values.items() if v or k in ("secret_id", "secret_key")}
        for key, value in values.items():
            if key == "expiration":
                continue
            where = f"line {lines[key]}: {key}"
            if not value:
                raise self._error_at(where, "must not be empty")
            if not header_safe(value):
                raise self._error_at(
                    where, "must be printable ASCII without spaces (the value is not shown)"
                )
        expiration = None
        if "expiration" in values:
            expiration = parse_iso_time(values["expiration"])
            if expiration is None:
                raise self._error_at(f"line {lines['expiration']}: expiration", f"not {ISO_HINT}")
        return Credentials(
            values["secret_id"], values["secret_key"], values.get("token") or None, expiration
        )

    def _error_at(self, where: str, problem: str) -> CredentialsError:
        parts = (p for p in (f"credentials file {self.path}", where, problem) if p)
        return CredentialsError(": ".join(parts))


def _fingerprint(status: os.stat_result) -> _Fingerprint:
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def _read_small_file(path: str) -> tuple[_Fingerprint, bytes]:
    # O_NONBLOCK: a FIFO would otherwise wait for a writer. The fingerprint is the open
    # file's, so it describes the bytes read even when the file is replaced meanwhile.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        status = os.fstat(handle.fileno())
        if stat.S_ISDIR(status.st_mode):
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(status.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = handle.read(MAX_CREDENTIALS_BYTES + 1)
    if len(data) > MAX_CREDENTIALS_BYTES:
        raise OSError(errno.EFBIG, "larger than 64 KiB (not a credentials file?)")
    return _fingerprint(status), data


def _profile_values(
    text: str, profile: str, error_at: Callable[[str, str], CredentialsError]
) -> tuple[dict[str, str], dict[str, int]]:
    """The known keys of section [profile], and the line each was on.

    Lines are `[section]`, `key = value` (or `key: value`), blank, or comments (# or ;). A
    line is never quoted in an error: it may hold a key. Unknown keys (region, role_arn, ...)
    are left alone; other tools keep them in the same file.
    """
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    section: str | None = None
    found = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        header = _SECTION_RE.fullmatch(line)
        if header is not None:
            section = header.group(1).strip()
            if section == profile and found:
                raise error_at(f"line {number}", f"a second [{profile}] section")
            found = found or section == profile
            continue
        key, separator, value = _split_entry(line)
        if not separator or not key:
            raise error_at(f"line {number}", 'expected "key = value", "[section]" or a comment')
        if section is None:
            raise error_at(f"line {number}", '"key = value" before any [section]')
        if section != profile or key not in _FILE_KEYS:
            continue
        if key in values:
            raise error_at(f"line {number}", f"{key} given twice in [{profile}]")
        values[key], lines[key] = value, number
    if not found:
        raise error_at("", f"no [{profile}] section")
    return values, lines


def _split_entry(line: str) -> tuple[str, str, str]:
    # Like configparser: the first "=" or ":" separates; keys are case-insensitive.
    cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
    if cut < 0:
        return "", "", ""
    return line[:cut].strip().lower(), line[cut], line[cut + 1 :].strip()
