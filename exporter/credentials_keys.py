"""Keys as such: the `Credentials` record, the `CredentialsError` every provider raises, the
`CredentialProvider` protocol, and keys given in the configuration or the environment
(`StaticCredentials`), temporary ones refused once their expiration passes. Also what every
provider shares: the clock, the expiry checks and the header check on a key's characters.
Secrets are never part of a repr, a log line or an error.

No mutable state: the records are frozen, StaticCredentials never changes, and any thread may
call its get().
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from exporter.isotime import format_iso_time

ENV_SECRET_ID = "TENCENTCLOUD_SECRET_ID"
ENV_SECRET_KEY = "TENCENTCLOUD_SECRET_KEY"
ENV_SESSION_TOKEN = "TENCENTCLOUD_SESSION_TOKEN"

# A credentials file or a metadata answer is a few hundred bytes.
MAX_CREDENTIALS_BYTES = 64 * 1024

Clock = Callable[[], float]


class CredentialsError(Exception):
    """Keys cannot be had now. The message is safe to log: it never holds a secret."""


@dataclass(frozen=True)
class Credentials:
    secret_id: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    expiration: float | None = None  # epoch seconds; None for permanent keys


class CredentialProvider(Protocol):
    def get(self) -> Credentials:
        """The keys to sign the next request with; CredentialsError when there are none."""
        ...


def from_environment(environ: Mapping[str, str] | None = None) -> Credentials | None:
    env = os.environ if environ is None else environ
    secret_id, secret_key = env.get(ENV_SECRET_ID, ""), env.get(ENV_SECRET_KEY, "")
    if not secret_id or not secret_key:
        return None
    return Credentials(secret_id, secret_key, env.get(ENV_SESSION_TOKEN) or None)


def header_safe(value: str) -> bool:
    """Keys travel in HTTP headers: anything but printable ASCII would fail every request."""
    return value.isascii() and value.isprintable() and " " not in value


def clock_now(clock: Clock | None) -> float:
    # Looked up at each call, so that freezegun can move it in tests.
    return clock() if clock is not None else time.time()


def has_expired(credentials: Credentials, now: float) -> bool:
    return credentials.expiration is not None and now >= credentials.expiration


def expiry_text(credentials: Credentials) -> str:
    if credentials.expiration is None:
        return "never"
    return format_iso_time(credentials.expiration)


# --- keys from the configuration or the environment -----------------------------------------


@dataclass(frozen=True)
class StaticCredentials:
    credentials: Credentials
    clock: Clock | None = field(default=None, repr=False, compare=False)

    def get(self) -> Credentials:
        expiration = self.credentials.expiration
        if expiration is not None and clock_now(self.clock) >= expiration:
            raise CredentialsError(
                f"temporary credentials expired at {format_iso_time(expiration)}"
            )
        return self.credentials
