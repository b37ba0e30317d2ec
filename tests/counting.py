"""What the exporter counted, read back from a registry's exposition."""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families


def counters(registry: CollectorRegistry) -> tuple[Counter[tuple[str, ...]], Counter[str]]:
    finished: Counter[tuple[str, ...]] = Counter()
    failures: Counter[str] = Counter()
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "tencent_ci_jobs_finished_total" and sample.value:
                key = (labels["queue_id"], labels["tag"], labels["state"])
                finished[key] += int(sample.value)
            elif sample.name == "tencent_ci_job_failures_total":
                failures[labels["code"]] += int(sample.value)
    return finished, failures
