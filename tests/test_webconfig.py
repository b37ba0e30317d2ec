"""exporter.webconfig: the exporter-toolkit's web config file, one exact line per mistake, and
the basic-auth check with its cache.

Certificates are made at test time with the `cryptography` package (make_pki), also used by
tests/test_server.py for its real TLS clients.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from exporter.basicauth import BasicAuth
from exporter.webconfig import (
    TLSServerConfig,
    WebConfig,
    WebConfigError,
    load_web_config,
)

PASSWORD = "correct horse battery staple"
# bcrypt of PASSWORD at cost 4, the least bcrypt takes: the tests check behaviour, not slowness.
PASSWORD_HASH = "$2b$04$uD7/du4NLvw95z6Disgj1eutszRppvEL52u51Njq.289G4kXEbRzS"

# --- a small PKI ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server certificate for localhost/127.0.0.1 signed by it, clients."""

    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # SAN prometheus.example, signed by the CA
    client_key: Path
    other_client_cert: Path  # SAN intruder.example, signed by the CA
    other_client_key: Path
    rogue_client_cert: Path  # SAN prometheus.example, self-signed: not from the CA
    rogue_client_key: Path
    encrypted_key: Path  # the server key under a passphrase


_NOW = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
_VALIDITY = datetime.timedelta(days=365 * 100)  # the tests must not start failing one day


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    sans: list[x509.GeneralName],
    *,
    ca: bool = False,
) -> x509.Certificate:
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW)
        .not_valid_after(_NOW + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("test CA", ca_key, None, [], ca=True)
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    signer = ("test CA", ca_key)

    def issue(name: str, sans: list[x509.GeneralName], by_ca: bool = True) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(name, key, signer if by_ca else None, sans)
        return _write(directory, name, cert, key)

    loopback = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server_cert, server_key = issue("server", loopback)
    client_cert, client_key = issue("client", [x509.DNSName("prometheus.example")])
    other_cert, other_key = issue("other-client", [x509.DNSName("intruder.example")])
    rogue_cert, rogue_key = issue("rogue-client", [x509.DNSName("prometheus.example")], False)
    key = serialization.load_pem_private_key(server_key.read_bytes(), password=None)
    encrypted = directory / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return Pki(
        directory,
        ca_path,
        server_cert,
        server_key,
        client_cert,
        client_key,
        other_cert,
        other_key,
        rogue_cert,
        rogue_key,
        encrypted,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def write_config(directory: Path, text: str, name: str = "web.yml") -> str:
    path = directory / name
    path.write_text(text)
    return str(path)


def error_of(directory: Path, text: str) -> str:
    path = write_config(directory, text)
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


def tls_section(pki: Pki, extra: str = "") -> str:
    return (
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n{extra}"
    )


# --- what loads ---------------------------------------------------------------------------


def test_a_full_config_loads(pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Relative paths are from the file's directory, not the working directory.
    path = write_config(
        pki.directory,
        "tls_server_config:\n"
        "  cert_file: server.pem\n"
        "  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        "  client_ca_file: ca.pem\n"
        "  client_allowed_sans: [prometheus.example, 10.0.0.1]\n"
        "  min_version: TLS12\n"
        "  max_version: TLS13\n"
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n"
        "  prefer_server_cipher_suites: false\n"
        "http_server_config:\n"
        "  http2: false\n"
        "  headers:\n"
        "    X-Frame-Options: deny\n"
        "    X-Content-Type-Options: nosniff\n"
        "    Strict-Transport-Security: max-age=31536000\n"
        "    Content-Security-Policy: ''\n"
        "basic_auth_users:\n"
        f"  prometheus: {PASSWORD_HASH}\n"
        f"  grafana: '{PASSWORD_HASH}'\n",
        name="full.yml",
    )
    monkeypatch.chdir(tmp_path)

    config = load_web_config(path)

    assert config.source == path
    tls = config.tls
    assert tls is not None
    assert tls.cert_file == str(pki.server_cert)
    assert tls.key_file == str(pki.server_key)
    assert tls.client_ca_file == str(pki.ca)
    assert tls.client_auth_type == "RequireAndVerifyClientCert"
    assert tls.client_allowed_sans == ("prometheus.example", "10.0.0.1")
    assert tls.cipher_suites == (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "TLS_AES_128_GCM_SHA256",
    )
    assert tls.prefer_server_cipher_suites is False
    assert tls.context.verify_mode == ssl.CERT_REQUIRED
    assert tls.context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls.context.maximum_version == ssl.TLSVersion.TLSv1_3
    tls12_suites = {c["name"] for c in tls.context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12_suites == {"ECDHE-ECDSA-AES128-GCM-SHA256"}
    assert config.http2 is False
    # A blank header is left unset, as in the toolkit.
    assert config.headers == (
        ("X-Frame-Options", "deny"),
        ("X-Content-Type-Options", "nosniff"),
        ("Strict-Transport-Security", "max-age=31536000"),
    )
    assert config.auth is not None
    assert config.auth.users == ("grafana", "prometheus")
    assert PASSWORD_HASH not in repr(config)


def test_defaults(pki: Pki, tmp_path: Path) -> None:
    config = load_web_config(write_config(tmp_path, tls_section(pki)))

    assert config.tls is not None
    assert config.tls.client_auth_type == "NoClientCert"
    assert config.tls.context.verify_mode == ssl.CERT_NONE
    assert (config.tls.min_version, config.tls.max_version) == ("TLS12", "TLS13")
    assert config.tls.context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert (config.auth, config.headers, config.http2) == (None, (), True)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# nothing yet\n",
        "tls_server_config:\nbasic_auth_users:\nhttp_server_config:\n",
        "tls_server_config: {}\nbasic_auth_users: {}\n",
    ],
)
def test_empty_sections_mean_plain_http_for_everyone(tmp_path: Path, text: str) -> None:
    config = load_web_config(write_config(tmp_path, text))

    assert config == WebConfig(config.source)


def test_a_combined_pem_file_serves_as_cert_and_key(pki: Pki, tmp_path: Path) -> None:
    combined = tmp_path / "combined.pem"
    combined.write_bytes(pki.server_cert.read_bytes() + pki.server_key.read_bytes())

    config = load_web_config(
        write_config(
            tmp_path, f"tls_server_config:\n  cert_file: {combined}\n  key_file: {combined}\n"
        )
    )

    assert config.tls is not None


def test_htpasswd_style_2y_hashes_work(tmp_path: Path) -> None:
    # htpasswd -B writes $2y$; Go's and Python's bcrypt read it as $2b$.
    hashed = "$2y$" + PASSWORD_HASH.removeprefix("$2b$")

    config = load_web_config(write_config(tmp_path, f"basic_auth_users:\n  alice: '{hashed}'\n"))

    assert config.auth is not None
    assert config.auth.verify("alice", PASSWORD.encode())
    assert not config.auth.verify("alice", b"wrong")


# --- one line per mistake -----------------------------------------------------------------


TLS_KEYS = (
    "cert_file, key_file, client_auth_type, client_ca_file, client_allowed_sans, min_version, "
    "max_version, cipher_suites, prefer_server_cipher_suites"
)
HINT = "hash it with e.g. htpasswd -nBC 10 \"\" | tr -d ':\\n'"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "tls_config: {}\n",
            "tls_config: unknown key (allowed: tls_server_config, http_server_config, "
            "basic_auth_users)",
        ),
        ("rate_limit: {interval: 1s, burst: 5}\n", "rate_limit: is not supported by this exporter"),
        (
            "auth_excluded_paths: [/metrics]\n",
            "auth_excluded_paths: is not supported: /healthz and /readyz are always open, "
            "every other path needs a user",
        ),
        ("- a\n- b\n", "top level: expected a mapping, got list"),
        ("tls_server_config: [a]\n", "tls_server_config: expected a mapping, got list"),
        (
            "tls_server_config: {cert: x, key: y}\n",
            "tls_server_config.cert: inline certificates are not supported; use cert_file",
        ),
        (
            "tls_server_config: {key: y}\n",
            "tls_server_config.key: inline keys are not supported; use key_file",
        ),
        (
            "tls_server_config: {client_ca: z}\n",
            "tls_server_config.client_ca: inline CA certificates are not supported; "
            "use client_ca_file",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, curve_preferences: [X25519]}\n",
            "tls_server_config.curve_preferences: is not supported; leave it out to use "
            "OpenSSL's defaults (X25519, P-256, ...)",
        ),
        (
            "tls_server_config: {certfile: a}\n",
            f"tls_server_config.certfile: unknown key (allowed: {TLS_KEYS})",
        ),
        (
            "tls_server_config: {key_file: b}\n",
            "tls_server_config.cert_file: required to serve TLS",
        ),
        (
            "tls_server_config: {cert_file: a}\n",
            "tls_server_config.key_file: required to serve TLS",
        ),
        (
            "tls_server_config: {cert_file: 5, key_file: b}\n",
            "tls_server_config.cert_file: expected a string, got integer",
        ),
        (
            "http_server_config: {http2: maybe}\n",
            'http_server_config.http2: expected true or false, got string "maybe"',
        ),
        (
            "http_server_config: {listen: x}\n",
            "http_server_config.listen: unknown key (allowed: http2, headers)",
        ),
        (
            "http_server_config: {headers: {X-Powered-By: me}}\n",
            "http_server_config.headers.X-Powered-By: not a header a web config may set (allowed: "
            "Content-Security-Policy, X-Frame-Options, X-Content-Type-Options, X-XSS-Protection, "
            "Strict-Transport-Security)",
        ),
        (
            "http_server_config: {headers: {X-Frame-Options: allow-all}}\n",
            'http_server_config.headers.X-Frame-Options: "allow-all" is not allowed '
            "(allowed: deny, sameorigin)",
        ),
        (
            "http_server_config: {headers: {X-Content-Type-Options: sniff}}\n",
            'http_server_config.headers.X-Content-Type-Options: "sniff" is not allowed '
            "(allowed: nosniff)",
        ),
        (
            'http_server_config: {headers: {Content-Security-Policy: "a\\r\\nSet-Cookie: x"}}\n',
            "http_server_config.headers.Content-Security-Policy: must be one line",
        ),
        ("basic_auth_users: [alice]\n", "basic_auth_users: expected a mapping, got list"),
        (
            "basic_auth_users:\n  alice:\n",
            f"basic_auth_users.alice: no password hash given ({HINT})",
        ),
        (
            f"basic_auth_users:\n  'al:ice': '{PASSWORD_HASH}'\n",
            "basic_auth_users.\"al:ice\": a user name must be printable text without ':'",
        ),
        (
            f"basic_auth_users:\n  '': '{PASSWORD_HASH}'\n",
            "basic_auth_users.\"\": a user name must be printable text without ':'",
        ),
        (
            f"basic_auth_users:\n  alice: '{PASSWORD_HASH}'\n  alice: '{PASSWORD_HASH}'\n",
            'line 3: duplicate key "alice"',
        ),
        ("tls_server_config: {cert_file: [\n", "line 2, column 1: YAML syntax error: "),
        (
            "basic_auth_users: !!python/object:os.system {}\n",
            "line 1, column 19: explicit YAML tags (!!int, !!binary, !foo, ...) are not "
            "supported; write the plain value",
        ),
    ],
)
def test_errors_are_one_line_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(tmp_path, text)

    assert message.startswith(expected), message


