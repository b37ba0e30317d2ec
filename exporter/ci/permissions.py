"""The least-privilege CAM policy for the calls of exporter.ci.services, and the resource a
bucket's calls are checked against. docs/permissions.md explains both; its policy is
`policy([bucket_resource(EXAMPLE_REGION, EXAMPLE_BUCKET)])` (tests/test_permissions.py).

Bucket discovery's listings (each service's `buckets`) are on the service host, not a bucket's:
their actions can only be granted on `*` (Tencent's CI granularity list,
https://www.tencentcloud.com/document/product/1045/58195, marks DescribeMediaBuckets so; the
other listings are the same kind of call). So they get a statement of their own, on `*`, and
never join a statement scoped to buckets.

Thread ownership: no mutable state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from exporter.ci.services import ALL_SERVICES, Endpoint, Service

EXAMPLE_REGION = "ap-guangzhou"
EXAMPLE_BUCKET = "examplebucket-1250000000"

Statement = dict[str, object]


def appid(bucket: str) -> str:
    """The APPID a bucket name ends with (`name-1250000000`), or `<APPID>` when it has none."""
    _, dash, suffix = bucket.rpartition("-")
    return suffix if dash and suffix.isascii() and suffix.isdigit() else "<APPID>"


def bucket_resource(region: str, bucket: str) -> str:
    """CI's six-segment resource for the calls on one bucket's host."""
    return f"qcs::ci:{region}:uid/{appid(bucket)}:bucket/{bucket}/*"


def resource_of(endpoint: Endpoint, region: str, bucket: str) -> str:
    """The resource CAM checks a call of `endpoint` against: `*` for the service host's."""
    return "*" if endpoint.service_host else bucket_resource(region, bucket)


def discovery_actions(services: Iterable[Service] = ALL_SERVICES.values()) -> list[str]:
    """The bucket listings' actions, in the order of the services, each once."""
    return list(dict.fromkeys(service.buckets.action for service in services))


def actions(service: Service) -> list[str]:
    """The service's actions, in the order of its endpoints, each once."""
    return list(dict.fromkeys(endpoint.action for endpoint in service.endpoints))


def policy(
    resources: Sequence[str], services: Iterable[Service] = ALL_SERVICES.values()
) -> dict[str, object]:
    """A CAM policy allowing the services' calls on `resources`: a statement per service (the
    opt-in workflow and batch services' too), so a service that is not polled can be deleted
    from it, then one for bucket discovery on `*` (deleted when no target discovers its
    buckets)."""
    services = list(services)
    statements: list[Statement] = [
        {"effect": "allow", "action": actions(service), "resource": list(resources)}
        for service in services
    ]
    statements.append({"effect": "allow", "action": discovery_actions(services), "resource": ["*"]})
    return {"version": "2.0", "statement": statements}
