"""--demo: the simulator with a lively seeded workload, and a config pointing the exporter at it.

Its healthy queues stay healthy (well within MaxConcurrent, 2% of their jobs failing), and it
shows these problems, each with the alerts of deploy/prometheus/rules it raises:

- `archive-paused` is paused; its jobs wait in Pause (TencentCIQueuePaused).
- `tts-flaky` fails 40% of its jobs, four in five of those with InternalError and the rest with
  four other codes (TencentCIJobFailureRatioHigh; TencentCIJobFailureCodeBurst for
  InternalError).
- `asr-backlog` gets a surge of jobs for 15 minutes of every hour, from the start: its backlog
  grows to tens of jobs, then drains; its slots stay busy for about 35 minutes
  (TencentCIQueueSaturated pends, and fires for a few minutes an hour).
- CI throttles bucket `media-1250000001`: one call in THROTTLE_EVERY is answered by a gateway's
  bare 503, the retry goes through (TencentCIApiThrottled; its polls do not fail).

The buckets of DEMO_DISCOVERED_REGION are not named in the configuration: bucket discovery
finds them (`discovery:`, exporter.poll.discovery), as a team with many buckets would. And the
simulator sends every finished job's and run's callback to the exporter's receiver, as CI
would to a queue's NotifyConfig URL: failures show within a second, polls reconcile.

tests/test_demo_workload.py checks this over two simulated hours.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

from exporter.ci.services import ALL_SERVICES, SERVICES
from exporter.config import CallbacksConfig, Config, DiscoveryConfig, ServiceConfig, TargetConfig
from exporter.credentials import Credentials
from exporter.receiver import CallbackReceiver
from exporter.simulator import DEMO_SECRET_ID, DEMO_SECRET_KEY, Fault, Simulator, build_demo
from exporter.simulator.callbacks import CallbackSender
from exporter.simulator.faults import FaultSet
from exporter.simulator.streams import Workload
from exporter.simulator.workload import DEMO_THROTTLED_BUCKET

DEMO_POLL_INTERVAL = 5.0
# One call in this many to the throttled bucket is throttled (8%, over the alert's 5%). A
# throttled call's retry comes long before the bucket's next turn, so no call fails for good.
THROTTLE_EVERY = 12
DEMO_DISCOVERED_REGION = "ap-shanghai"
DEMO_DISCOVERY_INTERVAL = 60.0


class EveryNthCall(FaultSet):
    """The simulator's faults, and `fault` answering every `every`-th request to its bucket,
    the first included: a steady share of the bucket's calls, not a random one."""

    def __init__(self, seed: int, fault: Fault, every: int) -> None:
        if fault.bucket is None or every < 2:
            raise ValueError("an every-nth fault needs a bucket and every >= 2")
        super().__init__(seed)
        self.fault = fault
        self.every = every
        self._calls = 0
        self._calls_lock = threading.Lock()

    def pick(
        self, bucket: str, family: str, listing: bool = False, jobs: bool = False
    ) -> Fault | None:
        if bucket == self.fault.bucket:
            with self._calls_lock:
                turn = self._calls % self.every == 0
                self._calls += 1
                if turn:
                    self.fault.hits += 1
            if turn:
                return self.fault
        return super().pick(bucket, family, listing, jobs)


def throttle(sim: Simulator, bucket: str = DEMO_THROTTLED_BUCKET) -> Fault:
    """Make CI throttle one call in THROTTLE_EVERY to `bucket`, with a bare 503 (a gateway's
    HTML page, no CI error Code); the simulator's other faults keep working."""
    fault = Fault("html", bucket=bucket, status=503)
    faults = EveryNthCall(sim.seed, fault, THROTTLE_EVERY)
    for other in sim.faults.active():
        faults.add(other)
    sim.faults = faults
    return fault


def demo_config(
    sim: Simulator,
    poll_interval: float = DEMO_POLL_INTERVAL,
    *,
    discover: bool = True,
    callbacks: bool = False,
) -> Config:
    """One target per simulated bucket, polling the tags its workload uses; with `discover`,
    the buckets of DEMO_DISCOVERED_REGION are found by discovery (the Poller then needs
    demo_endpoints), with the tags their workloads use. With `callbacks`, a receiver on a
    loopback port the OS picks, for send_demo_callbacks."""
    credentials = Credentials(DEMO_SECRET_ID, DEMO_SECRET_KEY)
    targets: list[TargetConfig] = []
    found: dict[str, tuple[str, ...]] = {}
    for workload in sim.workloads:
        bucket, name = workload.bucket, workload.bucket.name
        services = _services(workload)
        if discover and bucket.region == DEMO_DISCOVERED_REGION:
            for service in services:
                tags = found.get(service.name, ()) + service.tags
                found[service.name] = tuple(dict.fromkeys(tags))
            continue
        targets.append(TargetConfig(name, bucket.region, sim.endpoint(name), credentials, services))
    discovery = DiscoveryConfig(
        (DEMO_DISCOVERED_REGION,),
        credentials,
        tuple(ServiceConfig(name, found[name]) for name in SERVICES if name in found),
        interval=DEMO_DISCOVERY_INTERVAL,
    )
    return Config(
        targets=tuple(targets),
        discovery=(discovery,) if found else (),
        poll_interval=poll_interval,
        request_timeout=5.0,
        callbacks=CallbacksConfig("127.0.0.1:0", secrets.token_urlsafe(24)) if callbacks else None,
    )


def send_demo_callbacks(sim: Simulator, receiver: CallbackReceiver) -> CallbackSender:
    """The simulator sends each job's and run's callback, as CI would, to the demo's receiver."""
    secret = receiver.config.secret
    url = f"http://127.0.0.1:{receiver.port}/callback/{secret}/{{bucket}}"
    return sim.send_callbacks(CallbackSender(url, seed=sim.seed))


def _services(workload: Workload) -> tuple[ServiceConfig, ...]:
    tags: dict[str, list[str]] = {}
    for stream in workload.streams:
        service = workload.bucket.queue(stream.queue_id).service
        if stream.tag not in tags.setdefault(service, []):
            tags[service].append(stream.tag)
    return tuple(ServiceConfig(s, tuple(tags[s])) for s in ALL_SERVICES if s in tags)


def demo_endpoints(sim: Simulator) -> dict[str, Any]:
    """The Poller's options that send discovery, and the buckets it finds, to the simulator."""
    return {
        "bucket_endpoint": lambda bucket, region: sim.endpoint(bucket),
        "service_endpoint": sim.service_endpoint,
    }


def start_demo(seed: int = 1) -> tuple[Simulator, Config]:
    sim = build_demo(seed)
    throttle(sim)
    sim.start()
    sim.start_workload()
    return sim, demo_config(sim, callbacks=True)
