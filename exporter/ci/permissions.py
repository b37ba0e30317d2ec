"""The least-privilege CAM policy for the calls of exporter.ci.services, and the resource a
bucket's calls are checked against. docs/permissions.md explains both; its policy is
`policy([bucket_resource(EXAMPLE_REGION, EXAMPLE_BUCKET)])` (tests/test_permissions.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from exporter.ci.services import SERVICES, Service

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


def actions(service: Service) -> list[str]:
    """The service's actions, in the order of its endpoints, each once."""
    return list(dict.fromkeys(endpoint.action for endpoint in service.endpoints))


def policy(
    resources: Sequence[str], services: Iterable[Service] = SERVICES.values()
) -> dict[str, object]:
    """A CAM policy allowing the services' calls on `resources`: a statement per service, so
    a service that is not polled can be deleted from it."""
    statements: list[Statement] = [
        {"effect": "allow", "action": actions(service), "resource": list(resources)}
        for service in services
    ]
    return {"version": "2.0", "statement": statements}
