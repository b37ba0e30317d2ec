"""The Grafana dashboards and provisioning files, read as files: valid JSON for file
provisioning, unique panel ids, everything on the `datasource` variable, units on time and
ratio panels, links that resolve, queue names instead of ids, and every query parsed by
promtool. tests/test_prometheus_integration.py runs the same queries against real data."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_harness import (
    DASHBOARDS,
    DATASOURCE,
    REPO,
    load_dashboards,
    panel_queries,
    panels,
    parse_label_values,
    run_tool,
    substitute,
    variable_queries,
    variables,
)

OVERVIEW = "tencent-ci-overview"
QUEUE = "tencent-ci-queue"
VARIABLES = ("bucket", "region", "service", "queue_id", "tag")
ALL = dict.fromkeys(VARIABLES, ".*")
TIME_UNITS = {"s", "ms", "dtdurations", "dtdurationms"}
RATIO_UNITS = {"percentunit"}
PROVISIONING = REPO / "grafana" / "provisioning"
DASHBOARD_PATH = "/var/lib/grafana/dashboards/tencent-ci"

DASHBOARD_FILES = load_dashboards()
BY_UID = {d["uid"]: d for d in DASHBOARD_FILES.values()}


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(dashboard) if p["type"] != "row"]


def kind(expr: str) -> str | None:
    """'time' for durations, ages and timestamps; 'ratio' for one number over another."""
    if "_seconds" in expr or "time()" in expr:
        return "time"
    if "ratio" in expr or " / " in expr:
        return "ratio"
    return None


def test_both_dashboards_load_with_stable_uids() -> None:
    assert sorted(DASHBOARD_FILES) == ["tencent-ci-overview.json", "tencent-ci-queue.json"]
    assert sorted(BY_UID) == [OVERVIEW, QUEUE]
    for name, dashboard in DASHBOARD_FILES.items():
        assert name == dashboard["uid"] + ".json"
        assert dashboard["title"].startswith("Tencent CI / ")
        # A provisioned dashboard is found by uid; a stored numeric id would clash.
        assert dashboard.get("id") is None


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_no_import_placeholders(path: Path) -> None:
    # __inputs and ${DS_...} only work through Grafana's import UI, not file provisioning.
    text = path.read_text(encoding="utf-8")
    assert "__inputs" not in text
    assert "${DS_" not in text
    assert "__requires" not in json.loads(text)


@pytest.mark.parametrize("uid", [OVERVIEW, QUEUE])
def test_panel_ids_are_unique(uid: str) -> None:
    ids = Counter(panel["id"] for panel in panels(BY_UID[uid]))

    assert all(isinstance(i, int) for i in ids)
    assert [i for i, n in ids.items() if n > 1] == []


@pytest.mark.parametrize("uid", [OVERVIEW, QUEUE])
def test_every_panel_target_and_variable_uses_the_datasource_variable(uid: str) -> None:
    dashboard = BY_UID[uid]
    wrong = []
    for panel in data_panels(dashboard):
        if panel.get("datasource", {}).get("uid") != DATASOURCE:
            wrong.append(f"panel {panel['title']}")
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            if target.get("datasource", {}).get("uid") != DATASOURCE:
                wrong.append(f"panel {panel['title']} target {target['refId']}")
    for var in variables(dashboard):
        if var["type"] == "query" and var["datasource"].get("uid") != DATASOURCE:
            wrong.append(f"variable {var['name']}")
    assert wrong == []


@pytest.mark.parametrize("uid", [OVERVIEW, QUEUE])
def test_variables(uid: str) -> None:
    by_name = {var["name"]: var for var in variables(BY_UID[uid])}

    assert list(by_name) == ["datasource", *VARIABLES]
    source = by_name["datasource"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    for name in VARIABLES:
        var = by_name[name]
        assert var["type"] == "query"
        assert var["multi"] is True and var["includeAll"] is True
        assert var["allValue"] == ".*"
        selector, label = parse_label_values(var["query"])
        assert label == name
        # A variable is filtered by the ones before it, never by itself or a later one.
        earlier = VARIABLES[: VARIABLES.index(name)]
        used = set(re.findall(r"\$(\w+)", selector or ""))
        assert used <= set(earlier), (name, used)


@pytest.mark.parametrize("uid", [OVERVIEW, QUEUE])
def test_time_and_ratio_panels_have_units(uid: str) -> None:
    for panel in data_panels(BY_UID[uid]):
        if panel["type"] == "table":
            _check_table_units(panel)
            continue
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert unit, f"{panel['title']}: no unit"
        kinds = {kind(t["expr"]) for t in panel["targets"]} - {None}
        assert len(kinds) <= 1, panel["title"]
        if kinds == {"time"}:
            assert unit in TIME_UNITS, (panel["title"], unit)
        if kinds == {"ratio"}:
            assert unit in RATIO_UNITS, (panel["title"], unit)


def _check_table_units(panel: dict[str, Any]) -> None:
    organize = next(t for t in panel["transformations"] if t["id"] == "organize")
    rename = organize["options"]["renameByName"]
    units = {
        override["matcher"]["options"]: prop["value"]
        for override in panel["fieldConfig"]["overrides"]
        for prop in override["properties"]
        if prop["id"] == "unit"
    }
    for target in panel["targets"]:
        column = rename[f"Value #{target['refId']}"]
        assert column in units, f"{panel['title']}: column {column} has no unit"
        if kind(target["expr"]) == "time":
            assert units[column] in TIME_UNITS, column
        if kind(target["expr"]) == "ratio":
            assert units[column] in RATIO_UNITS, column


def _links(value: Any) -> list[str]:
    """Every link URL anywhere in a dashboard: dashboard links, panel links, data links."""
    found = []
    if isinstance(value, dict):
        # {"links": [...]} in dashboards and panels; {"id": "links", "value": [...]} in overrides.
        listed = value.get("value") if value.get("id") == "links" else value.get("links")
        if isinstance(listed, list):
            found += [link["url"] for link in listed if isinstance(link, dict) and "url" in link]
        for item in value.values():
            found += _links(item)
    elif isinstance(value, list):
        for item in value:
            found += _links(item)
    return found


@pytest.mark.parametrize("uid", [OVERVIEW, QUEUE])
def test_links_between_dashboards_resolve(uid: str) -> None:
    urls = _links(BY_UID[uid])
    targets = [re.match(r"/d/([^/?]+)", url) for url in urls]

    assert urls and all(targets), urls
    assert {m.group(1) for m in targets if m} <= set(BY_UID)


def test_overview_queue_table_links_each_queue_to_the_drilldown() -> None:
    table = next(p for p in data_panels(BY_UID[OVERVIEW]) if p["title"] == "Queues")
    urls = _links(table)

    assert len(urls) == 1
    url = urls[0]
    assert url.startswith(f"/d/{QUEUE}/")
    for name in ("bucket", "region", "service", "queue_id"):
        assert f"var-{name}=${{__data.fields.{name}}}" in url
    assert "${datasource:queryparam}" in url and "${__url_time_range}" in url
    assert "links" in json.dumps(table["fieldConfig"]["overrides"])


def test_overview_has_the_panels_the_issue_lists() -> None:
    titles = {p["title"] for p in data_panels(BY_UID[OVERVIEW])}
    exprs = " ".join(q.expr for q in panel_queries(BY_UID[OVERVIEW]))

    for title in (
        "Exporter replicas up",
        "Targets polled OK",
        "Last successful poll age",
        "Poll duration",
        "API requests by endpoint",
        "API errors by endpoint",
        "Queues",
        "Jobs finished per second by state",
        "Failure ratio",
        "Failures per second by code",
        "Run duration of successful jobs",
        "Queue wait p95 by tag",
        "Oldest running job age",
    ):
        assert title in titles
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, " in exprs
    # The queue table's columns.
    table = next(p for p in data_panels(BY_UID[OVERVIEW]) if p["title"] == "Queues")
    organize = next(t for t in table["transformations"] if t["id"] == "organize")
    columns = set(organize["options"]["renameByName"].values())
    assert columns == {
        "Paused",
        "MaxConcurrent",
        "Running",
        "Saturation",
        "Submitted backlog",
        "Oldest submitted age",
    }


@pytest.mark.parametrize("uid", [OVERVIEW, QUEUE])
def test_queues_are_shown_by_name(uid: str) -> None:
    for panel in data_panels(BY_UID[uid]):
        for target in panel["targets"]:
            legend, expr = target.get("legendFormat", ""), target["expr"]
            assert "{{queue_id}}" not in legend, panel["title"]
            if "{{name}}" in legend or panel["type"] == "table":
                assert "group_left (name" in expr and "tencent_ci_queue_info" in expr, panel[
                    "title"
                ]


@pytest.mark.parametrize("uid", [OVERVIEW, QUEUE])
def test_shared_numbers_come_from_the_recording_rules(uid: str) -> None:
    # Throughput and failure ratio: the dashboards read what the alerts read.
    for panel in data_panels(BY_UID[uid]):
        for target in panel["targets"]:
            expr = target["expr"]
            assert "tencent_ci_jobs_finished_total" not in expr, panel["title"]
            assert "tencent_ci_job_failures_total" not in expr, panel["title"]


def test_every_query_parses(tmp_path: Path) -> None:
    """promtool parses each query (variables filled in) as a recording rule's expression."""
    queries = [q for d in BY_UID.values() for q in panel_queries(d)]
    rules = [
        {"record": f"dashboard_query_{i}", "expr": substitute(q.expr, ALL)}
        for i, q in enumerate(queries)
    ]
    for values in (ALL, dict(ALL, bucket="b-1250000000", tag="Transcode")):
        for var in (v for d in BY_UID.values() for v in variable_queries(d)):
            selector, _ = parse_label_values(substitute(var.query, values))
            if selector:
                rules.append({"record": f"variable_selector_{len(rules)}", "expr": selector})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))

    checked = run_tool("promtool", "check", "rules", str(path))

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout


def test_unknown_variables_are_refused() -> None:
    with pytest.raises(KeyError, match=r"\$queue"):
        substitute('tencent_ci_up{queue_id=~"$queue"}', ALL)


def test_datasource_provisioning() -> None:
    files = sorted((PROVISIONING / "datasources").glob("*.yml"))
    assert len(files) == 1
    document = yaml.safe_load(files[0].read_text(encoding="utf-8"))

    assert document["apiVersion"] == 1
    (source,) = document["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["access"] == "proxy"


def test_dashboard_provisioning() -> None:
    files = sorted((PROVISIONING / "dashboards").glob("*.yml"))
    assert len(files) == 1
    document = yaml.safe_load(files[0].read_text(encoding="utf-8"))

    assert document["apiVersion"] == 1
    (provider,) = document["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == DASHBOARD_PATH
