"""The dashboards, recording rules and alerts against a real Prometheus and real data.

The simulator serves a fast, seeded workload that drives every rare condition a panel or an
alert is about: a paused queue with jobs waiting, a queue at MaxConcurrent with a growing
backlog, half its jobs failing with several codes, a throttled API endpoint, and a bucket whose
credentials CI rejects. The exporter runs as `python3 -m exporter` against it and polls every
second. Two Prometheus servers scrape it every second with the repository's rules (the alerts'
`for:` removed): "pair" scrapes it twice, as two replicas of an HA pair with their own
`instance` and `pod` labels, "single" once. Every panel query and every recording rule must
give the same numbers on both: summing the pair's duplicates would double them.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_harness import (
    EXPORTER_JOB,
    PROMETHEUS_CONFIG,
    RECORDING_RULES,
    ExporterProcess,
    PanelQuery,
    PrometheusServer,
    alert_rules,
    finite_samples,
    grafana_query_result_texts,
    grafana_variable_options,
    load_dashboards,
    load_yaml,
    panel_queries,
    parse_variable_query,
    recording_rules,
    substitute,
    variable_queries,
    wait_until,
    write_alert_rules_without_for,
)

from exporter.ci.services import SERVICES
from exporter.simulator import Fault, Simulator, Stream, Workload
from exporter.simulator.workflows import BATCH_QUEUE_ID

SECRET_ID = "AKIDintegration000000000000000000000"
SECRET_KEY = "integration-secret-key-0000000000000"
REVOKED_ID = "AKIDrevoked00000000000000000000000000"
HOT = "hot-1250000000"
HOT_REGION = "ap-guangzhou"
LOCKED = "locked-1250000001"
LOCKED_REGION = "ap-shanghai"
RATE_INTERVAL = "1m"  # $__rate_interval: longer than the whole run, so rates see every sample
DATA_TIMEOUT = 60.0
ALL = {"bucket": ".*", "region": ".*", "service": ".*", "queue_id": ".*", "tag": ".*"}
# Values that fall in the variables' regex matchers verbatim (Grafana escapes the rest).
PLAIN_VALUE = r"[A-Za-z0-9_-]+"


@dataclass
class Stack:
    sim: Simulator
    hot_queue: str
    paused_queue: str
    exporter: ExporterProcess
    pair: PrometheusServer
    single: PrometheusServer

    def one_queue(self) -> dict[str, str]:
        """Concrete variable values: the busy queue, which has every condition but the pause."""
        return {
            "bucket": HOT,
            "region": HOT_REGION,
            "service": "media",
            "queue_id": self.hot_queue,
            "tag": "Transcode",
        }

    def explain(self) -> str:
        return (
            f"exporter log:\n{self.exporter.log_tail(15)}\n"
            f"prometheus (pair) log:\n{self.pair.log_tail(10)}"
        )


def _simulator() -> tuple[Simulator, str, str]:
    sim = Simulator({SECRET_ID: SECRET_KEY}, seed=11)
    hot = sim.add_bucket(HOT, HOT_REGION, services=[*SERVICES, "workflow", "batch"])
    # 5 jobs/s arrive, 3 run at once for ~0.8 s each: saturated, and the backlog grows.
    hot_queue = hot.add_queue("media", name="hot-transcode", max_concurrent=3, max_size=40)
    paused_queue = hot.add_queue("media", name="archive-paused", max_concurrent=2, paused=True)
    ai_queue = hot.add_queue("ai", name="ai-translate", max_concurrent=4)
    # Workflows: a busy one whose runs (a few seconds each) half fail, and a paused one; runs
    # start at once (no slots), so the slot count is only the simulator's bound.
    busy_flow = hot.add_queue("workflow", name="wf-busy", max_concurrent=1000)
    hot.add_queue("workflow", name="wf-paused", max_concurrent=1000, paused=True)
    batch = hot.add_queue("batch", name="inventory", queue_id=BATCH_QUEUE_ID, max_concurrent=4)
    locked = sim.add_bucket(LOCKED, LOCKED_REGION)
    locked.add_queue("media", name="locked-main")
    streams = [
        Stream(hot_queue, "Transcode", rate=5.0, median_run=0.8, sigma=0.4, failure_ratio=0.5),
        Stream(paused_queue, "Transcode", rate=1.0, median_run=1.0),
        Stream(ai_queue, "Translation", rate=1.0, median_run=0.5, sigma=0.3),
        Stream(busy_flow, "Workflow", rate=2.0, median_run=2.5, sigma=0.3, failure_ratio=0.5),
        Stream(batch, "Job", rate=0.5, median_run=1.5, sigma=0.3),
    ]
    sim.add_workload(Workload(hot, seed=5, streams=streams, failure_ratio=0.05))
    # Half of the AI queue listings are throttled: the error panels and the throttling rule
    # have data, while the queues once listed keep being polled.
    sim.faults.add(Fault("http_429", bucket=HOT, path="/ai_queue", probability=0.5))
    return sim, hot_queue, paused_queue


def _exporter_config(sim: Simulator) -> dict[str, Any]:
    return {
        "poll_interval": "1s",
        "request_timeout": "5s",
        "idle_tag_backoff": 0,  # every stream every poll
        "retry": {"attempts": 1},  # a throttled call shows at once, and polls stay short
        "rate_limit": {"requests_per_second": 500},
        "targets": [
            {
                "bucket": HOT,
                "region": HOT_REGION,
                "endpoint": sim.endpoint(HOT),
                "credentials": {"secret_id": SECRET_ID, "secret_key": SECRET_KEY},
                "services": {"media": {"tags": ["Transcode"]}, "ai": {"tags": ["Translation"]}},
                "workflows": {},
                "batch_jobs": {},
            },
            {
                "bucket": LOCKED,
                "region": LOCKED_REGION,
                "endpoint": sim.endpoint(LOCKED),
                "credentials": {"secret_id": REVOKED_ID, "secret_key": SECRET_KEY},
                "services": {"media": {"tags": ["Transcode"]}},
            },
        ],
    }


def _prometheus_config(
    exporter: str, replicas: list[str], rule_files: list[Path]
) -> dict[str, Any]:
    """The example prometheus.yml's scrape job, pointed at the test exporter once per replica
    and made fast; the example's rule files (alerts without `for:`)."""
    example = load_yaml(PROMETHEUS_CONFIG)
    job = next(j for j in example["scrape_configs"] if j["job_name"] == EXPORTER_JOB)
    targets = [
        {"targets": [exporter], "labels": {"instance": f"replica-{r}", "pod": f"exporter-{r}"}}
        for r in replicas
    ]
    fast_job = dict(job, scrape_interval="1s", scrape_timeout="1s", static_configs=targets)
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [fast_job],
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("prometheus-integration")
    sim, hot_queue, paused_queue = _simulator()
    sim.start()
    sim.start_workload(interval=0.2)
    started: list[Any] = []
    try:
        exporter = ExporterProcess(_exporter_config(sim), workdir / "exporter")
        started.append(exporter)
        rules = [RECORDING_RULES, write_alert_rules_without_for(workdir)]
        pair = PrometheusServer(
            "prometheus (pair)",
            _prometheus_config(exporter.address, ["a", "b"], rules),
            workdir / "pair",
        )
        started.append(pair)
        single = PrometheusServer(
            "prometheus (single)",
            _prometheus_config(exporter.address, ["a"], rules),
            workdir / "single",
        )
        started.append(single)
        yield Stack(sim, hot_queue, paused_queue, exporter, pair, single)
    finally:
        for process in reversed(started):
            process.stop()
        sim.stop()


