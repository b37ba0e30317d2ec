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

Declared below like exporter.config, and checked when the file is loaded, certificates and keys
included, so a bad file stops the exporter at start (or fails a reload) with one line
`file: key: problem`, and never shows a key's or a password hash's content. What the toolkit
has and Python's ssl module cannot do is refused by name rather than ignored. Threads: the
records are frozen; BasicAuth guards its cache with its own lock.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import bcrypt
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StrictBool,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    with_config,
)
from typing_extensions import TypedDict

from exporter.yamlfile import (
    FORBID,
    FileError,
    Shaped,
    json_schema,
    load_yaml,
    problem,
    quote,
    read_small_file,
    read_text,
    section,
    validated,
)

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
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
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
    # TLS 1.3's suites are always on, in Go as in OpenSSL: named in the list, they change nothing.
    "TLS_AES_128_GCM_SHA256": "",
    "TLS_AES_256_GCM_SHA384": "",
    "TLS_CHACHA20_POLY1305_SHA256": "",
}
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


def _tls_file(value: object) -> object:
    if value in (None, ""):
        raise problem("required to serve TLS")
    return value


def _in_directory(text: str | None, info: ValidationInfo) -> str | None:
    """Relative to the web config's directory; "" is no file."""
    if not text:
        return None
    return os.path.join(info.context or "", os.path.expanduser(text))


def _verified(value: object) -> object:
    # Go can ask for a client certificate and not verify it; OpenSSL through Python cannot.
    if value in ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert"):
        raise problem(
            f"{value} (a client certificate that is not verified) is not supported; use "
            "RequireAndVerifyClientCert or VerifyClientCertIfGiven with client_ca_file"
        )
    return value


def _client_ca(path: str | None, info: ValidationInfo) -> str | None:
    auth = info.data.get("client_auth_type", "NoClientCert")
    if auth != "NoClientCert" and path is None:
        raise problem(f"required with client_auth_type {auth}")
    if auth == "NoClientCert" and path is not None:
        why = "use RequireAndVerifyClientCert to check client certificates"
        raise problem(f"set without client_auth_type ({why})")
    return path


def _sans(sans: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
    if sans and info.data.get("client_auth_type") != "RequireAndVerifyClientCert":
        raise problem("needs client_auth_type RequireAndVerifyClientCert")
    return sans


def _suite(name: str) -> str:
    if name not in CIPHER_SUITES:
        example = "Go's names, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        raise problem(f"unknown or insecure cipher suite {quote(name)} ({example})")
    return name


File = Annotated[
    str,
    Field(strict=True, default=None, validate_default=True),
    AfterValidator(_in_directory),
    BeforeValidator(_tls_file),
]
Version = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
Suite = Annotated[str, AfterValidator(_suite), WithJsonSchema({"enum": list(CIPHER_SUITES)})]


@section
@dataclass(frozen=True)
class TLSServerConfig:
    cert_file: File
    key_file: File
    client_auth_type: Annotated[
        Literal["NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"],
        BeforeValidator(_verified),
    ] = "NoClientCert"
    client_ca_file: Annotated[
        str | None,
        Field(strict=True, validate_default=True),
        AfterValidator(_in_directory),
        AfterValidator(_client_ca),
    ] = None
    client_allowed_sans: Annotated[tuple[str, ...], AfterValidator(_sans)] = ()
    min_version: Version = "TLS12"
    max_version: Version = "TLS13"
    cipher_suites: tuple[Suite, ...] = ()
    prefer_server_cipher_suites: StrictBool = True
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


def _hash(value: object) -> str:
    if value is None or value == "":
        raise problem(f"no password hash given ({HASH_HINT})")
    # The value is never shown: when it is not a hash, it is likely the password itself.
    if not isinstance(value, str) or not _BCRYPT_RE.fullmatch(value):
        raise problem(f"not a bcrypt hash (a password in clear? store its hash: {HASH_HINT})")
    return value


def _users(value: Any, validate: Callable[[Any], dict[str, str]], info: object) -> BasicAuth | None:
    hashes = validate(value) if value is not None else {}
    for user in hashes:
        if not user or ":" in user or not user.isprintable():
            raise problem("a user name must be printable text without ':'", user)
    return BasicAuth(hashes) if hashes else None  # no users: no authentication, as in the toolkit


def _headers(value: Any, validate: Callable[[Any], dict[str, str | None]], info: object) -> Any:
    allowed = f"(allowed: {', '.join(HEADERS)})"
    for name in value if isinstance(value, dict) else ():
        if name not in HEADERS:
            raise problem(f"not a header a web config may set {allowed}", name)
    headers = []
    for name, content in validate(value if value is not None else {}).items():
        if content and any(ch in content for ch in "\r\n\0"):
            raise problem("must be one line", name)
        if content and HEADERS[name] and content.lower() not in HEADERS[name]:
            why = f"(allowed: {', '.join(HEADERS[name])})"
            raise problem(f"{quote(content)} is not allowed {why}", name)
        if content:  # blank leaves the header unset, as in the toolkit
            headers.append((name, content))
    return tuple(headers)


Headers = with_config(FORBID)(
    TypedDict("Headers", {name: str | None for name in HEADERS}, total=False)  # type: ignore[operator]
)


@with_config(FORBID)
class HTTPServerConfig(TypedDict, total=False):
    http2: StrictBool
    headers: Annotated[tuple[tuple[str, str], ...], Shaped(Headers, _headers)]


@with_config(FORBID)
class WebConfigFile(TypedDict, total=False):
    # Present but empty: plain HTTP, as in the toolkit.
    tls_server_config: Annotated[
        TLSServerConfig | None, BeforeValidator(lambda v: None if v == {} else v)
    ]
    http_server_config: HTTPServerConfig | None
    basic_auth_users: Annotated[
        BasicAuth | None, Shaped(dict[str, Annotated[str, BeforeValidator(_hash)]], _users)
    ]


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
        # An empty file: plain HTTP, no users, as in the toolkit.
        found = validated(_WEB, load_yaml(text) or {}, directory, "basic_auth_users", _UNSUPPORTED)
    except FileError as exc:
        raise WebConfigError(exc.where, exc.problem, source) from None
    http = found.get("http_server_config") or {}
    return WebConfig(
        source,
        found.get("tls_server_config"),
        found.get("basic_auth_users"),
        http.get("headers", ()),
        http.get("http2", True),
    )


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


def web_config_schema() -> dict[str, Any]:
    """web-config.schema.json: `python3 -m exporter.webconfig > web-config.schema.json`."""
    return json_schema(_WEB, "Web config of tencent-ci-exporter (README.md, Protecting /metrics)")


_WEB = TypeAdapter(WebConfigFile)

if __name__ == "__main__":
    print(json.dumps(web_config_schema(), indent=2, ensure_ascii=False))
