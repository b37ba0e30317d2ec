"""Listen addresses ("host:port", ":port", "[ipv6]:port"), for /metrics and the callback
receiver. No state.
"""

from __future__ import annotations

import ipaddress

DEFAULT_PORT = 9873


def parse_listen_address(text: str) -> tuple[str, int]:
    """ "host:port", ":port" (all IPv4 interfaces) or "[ipv6]:port" -> (host, port)."""
    value = text.strip()
    if value.startswith("["):
        host, port_text = _split_bracketed(value, text)
    else:
        host, colon, port_text = value.rpartition(":")
        if not colon:
            raise ValueError(
                f"invalid listen address {text!r}: expected host:port, :port or [ipv6]:port"
            )
        if ":" in host:
            raise ValueError(
                f"invalid listen address {text!r}: an IPv6 address needs brackets,"
                f" e.g. [::1]:{DEFAULT_PORT}"
            )
        if any(ch.isspace() for ch in host):
            raise ValueError(f"invalid listen address {text!r}: the host contains spaces")
        host = host or "0.0.0.0"
    return host, _parse_port(port_text, text)


def _split_bracketed(value: str, text: str) -> tuple[str, str]:
    end = value.find("]")
    if end == -1 or value[end + 1 : end + 2] != ":":
        raise ValueError(
            f"invalid listen address {text!r}: expected [ipv6]:port, e.g. [::1]:{DEFAULT_PORT}"
        )
    host = value[1:end]
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ValueError(
            f"invalid listen address {text!r}: {host!r} is not an IPv6 address"
        ) from None
    return host, value[end + 2 :]


def _parse_port(port_text: str, text: str) -> int:
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise ValueError(
            f"invalid listen address {text!r}: the port must be a number from 0 to 65535"
        )
    return int(port_text)
