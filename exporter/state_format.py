"""The state file's format: what one target's state holds (`TargetState`, mirroring
TargetPoller's fields), and how it is written as JSON: each target's state encoded on its own,
then spliced into one document under the format's name and version.

Threads: a TargetState and the trackers in it belong to the thread that polls its target,
which encodes it (encode_target); the document is put together from the encoded text alone,
by whichever thread writes the file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from exporter.accounting import StreamKey, StreamTracker

FORMAT = "tencent-ci-exporter-state"
VERSION = 1


@dataclass
class TargetState:
    """One target's accounting, mirroring TargetPoller's fields of the same names."""

    # Per service (or "service:tag" for a tag added by a reload): when its polling began.
    service_started: dict[str, float] = field(default_factory=dict)
    trackers: dict[StreamKey, StreamTracker] = field(default_factory=dict)
    retired: dict[StreamKey, tuple[float, StreamTracker]] = field(default_factory=dict)
    resume_at: dict[StreamKey, tuple[int, float]] = field(default_factory=dict)
    # The tags each service was polled for when saved: a tag configured since is new.
    services: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def restricted_to(self, services: Mapping[str, Collection[str]]) -> TargetState:
        """Only the streams of the services and tags configured now; the rest are dropped,
        and configured streams missing from the state start from a baseline as new ones."""

        def wanted(key: StreamKey) -> bool:
            return key.tag in services.get(key.service, ())

        def started_wanted(name: str) -> bool:
            service, _, tag = name.partition(":")
            return service in services and (not tag or tag in services[service])

        return TargetState(
            service_started={k: t for k, t in self.service_started.items() if started_wanted(k)},
            trackers={k: v for k, v in self.trackers.items() if wanted(k)},
            retired={k: v for k, v in self.retired.items() if wanted(k)},
            resume_at={k: v for k, v in self.resume_at.items() if wanted(k)},
            services={
                name: tuple(t for t in tags if t in services[name])
                for name, tags in self.services.items()
                if name in services
            },
        )

    def added_tags(self, services: Mapping[str, Collection[str]]) -> set[tuple[str, str]]:
        """(service, tag) pairs configured now for a service that was polled before the restart
        but not for that tag: like tags added by a reload, they start from a baseline of their
        own rather than from when the service began."""
        return {
            (name, tag)
            for name, tags in services.items()
            if name in self.services
            for tag in tags
            if tag not in self.services[name]
        }


def encode_target(state: TargetState) -> str:
    """One target's state as compact JSON. Call it on the thread that polls the target: it
    reads the trackers, which only that thread changes."""
    document = {
        "service_started": state.service_started,
        "services": {name: list(tags) for name, tags in state.services.items()},
        "streams": [_stream(key, tracker) for key, tracker in state.trackers.items()],
        "retired": [
            {"since": since, "stream": _stream(key, tracker)}
            for key, (since, tracker) in state.retired.items()
        ],
        "resume_at": [
            {**_key(key), "window_start": window_start, "since": since}
            for key, (window_start, since) in state.resume_at.items()
        ],
    }
    return json.dumps(document, separators=(",", ":"), allow_nan=False)


def _key(key: StreamKey) -> dict[str, str]:
    return {"service": key.service, "queue_id": key.queue_id, "tag": key.tag}


def _stream(key: StreamKey, tracker: StreamTracker) -> dict[str, object]:
    state = tracker.to_state()
    return {
        **_key(key),
        "window_start": state.window_start,
        "baseline_time": state.baseline_time,
        "baseline_fixed": state.baseline_fixed,
        "last_boundary": state.last_boundary,
        "counting": state.counting,
        "active": [
            [job_id, job.state, job.creation_time, job.start_time, job.wait_observed]
            for job_id, job in state.active
        ],
        "counted": state.counted,  # (JobId, creation) pairs: JSON writes tuples as arrays
    }


def state_document(fragments: Mapping[str, str]) -> bytes:
    # The targets' JSON is spliced in as it is: each was encoded on its own poller's thread.
    header = json.dumps(
        {"format": FORMAT, "version": VERSION, "saved_at": time.time()}, separators=(",", ":")
    )
    targets = ",".join(f"{json.dumps(name)}:{text}" for name, text in fragments.items())
    return f'{header[:-1]},"targets":{{{targets}}}}}'.encode()
