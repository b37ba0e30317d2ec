"""How a target's CI client is built, and what clients signing with the same keys share.

SharedClients is shared by every target's poll thread (each builds its own client when it
takes up a configuration): its maps are guarded by its lock.
"""

from __future__ import annotations

import threading
from typing import Any

from exporter.api_stats import ApiStats
from exporter.ci.client import QUEUE_PAGE_SIZE, CIClient
from exporter.ci.discovery import DiscoveryClient
from exporter.config import Config, DiscoveryConfig, RateLimitConfig, TargetConfig
from exporter.credentials import (
    CredentialProvider,
    CredentialSource,
    credential_key,
    provider_for,
)
from exporter.ratelimit import RequestGate, RetryPolicy, Sleep


class SharedClients:
    """One credential provider per source (a role or a file is fetched once for all its
    targets) and one request gate per credential key and rate limit (the rate limit is the
    account's, not the bucket's). One for the process's life: a rate limit changed by a reload
    and changed back finds its gates again, so one set of keys never has two gates at once."""

    def __init__(self, *, sleep: Sleep | None = None) -> None:
        """`sleep` replaces real waiting (tests that move a frozen clock)."""
        self.sleep = sleep
        self._lock = threading.Lock()
        self._providers: dict[CredentialSource, CredentialProvider] = {}
        self._gates: dict[tuple[str, RateLimitConfig], RequestGate] = {}

    def provider(self, source: CredentialSource) -> CredentialProvider:
        with self._lock:
            provider = self._providers.get(source)
            if provider is None:
                provider = self._providers[source] = provider_for(source)
            return provider

    def gate(self, source: CredentialSource, limit: RateLimitConfig) -> RequestGate:
        key = (credential_key(source), limit)
        with self._lock:
            gate = self._gates.get(key)
            if gate is None:
                gate = RequestGate(
                    limit.requests_per_second, limit.burst, limit.concurrency, sleep=self.sleep
                )
                self._gates[key] = gate
            return gate


def build_client(
    target: TargetConfig,
    config: Config,
    stats: ApiStats,
    *,
    shared: SharedClients | None = None,
    stopping: threading.Event | None = None,
    queue_page_size: int = QUEUE_PAGE_SIZE,
) -> CIClient:
    shared = shared if shared is not None else SharedClients()
    return CIClient(
        bucket=target.bucket,
        region=target.region,
        endpoint=target.endpoint,
        queue_page_size=queue_page_size,
        **_calls(target.credentials, config, stats, shared, stopping),
    )


def build_discovery_client(
    entry: DiscoveryConfig,
    region: str,
    config: Config,
    stats: ApiStats,
    *,
    endpoint: str,
    shared: SharedClients,
    stopping: threading.Event | None = None,
) -> DiscoveryClient:
    """The client listing `region`'s buckets for a discovery entry: its calls share the
    entry's credentials' provider and rate limit with the targets signing with them."""
    return DiscoveryClient(
        region=region,
        endpoint=endpoint,
        **_calls(entry.credentials, config, stats, shared, stopping),
    )


def _calls(
    credentials: CredentialSource,
    config: Config,
    stats: ApiStats,
    shared: SharedClients,
    stopping: threading.Event | None,
) -> dict[str, Any]:
    """How every client's calls are made: signed with the shared provider of `credentials`,
    timed out, retried and gated as the configuration says, counted in `stats`."""
    retry = config.retry
    return {
        "credentials": shared.provider(credentials),
        "timeout": config.request_timeout,
        "stats": stats,
        "retry": RetryPolicy(retry.attempts, retry.initial_backoff, retry.max_backoff),
        "gate": shared.gate(credentials, config.rate_limit),
        "stopping": stopping,
        "sleep": shared.sleep,
    }