def _all_panel_queries() -> list[PanelQuery]:
    return [q for dashboard in load_dashboards().values() for q in panel_queries(dashboard)]


def _missing(server: PrometheusServer, queries: dict[str, str]) -> list[str]:
    """The names of the queries that give no number yet; a query Prometheus refuses raises."""
    return [name for name, expr in queries.items() if not finite_samples(server.query(expr))]


def _wait_for_data(stack: Stack, queries: dict[str, str], what: str) -> None:
    try:
        wait_until(lambda: not _missing(stack.pair, queries), DATA_TIMEOUT, what)
    except AssertionError:
        missing = _missing(stack.pair, queries)
        shown = "\n".join(f"  {name}: {queries[name]}" for name in missing)
        raise AssertionError(f"no data for {what}:\n{shown}\n{stack.explain()}") from None


def test_every_rule_evaluates_without_error(stack: Stack) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        rules = stack.pair.rules()
        return rules if all(r["health"] != "unknown" for r in rules) else None

    rules = wait_until(evaluated, DATA_TIMEOUT, "every rule to be evaluated once:")

    names = {r["name"] for r in rules}
    assert names >= {r["record"] for r in recording_rules()}
    assert len(rules) == len(recording_rules()) + len(alert_rules()), names
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert broken == {}


