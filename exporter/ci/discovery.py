"""Bucket discovery's client: the buckets a service is enabled on, listed on the region's
service host (`https://ci.<Region>.myqcloud.com`), every page, each answer checked as it comes
in (exporter.ci.buckets).

Thread ownership: a DiscoveryClient is shared like a CIClient (see exporter.ci.calls for its
state); a listing's own state lives in the call paging it.

The calls are made, signed, timed out, retried and counted as every other call
(exporter.ci.calls): a DiscoveryClient is a CICaller whose host is the service host, with no
bucket (its self-metrics carry an empty bucket label), and whose refusals name the `*`
resource its actions can only be granted on (exporter.ci.permissions).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from exporter.ci.buckets import (
    BUCKET_PAGE_SIZE,
    MAX_BUCKETS,
    BucketListing,
    is_bucket_id,
    is_region,
    parse_bucket_page,
)
from exporter.ci.calls import Answer, CICaller
from exporter.ci.models import BucketPage, DiscoveredBucket
from exporter.ci.services import Service

__all__ = ["BUCKET_PAGE_SIZE", "MAX_BUCKETS", "DiscoveryClient", "service_endpoint"]

_BUCKET_PREFIX_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def service_endpoint(region: str) -> str:
    """The region's CI service host, where bucket listings are."""
    if not is_region(region):
        raise ValueError(f"not a region: {region!r}")
    return f"https://ci.{region}.myqcloud.com"


class DiscoveryClient(CICaller):
    """`endpoint` defaults to service_endpoint(region); the other arguments are CICaller's."""

    def __init__(self, *, region: str, endpoint: str | None = None, **options: Any) -> None:
        endpoint = endpoint if endpoint is not None else service_endpoint(region)
        super().__init__(bucket="", region=region, endpoint=endpoint, **options)

    def __enter__(self) -> DiscoveryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DiscoveryClient(region={self.region!r}, endpoint={self.endpoint!r})"

    def list_buckets(
        self,
        service: Service,
        *,
        regions: Sequence[str] = (),
        prefix: str = "",
        names: Sequence[str] = (),
        max_buckets: int = MAX_BUCKETS,
    ) -> tuple[DiscoveredBucket, ...]:
        """The buckets `service` is enabled on in `regions` (this client's region when none),
        of the name `prefix` and among `names` when given, all pages, each bucket once.

        ValueError for a region, prefix or name that could not be a COS one, before anything
        is sent. A listing longer than `max_buckets` is an invalid response.
        """
        regions = tuple(dict.fromkeys(regions or (self.region,)))
        names = tuple(dict.fromkeys(names))
        _check_asked(regions, prefix, names)
        params = {"regions": ",".join(regions), "pageSize": str(BUCKET_PAGE_SIZE)}
        if prefix:
            params["bucketName"] = prefix
        if names:
            params["bucketNames"] = ",".join(names)
        listing = BucketListing(regions, prefix, names, BUCKET_PAGE_SIZE, max_buckets)
        number = 0
        while not listing.done:  # BucketListing ends it at its caps
            number += 1
            parse = functools.partial(_bucket_page, service, listing, number)
            self._request(service.buckets.path, {**params, "pageNumber": str(number)}, parse)
        return tuple(listing.buckets.values())


def _check_asked(regions: Sequence[str], prefix: str, names: Sequence[str]) -> None:
    for region in regions:
        if not is_region(region):
            raise ValueError(f"not a region: {region!r}")
    if len(prefix) > 60 or not _BUCKET_PREFIX_CHARS.issuperset(prefix):
        raise ValueError(f"not a bucket name prefix: {prefix!r}")
    for name in names:
        if not is_bucket_id(name):
            raise ValueError(f"not a bucket name (name-APPID): {name!r}")


def _bucket_page(
    service: Service, listing: BucketListing, number: int, body: bytes, answer: Answer
) -> BucketPage:
    # Checked as part of the answer, so the self-metrics count a failed check as an invalid one.
    page = parse_bucket_page(body, service.bucket_list, max_buckets=BUCKET_PAGE_SIZE)
    listing.check(number, page)
    return page
