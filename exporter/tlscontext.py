"""The ssl.SSLContext a web config's tls_server_config describes, and the check of a verified
client certificate's names against client_allowed_sans. Errors are FileError(key path,
problem) naming the file, never showing a key's content.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from exporter.smallfile import FileError, read_small_file


class TLSSettings(Protocol):
    """What the context is built from: exporter.webconfig.TLSServerConfig's settings."""

    @property
    def cert_file(self) -> str: ...
    @property
    def key_file(self) -> str: ...
    @property
    def client_auth_type(self) -> str: ...
    @property
    def client_ca_file(self) -> str | None: ...
    @property
    def min_version(self) -> str: ...
    @property
    def max_version(self) -> str: ...
    @property
    def cipher_suites(self) -> tuple[str, ...]: ...
    @property
    def prefer_server_cipher_suites(self) -> bool: ...


CLIENT_AUTH = {
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


def client_allowed(allowed_sans: Sequence[str], peer_cert: Mapping[str, Any] | None) -> bool:
    """Whether a verified client certificate names one of `allowed_sans` (any certificate
    passes when there are none)."""
    if not allowed_sans:
        return True
    names = (peer_cert or {}).get("subjectAltName", ())
    return any(_san_matches(value, allowed) for _, value in names for allowed in allowed_sans)


def _san_matches(value: str, allowed: str) -> bool:
    if value == allowed:
        return True
    try:
        # Python writes IPv6 SANs in full (2001:DB8:0:0:0:0:0:1); people write them short.
        return ipaddress.ip_address(value) == ipaddress.ip_address(allowed)
    except ValueError:
        return False


class _EncryptedKey(Exception):
    pass


def _refuse_passphrase() -> str:
    # Without a callback OpenSSL would prompt on the terminal for the passphrase.
    raise _EncryptedKey


def build_context(config: TLSSettings) -> ssl.SSLContext:
    cert_where, key_where = "tls_server_config.cert_file", "tls_server_config.key_file"
    if b"-----BEGIN CERTIFICATE-----" not in _read_pem(config.cert_file, cert_where):
        raise FileError(cert_where, f"{config.cert_file} holds no PEM certificate")
    key = _read_pem(config.key_file, key_where)
    if b"PRIVATE KEY-----" not in key:
        raise FileError(key_where, f"{config.key_file} holds no PEM private key")
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
            raise FileError(
                "tls_server_config.cipher_suites", "none of these suites is available in OpenSSL"
            ) from None
    try:
        context.load_cert_chain(config.cert_file, config.key_file, password=_refuse_passphrase)
    except _EncryptedKey:
        raise _passphrase_error(config.key_file) from None
    except (ssl.SSLError, OSError):
        raise FileError(
            key_where,
            f"{config.key_file} is not a valid private key for the certificate in "
            f"{config.cert_file}",
        ) from None
    if config.client_ca_file is not None:
        _load_client_ca(context, config.client_ca_file)
    context.verify_mode = CLIENT_AUTH[config.client_auth_type]
    return context


def _passphrase_error(key_file: str) -> FileError:
    return FileError(
        "tls_server_config.key_file",
        f"{key_file} is protected by a passphrase, which is not supported",
    )


def _load_client_ca(context: ssl.SSLContext, path: str) -> None:
    where = "tls_server_config.client_ca_file"
    data = _read_pem(path, where)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise FileError(where, f"{path} holds no PEM certificate")
    try:
        context.load_verify_locations(cadata=data.decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError):
        raise FileError(where, f"{path} holds a certificate that cannot be read") from None


def _read_pem(path: str, where: str) -> bytes:
    try:
        return read_small_file(path)
    except FileError as exc:
        raise FileError(
            where, f"cannot read {path}: {exc.problem.removeprefix('cannot read file: ')}"
        ) from None
