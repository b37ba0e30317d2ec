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

The keys themselves, the provider protocol and `StaticCredentials` are in
exporter.credentials_keys, the file in exporter.credentials_file, the CVM role in
exporter.credentials_cvm, the ISO 8601 times in exporter.isotime; this module describes where a
target's keys come from and builds the provider for it, and every name of theirs the rest of
the exporter uses is importable from here.

No mutable state of its own: the sources are frozen records; the providers it builds keep
theirs (see their modules).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeAlias

from exporter.credentials_cvm import (
    DEFAULT_METADATA_ENDPOINT,
    DEFAULT_METADATA_TIMEOUT,
    DEFAULT_REFRESH_MARGIN,
    DEFAULT_RETRY_INTERVAL,
    ROLE_NAME_RE,
    ROLE_PATH,
    CVMRoleCredentials,
)
from exporter.credentials_file import DEFAULT_PROFILE, FileCredentials
from exporter.credentials_keys import (
    ENV_SECRET_ID,
    ENV_SECRET_KEY,
    ENV_SESSION_TOKEN,
    MAX_CREDENTIALS_BYTES,
    Clock,
    CredentialProvider,
    Credentials,
    CredentialsError,
    StaticCredentials,
    from_environment,
    header_safe,
)
from exporter.isotime import ISO_HINT, MAX_EPOCH, format_iso_time, parse_iso_time

__all__ = [
    "DEFAULT_METADATA_ENDPOINT",
    "DEFAULT_METADATA_TIMEOUT",
    "DEFAULT_PROFILE",
    "DEFAULT_REFRESH_MARGIN",
    "DEFAULT_RETRY_INTERVAL",
    "ENV_SECRET_ID",
    "ENV_SECRET_KEY",
    "ENV_SESSION_TOKEN",
    "ISO_HINT",
    "MAX_CREDENTIALS_BYTES",
    "MAX_EPOCH",
    "ROLE_NAME_RE",
    "ROLE_PATH",
    "CVMRole",
    "CVMRoleCredentials",
    "Clock",
    "CredentialProvider",
    "CredentialSource",
    "Credentials",
    "CredentialsError",
    "CredentialsFile",
    "FileCredentials",
    "StaticCredentials",
    "credential_key",
    "format_iso_time",
    "from_environment",
    "header_safe",
    "parse_iso_time",
    "provider_for",
]


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
