"""The COS/CI request signature (q-sign-algorithm=sha1).

(method, path, params, headers, keys, key time) -> Authorization header value.
The simulator uses `expected_signature` and `parse_authorization` to verify.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote

TOKEN_HEADER = "x-ci-security-token"
DEFAULT_VALIDITY = 600
CLOCK_LEEWAY = 60


def _encode(text: str) -> str:
    return quote(text.encode("utf-8"), safe="-_.~")


def _canonical(pairs: Mapping[str, str]) -> tuple[str, str]:
    """(k=v&k=v, k;k): keys lower-cased and encoded, values encoded, sorted."""
    encoded = sorted((_encode(k).lower(), _encode(v)) for k, v in pairs.items())
    return "&".join(f"{k}={v}" for k, v in encoded), ";".join(k for k, _ in encoded)


def signed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers that take part in the signature: host, content-*, and x-ci-*/x-cos-*."""
    keep = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in ("host", "content-type", "content-md5", "content-length") or lower.startswith(
            ("x-ci-", "x-cos-")
        ):
            keep[name] = value
    return keep


def expected_signature(
    secret_key: str,
    method: str,
    path: str,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    key_time: str,
) -> str:
    param_str, _ = _canonical(params)
    header_str, _ = _canonical(headers)
    http_string = f"{method.lower()}\n{path}\n{param_str}\n{header_str}\n"
    string_to_sign = f"sha1\n{key_time}\n{hashlib.sha1(http_string.encode()).hexdigest()}\n"
    sign_key = hmac.new(secret_key.encode(), key_time.encode(), hashlib.sha1).hexdigest()
    return hmac.new(sign_key.encode(), string_to_sign.encode(), hashlib.sha1).hexdigest()


def authorization(
    secret_id: str,
    secret_key: str,
    method: str,
    path: str,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    start: int,
    end: int,
) -> str:
    """The Authorization header for a request; `headers` are exactly the ones to sign."""
    key_time = f"{start};{end}"
    _, param_list = _canonical(params)
    _, header_list = _canonical(headers)
    signature = expected_signature(secret_key, method, path, params, headers, key_time)
    return (
        f"q-sign-algorithm=sha1&q-ak={secret_id}&q-sign-time={key_time}&q-key-time={key_time}"
        f"&q-header-list={header_list}&q-url-param-list={param_list}&q-signature={signature}"
    )


def parse_authorization(value: str) -> dict[str, str]:
    """`q-a=b&q-c=d` -> {"q-a": "b", ...}; unknown shapes give an empty or partial dict."""
    fields: dict[str, str] = {}
    for part in value.split("&"):
        key, sep, val = part.partition("=")
        if sep:
            fields[key] = val
    return fields