@pytest.mark.parametrize(
    ("hashed", "why"),
    [
        ("hunter2-not-hashed", "a password in clear"),
        ("1234567890", "a number: a password in clear"),
        ("$2b$10$tooshort", "a truncated hash"),
        ("$2b$32$" + PASSWORD_HASH[7:], "cost above 31"),
        ("$2b$03$" + PASSWORD_HASH[7:], "cost below 4"),
        ("$1$saltsalt$abcdefghijklmnopqrstuv", "md5-crypt, not bcrypt"),
        ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "htpasswd SHA-1, not bcrypt"),
    ],
)
def test_a_password_in_clear_or_a_bad_hash_is_refused_without_showing_it(
    tmp_path: Path, hashed: str, why: str
) -> None:
    message = error_of(tmp_path, f"basic_auth_users:\n  alice: '{hashed}'\n")

    assert message == (
        f"basic_auth_users.alice: not a bcrypt hash (a password in clear? store its hash: {HINT})"
    ), why
    assert hashed not in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yml"
    with pytest.raises(WebConfigError) as caught:
        load_web_config(str(path))

    assert str(caught.value) == f"{path}: cannot read file: No such file or directory"


def test_a_directory_is_not_a_web_config(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError) as caught:
        load_web_config(str(tmp_path))

    assert str(caught.value) == f"{tmp_path}: cannot read file: Is a directory"


