"""The monitoring mixin (mixin/): the committed dashboards, rule files and PrometheusRule are
what it generates, byte for byte; what _config says (the exporter's selector, a cluster label,
levels, `for` durations, on/off switches, the runbook URLs, dashboard uids and tags) reaches
the rules and the panels."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_harness import (
    ALERT_RULES,
    DASHBOARDS,
    RECORDING_RULES,
    REPO,
    RUNBOOK_URL,
    panel_queries,
    panels,
    parse_variable_query,
    run_tool,
    substitute,
    variable_queries,
)

MIXIN = REPO / "mixin"
GENERATOR = MIXIN / "generate.py"
OVERVIEW = "tencent-ci-overview.json"
QUEUE = "tencent-ci-queue.json"
VARIABLES = ("bucket", "region", "service", "queue_id", "tag")


def _module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _module("mixin_generate", GENERATOR)


@cache
def _evaluated(overrides: str = "") -> str:
    return json.dumps(generate.evaluate(overrides))


def mixin(overrides: str = "") -> dict[str, Any]:
    """The mixin's outputs with `overrides` added (a fresh copy each call)."""
    result: dict[str, Any] = json.loads(_evaluated(overrides))
    return result


def with_config(config: str) -> dict[str, Any]:
    return mixin("{ _config+:: " + config + " }")


def alerts_of(outputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        rule["alert"]: rule
        for group in outputs["prometheusAlerts"]["groups"]
        for rule in group["rules"]
    }


def all_rules(outputs: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        rule
        for key in ("prometheusAlerts", "prometheusRules")
        for group in outputs[key]["groups"]
        for rule in group["rules"]
    ]


