"""--web.config.file: TLS, basic auth and response headers, in the Prometheus exporter-toolkit's
format, so one file can serve this exporter and the Go exporters next to it:

    tls_server_config:
      cert_file: server.crt              # relative paths are from this file's directory
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # default NoClientCert
      client_ca_file: clients-ca.crt
      client_allowed_sans: [prometheus.example.com]  # needs RequireAndVerifyClientCert
      min_version: TLS12                 # TLS10 .. TLS13; default TLS12 up to TLS13
      max_version: TLS13
      cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]   # Go's names, TLS 1.2 and older
      prefer_server_cipher_suites: true
    http_server_config:
      http2: true                        # accepted; this server speaks HTTP/1.1
      headers: {X-Frame-Options: deny}
    basic_auth_users:
      prometheus: $2y$10$...             # a bcrypt hash, never the password

Everything is checked when the file is loaded, certificates and keys included, so a bad file
stops the exporter at start (or fails a reload) with one line `file: key: problem`, and never
shows a key's or a password hash's content.

What the toolkit has and Python's ssl module cannot do is refused by name rather than ignored:
inline `cert`/`key`/`client_ca`, `curve_preferences`, the client auth types that ask for a
certificate without verifying it, `rate_limit`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import bcrypt

from exporter.yamlfile import Checks, FileError, load_yaml, quote, read_small_file, read_text

TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users")
TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
)
HTTP_KEYS = ("http2", "headers")

# Keys of the toolkit's format this exporter does not implement: refused with the reason, so
# that nobody believes a setting is in force when it is not.
_UNSUPPORTED = {
    "rate_limit": "is not supported by this exporter",
    "auth_excluded_paths": (
        "is not supported: /healthz and /readyz are always open, every other path needs a user"
    ),
    "tls_server_config.cert": "inline certificates are not supported; use cert_file",
    "tls_server_config.key": "inline keys are not supported; use key_file",
    "tls_server_config.client_ca": "inline CA certificates are not supported; use client_ca_file",
    "tls_server_config.curve_preferences": (
        "is not supported; leave it out to use OpenSSL's defaults (X25519, P-256, ...)"
    ),
}

NO_CLIENT_CERT = "NoClientCert"
VERIFY_IF_GIVEN = "VerifyClientCertIfGiven"
REQUIRE_AND_VERIFY = "RequireAndVerifyClientCert"
_CLIENT_AUTH = {
    NO_CLIENT_CERT: ssl.CERT_NONE,
    VERIFY_IF_GIVEN: ssl.CERT_OPTIONAL,
    REQUIRE_AND_VERIFY: ssl.CERT_REQUIRED,
}
# Go can ask for a client certificate and not verify it; OpenSSL through Python cannot.
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Go's names (crypto/tls CipherSuites()) -> OpenSSL's, for TLS 1.2 and older.
CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
# TLS 1.3's suites are always on, in Go as in OpenSSL: named in the list, they change nothing.
TLS13_CIPHER_SUITES = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
)

# The headers the toolkit lets a web config add, and the values it allows where it limits them.
HEADERS: dict[str, tuple[str, ...]] = {
    "Content-Security-Policy": (),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": (),
    "Strict-Transport-Security": (),
}

# $2a$, $2b$ or $2y$, a cost of 4 to 31, 22 characters of salt and 31 of hash.
_BCRYPT_RE = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}", re.ASCII)
BCRYPT_MAX_PASSWORD = 72  # bcrypt reads no further; the library refuses longer ones
HASH_HINT = "hash it with e.g. htpasswd -nBC 10 \"\" | tr -d ':\\n'"


class WebConfigError(FileError):
    """One line: `<file>: <key.path>: <problem>` (parts that are unknown are left out)."""

    def __init__(self, where: str, problem: str, source: str = "") -> None:
        super().__init__(where, problem, source)


# --- basic auth ---------------------------------------------------------------------------


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


# --- the records --------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSServerConfig:
    cert_file: str
    key_file: str
    client_auth_type: str = NO_CLIENT_CERT
    client_ca_file: str | None = None
    client_allowed_sans: tuple[str, ...] = ()
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    # Built from the files when the record is made: a bad certificate or key fails at load
    # (start or reload), not at the first scrape.
    context: ssl.SSLContext = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise WebConfigError(
                "tls_server_config.min_version",
                f"{self.min_version} is above max_version {self.max_version}",
            )
        object.__setattr__(self, "context", _context(self))

    def client_allowed(self, peer_cert: Mapping[str, Any] | None) -> bool:
        """Whether a verified client certificate names one of client_allowed_sans (any
        certificate passes when the list is empty)."""
        if not self.client_allowed_sans:
            return True
        names = (peer_cert or {}).get("subjectAltName", ())
        return any(
            _san_matches(value, allowed)
            for _, value in names
            for allowed in self.client_allowed_sans
        )


def _san_matches(value: str, allowed: str) -> bool:
    if value == allowed:
        return True
    try:
        # Python writes IPv6 SANs in full (2001:DB8:0:0:0:0:0:1); people write them short.
        return ipaddress.ip_address(value) == ipaddress.ip_address(allowed)
    except ValueError:
        return False


@dataclass(frozen=True)
class WebConfig:
    source: str = ""
    tls: TLSServerConfig | None = None
    auth: BasicAuth | None = None
    headers: tuple[tuple[str, str], ...] = ()  # added to every response
    http2: bool = True  # accepted for compatibility; this server speaks HTTP/1.1


# --- loading ------------------------------------------------------------------------------


def load_web_config(path: str) -> WebConfig:
    """Read, check and build the web config at `path`; WebConfigError on any problem."""
    try:
        text = read_text(path)
    except FileError as exc:
        raise WebConfigError(exc.where, exc.problem, path) from None
    return parse_web_config(text, path, os.path.dirname(os.path.abspath(path)))


def parse_web_config(text: str, source: str, directory: str) -> WebConfig:
    """Parse YAML `text`; `source` names it in errors, `directory` anchors relative paths."""
    try:
        return _parse_top(load_yaml(text), source, directory)
    except FileError as exc:
        raise WebConfigError(exc.where, exc.problem, source) from None


def _parse_top(document: object, source: str, directory: str) -> WebConfig:
    if document is None:
        return WebConfig(source)  # an empty file: plain HTTP, no users, as in the toolkit
    top = _CHECKS.mapping(document, "top level")
    _check_keys(top, "", TOP_KEYS)
    http = _CHECKS.mapping(_or_empty(top.get("http_server_config")), "http_server_config")
    _check_keys(http, "http_server_config", HTTP_KEYS)
    return WebConfig(
        source=source,
        tls=_tls(top.get("tls_server_config"), directory),
        auth=_users(top.get("basic_auth_users")),
        headers=_headers(http.get("headers")),
        http2=_bool(http.get("http2", True), "http_server_config.http2"),
    )


def _tls(value: object, directory: str) -> TLSServerConfig | None:
    path = "tls_server_config"
    raw = _CHECKS.mapping(_or_empty(value), path)
    if not raw:
        return None  # present but empty: plain HTTP, as in the toolkit
    _check_keys(raw, path, TLS_KEYS)
    for key in ("cert_file", "key_file"):
        if raw.get(key) in (None, ""):
            raise WebConfigError(f"{path}.{key}", "required to serve TLS")
    client_auth = _string(raw.get("client_auth_type", NO_CLIENT_CERT), f"{path}.client_auth_type")
    ca_file = raw.get("client_ca_file")
    config = TLSServerConfig(
        cert_file=_file(raw["cert_file"], f"{path}.cert_file", directory),
        key_file=_file(raw["key_file"], f"{path}.key_file", directory),
        client_auth_type=_client_auth(client_auth, ca_file not in (None, "")),
        client_ca_file=None
        if ca_file in (None, "")
        else _file(ca_file, f"{path}.client_ca_file", directory),
        client_allowed_sans=_sans(raw.get("client_allowed_sans"), client_auth),
        min_version=_version(raw.get("min_version", "TLS12"), f"{path}.min_version"),
        max_version=_version(raw.get("max_version", "TLS13"), f"{path}.max_version"),
        cipher_suites=_ciphers(raw.get("cipher_suites")),
        prefer_server_cipher_suites=_bool(
            raw.get("prefer_server_cipher_suites", True), f"{path}.prefer_server_cipher_suites"
        ),
    )
    return config


def _client_auth(value: str, has_ca: bool) -> str:
    where = "tls_server_config.client_auth_type"
    if value in _UNVERIFIED_CLIENT_AUTH:
        raise WebConfigError(
            where,
            f"{value} (a client certificate that is not verified) is not supported; use "
            f"{REQUIRE_AND_VERIFY} or {VERIFY_IF_GIVEN} with client_ca_file",
        )
    if value not in _CLIENT_AUTH:
        raise WebConfigError(
            where, f"unknown value {quote(value)} (allowed: {', '.join(_CLIENT_AUTH)})"
        )
    if value != NO_CLIENT_CERT and not has_ca:
        raise WebConfigError(
            "tls_server_config.client_ca_file", f"required with client_auth_type {value}"
        )
    if value == NO_CLIENT_CERT and has_ca:
        raise WebConfigError(
            "tls_server_config.client_ca_file",
            f"set without client_auth_type (use {REQUIRE_AND_VERIFY} to check client certificates)",
        )
    return value


def _sans(value: object, client_auth: str) -> tuple[str, ...]:
    where = "tls_server_config.client_allowed_sans"
    if value is None:
        return ()
    sans = tuple(
        _string(item, f"{where}[{i}]") for i, item in enumerate(_CHECKS.items(value, where))
    )
    if client_auth != REQUIRE_AND_VERIFY:
        raise WebConfigError(where, f"needs client_auth_type {REQUIRE_AND_VERIFY}")
    return sans


def _version(value: object, where: str) -> str:
    text = _string(value, where)
    if text not in TLS_VERSIONS:
        raise WebConfigError(
            where, f"unknown TLS version {quote(text)} (allowed: {', '.join(TLS_VERSIONS)})"
        )
    return text


def _ciphers(value: object) -> tuple[str, ...]:
    where = "tls_server_config.cipher_suites"
    if value is None:
        return ()
    names = tuple(
        _string(item, f"{where}[{i}]") for i, item in enumerate(_CHECKS.items(value, where))
    )
    for index, name in enumerate(names):
        if name not in CIPHER_SUITES and name not in TLS13_CIPHER_SUITES:
            raise WebConfigError(
                f"{where}[{index}]",
                f"unknown or insecure cipher suite {quote(name)} (Go's names, e.g. "
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)",
            )
    return names


def _file(value: object, where: str, directory: str) -> str:
    text = _string(value, where)
    if not text:
        raise WebConfigError(where, "must not be empty")
    return os.path.join(directory, os.path.expanduser(text))


# --- the TLS context ----------------------------------------------------------------------


class _EncryptedKey(Exception):
    pass


def _refuse_passphrase() -> str:
    # Without a callback OpenSSL would prompt on the terminal for the passphrase.
    raise _EncryptedKey


def _context(config: TLSServerConfig) -> ssl.SSLContext:
    cert_where, key_where = "tls_server_config.cert_file", "tls_server_config.key_file"
    if b"-----BEGIN CERTIFICATE-----" not in _read_pem(config.cert_file, cert_where):
        raise WebConfigError(cert_where, f"{config.cert_file} holds no PEM certificate")
    key = _read_pem(config.key_file, key_where)
    if b"PRIVATE KEY-----" not in key:
        raise WebConfigError(key_where, f"{config.key_file} holds no PEM private key")
    if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in key or b"Proc-Type: 4,ENCRYPTED" in key:
        raise _passphrase_error(config.key_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[config.min_version]
    context.maximum_version = TLS_VERSIONS[config.max_version]
    if config.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    suites = [CIPHER_SUITES[name] for name in config.cipher_suites if name in CIPHER_SUITES]
    if suites:
        try:
            context.set_ciphers(":".join(suites))
        except ssl.SSLError:
            raise WebConfigError(
                "tls_server_config.cipher_suites", "none of these suites is available in OpenSSL"
            ) from None
    try:
        context.load_cert_chain(config.cert_file, config.key_file, password=_refuse_passphrase)
    except _EncryptedKey:
        raise _passphrase_error(config.key_file) from None
    except (ssl.SSLError, OSError):
        raise WebConfigError(
            key_where,
            f"{config.key_file} is not a valid private key for the certificate in "
            f"{config.cert_file}",
        ) from None
    if config.client_ca_file is not None:
        _load_client_ca(context, config.client_ca_file)
    context.verify_mode = _CLIENT_AUTH[config.client_auth_type]
    return context


def _passphrase_error(key_file: str) -> WebConfigError:
    return WebConfigError(
        "tls_server_config.key_file",
        f"{key_file} is protected by a passphrase, which is not supported",
    )


def _load_client_ca(context: ssl.SSLContext, path: str) -> None:
    where = "tls_server_config.client_ca_file"
    data = _read_pem(path, where)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise WebConfigError(where, f"{path} holds no PEM certificate")
    try:
        context.load_verify_locations(cadata=data.decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError):
        raise WebConfigError(where, f"{path} holds a certificate that cannot be read") from None


def _read_pem(path: str, where: str) -> bytes:
    try:
        return read_small_file(path)
    except FileError as exc:
        raise WebConfigError(
            where, f"cannot read {path}: {exc.problem.removeprefix('cannot read file: ')}"
        ) from None


# --- users and headers --------------------------------------------------------------------


def _users(value: object) -> BasicAuth | None:
    where = "basic_auth_users"
    if value is None:
        return None
    raw = _CHECKS.mapping(value, where)
    if not raw:
        return None  # no users: no authentication, as in the toolkit
    hashes: dict[str, str] = {}
    for user, hashed in raw.items():
        user_where = f"{where}.{_key_text(user)}"
        if not user or ":" in user or not user.isprintable():
            raise WebConfigError(user_where, "a user name must be printable text without ':'")
        hashes[user] = _bcrypt_hash(hashed, user_where)
    return BasicAuth(hashes)


def _bcrypt_hash(value: object, where: str) -> str:
    if value is None or value == "":
        raise WebConfigError(where, f"no password hash given ({HASH_HINT})")
    # The value is never shown: when it is not a hash, it is likely the password itself.
    if not isinstance(value, str) or not _BCRYPT_RE.fullmatch(value):
        raise WebConfigError(
            where,
            f"not a bcrypt hash (a password in clear? store its hash: {HASH_HINT})",
        )
    return value


def _headers(value: object) -> tuple[tuple[str, str], ...]:
    where = "http_server_config.headers"
    if value is None:
        return ()
    raw = _CHECKS.mapping(value, where)
    headers: list[tuple[str, str]] = []
    for name, text in raw.items():
        header_where = f"{where}.{_key_text(name)}"
        if name not in HEADERS:
            raise WebConfigError(
                header_where, f"not a header a web config may set (allowed: {', '.join(HEADERS)})"
            )
        content = _string(text if text is not None else "", header_where)
        if any(ch in content for ch in "\r\n\0"):
            raise WebConfigError(header_where, "must be one line")
        allowed = HEADERS[name]
        if content and allowed and content.lower() not in allowed:
            raise WebConfigError(
                header_where, f"{quote(content)} is not allowed (allowed: {', '.join(allowed)})"
            )
        if content:  # blank leaves the header unset, as in the toolkit
            headers.append((name, content))
    return tuple(headers)


# --- small checks -------------------------------------------------------------------------


def _or_empty(value: object) -> object:
    """A section given with nothing under it (`tls_server_config:`) is an empty one."""
    return {} if value is None else value


def _string(value: object, where: str) -> str:
    return _CHECKS.expect(value, str, where, "text")


def _bool(value: object, where: str) -> bool:
    return _CHECKS.expect(value, bool, where, "true or false")


def _check_keys(raw: Mapping[str, Any], path: str, allowed: tuple[str, ...]) -> None:
    _CHECKS.check_keys(
        raw,
        allowed,
        lambda key: f"{path}.{_key_text(key)}" if path else _key_text(key),
        _UNSUPPORTED,
    )


def _key_text(key: str) -> str:
    # Quoted when it could be misread in `file: key.path: problem`.
    plain = (
        key.isprintable() and key.strip() == key and key != "" and not any(c in key for c in ".: ")
    )
    return key if plain else quote(key)


# This file's words for a YAML value's type: "expected a mapping, got a list".
_CHECKS = Checks(
    WebConfigError,
    {
        type(None): "nothing",
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "a mapping",
    },
    lambda value: "an unsupported value",
)