def tls_error(pki: Pki, tmp_path: Path, lines: str) -> str:
    return error_of(tmp_path, f"tls_server_config:\n{lines}")


def test_missing_cert_file(pki: Pki, tmp_path: Path) -> None:
    message = tls_error(pki, tmp_path, f"  cert_file: missing.pem\n  key_file: {pki.server_key}\n")

    assert message == (
        f"tls_server_config.cert_file: cannot read {tmp_path / 'missing.pem'}: "
        "No such file or directory"
    )


def test_missing_key_file(pki: Pki, tmp_path: Path) -> None:
    message = tls_error(pki, tmp_path, f"  cert_file: {pki.server_cert}\n  key_file: gone.key\n")

    assert message == (
        f"tls_server_config.key_file: cannot read {tmp_path / 'gone.key'}: "
        "No such file or directory"
    )


def test_a_cert_file_that_is_not_pem(pki: Pki, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")

    message = tls_error(pki, tmp_path, f"  cert_file: {junk}\n  key_file: {pki.server_key}\n")

    assert message == f"tls_server_config.cert_file: {junk} holds no PEM certificate"


def test_a_key_file_that_is_a_certificate(pki: Pki, tmp_path: Path) -> None:
    message = tls_error(
        pki, tmp_path, f"  cert_file: {pki.server_cert}\n  key_file: {pki.server_cert}\n"
    )

    assert message == f"tls_server_config.key_file: {pki.server_cert} holds no PEM private key"


def test_a_key_that_does_not_match_the_certificate(pki: Pki, tmp_path: Path) -> None:
    message = tls_error(
        pki, tmp_path, f"  cert_file: {pki.server_cert}\n  key_file: {pki.client_key}\n"
    )

    assert message == (
        f"tls_server_config.key_file: {pki.client_key} is not a valid private key for the "
        f"certificate in {pki.server_cert}"
    )
    assert "PRIVATE" not in message


def test_a_damaged_key_is_not_shown(pki: Pki, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.key"
    text = pki.server_key.read_text()
    damaged.write_text(text.replace(text.splitlines()[1], "A" * 64))

    message = tls_error(pki, tmp_path, f"  cert_file: {pki.server_cert}\n  key_file: {damaged}\n")

    assert message == (
        f"tls_server_config.key_file: {damaged} is not a valid private key for the "
        f"certificate in {pki.server_cert}"
    )


def test_a_key_under_a_passphrase_is_refused_without_a_prompt(pki: Pki, tmp_path: Path) -> None:
    message = tls_error(
        pki, tmp_path, f"  cert_file: {pki.server_cert}\n  key_file: {pki.encrypted_key}\n"
    )

    assert message == (
        f"tls_server_config.key_file: {pki.encrypted_key} is protected by a passphrase, "
        "which is not supported"
    )


def test_a_fifo_is_refused_without_waiting_for_a_writer(pki: Pki, tmp_path: Path) -> None:
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)

    message = tls_error(pki, tmp_path, f"  cert_file: {pki.server_cert}\n  key_file: {fifo}\n")

    assert message == f"tls_server_config.key_file: cannot read {fifo}: not a regular file"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            "  client_auth_type: Always\n",
            'tls_server_config.client_auth_type: unknown value "Always" (allowed: NoClientCert, '
            "VerifyClientCertIfGiven, RequireAndVerifyClientCert)",
        ),
        (
            "  client_auth_type: RequireAnyClientCert\n  client_ca_file: {ca}\n",
            "tls_server_config.client_auth_type: RequireAnyClientCert (a client certificate that "
            "is not verified) is not supported; use RequireAndVerifyClientCert or "
            "VerifyClientCertIfGiven with client_ca_file",
        ),
        (
            "  client_auth_type: RequestClientCert\n",
            "tls_server_config.client_auth_type: RequestClientCert (a client certificate that "
            "is not verified) is not supported; use RequireAndVerifyClientCert or "
            "VerifyClientCertIfGiven with client_ca_file",
        ),
        (
            "  client_auth_type: RequireAndVerifyClientCert\n",
            "tls_server_config.client_ca_file: required with client_auth_type "
            "RequireAndVerifyClientCert",
        ),
        (
            "  client_ca_file: {ca}\n",
            "tls_server_config.client_ca_file: set without client_auth_type (use "
            "RequireAndVerifyClientCert to check client certificates)",
        ),
        (
            "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: {ca}\n"
            "  client_allowed_sans: [a.example]\n",
            "tls_server_config.client_allowed_sans: needs client_auth_type "
            "RequireAndVerifyClientCert",
        ),
        (
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {key}\n",
            "tls_server_config.client_ca_file: {key} holds no PEM certificate",
        ),
        (
            "  min_version: TLS14\n",
            'tls_server_config.min_version: unknown value "TLS14" '
            "(allowed: TLS10, TLS11, TLS12, TLS13)",
        ),
        (
            "  max_version: 1.2\n",
            'tls_server_config.max_version: unknown value "1.2" '
            "(allowed: TLS10, TLS11, TLS12, TLS13)",
        ),
        (
            "  min_version: TLS13\n  max_version: TLS12\n",
            "tls_server_config.min_version: TLS13 is above max_version TLS12",
        ),
        (
            "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_RSA_WITH_RC4_128_SHA]\n",
            "tls_server_config.cipher_suites[1]: unknown or insecure cipher suite "
            '"TLS_RSA_WITH_RC4_128_SHA" (Go\'s names, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)',
        ),
        (
            "  prefer_server_cipher_suites: yes please\n",
            "tls_server_config.prefer_server_cipher_suites: expected true or false, "
            'got string "yes please"',
        ),
    ],
)
def test_tls_settings_errors(pki: Pki, tmp_path: Path, lines: str, expected: str) -> None:
    files = {"ca": pki.ca, "key": pki.server_key}
    message = tls_error(
        pki,
        tmp_path,
        f"  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n" + lines.format(**files),
    )

    assert message == expected.format(**files)


