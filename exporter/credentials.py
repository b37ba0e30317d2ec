"""Where keys come from. Secrets are never part of a repr, a log line or an error."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

ENV_SECRET_ID = "TENCENTCLOUD_SECRET_ID"
ENV_SECRET_KEY = "TENCENTCLOUD_SECRET_KEY"
ENV_SESSION_TOKEN = "TENCENTCLOUD_SESSION_TOKEN"


@dataclass(frozen=True)
class Credentials:
    secret_id: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


class CredentialProvider(Protocol):
    def get(self) -> Credentials: ...


@dataclass(frozen=True)
class StaticCredentials:
    credentials: Credentials

    def get(self) -> Credentials:
        return self.credentials


def from_environment(environ: Mapping[str, str] | None = None) -> Credentials | None:
    env = os.environ if environ is None else environ
    secret_id, secret_key = env.get(ENV_SECRET_ID, ""), env.get(ENV_SECRET_KEY, "")
    if not secret_id or not secret_key:
        return None
    return Credentials(secret_id, secret_key, env.get(ENV_SESSION_TOKEN) or None)
