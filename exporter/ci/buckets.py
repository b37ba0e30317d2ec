"""Bucket listings (discovery): a page's body -> BucketPage, and the checks a listing's pages
pass in order, as exporter.ci.listing does for queue listings.

Thread ownership: a BucketListing belongs to the one thread paging that listing; the module
holds no other mutable state.

What the pages say (exporter.ci.services names each service's page): `GET /<service>bucket`
on `ci.<Region>.myqcloud.com` with `regions`, `bucketNames` (exact), `bucketName` (prefix),
`pageNumber` (default 1) and `pageSize` ("greater than 0 and at most 100", default 10:
cloud.tencent.com/document/api/460/95750, /document/product/1292/48988, /document/api/436/79597).
The answer is `<Response>` with RequestId, TotalCount, PageNumber, PageSize and one element per
bucket (`MediaBucketList`, `AsrBucketList`, ...), each with BucketId, Name ("the same as
BucketId"), Region and CreateTime (doc adds AliasBucketId, not read).

Decisions where the pages are silent (the simulator, exporter.simulator.discovery, holds to
them):
- `regions` is always sent, the client's own region unless told otherwise: the ai page says an
  empty `regions` answers for the Host's region, the others say nothing.
- A bucket outside the regions, prefix or names asked for is an invalid answer: polled, it
  would be polled on the wrong host or against the configuration.
- BucketId and Region become a host name (`<BucketId>.ci.<Region>.myqcloud.com`): anything
  but a COS bucket name (`name-APPID`, lower-case letters, digits, dashes) or a region name
  is refused, never sent on. A missing Name is the BucketId.
- A page listing more buckets than the pageSize asked for, TotalCount above MAX_BUCKETS, a page
  listing only buckets already listed, or a listing not done within its pages is refused, as
  for queue listings. An empty page ends the listing (buckets went since TotalCount was said).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lxml import etree

from exporter.ci.fields import count, field_time, one_line
from exporter.ci.models import BucketPage, CIInvalidResponse, DiscoveredBucket
from exporter.ci.parse import child_texts, response_root

BUCKET_PAGE_SIZE = 100  # the documented maximum of pageSize
# COS allows 200 buckets per account by default, 1,000 on request; fifty times the default.
MAX_BUCKETS = 10_000
MAX_BUCKET_PAGES = MAX_BUCKETS // BUCKET_PAGE_SIZE
# COS: lower-case letters, digits and dashes, with the APPID after the last dash; the name
# with `-APPID` is at most 60 characters.
BUCKET_ID_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?-[0-9]{1,12}\Z")
REGION_RE = re.compile(r"[a-z]{2,8}(?:-[a-z0-9]{1,16}){1,3}\Z")
_FIELDS = frozenset(("BucketId", "Name", "Region", "CreateTime"))


def _invalid(message: str) -> CIInvalidResponse:
    return CIInvalidResponse(message, retryable=False)


def is_bucket_id(text: str) -> bool:
    return bool(BUCKET_ID_RE.match(text))


def is_region(text: str) -> bool:
    return bool(REGION_RE.match(text))


def _bucket(element: etree._Element, where: str) -> DiscoveredBucket:
    fields = child_texts(element, _FIELDS)
    bucket_id = fields.get("BucketId", "")
    region = fields.get("Region", "")
    name = fields.get("Name") or bucket_id
    if not bucket_id or not region:
        raise CIInvalidResponse(f"{where}: missing {'BucketId' if not bucket_id else 'Region'}")
    for field, value, valid in (
        ("BucketId", bucket_id, is_bucket_id(bucket_id)),
        ("Name", name, is_bucket_id(name)),
        ("Region", region, is_region(region)),
    ):
        if not valid:
            raise _invalid(f"{where}: {field}: not a valid value: {one_line(repr(value), 80)}")
    return DiscoveredBucket(bucket_id, name, region, field_time(fields, "CreateTime", where))


def parse_bucket_page(body: bytes, elements: Sequence[str], *, max_buckets: int) -> BucketPage:
    """One page of a bucket listing whose buckets come in `elements`; more than `max_buckets`
    of them is an invalid answer (refused before any more is built)."""
    root = response_root(body)
    buckets: list[DiscoveredBucket] = []
    scalars: dict[str, str | None] = {}
    for child in root:
        tag = child.tag
        if tag in elements:
            if not len(child):
                continue  # <MediaBucketList/>: an empty listing, as the pages' templates show
            if len(buckets) >= max_buckets:
                raise _invalid(f"more than the {max_buckets} buckets asked for")
            buckets.append(_bucket(child, f"{tag}[{len(buckets) + 1}]"))
        elif tag in ("TotalCount", "PageNumber", "PageSize"):
            scalars[tag] = child.text
    if "TotalCount" not in scalars:
        raise CIInvalidResponse("missing TotalCount")
    return BucketPage(
        buckets=tuple(buckets),
        total_count=count(scalars.get("TotalCount"), "TotalCount"),
        page_number=count(scalars.get("PageNumber"), "PageNumber"),
        page_size=count(scalars.get("PageSize"), "PageSize"),
    )


class BucketListing:
    """The checks of one bucket listing's pages (see the module), and the buckets so far."""

    def __init__(
        self,
        regions: Sequence[str],
        prefix: str = "",
        names: Sequence[str] = (),
        page_size: int = BUCKET_PAGE_SIZE,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        self.buckets: dict[str, DiscoveredBucket] = {}
        self.done = False
        self._regions = frozenset(regions)
        self._prefix = prefix
        self._names = frozenset(names)
        self._max_buckets = max_buckets
        self._max_pages = max(1, -(-max_buckets // page_size))

    def check(self, number: int, page: BucketPage) -> None:
        if page.total_count > self._max_buckets:
            raise _invalid(
                f"TotalCount {page.total_count} is more than the {self._max_buckets} buckets "
                "a listing may hold"
            )
        if not page.buckets:
            self.done = True
            return
        for bucket in page.buckets:
            self._check_asked(bucket)
        new = {b.bucket_id: b for b in page.buckets if b.bucket_id not in self.buckets}
        if not new:
            raise _invalid(
                f"page {number} lists only buckets already listed "
                f"({len(self.buckets)} of TotalCount {page.total_count})"
            )
        listed = len(self.buckets) + len(new)
        if listed > self._max_buckets:
            raise _invalid(f"listing longer than {self._max_buckets} buckets")
        done = listed >= page.total_count
        if not done and number >= self._max_pages:
            raise _invalid(f"listing did not end within {self._max_pages} pages")
        self.buckets.update(new)
        self.done = done

    def _check_asked(self, bucket: DiscoveredBucket) -> None:
        if bucket.region not in self._regions:
            raise _invalid(f"bucket {bucket.bucket_id}: region {bucket.region} not asked for")
        if not bucket.bucket_id.startswith(self._prefix):
            raise _invalid(f"bucket {bucket.bucket_id}: not of the prefix asked for")
        if self._names and bucket.bucket_id not in self._names:
            raise _invalid(f"bucket {bucket.bucket_id}: not one of the names asked for")
