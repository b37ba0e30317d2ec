"""Basic-auth passwords checked against bcrypt hashes, with a cache of verified passwords so
that a scrape every few seconds costs a SHA-256, not a bcrypt. Threads: BasicAuth guards its
cache with its own lock.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
from collections.abc import Callable, Mapping

import bcrypt

# $2a$, $2b$ or $2y$, a cost of 4 to 31, 22 characters of salt and 31 of hash.
BCRYPT_RE = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}", re.ASCII)
BCRYPT_MAX_PASSWORD = 72  # bcrypt reads no further; the library refuses longer ones

Checker = Callable[[bytes, bytes], bool]


class BasicAuth:
    """Users and their bcrypt hashes; `verify` is safe to call from many threads.

    bcrypt is slow on purpose (~70 ms at cost 10), so a verified password is remembered: one
    HMAC digest per user, under a key made at start, compared in constant time. A scrape every
    few seconds then costs a SHA-256, not a bcrypt. A wrong password is never remembered and
    always costs a bcrypt check, an unknown user too (against a hash of the highest configured
    cost), so timing tells no one which users exist.
    """

    def __init__(self, hashes: Mapping[str, str], checker: Checker | None = None) -> None:
        if not hashes:
            raise ValueError("BasicAuth needs at least one user")
        self._hashes = {user: hashed.encode("ascii") for user, hashed in hashes.items()}
        self._checker: Checker = checker or bcrypt.checkpw
        self._decoy = max(self._hashes.values(), key=lambda hashed: int(hashed[4:6]))
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}  # at most one entry per configured user
        self._lock = threading.Lock()
        # A flood of wrong passwords would otherwise take every core; remembered passwords do
        # not wait here, so scrapes with the right one carry on.
        self._checks = threading.BoundedSemaphore(max(1, (os.cpu_count() or 2) // 2))

    def __repr__(self) -> str:
        # The hashes stay out: they can be attacked offline.
        return f"BasicAuth(users={sorted(self._hashes)})"

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(sorted(self._hashes))

    def verify(self, user: str, password: bytes) -> bool:
        stored = self._hashes.get(user)
        if stored is None or len(password) > BCRYPT_MAX_PASSWORD:
            self._check(password[:BCRYPT_MAX_PASSWORD], self._decoy)
            return False
        digest = hmac.new(self._key, password, hashlib.sha256).digest()
        with self._lock:
            remembered = self._verified.get(user)
        if remembered is not None and hmac.compare_digest(remembered, digest):
            return True
        if not self._check(password, stored):
            return False
        with self._lock:
            self._verified[user] = digest
        return True

    def _check(self, password: bytes, hashed: bytes) -> bool:
        with self._checks:
            try:
                return self._checker(password, hashed)
            except ValueError:  # a hash the library will not read: refused, as a wrong password
                return False
