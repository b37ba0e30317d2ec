"""Bucket listings (discovery) on the service host `ci.<Region>.myqcloud.com`, without HTTP.

Thread ownership: no mutable state; the buckets are read as the simulator holds them (a
bucket's `services` and `created` are set when it is added and replaced whole).

Choices where real CI is not documented (exporter.ci.buckets says which pages were read; the
tests pin these):
- An empty `regions` lists the Host's region (the ai page says so); `All` lists every region;
  otherwise a comma-separated list of region names, anything else 400 InvalidArgument.
- `bucketNames` (exact, at most MAX_NAMES) and `bucketName` (prefix) both apply when both
  are given. `pageNumber` >= 1 (default 1), `pageSize` 1..100 (default 10), else 400
  InvalidArgument; a page past the end lists nothing, with the TotalCount.
- Buckets are listed by CreateTime, then name; TotalCount counts every match.
- A bucket listing on a bucket's host is 404 ResourceNotFound, as is a bucket's call on the
  service host.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lxml import etree

from exporter.ci.buckets import is_region
from exporter.ci.services import SERVICES
from exporter.simulator import render
from exporter.simulator.model import SimBucket

# The path of each service's bucket listing, and the element CI lists a bucket in (the first
# of exporter.ci.services' names: AsrBucketList for speech, not the older SpeechBucketList).
BUCKET_PATHS: dict[str, str] = {s.buckets.path: s.name for s in SERVICES.values()}
LIST_ELEMENTS: dict[str, str] = {s.name: s.bucket_list[0] for s in SERVICES.values()}
MAX_PAGE = 100
MAX_NAMES = 100


class BadRequest(ValueError):
    """400 InvalidArgument with this message."""


def _int(params: Mapping[str, str], name: str, default: int, high: int | None) -> int:
    text = params.get(name, "")
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise BadRequest(f"{name} {text!r} is not an integer")
    value = int(text)
    if value < 1 or (high is not None and value > high):
        raise BadRequest(f"{name} {value} is out of range")
    return value


def _regions(text: str, host_region: str) -> frozenset[str] | None:
    """The regions asked for; None: every region."""
    if not text:
        return frozenset((host_region,))
    regions = [r.strip() for r in text.split(",")]
    if "All" in regions:
        return None
    for region in regions:
        if not is_region(region):
            raise BadRequest(f"regions: {region!r} is not a region")
    return frozenset(regions)


def _names(text: str) -> frozenset[str] | None:
    if not text:
        return None
    names = [n for n in text.split(",") if n]
    if len(names) > MAX_NAMES:
        raise BadRequest(f"bucketNames: at most {MAX_NAMES} names, got {len(names)}")
    return frozenset(names)


def matching(
    buckets: Iterable[SimBucket], service: str, host_region: str, params: Mapping[str, str]
) -> list[SimBucket]:
    """The buckets of the listing asked for, in listing order (BadRequest when it is wrong)."""
    regions = _regions(params.get("regions", ""), host_region)
    names = _names(params.get("bucketNames", ""))
    prefix = params.get("bucketName", "")
    found = [
        b
        for b in buckets
        if service in b.services
        and (regions is None or b.region in regions)
        and (names is None or b.name in names)
        and b.name.startswith(prefix)
    ]
    return sorted(found, key=lambda b: (b.created or 0.0, b.name))


def bucket_list_body(
    service: str,
    host_region: str,
    buckets: Iterable[SimBucket],
    params: Mapping[str, str],
    request_id: str,
) -> bytes:
    """The answer to one page of `service`'s bucket listing (BadRequest when it is wrong)."""
    number = _int(params, "pageNumber", 1, None)
    size = _int(params, "pageSize", 10, MAX_PAGE)
    found = matching(buckets, service, host_region, params)
    first = (number - 1) * size
    root = etree.Element("Response")
    for tag, value in (
        ("RequestId", request_id),
        ("TotalCount", len(found)),
        ("PageNumber", number),
        ("PageSize", size),
    ):
        etree.SubElement(root, tag).text = str(value)
    for bucket in found[first : first + size]:
        item = etree.SubElement(root, LIST_ELEMENTS[service])
        for tag, text in (
            ("BucketId", bucket.name),
            ("Name", bucket.name),
            ("Region", bucket.region),
            ("CreateTime", render.format_time(bucket.created)),
        ):
            etree.SubElement(item, tag).text = text
    return render.XML_DECLARATION + etree.tostring(root, xml_declaration=False, encoding="UTF-8")