# --- basic auth ---------------------------------------------------------------------------


class CountingChecker:
    """bcrypt.checkpw, counting its calls and the hashes it was given."""

    def __init__(self) -> None:
        self.hashes: list[bytes] = []

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.hashes.append(hashed)
        return bcrypt.checkpw(password, hashed)


def auth_with(checker: CountingChecker, **users: str) -> BasicAuth:
    return BasicAuth(users or {"alice": PASSWORD_HASH}, checker=checker)


def test_right_password_wrong_password_unknown_user() -> None:
    auth = BasicAuth({"alice": PASSWORD_HASH})

    assert auth.verify("alice", PASSWORD.encode())
    assert not auth.verify("alice", b"wrong")
    assert not auth.verify("alice", b"")
    assert not auth.verify("bob", PASSWORD.encode())
    assert not auth.verify("Alice", PASSWORD.encode())


def test_a_verified_password_is_remembered() -> None:
    checker = CountingChecker()
    auth = auth_with(checker)

    results = [auth.verify("alice", PASSWORD.encode()) for _ in range(5)]

    assert results == [True] * 5
    assert len(checker.hashes) == 1


def test_a_wrong_password_always_costs_a_bcrypt_check() -> None:
    checker = CountingChecker()
    auth = auth_with(checker)
    assert auth.verify("alice", PASSWORD.encode())  # remembered from now on

    results = [auth.verify("alice", b"guess") for _ in range(3)]

    assert results == [False] * 3
    assert len(checker.hashes) == 4  # the first right one, then one per wrong guess
    assert auth.verify("alice", PASSWORD.encode())
    assert len(checker.hashes) == 4