def test_every_recording_rule_returns_data(stack: Stack) -> None:
    queries = {rule["record"]: rule["record"] for rule in recording_rules()}

    _wait_for_data(stack, queries, "recording rules")


@pytest.mark.parametrize("selection", ["all", "one queue"])
def test_every_panel_query_returns_data(stack: Stack, selection: str) -> None:
    values = ALL if selection == "all" else stack.one_queue()
    queries = {
        str(query): substitute(query.expr, values, RATE_INTERVAL) for query in _all_panel_queries()
    }
    assert len(queries) > 30

    _wait_for_data(stack, queries, f"panel queries ({selection})")


@pytest.mark.parametrize("selection", ["all", "one queue"])
def test_every_variable_query_returns_values(stack: Stack, selection: str) -> None:
    values = ALL if selection == "all" else stack.one_queue()
    variables = [v for d in load_dashboards().values() for v in variable_queries(d)]
    assert {v.name for v in variables} == set(ALL)
    for value in stack.one_queue().values():
        assert re.fullmatch(PLAIN_VALUE, value), value

    def returned() -> dict[str, dict[str, str]] | None:
        """Each variable's options as Grafana makes them: value -> text shown."""
        found = {}
        for var in variables:
            source = parse_variable_query(substitute(var.query, values))
            if source.kind == "query_result":
                answers = grafana_query_result_texts(stack.pair.query(source.expr or ""))
            else:
                answers = stack.pair.label_values(source.label or "", source.expr)
            options = grafana_variable_options(var.regex, answers)
            found[f"{var.dashboard} ${var.name}"] = {value: text for text, value in options}
        return found if all(found.values()) else None

    found = wait_until(returned, DATA_TIMEOUT, f"every variable to have values ({selection})")

    if selection == "one queue":
        # Each variable, filtered by the ones before it, still offers the chosen value.
        for var in variables:
            assert values[var.name] in found[f"{var.dashboard} ${var.name}"], var
    else:
        assert {HOT, LOCKED} <= set(found["tencent-ci-overview $bucket"])
    # The Queue variable selects a queue's id and shows its name.
    for dashboard in {v.dashboard for v in variables}:
        queues = found[f"{dashboard} $queue_id"]
        assert queues[stack.hot_queue] == "hot-transcode", queues
        if selection == "all":
            assert queues[stack.paused_queue] == "archive-paused", queues


def _firing(stack: Stack, alertname: str, **labels: str) -> list[dict[str, Any]]:
    return [
        alert
        for alert in stack.pair.alerts()
        if alert["labels"].get("alertname") == alertname
        and all(alert["labels"].get(k) == v for k, v in labels.items())
        and alert["state"] in ("pending", "firing")
    ]


