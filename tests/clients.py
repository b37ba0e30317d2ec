"""Client factories for tests whose subject is not retries or throttling."""

from __future__ import annotations

from exporter.api_stats import ApiStats
from exporter.ci.client import CIClient
from exporter.config import Config, TargetConfig
from exporter.credentials import Credentials, StaticCredentials


def bare_client(target: TargetConfig, config: Config, stats: ApiStats) -> CIClient:
    """One attempt per call and no throttle pacing, as a Poller client_factory: a fault reaches
    the accounting at once, and nothing waits in real time while a test moves a frozen clock.
    Retries and pacing are tests/test_faults.py's subject."""
    assert isinstance(target.credentials, Credentials)
    return CIClient(
        bucket=target.bucket,
        region=target.region,
        endpoint=target.endpoint,
        credentials=StaticCredentials(target.credentials),
        timeout=config.request_timeout,
        stats=stats,
    )