def test_an_unknown_user_costs_a_bcrypt_check_against_the_costliest_hash() -> None:
    cheap = bcrypt.hashpw(b"x", bcrypt.gensalt(4)).decode()
    dearer = bcrypt.hashpw(b"y", bcrypt.gensalt(5)).decode()
    checker = CountingChecker()
    auth = auth_with(checker, alice=cheap, bob=dearer)

    assert not auth.verify("mallory", b"y")  # bob's password, for a user that does not exist
    assert not auth.verify("mallory", b"y")

    assert checker.hashes == [dearer.encode()] * 2


def test_a_password_past_bcrypts_72_bytes_is_wrong_and_still_costs_a_check() -> None:
    long_password = b"p" * 72
    hashed = bcrypt.hashpw(long_password, bcrypt.gensalt(4)).decode()
    checker = CountingChecker()
    auth = auth_with(checker, alice=hashed)

    # bcrypt ignores bytes past 72, so this would pass if it were checked as it is.
    assert not auth.verify("alice", long_password + b"-and-more")
    assert len(checker.hashes) == 1
    assert auth.verify("alice", long_password)


def test_a_hash_the_library_cannot_read_counts_as_a_wrong_password() -> None:
    def refuses(password: bytes, hashed: bytes) -> bool:
        raise ValueError("Invalid salt")

    auth = BasicAuth({"alice": PASSWORD_HASH}, checker=refuses)

    assert not auth.verify("alice", PASSWORD.encode())