def _panel(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    (panel,) = [p for p in panels(dashboard) if p["title"] == title and p["type"] != "row"]
    return panel


def _alert_steps(panel: dict[str, Any]) -> list[dict[str, Any]]:
    """The threshold steps in an alert's colour."""
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return [s for s in steps if s["color"] in ("red", "orange") and s["value"] is not None]


# --- the committed files are generated ---------------------------------------------------


def test_the_committed_files_are_what_the_mixin_makes() -> None:
    files = generate.render(mixin())

    assert set(files) == {
        *DASHBOARDS,
        ALERT_RULES,
        RECORDING_RULES,
        generate.PROMETHEUS_RULE_FILE,
    }
    differ = [str(p.relative_to(REPO)) for p, text in files.items() if p.read_text() != text]
    assert differ == [], "stale: run python3 mixin/generate.py"


def test_the_generator_check_passes_and_finds_an_edit() -> None:
    checked = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stderr

    # A committed file that is not what the mixin makes is what --check reports (compared
    # here as texts: the committed files are never written by the test).
    files = generate.render(mixin())
    edited = dict(files)
    edited[ALERT_RULES] = files[ALERT_RULES].replace("for: 5m", "for: 6m", 1)
    assert generate.stale(files) == []
    assert generate.stale(edited) == [ALERT_RULES]


def test_the_mixin_follows_the_convention() -> None:
    outputs = mixin()

    assert set(outputs) == {"grafanaDashboards", "prometheusAlerts", "prometheusRules"}
    assert sorted(outputs["grafanaDashboards"]) == [OVERVIEW, QUEUE]
    assert all("alert" in r for g in outputs["prometheusAlerts"]["groups"] for r in g["rules"])
    assert all("record" in r for g in outputs["prometheusRules"]["groups"] for r in g["rules"])
    config = json.loads(_config_json())
    for key in (
        "exporterSelector",
        "clusterLabel",
        "runbookURLPattern",
        "dashboardUIDs",
        "dashboardTags",
        "alerts",
    ):
        assert key in config, key
    for name, alert in config["alerts"].items():
        assert {"enabled", "severity", "for"} <= set(alert), name


def _config_json() -> str:
    import _gojsonnet

    return str(
        _gojsonnet.evaluate_snippet(
            str(MIXIN / "config.jsonnet"), "(import 'mixin.libsonnet')._config"
        )
    )


# --- _config reaches the rules and the panels ----------------------------------------------


def test_a_threshold_in_config_changes_the_rule_and_the_panels() -> None:
    default = mixin()
    changed = with_config("{ alerts+: { TencentCIBacklogStuck+: { maxAgeSeconds: 3600 } } }")

    before, after = alerts_of(default), alerts_of(changed)
    assert ") > 1800\n" in before["TencentCIBacklogStuck"]["expr"]
    assert ") > 3600\n" in after["TencentCIBacklogStuck"]["expr"]
    assert "1800" not in after["TencentCIBacklogStuck"]["expr"]
    # Nothing else moves.
    assert {n: r for n, r in after.items() if n != "TencentCIBacklogStuck"} == {
        n: r for n, r in before.items() if n != "TencentCIBacklogStuck"
    }
    # The panels that draw the alert's level draw the new one.
    queue = changed["grafanaDashboards"][QUEUE]
    steps = _alert_steps(_panel(queue, "Oldest submitted job age by tag"))
    assert [s["value"] for s in steps] == [3600]
    overview = changed["grafanaDashboards"][OVERVIEW]
    table = _panel(overview, "Queues")
    (column,) = [
        o
        for o in table["fieldConfig"]["overrides"]
        if o["matcher"]["options"] == "Oldest submitted age"
    ]
    (thresholds,) = [p["value"] for p in column["properties"] if p["id"] == "thresholds"]
    assert 3600 in [s["value"] for s in thresholds["steps"]]

    # And the generated rule file says so, and promtool takes it.
    text = generate.render(changed)[ALERT_RULES]
    assert ") > 3600\n" in text and text != ALERT_RULES.read_text()


def test_every_level_in_config_reaches_its_rule() -> None:
    levels = {
        "TencentCIPollsStale": ("maxAgeSeconds", 1200, "> 1200"),
        "TencentCIJobFailureRatioHigh": ("ratio", 0.25, "> 0.25"),
        "TencentCIJobFailureCodeBurst": ("failures", 50, ">= 50)"),
        "TencentCIJobRunningTooLong": ("maxAgeSeconds", 7200, "> 7200"),
        "TencentCIQueueNearlyFull": ("fill", 0.9, "> 0.9"),
        "TencentCIApiThrottled": ("ratio", 0.2, "> 0.2"),
    }
    config = ", ".join(
        f"{alert}+: {{ {key}: {value} }}" for alert, (key, value, _) in levels.items()
    )
    changed = alerts_of(with_config("{ alerts+: { " + config + " } }"))

    for alert, (_, _, shown) in levels.items():
        assert shown in changed[alert]["expr"], alert
    floor = alerts_of(
        with_config(
            "{ alerts+: { TencentCIJobFailureRatioHigh+: { minFinished: 50, minFailed: 9 } } }"
        )
    )["TencentCIJobFailureRatioHigh"]["expr"]
    assert "* 300 >= 50" in floor and "* 300 >= 9" in floor


def test_the_workflow_levels_in_config_reach_their_rule_and_panels() -> None:
    changed = with_config(
        "{ alerts+: { TencentCIWorkflowFailureRatioHigh+: { ratio: 0.3, minFinished: 40,"
        " minFailed: 8, severity: 'warning' }, TencentCIWorkflowPaused+: { 'for': '1h' } } }"
    )
    alerts = alerts_of(changed)

    ratio = alerts["TencentCIWorkflowFailureRatioHigh"]["expr"]
    assert "> 0.3\n" in ratio and ") * 300 >= 40\n" in ratio and ") * 300 >= 8\n" in ratio
    # The job alert keeps its own levels.
    assert "> 0.1\n" in alerts["TencentCIJobFailureRatioHigh"]["expr"]
    paused = alerts["TencentCIWorkflowPaused"]
    assert paused["for"] == "1h" and "paused for 1 hour:" in paused["annotations"]["description"]
    overview = changed["grafanaDashboards"][OVERVIEW]
    steps = _alert_steps(_panel(overview, "Workflow failure ratio"))
    assert [(s["color"], s["value"]) for s in steps] == [("orange", 0.3)]
    assert "after 1 hour" in _panel(overview, "Workflows")["description"]


def test_for_severity_and_the_switch_come_from_config() -> None:
    changed = with_config(
        "{ alerts+: {"
        " TencentCIPollsFailing+: { 'for': '1h', severity: 'critical' },"
        " TencentCIQueuePaused+: { enabled: false },"
        " TencentCIExporterDown+: { enabled: false }, TencentCIExporterAbsent+: { enabled: false },"
        " TencentCIPollsStale+: { enabled: false } } }"
    )
    alerts = alerts_of(changed)

    failing = alerts["TencentCIPollsFailing"]
    assert failing["for"] == "1h" and failing["labels"]["severity"] == "critical"
    assert "have failed for 1 hour," in failing["annotations"]["description"]
    assert "TencentCIQueuePaused" not in alerts
    assert len(alerts) == 15 - 4
    # The panel of Targets polled OK says how long the alert waits.
    overview = changed["grafanaDashboards"][OVERVIEW]
    assert "after 1 hour of failing polls" in _panel(overview, "Targets polled OK")["description"]
    # A severity colours the panels that draw the alert's level.
    paged = with_config("{ alerts+: { TencentCIBacklogStuck+: { severity: 'critical' } } }")
    steps = _alert_steps(
        _panel(paged["grafanaDashboards"][QUEUE], "Oldest submitted job age by tag")
    )
    assert [s["color"] for s in steps] == ["red"]


def test_a_group_with_every_alert_switched_off_is_left_out() -> None:
    off = ", ".join(
        f"{name}+: {{ enabled: false }}"
        for name in ("TencentCIApiThrottled", "TencentCIApiCredentialsRejected")
    )
    groups = with_config("{ alerts+: { " + off + " } }")["prometheusAlerts"]["groups"]

    assert "tencent-ci-exporter.api" not in [g["name"] for g in groups]
    assert all(g["rules"] for g in groups)


def test_runbook_urls_come_from_config() -> None:
    default = alerts_of(mixin())
    for name, rule in default.items():
        assert rule["annotations"]["runbook_url"] == f"{RUNBOOK_URL}#{name.lower()}"

    pattern = "https://wiki.example.com/runbooks/tencent-ci.html#%s"
    changed = alerts_of(with_config("{ runbookURLPattern: '" + pattern + "' }"))
    for name, rule in changed.items():
        assert rule["annotations"]["runbook_url"] == pattern % name.lower()


def test_the_exporter_selector_comes_from_config() -> None:
    changed = with_config("""{ exporterSelector: 'job="ci-exporter", env="prod"' }""")
    selector = 'up{job="ci-exporter", env="prod"}'

    alerts = alerts_of(changed)
    assert alerts["TencentCIExporterDown"]["expr"] == f"{selector} == 0"
    assert alerts["TencentCIExporterAbsent"]["expr"] == f"absent({selector})"
    replicas = _panel(changed["grafanaDashboards"][OVERVIEW], "Exporter replicas up")
    assert {t["expr"] for t in replicas["targets"]} == {
        f"sum({selector}) / count({selector})",
        f"sum({selector})",
        f"count({selector})",
    }
    text = json.dumps(changed)
    assert 'job=\\"tencent-ci-exporter\\"' not in text


def test_dashboard_uids_tags_and_defaults_come_from_config() -> None:
    changed = with_config(
        "{ dashboardUIDs: { overview: 'ci-overview', queue: 'ci-queue' },"
        " dashboardTags: ['ci'], dashboardRefresh: '5m', dashboardPeriod: 'now-24h' }"
    )
    dashboards = changed["grafanaDashboards"]

    assert dashboards[OVERVIEW]["uid"] == "ci-overview"
    assert dashboards[QUEUE]["uid"] == "ci-queue"
    for dashboard in dashboards.values():
        assert dashboard["tags"] == ["ci"]
        assert (dashboard["refresh"], dashboard["time"]["from"]) == ("5m", "now-24h")
    # Every link between the two follows the uids.
    text = json.dumps(dashboards)
    assert "/d/tencent-ci-" not in text
    assert "/d/ci-queue/" in text and "/d/ci-overview/" in text


def test_a_cluster_label_is_kept_everywhere(tmp_path: Path) -> None:
    changed = with_config("{ clusterLabel: 'cluster' }")

    for rule in all_rules(changed):
        groupings = re.findall(r"\b(?:by|on) \(([^)]*)\)", rule["expr"])
        assert all(g.startswith("cluster, ") for g in groupings), rule
    for name, dashboard in changed["grafanaDashboards"].items():
        names = [v["name"] for v in dashboard["templating"]["list"]]
        assert names == ["datasource", "cluster", *VARIABLES], name
        for query in panel_queries(dashboard):
            if "$bucket" in query.expr or "up{" in query.expr:
                assert 'cluster=~"$cluster"' in query.expr, query
        for var in variable_queries(dashboard):
            if var.name != "cluster":
                assert 'cluster=~"$cluster"' in var.query, var
    # Prometheus takes every rule and every query as they are.
    values = dict.fromkeys(("cluster", *VARIABLES), ".*")
    queries = [
        {"record": f"dashboard_query_{i}", "expr": substitute(q.expr, values)}
        for i, q in enumerate(
            q for d in changed["grafanaDashboards"].values() for q in panel_queries(d)
        )
    ]
    queries += [
        {"record": f"variable_query_{i}", "expr": source.expr}
        for i, var in enumerate(
            v for d in changed["grafanaDashboards"].values() for v in variable_queries(d)
        )
        if (source := parse_variable_query(substitute(var.query, values))).expr
    ]
    files = generate.render(changed)
    paths = []
    for path in (ALERT_RULES, RECORDING_RULES):
        paths.append(tmp_path / path.name)
        paths[-1].write_text(files[path])
    paths.append(tmp_path / "queries.yml")
    paths[-1].write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": queries}]}))

    checked = run_tool("promtool", "check", "rules", *map(str, paths))

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_config_the_mixin_cannot_use_is_refused() -> None:
    with pytest.raises(generate.MixinError, match="severity"):
        generate.evaluate(
            "{ _config+:: { alerts+: { TencentCIQueuePaused+: { severity: 'page' } } } }"
        )


# --- Grafana's dashboard JSON Schema --------------------------------------------------------
