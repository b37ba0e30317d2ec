"""Where keys come from, and keeping them fresh. Secrets are never part of a repr, a log line or
an error.

Four sources, each a `CredentialProvider` whose `get()` is called before every API request:

- keys given in the configuration or the environment (`StaticCredentials`); temporary ones
  carry an expiration and are refused once it passes;
- a credentials file in the Tencent Cloud SDK's INI profile format (`FileCredentials`), read
  again whenever it changes, so whatever rotates the keys only has to rewrite the file:

      [default]
      secret_id = AKID...
      secret_key = ...
      token = ...                          # optional, temporary keys
      expiration = 2026-11-21T10:00:00Z    # optional, ISO 8601 with a zone

- the CAM role of the CVM instance the exporter runs on (`CVMRoleCredentials`), fetched from
  the instance metadata service and fetched again a few minutes before it expires.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Protocol, TypeAlias

import requests

ENV_SECRET_ID = "TENCENTCLOUD_SECRET_ID"
ENV_SECRET_KEY = "TENCENTCLOUD_SECRET_KEY"
ENV_SESSION_TOKEN = "TENCENTCLOUD_SESSION_TOKEN"

DEFAULT_PROFILE = "default"
DEFAULT_METADATA_ENDPOINT = "http://metadata.tencentyun.com/latest/meta-data/"
ROLE_PATH = "cam/security-credentials/"
# Refresh this long before role credentials expire, so that a request signed with them does
# not arrive after they have.
DEFAULT_REFRESH_MARGIN = 300.0
# After a refresh that failed (or gave keys that are already inside the margin), the cached
# keys are used this long before the next attempt: not one metadata call per API request.
DEFAULT_RETRY_INTERVAL = 10.0
# The metadata service is on the local network: it answers in milliseconds or not at all.
DEFAULT_METADATA_TIMEOUT = 2.0
# A credentials file or a metadata answer is a few hundred bytes.
MAX_CREDENTIALS_BYTES = 64 * 1024

# The last second of year 9999: later expirations are shown and kept as this one.
MAX_EPOCH = 253402300799.0
# CAM role names: letters, digits and +=,.@_- (up to 128).
ROLE_NAME_RE = re.compile(r"[A-Za-z0-9+=,.@_-]{1,128}", re.ASCII)

Clock = Callable[[], float]

log = logging.getLogger(__name__)


class CredentialsError(Exception):
    """Keys cannot be had now. The message is safe to log: it never holds a secret."""


@dataclass(frozen=True)
class Credentials:
    secret_id: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    expiration: float | None = None  # epoch seconds; None for permanent keys


@dataclass(frozen=True)
class CredentialsFile:
    """A credentials file (see the module doc), read again when it changes."""

    path: str  # absolute
    profile: str = DEFAULT_PROFILE


@dataclass(frozen=True)
class CVMRole:
    """The CAM role of this CVM instance, from the instance metadata service."""

    role: str | None = None  # None: ask the metadata service which role is bound
    metadata_endpoint: str = DEFAULT_METADATA_ENDPOINT  # ends with "/"


# Where a target's keys come from: given (config or environment), a file, or a CVM role.
CredentialSource: TypeAlias = Credentials | CredentialsFile | CVMRole


class CredentialProvider(Protocol):
    def get(self) -> Credentials:
        """The keys to sign the next request with; CredentialsError when there are none."""
        ...


def provider_for(source: CredentialSource, *, clock: Clock | None = None) -> CredentialProvider:
    """A provider for a configured source. Build one per `credential_key` and share it: a role
    or a file is then fetched or read once for every target that uses it."""
    if isinstance(source, CredentialsFile):
        return FileCredentials(source.path, source.profile, clock=clock)
    if isinstance(source, CVMRole):
        return CVMRoleCredentials(source.role, source.metadata_endpoint, clock=clock)
    return StaticCredentials(source, clock=clock)


def credential_key(source: CredentialSource) -> str:
    """Who is calling, without a secret: targets with the same key share one rate limit."""
    if isinstance(source, CredentialsFile):
        return f"file:{os.path.abspath(source.path)}#{source.profile}"
    if isinstance(source, CVMRole):
        return f"cvm_role:{source.role or 'auto'}@{source.metadata_endpoint}"
    return source.secret_id


def from_environment(environ: Mapping[str, str] | None = None) -> Credentials | None:
    env = os.environ if environ is None else environ
    secret_id, secret_key = env.get(ENV_SECRET_ID, ""), env.get(ENV_SECRET_KEY, "")
    if not secret_id or not secret_key:
        return None
    return Credentials(secret_id, secret_key, env.get(ENV_SESSION_TOKEN) or None)


def header_safe(value: str) -> bool:
    """Keys travel in HTTP headers: anything but printable ASCII would fail every request."""
    return value.isascii() and value.isprintable() and " " not in value


# --- time -----------------------------------------------------------------------------------

_ISO_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))",
    re.ASCII,
)
ISO_HINT = "an ISO 8601 time with a zone, e.g. 2026-11-21T10:00:00Z"


def parse_iso_time(text: str) -> float | None:
    """Epoch seconds of an ISO 8601 time that names its zone; None when it is not one.

    Without a zone a time means different instants on different hosts, so it is refused."""
    match = _ISO_RE.fullmatch(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute = (int(match.group(i)) for i in range(1, 6))
    second = int(match.group(6) or 0)
    fraction = float(f"0.{match.group(7)}") if match.group(7) else 0.0
    offset = timedelta(0)
    if match.group(9):
        sign = 1 if match.group(9) == "+" else -1
        offset = sign * timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
        return min(moment.timestamp() + fraction, MAX_EPOCH)
    except (ValueError, OverflowError):  # month 13, an offset of 24h or more, year 0, ...
        return None


def format_iso_time(epoch: float) -> str:
    moment = datetime.fromtimestamp(int(min(max(epoch, 0), MAX_EPOCH)), tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _now(clock: Clock | None) -> float:
    # Looked up at each call, so that freezegun can move it in tests.
    return clock() if clock is not None else time.time()


def _expired(credentials: Credentials, now: float) -> bool:
    return credentials.expiration is not None and now >= credentials.expiration


# --- keys from the configuration or the environment -----------------------------------------


@dataclass(frozen=True)
class StaticCredentials:
    credentials: Credentials
    clock: Clock | None = field(default=None, repr=False, compare=False)

    def get(self) -> Credentials:
        expiration = self.credentials.expiration
        if expiration is not None and _now(self.clock) >= expiration:
            raise CredentialsError(
                f"temporary credentials expired at {format_iso_time(expiration)}"
            )
        return self.credentials


# --- a credentials file ---------------------------------------------------------------------

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
            now = _now(self._clock)
            try:
                current: object = _fingerprint(os.stat(self.path))
            except OSError as exc:
                current = ("unreadable", exc.errno)
            stale = self._good is not None and self._error is None and _expired(self._good, now)
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
        if self._good is not None and not _expired(self._good, now):
            # Once per change of the file: it is read again only when it changes.
            log.warning(
                "credentials file unusable; keeping the keys read before until they expire",
                extra={"error": str(error), "expires": _expiry_text(self._good)},
            )

    def _usable(self, now: float) -> Credentials:
        good = self._good
        if good is not None and not _expired(good, now):
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


def _expiry_text(credentials: Credentials) -> str:
    if credentials.expiration is None:
        return "never"
    return format_iso_time(credentials.expiration)


# --- the CAM role of a CVM instance ----------------------------------------------------------


class CVMRoleCredentials:
    """Temporary keys of the instance's CAM role, from the metadata service.

    Fetched on first use and again once inside `refresh_margin` of their expiry; one fetch at
    a time. While a refresh is under way or failing, the cached keys are used until they
    expire; only then does get() raise.
    """

    def __init__(
        self,
        role: str | None = None,
        metadata_endpoint: str = DEFAULT_METADATA_ENDPOINT,
        *,
        clock: Clock | None = None,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        timeout: float = DEFAULT_METADATA_TIMEOUT,
        session: requests.Session | None = None,
    ) -> None:
        self.role = role or None
        self.endpoint = (
            metadata_endpoint if metadata_endpoint.endswith("/") else (metadata_endpoint + "/")
        )
        self._clock = clock
        self._margin = refresh_margin
        self._retry_interval = retry_interval
        self._timeout = timeout
        if session is None:
            session = requests.Session()
            # An HTTP(S)_PROXY meant for the internet must not see the instance's keys.
            session.trust_env = False
        self._session = session
        self._fetch_lock = threading.Lock()
        self._cached: Credentials | None = None
        self._discovered: str | None = None
        self._next_attempt = 0.0  # no refresh before this while the cached keys still work
        self._warned: str | None = None  # the failure last logged

    def __repr__(self) -> str:
        return f"CVMRoleCredentials(role={self.role or 'auto'!r}, endpoint={self.endpoint!r})"

    def get(self) -> Credentials:
        cached, now = self._cached, _now(self._clock)
        if cached is not None and not _expired(cached, now):
            if not self._refresh_due(cached, now):
                return cached
            # The keys still work: one thread refreshes, the others carry on with them.
            if not self._fetch_lock.acquire(blocking=False):
                return cached
        else:
            self._fetch_lock.acquire()
        try:
            return self._refresh()
        finally:
            self._fetch_lock.release()

    def _refresh_due(self, cached: Credentials, now: float) -> bool:
        assert cached.expiration is not None  # role keys always expire
        return now >= cached.expiration - self._margin and now >= self._next_attempt

    def _refresh(self) -> Credentials:
        now = _now(self._clock)
        cached = self._cached
        if cached is not None and not _expired(cached, now) and not self._refresh_due(cached, now):
            return cached  # another thread refreshed while this one waited
        try:
            fresh = self._fetch(now)
        except CredentialsError as error:
            self._next_attempt = now + self._retry_interval
            if cached is None or _expired(cached, _now(self._clock)):
                raise
            self._warn(error, cached)
            return cached
        if self._warned is not None:
            log.info("CVM role credentials refreshed again", extra={"role": self._role_name()})
            self._warned = None
        assert fresh.expiration is not None
        # Keys served already inside the margin: use them, but do not ask again at once.
        self._next_attempt = now + self._retry_interval
        self._cached = fresh
        return fresh

    def _warn(self, error: CredentialsError, cached: Credentials) -> None:
        if str(error) == self._warned:
            return  # one line per kind of failure, not one per attempt
        self._warned = str(error)
        log.warning(
            "CVM role credentials could not be refreshed; using the cached ones until they expire",
            extra={"error": str(error), "expires": _expiry_text(cached)},
        )

    def _role_name(self) -> str:
        return self.role or self._discovered or "auto"

    def _fetch(self, now: float) -> Credentials:
        role = self.role or self._discovered or self._discover()
        try:
            return self._fetch_role(role, now)
        except CredentialsError:
            # The instance may have been given another role since it was discovered.
            self._discovered = None
            raise

    def _discover(self) -> str:
        url = self.endpoint + ROLE_PATH
        text = self._get_text(url, "CVM role discovery")
        names = [line.strip() for line in text.splitlines() if line.strip()]
        if not names:
            raise CredentialsError(
                f"CVM role discovery: GET {url}: no CAM role is bound to this instance"
            )
        if not ROLE_NAME_RE.fullmatch(names[0]):
            raise CredentialsError(f"CVM role discovery: GET {url}: the answer is not a role name")
        self._discovered = names[0]
        return names[0]

    def _fetch_role(self, role: str, now: float) -> Credentials:
        url = self.endpoint + ROLE_PATH + role
        context = f"CVM role {role}"
        answer = _json_object(self._get_text(url, context), f"{context}: GET {url}")

        def bad(problem: str) -> CredentialsError:
            return CredentialsError(f"{context}: GET {url}: {problem}")

        code = answer.get("Code", "Success")
        if code != "Success":
            shown = code if isinstance(code, str) and ROLE_NAME_RE.fullmatch(code) else "?"
            raise bad(f"the answer's Code is {shown}, not Success")
        secrets = []
        for name in ("TmpSecretId", "TmpSecretKey", "Token"):
            value = answer.get(name)
            if not isinstance(value, str) or not value or not header_safe(value):
                raise bad(f"the answer has no usable {name}")
            secrets.append(value)
        expiration = _answer_expiration(answer)
        if expiration is None:
            raise bad("the answer has no usable ExpiredTime or Expiration")
        if expiration <= now:
            raise bad(f"the answer holds keys that expired at {format_iso_time(expiration)}")
        secret_id, secret_key, token = secrets
        return Credentials(secret_id, secret_key, token, expiration)

    def _get_text(self, url: str, context: str) -> str:
        try:
            with self._session.get(
                url, timeout=self._timeout, stream=True, allow_redirects=False
            ) as response:
                if response.status_code != 200:
                    raise CredentialsError(f"{context}: GET {url}: HTTP {response.status_code}")
                data = b""
                for chunk in response.iter_content(16 * 1024):
                    data += chunk
                    if len(data) > MAX_CREDENTIALS_BYTES:
                        raise CredentialsError(
                            f"{context}: GET {url}: the answer is larger than 64 KiB"
                        )
        except requests.RequestException as exc:
            # The type says enough (ConnectTimeout, ConnectionError, ...); the text would only
            # repeat the URL with urllib3's internals.
            raise CredentialsError(
                f"{context}: GET {url}: metadata service unreachable ({type(exc).__name__})"
            ) from None
        return data.decode("utf-8", errors="replace")


def _json_object(text: str, context: str) -> dict[str, object]:
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):
        raise CredentialsError(f"{context}: the answer is not JSON") from None
    if not isinstance(answer, dict):
        raise CredentialsError(f"{context}: the answer is not a JSON object")
    return answer


def _answer_expiration(answer: Mapping[str, object]) -> float | None:
    expired_time = answer.get("ExpiredTime")
    if isinstance(expired_time, str) and expired_time.isascii() and expired_time.isdigit():
        expired_time = int(expired_time[:20])
    if isinstance(expired_time, int) and not isinstance(expired_time, bool):
        return float(min(expired_time, int(MAX_EPOCH)))
    expiration = answer.get("Expiration")
    if isinstance(expiration, str):
        return parse_iso_time(expiration)
    return None