def test_repr_shows_users_not_hashes() -> None:
    auth = BasicAuth({"alice": PASSWORD_HASH, "bob": PASSWORD_HASH})

    assert repr(auth) == "BasicAuth(users=['alice', 'bob'])"


# --- client certificate names -------------------------------------------------------------


@pytest.mark.parametrize(
    ("sans", "allowed", "expected"),
    [
        ((("DNS", "prometheus.example"),), ("prometheus.example",), True),
        ((("DNS", "other.example"), ("email", "ops@example.com")), ("ops@example.com",), True),
        ((("URI", "spiffe://example/prometheus"),), ("spiffe://example/prometheus",), True),
        ((("IP Address", "2001:DB8:0:0:0:0:0:1"),), ("2001:db8::1",), True),
        ((("IP Address", "10.0.0.1"),), ("10.0.0.2",), False),
        ((("DNS", "prometheus.example.evil"),), ("prometheus.example",), False),
        ((), ("prometheus.example",), False),
    ],
)
def test_client_allowed_sans(
    pki: Pki, sans: tuple[tuple[str, str], ...], allowed: tuple[str, ...], expected: bool
) -> None:
    tls = TLSServerConfig(
        str(pki.server_cert),
        str(pki.server_key),
        client_auth_type="RequireAndVerifyClientCert",
        client_ca_file=str(pki.ca),
        client_allowed_sans=allowed,
    )

    assert tls.client_allowed({"subjectAltName": sans}) is expected
    assert tls.client_allowed(None) is False


def test_without_allowed_sans_any_verified_certificate_passes(pki: Pki) -> None:
    tls = TLSServerConfig(str(pki.server_cert), str(pki.server_key))

    assert tls.client_allowed({"subjectAltName": (("DNS", "anything"),)})
    assert tls.client_allowed(None)
