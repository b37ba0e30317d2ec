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
has and Python's ssl module cannot do is refused by name rather than ignored. The TLS context
is built by exporter.tlscontext, passwords are checked by exporter.basicauth. Threads: the
records are frozen.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

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

from exporter.basicauth import BCRYPT_RE, BasicAuth
from exporter.smallfile import FileError, read_text
from exporter.strictyaml import load_yaml, quote
from exporter.tlscontext import CIPHER_SUITES, TLS_VERSIONS, build_context, client_allowed
from exporter.yamlfile import FORBID, Shaped, json_schema, problem, section, validated

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
# The headers the toolkit lets a web config add, and the values it allows where it limits them.
HEADERS: dict[str, tuple[str, ...]] = {
    "Content-Security-Policy": (),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": (),
    "Strict-Transport-Security": (),
}
HASH_HINT = "hash it with e.g. htpasswd -nBC 10 \"\" | tr -d ':\\n'"


class WebConfigError(FileError):
    """One line: `<file>: <key.path>: <problem>` (parts that are unknown are left out)."""

    def __init__(self, where: str, problem: str, source: str = "") -> None:
        super().__init__(where, problem, source)


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
        object.__setattr__(self, "context", build_context(self))

    def client_allowed(self, peer_cert: Mapping[str, Any] | None) -> bool:
        return client_allowed(self.client_allowed_sans, peer_cert)


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
    if not isinstance(value, str) or not BCRYPT_RE.fullmatch(value):
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


def web_config_schema() -> dict[str, Any]:
    """web-config.schema.json: `python3 -m exporter.webconfig > web-config.schema.json`."""
    return json_schema(_WEB, "Web config of tencent-ci-exporter (README.md, Protecting /metrics)")


_WEB = TypeAdapter(WebConfigFile)

if __name__ == "__main__":
    print(json.dumps(web_config_schema(), indent=2, ensure_ascii=False))
