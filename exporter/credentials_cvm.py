"""Temporary keys of the CAM role of the CVM instance the exporter runs on
(`CVMRoleCredentials`): the instance metadata service's client (role discovery, the keys'
JSON answer, checked before use) and the refresh a few minutes before they expire. The
metadata service is asked directly, never through a proxy from the environment.

Threads: any thread may call get(). One fetch at a time, under the provider's fetch lock; the
cached keys, the discovered role, the time of the next attempt and the failure last warned of
are written only while holding it. get() reads the cached keys and the next attempt without
it (one reference, one float), and a thread that finds the lock taken carries on with the
cached keys.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping

import requests

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
from exporter.isotime import MAX_EPOCH, format_iso_time, parse_iso_time

# Its lines keep the logger name exporter.credentials: log lines show it, and filters use it.
log = logging.getLogger("exporter.credentials")

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
# CAM role names: letters, digits and +=,.@_- (up to 128).
ROLE_NAME_RE = re.compile(r"[A-Za-z0-9+=,.@_-]{1,128}", re.ASCII)


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
        cached, now = self._cached, clock_now(self._clock)
        if cached is not None and not has_expired(cached, now):
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
        now = clock_now(self._clock)
        cached = self._cached
        if (
            cached is not None
            and not has_expired(cached, now)
            and not self._refresh_due(cached, now)
        ):
            return cached  # another thread refreshed while this one waited
        try:
            fresh = self._fetch(now)
        except CredentialsError as error:
            self._next_attempt = now + self._retry_interval
            if cached is None or has_expired(cached, clock_now(self._clock)):
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
            extra={"error": str(error), "expires": expiry_text(cached)},
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
