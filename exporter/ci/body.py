"""The body of an answer, read raw and bounded: neither the bytes received nor, for gzip and
deflate, the bytes inflated may pass the cap, and a refused body is dropped before the error
leaves (nothing of it outlives the call, whatever keeps the traceback).

Thread ownership: no state; each call reads its own response.
"""

from __future__ import annotations

import zlib

import requests

from exporter.ci.models import CIInvalidResponse

READ_CHUNK = 64 * 1024


def _too_large(family: str, cap: int) -> CIInvalidResponse:
    return CIInvalidResponse(
        f"GET {family}: body larger than {cap} bytes", endpoint=family, retryable=False
    )


def read_body(response: requests.Response, family: str, cap: int) -> bytes:
    """The body, inflated when gzip or deflate; CIInvalidResponse as soon as more than `cap`
    bytes came (compressed) or would come out (inflated). Peak memory about twice `cap`."""
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    inflate = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflate = zlib.decompressobj(32 + zlib.MAX_WBITS)  # a zlib or a gzip header
    elif encoding not in ("", "identity"):
        raise CIInvalidResponse(
            f"GET {family}: body in an encoding not asked for", endpoint=family, retryable=False
        )
    declared = response.headers.get("Content-Length", "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > cap:
        raise _too_large(family, cap)
    chunks: list[bytes] = []
    received = inflated = 0
    try:
        # stream(): a chunked body comes chunk by chunk, so the cap is seen as soon as passed.
        for data in response.raw.stream(READ_CHUNK, decode_content=False):
            received += len(data)
            if received > cap:
                raise _too_large(family, cap)
            if inflate is not None:
                room = cap - inflated + 1
                data = inflate.decompress(data, room)
                if len(data) >= room:
                    raise _too_large(family, cap)
            inflated += len(data)
            chunks.append(data)
        if inflate is not None and not inflate.eof:
            raise CIInvalidResponse(f"GET {family}: compressed body cut short", endpoint=family)
    except zlib.error:
        chunks.clear()
        raise CIInvalidResponse(
            f"GET {family}: body is not valid {encoding}", endpoint=family
        ) from None
    except BaseException:
        # Nothing of a refused body outlives the call, whatever keeps the traceback.
        chunks.clear()
        raise
    return b"".join(chunks)