@pytest.mark.parametrize(
    ("alertname", "labels"),
    [
        ("TencentCIQueuePaused", {"bucket": HOT, "name": "archive-paused"}),
        (
            "TencentCIJobFailureRatioHigh",
            {"bucket": HOT, "name": "hot-transcode", "tag": "Transcode", "service": "media"},
        ),
        ("TencentCIQueueSaturated", {"bucket": HOT, "name": "hot-transcode"}),
        ("TencentCIPollsFailing", {"bucket": LOCKED, "region": LOCKED_REGION}),
        ("TencentCIApiCredentialsRejected", {"bucket": LOCKED, "error": "SecretidNotExist"}),
        (
            "TencentCIWorkflowFailureRatioHigh",
            {"bucket": HOT, "name": "wf-busy", "service": "workflow"},
        ),
        ("TencentCIWorkflowPaused", {"bucket": HOT, "name": "wf-paused", "service": "workflow"}),
    ],
)
def test_alerts_the_simulator_drives_reach_pending_or_firing(
    stack: Stack, alertname: str, labels: dict[str, str]
) -> None:
    try:
        alerts = wait_until(
            lambda: _firing(stack, alertname, **labels), DATA_TIMEOUT, f"{alertname} {labels}"
        )
    except AssertionError as error:
        raise AssertionError(f"{error}\n{stack.explain()}") from None

    # An HA pair raises it once, not once per replica.
    assert len(alerts) == 1, alerts
    alert = alerts[0]
    assert "instance" not in alert["labels"] and "pod" not in alert["labels"]
    assert alert["annotations"]["runbook_url"].endswith("#" + alertname.lower())
    for key in ("bucket", "region", "name", "tag", "error"):
        if key in labels:
            assert labels[key] in alert["annotations"]["description"], key


def _series(result: list[dict[str, Any]]) -> dict[frozenset[tuple[str, str]], float]:
    return {
        frozenset(sample["metric"].items()): float(sample["value"][1])
        for sample in result
        if math.isfinite(float(sample["value"][1]))
    }


def _mismatches(stack: Stack, queries: dict[str, str]) -> list[str]:
    """Queries whose pair and single answers differ by more than scrape timing explains."""
    at = time.time() - 1.0
    wrong = []
    for name, expr in queries.items():
        pair, single = _series(stack.pair.query(expr, at)), _series(stack.single.query(expr, at))
        if not single:
            wrong.append(f"{name}: no data on the single replica")
            continue
        if pair.keys() != single.keys():
            wrong.append(f"{name}: series {sorted(pair)} != {sorted(single)}")
            continue
        for key, value in single.items():
            if abs(pair[key] - value) > 0.2 * max(abs(pair[key]), abs(value)) + 0.01:
                wrong.append(f"{name} {dict(key)}: pair {pair[key]:g} != single {value:g}")
    return wrong


def _doubling_could_show(expr: str) -> bool:
    """Sums and counts over replicas would double. Quantiles of summed buckets would not, and
    `up{job=...}` counts the replicas on purpose."""
    return (
        ("sum" in expr or "count" in expr)
        and "histogram_quantile" not in expr
        and (f'up{{job="{EXPORTER_JOB}"}}' not in expr)
    )


def test_two_replicas_count_once(stack: Stack) -> None:
    raw = "sum(rate(tencent_ci_jobs_finished_total[1m]))"
    queries = {rule["record"]: rule["record"] for rule in recording_rules()}
    for query in _all_panel_queries():
        expr = substitute(query.expr, ALL, RATE_INTERVAL)
        if _doubling_could_show(expr):
            queries[str(query)] = expr
    assert len(queries) > 15

    def doubled_raw() -> bool:
        # The pair really is scraped twice: a plain sum counts every finished job twice.
        pair = finite_samples(stack.pair.query(raw))
        single = finite_samples(stack.single.query(raw))
        if not pair or not single or float(single[0]["value"][1]) < 1:
            return False
        ratio = float(pair[0]["value"][1]) / float(single[0]["value"][1])
        return 1.7 < ratio < 2.3

    wait_until(doubled_raw, DATA_TIMEOUT, "the pair's plain sum to count jobs twice")
    try:
        wait_until(lambda: not _mismatches(stack, queries), DATA_TIMEOUT, "pair == single:")
    except AssertionError:
        shown = "\n".join(_mismatches(stack, queries))
        raise AssertionError(f"the HA pair's numbers differ from one replica's:\n{shown}") from None
