"""The Grafana dashboards and provisioning files, read as files: valid JSON for file
provisioning, unique panel ids, everything on the `datasource` variable, units on time and
ratio panels, links that resolve, queue names instead of ids (in legends, tables and the Queue
variable), a description on every panel, thresholds at the alerts' levels on the panels that
show what an alert watches, and every query parsed by promtool.
tests/test_prometheus_integration.py runs the same queries against real data."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_harness import (
    DASHBOARDS,
    DATASOURCE,
    REPO,
    alert_rules,
    grafana_query_result_texts,
    grafana_variable_options,
    js_regex,
    load_dashboards,
    panel_queries,
    panels,
    parse_variable_query,
    run_tool,
    substitute,
    variable_queries,
    variables,
)

from exporter.ci.models import Queue
from exporter.collector import target_families
from exporter.snapshot import QueueSnapshot, TargetSnapshot, cap_label

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
        assert var["definition"] == var["query"]
        source = parse_variable_query(var["query"])
        if name == "queue_id":
            # Names shown, ids selected: see test_the_queue_variable_shows_names_selects_ids.
            assert source.kind == "query_result", var["query"]
            assert var["regex"]
        else:
            assert (source.kind, source.label, var["regex"]) == ("label_values", name, "")
        # A variable is filtered by the ones before it, never by itself or a later one.
        earlier = VARIABLES[: VARIABLES.index(name)]
        used = set(re.findall(r"\$(\w+)", source.expr or ""))
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
            source = parse_variable_query(substitute(var.query, values))
            if source.expr:
                rules.append({"record": f"variable_query_{len(rules)}", "expr": source.expr})
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


# --- descriptions ------------------------------------------------------------------------------


@pytest.mark.parametrize("uid", [OVERVIEW, QUEUE])
def test_every_panel_has_a_description(uid: str) -> None:
    # Grafana shows it behind the (i) of the panel's title; rows show none.
    missing = [p["title"] for p in data_panels(BY_UID[uid]) if not p.get("description", "").strip()]

    assert missing == []


# --- the Queue variable: names shown, ids selected -----------------------------------------------


def _queue_info_exposition(queues: list[tuple[str, str, str, str]]) -> str:
    """The exporter's /metrics for queues given as (bucket, service, queue_id, name)."""
    targets = []
    for bucket in dict.fromkeys(q[0] for q in queues):
        listed = tuple(
            QueueSnapshot(
                service,
                Queue(
                    queue_id=queue_id,
                    name=name,
                    state="Active",
                    max_size=100,
                    max_concurrent=2,
                    category="CateAll",
                    notify_enabled=True,
                ),
            )
            for b, service, queue_id, name in queues
            if b == bucket
        )
        targets.append(
            TargetSnapshot(
                bucket=bucket,
                region="ap-guangzhou",
                up=True,
                polled=True,
                last_poll_time=1_700_000_000.0,
                last_success_time=1_700_000_000.0,
                last_poll_duration=0.5,
                last_error="",
                queues=listed,
                streams=(),
                tracked_jobs=0,
            )
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Targets(tuple(targets)))
    return generate_latest(registry).decode("utf-8")


class _Targets(Collector):
    """The families the exporter renders for its targets' snapshots."""

    def __init__(self, targets: tuple[TargetSnapshot, ...]) -> None:
        self._targets = targets

    def collect(self) -> Iterator[Metric]:
        return target_families(self._targets)


def _scraped(exposition: str, metric: str, replicas: tuple[str, ...]) -> list[dict[str, str]]:
    """The label sets of `metric`'s series once Prometheus has scraped the exposition from each
    replica (the values unescaped, the target labels added)."""
    found = []
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == metric:
                for replica in replicas:
                    labels = dict(sample.labels, instance=replica, job="tencent-ci-exporter")
                    found.append({"__name__": metric, **labels})
    return found


def _evaluate_aggregation(expr: str, series: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Prometheus's answer to `agg by (labels) (metric{matchers})` over `series` (all 1):
    one sample per distinct set of the grouping labels, its labels sorted by name."""
    node = parse_promql(expr)
    assert node.kind == "aggregate" and node.grouping[0] == "by", expr
    (selector,) = node.args
    assert selector.kind == "selector", expr
    groups: dict[tuple[tuple[str, str], ...], None] = {}
    for labels in series:
        if labels["__name__"] == selector.name and all(
            _matches(labels.get(label, ""), op, value) for label, op, value in selector.matchers
        ):
            kept = tuple(sorted((k, labels.get(k, "")) for k in node.grouping[1] if labels.get(k)))
            groups.setdefault(kept)
    return [{"metric": dict(kept), "value": [1_700_000_000.5, "1"]} for kept in groups]


def _matches(value: str, op: str, wanted: str) -> bool:
    if op in ("=~", "!~"):
        return (re.fullmatch(wanted, value) is not None) == (op == "=~")
    return (value == wanted) == (op == "=")


QUEUES = [
    ("media-1250000000", "media", "p0a1b2c3d4e5f", "hot-transcode"),
    ("media-1250000000", "media", "p1b2c3d4e5f6a", "夜间 转码 (night)"),
    ("media-1250000000", "ai", "pa1b2c3d4e5f6", 'say "hi", then go'),
    ("media-1250000000", "ai", "pb2c3d4e5f6a1", "a back\\slash and a brace }"),
    ("media-1250000000", "asr", "pc3d4e5f6a1b2", ""),  # no name: the id is shown
    ("other-1250000001", "media", "pd4e5f6a1b2c3", "hot-transcode"),  # the same name elsewhere
    ("other-1250000001", "media", "pe5f6a1b2c3d4", 'fake",queue_id="p000'),
    ("other-1250000001", "media", "pf6a1b2c3d4e5", "x" * 200),  # cut to 128 characters
]


@pytest.mark.parametrize("uid", [OVERVIEW, QUEUE])
def test_the_queue_variable_shows_names_selects_ids(uid: str) -> None:
    (var,) = [v for v in variable_queries(BY_UID[uid]) if v.name == "queue_id"]
    series = _scraped(_queue_info_exposition(QUEUES), "tencent_ci_queue_info", ("a", "b"))

    for bucket in (".*", "other-1250000001"):
        values = dict(ALL, bucket=bucket)
        source = parse_variable_query(substitute(var.query, values))
        result = _evaluate_aggregation(source.expr or "", series)
        options = grafana_variable_options(var.regex, grafana_query_result_texts(result))

        expected = [
            (cap_label(name) or queue_id, queue_id)
            for b, _, queue_id, name in QUEUES
            if re.fullmatch(bucket, b)
        ]
        # One option per queue, whichever replicas export it; the name shown, the id selected.
        assert sorted(options) == sorted(expected)


def test_the_queue_variable_regex_is_javascript_that_python_reads_alike() -> None:
    for dashboard in BY_UID.values():
        (var,) = [v for v in variables(dashboard) if v["name"] == "queue_id"]
        regex = var["regex"]
        # Grafana's `/source/flags` form, with JavaScript's named groups (Python's differ).
        assert regex.startswith("/") and regex.rstrip("gimsy").endswith("/")
        assert "(?<text>" in regex and "(?<value>" in regex and "(?P<" not in regex
        pattern, _ = js_regex(regex)
        assert set(pattern.groupindex) == {"text", "value"}


# --- a little PromQL: enough to see what an alert compares with what ----------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*(?![\w.]))
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w.:]))
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<ident>[A-Za-z_:][\w:]*)
  | (?P<braces>\{(?:[^}"']|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')*\})
  | (?P<range>\[[^\]]*\])
  | (?P<op>==|!=|>=|<=|[-+*/%^<>(),@])
    """,
    re.VERBOSE,
)
_MATCHER_RE = re.compile(r'\s*(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')
_PRECEDENCE = {
    "or": 1,
    "and": 2,
    "unless": 2,
    **dict.fromkeys(("==", "!=", ">", "<", ">=", "<="), 3),
    "+": 4,
    "-": 4,
    **dict.fromkeys(("*", "/", "%", "atan2"), 5),
    "^": 6,
}
COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}
_FLIPPED = {">": "<", "<": ">", ">=": "<=", "<=": ">=", "==": "==", "!=": "!="}
_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile",
}  # fmt: skip


@dataclass(frozen=True)
class Node:
    """A PromQL expression: number, string, selector (name, matchers), call, aggregate
    (op, grouping), binary (op), unary (op), paren, range."""

    kind: str
    op: str = ""
    args: tuple[Node, ...] = ()
    name: str = ""
    matchers: tuple[tuple[str, str, str], ...] = ()
    grouping: tuple[str, tuple[str, ...]] = ("", ())
    value: float = 0.0

    def walk(self) -> Iterator[Node]:
        yield self
        for arg in self.args:
            yield from arg.walk()


@dataclass
class _Parser:
    tokens: list[tuple[str, str]]
    at: int = 0
    _end: tuple[str, str] = field(default=("end", ""))

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.at] if self.at < len(self.tokens) else self._end

    def take(self, text: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token == self._end or (text is not None and token[1] != text):
            raise ValueError(f"expected {text or 'more'}, found {token[1]!r}")
        self.at += 1
        return token

    def labels(self) -> tuple[str, ...]:
        self.take("(")
        names = []
        while self.peek()[1] != ")":
            names.append(self.take()[1])
            if self.peek()[1] == ",":
                self.take(",")
        self.take(")")
        return tuple(names)

    def expr(self, lowest: int = 1) -> Node:
        lhs = self.unary()
        while True:
            op = self.peek()[1]
            if op not in _PRECEDENCE or _PRECEDENCE[op] < lowest:
                return lhs
            self.take()
            for modifier in ("bool", "on", "ignoring", "group_left", "group_right"):
                if self.peek()[1] == modifier:
                    self.take()
                    if modifier != "bool" and self.peek()[1] == "(":
                        self.labels()
            rhs = self.expr(_PRECEDENCE[op] + (op != "^"))
            lhs = Node("binary", op, (lhs, rhs))

    def unary(self) -> Node:
        if self.peek()[1] in ("-", "+"):
            return Node("unary", self.take()[1], (self.unary(),))
        node = self.primary()
        while self.peek()[0] == "range" or self.peek()[1] in ("offset", "@"):
            kind, _ = self.take()
            if kind != "range":
                self.take()
            node = Node("range", args=(node,)) if kind == "range" else node
        return node

    def call_args(self) -> tuple[Node, ...]:
        self.take("(")
        args = []
        while self.peek()[1] != ")":
            args.append(self.expr())
            if self.peek()[1] == ",":
                self.take(",")
        self.take(")")
        return tuple(args)

    def primary(self) -> Node:
        kind, text = self.take()
        if kind == "number":
            return Node("number", value=float(text))
        if kind == "string":
            return Node("string", name=text)
        if text == "(":
            inner = self.expr()
            self.take(")")
            return Node("paren", args=(inner,))
        if kind == "braces":
            return Node("selector", matchers=_matchers(text))
        if kind != "ident":
            raise ValueError(f"unexpected {text!r}")
        if text in _AGGREGATIONS and self.peek()[1] in ("by", "without", "("):
            grouping: tuple[str, tuple[str, ...]] = ("", ())
            if self.peek()[1] in ("by", "without"):
                grouping = (self.take()[1], self.labels())
            args = self.call_args()
            if self.peek()[1] in ("by", "without"):
                grouping = (self.take()[1], self.labels())
            return Node("aggregate", text, args, grouping=grouping)
        if self.peek()[1] == "(":
            return Node("call", text, self.call_args())
        matchers = _matchers(self.take()[1]) if self.peek()[0] == "braces" else ()
        return Node("selector", name=text, matchers=matchers)


def _matchers(braces: str) -> tuple[tuple[str, str, str], ...]:
    inner, found, at = braces[1:-1], [], 0
    while inner[at:].strip():
        match = _MATCHER_RE.match(inner, at)
        if match is None:
            raise ValueError(f"cannot read the matchers {braces!r}")
        label, op, value = match.groups()
        found.append((label, op, re.sub(r"\\(.)", r"\1", value)))
        at = match.end()
    return tuple(found)


def parse_promql(text: str) -> Node:
    tokens, at = [], 0
    while at < len(text):
        match = _TOKEN_RE.match(text, at)
        if match is None:
            raise ValueError(f"cannot read PromQL at {text[at : at + 30]!r}")
        if match.lastgroup != "space":
            tokens.append((match.lastgroup or "", match.group()))
        at = match.end()
    parser = _Parser(tokens)
    node = parser.expr()
    if parser.at != len(tokens):
        raise ValueError(f"left over after {text[:40]!r}: {tokens[parser.at :]}")
    return node


def test_the_promql_reader() -> None:
    node = parse_promql(
        'max by (a) (x{s="R", t=~"$tag"} * 300) >= on (a) group_left (n) y[5m] and z > bool 0.5'
    )
    assert (node.kind, node.op) == ("binary", "and")
    compare = node.args[0]
    assert (compare.op, compare.args[0].kind, compare.args[0].grouping) == (
        ">=",
        "aggregate",
        ("by", ("a",)),
    )
    assert compare.args[0].args[0].args[0].matchers == (("s", "=", "R"), ("t", "=~", "$tag"))
    assert parse_promql("a - b - c").args[0].op == "-"  # left-associative
    assert parse_promql("2 ^ 3 ^ 2").args[1].op == "^"  # right-associative
    with pytest.raises(ValueError):
        parse_promql("sum(x")


# --- what each alert watches ----------------------------------------------------------------------

# Colours of the threshold at an alert's level: what pages is red, what warns orange.
SEVERITY_COLOURS = {"critical": "red", "warning": "orange"}
ALERT_COLOURS = set(SEVERITY_COLOURS.values())


def _metric(name: str) -> str:
    """A series' metric, whether read raw or through a recording rule (level:metric:ops)."""
    if ":" in name:
        name = name.split(":")[1]
    return re.sub(r"_(total|bucket|count|sum)$", "", name)


def _signature(node: Node) -> set[str]:
    """The metrics an expression reads and the fixed label matchers it puts on them."""
    found = set()
    for part in node.walk():
        if part.kind == "selector":
            found.add(_metric(part.name))
            found |= {f'{k}{op}"{v}"' for k, op, v in part.matchers if "$" not in v}
    return found


def _unwrapped(node: Node) -> Node:
    while node.kind == "paren":
        node = node.args[0]
    return node


def _watched(node: Node) -> Node:
    """What the alert's condition is about, without the parentheses, the join that adds a
    queue's name, or a volume floor (`and` / `unless` a condition on something else)."""
    while True:
        node = _unwrapped(node)
        if (node.kind == "binary" and node.op in ("and", "unless")) or (
            node.kind == "binary"
            and node.op == "*"
            and _names(node.args[1]) == {"tencent_ci_queue_info"}
        ):
            node = node.args[0]
        else:
            return node


def _names(node: Node) -> set[str]:
    return {part.name for part in node.walk() if part.kind == "selector"}


@dataclass(frozen=True)
class Watch:
    """An alert's condition, `measure op level`, as a panel shows it. Compared with another
    series (running >= MaxConcurrent) the level is 1, on a panel of their ratio; a measure
    that is a rate times a window (failures in 5 minutes) shows per second. `signature`: the
    metrics and fixed matchers of the measure (_signature), which a panel must read too."""

    alert: str
    severity: str
    op: str
    level: float
    signature: frozenset[str]

    @property
    def colour(self) -> str:
        return SEVERITY_COLOURS[self.severity]


def alert_watch(rule: dict[str, Any]) -> Watch | None:
    """None for an alert without a level (absent(), say): no panel can draw it."""
    condition = _watched(parse_promql(rule["expr"]))
    if condition.kind != "binary" or condition.op not in COMPARISONS:
        return None
    lhs, rhs = (_unwrapped(side) for side in condition.args)
    op = condition.op
    if lhs.kind == "number":
        lhs, rhs, op = rhs, lhs, _FLIPPED[op]
    if rhs.kind == "number":
        level, signature = rhs.value, _signature(lhs)
        if lhs.kind == "binary" and lhs.op == "*" and _unwrapped(lhs.args[1]).kind == "number":
            level /= _unwrapped(lhs.args[1]).value  # per window -> per second
    else:
        level, signature = 1.0, _signature(lhs) | _signature(rhs)
    signature.discard("tencent_ci_queue_info")
    return Watch(rule["alert"], rule["labels"]["severity"], op, level, frozenset(signature))


WATCHES = {w.alert: w for w in map(alert_watch, alert_rules()) if w is not None}

# The panels (and table columns) that show what an alert watches, each with a threshold at
# the alert's level in the colour of its severity.
WATCHED = {
    (OVERVIEW, "Targets polled OK", None): "TencentCIPollsFailing",
    (OVERVIEW, "Last successful poll age", None): "TencentCIPollsStale",
    (OVERVIEW, "Throttled share of API calls", None): "TencentCIApiThrottled",
    (OVERVIEW, "Queues", "Paused"): "TencentCIQueuePaused",
    (OVERVIEW, "Queues", "Saturation"): "TencentCIQueueSaturated",
    (OVERVIEW, "Queues", "Oldest submitted age"): "TencentCIBacklogStuck",
    (OVERVIEW, "Failure ratio", None): "TencentCIJobFailureRatioHigh",
    (OVERVIEW, "Oldest running job age", None): "TencentCIJobRunningTooLong",
    (QUEUE, "Queue settings", "Paused"): "TencentCIQueuePaused",
    (QUEUE, "Saturation (running / MaxConcurrent)", None): "TencentCIQueueSaturated",
    (QUEUE, "Queue fill (waiting / MaxSize)", None): "TencentCIQueueNearlyFull",
    (QUEUE, "Oldest submitted job age by tag", None): "TencentCIBacklogStuck",
    (QUEUE, "Failure ratio by tag", None): "TencentCIJobFailureRatioHigh",
    (QUEUE, "Failures per second by code", None): "TencentCIJobFailureCodeBurst",
    (QUEUE, "Oldest running job age by tag", None): "TencentCIJobRunningTooLong",
    (OVERVIEW, "Workflows", "Paused"): "TencentCIWorkflowPaused",
    (OVERVIEW, "Workflows", "Failure ratio"): "TencentCIWorkflowFailureRatioHigh",
    (OVERVIEW, "Workflow failure ratio", None): "TencentCIWorkflowFailureRatioHigh",
}
# Panels that show an alert's series but not at the alert's level, and why.
NOT_AT_THE_LEVEL = {
    (OVERVIEW, "Exporter replicas up", None): "colours by the share of replicas that answer "
    "(test_replicas_up_is_red_unless_every_scraped_replica_answers)",
    (OVERVIEW, "Failures per second by code", None): "sums every selected queue and tag; the "
    "alert counts one queue and tag (the Queue dashboard's panel has the line)",
}


def _panel(uid: str, title: str) -> dict[str, Any]:
    (panel,) = [p for p in data_panels(BY_UID[uid]) if p["title"] == title]
    return panel


def _column_of(panel: dict[str, Any], target: dict[str, Any]) -> str | None:
    if panel["type"] != "table":
        return None
    organize = next(t for t in panel["transformations"] if t["id"] == "organize")
    return str(organize["options"]["renameByName"][f"Value #{target['refId']}"])


def _field_config(panel: dict[str, Any], column: str | None) -> dict[str, Any]:
    """The field config Grafana applies to the panel's values, or to one table column's."""
    config = dict(panel["fieldConfig"]["defaults"])
    for override in panel["fieldConfig"]["overrides"]:
        if override["matcher"] == {"id": "byName", "options": column}:
            config.update({prop["id"]: prop["value"] for prop in override["properties"]})
    return config


def _colour_at(config: dict[str, Any], value: float) -> str:
    """The colour Grafana gives `value`: a value mapping's, else its threshold step's."""
    for mapping in config.get("mappings", []):
        if mapping["type"] == "value":
            for key, result in mapping["options"].items():
                if float(key) == value and "color" in result:
                    return str(result["color"])
    colour = ""
    for step in config.get("thresholds", {}).get("steps", []):
        if step["value"] is None or value >= step["value"]:
            colour = step["color"]
    return colour


def _shows_thresholds(panel: dict[str, Any], config: dict[str, Any]) -> bool:
    if panel["type"] == "timeseries":
        return bool(config["custom"].get("thresholdsStyle", {}).get("mode", "off") != "off")
    if panel["type"] == "table":
        cells = config.get("custom.cellOptions", {}).get("type")
        return cells in ("color-background", "color-text")
    return bool(config.get("color", {}).get("mode") == "thresholds")


def test_alert_levels_are_read_from_the_rules() -> None:
    # Every alert with a level is understood; a volume floor or a name join does not hide it.
    assert {r["alert"] for r in alert_rules() if r["alert"] not in WATCHES} <= {
        r["alert"] for r in alert_rules() if "absent(" in r["expr"]
    }
    ratio = WATCHES["TencentCIJobFailureRatioHigh"]
    assert ratio.op == ">" and ratio.signature == {
        "tencent_ci_jobs_failed_per_finished",
        JOBS_ONLY,
    }
    runs = WATCHES["TencentCIWorkflowFailureRatioHigh"]
    assert runs.op == ">" and runs.signature == {
        "tencent_ci_jobs_finished",
        'service="workflow"',
        'state="Failed"',
    }
    assert WATCHES["TencentCIQueueSaturated"].level == 1.0


@pytest.mark.parametrize(
    ("where", "alert"),
    WATCHED.items(),
    ids=lambda v: "/".join(map(str, v)) if isinstance(v, tuple) else v,
)
def test_a_panel_an_alert_watches_has_a_threshold_at_its_level(
    where: tuple[str, str, str | None], alert: str
) -> None:
    uid, title, column = where
    watch = WATCHES[alert]
    panel = _panel(uid, title)
    config = _field_config(panel, column)
    level = watch.level

    # The panel shows what the alert watches (in the column, for a table)...
    shown = [t for t in panel["targets"] if _column_of(panel, t) == column]
    assert any(watch.signature <= _signature(parse_promql(t["expr"])) for t in shown), (
        f"{title} does not show {sorted(watch.signature)}"
    )
    # ...names the alert...
    assert alert in panel["description"], title
    # ...and colours its level as the alert's severity, what is short of it not so.
    assert _shows_thresholds(panel, config), title
    if watch.op in (">", ">="):
        steps = config["thresholds"]["steps"]
        at = [s for s in steps if s["value"] is not None and math.isclose(s["value"], level)]
        assert [s["color"] for s in at] == [watch.colour], (title, steps, level)
        assert _colour_at(config, level * (1 - 1e-9)) not in ALERT_COLOURS, title
    elif watch.op == "==":
        assert _colour_at(config, level) == watch.colour, title
        other = 1 - level  # the alerts compare 0-or-1 series with ==
        assert _colour_at(config, other) not in ALERT_COLOURS, title
    else:
        pytest.fail(f"{alert}: no check for {watch.op}")


def test_every_panel_that_shows_what_an_alert_watches_is_listed() -> None:
    """A new alert, or a new panel, gets a threshold or a reason why not."""
    shown = set()
    for uid, dashboard in BY_UID.items():
        for panel in data_panels(dashboard):
            for target in panel["targets"]:
                signature = _signature(parse_promql(target["expr"]))
                for watch in WATCHES.values():
                    if watch.signature <= signature:
                        where = (uid, panel["title"], _column_of(panel, target))
                        shown.add((where, watch.alert))
    unlisted = {
        (where, alert)
        for where, alert in shown
        if WATCHED.get(where) != alert and where not in NOT_AT_THE_LEVEL
    }

    assert unlisted == set()
    assert set(WATCHED.items()) <= shown


# --- workflows and batch jobs ------------------------------------------------------------------

# A workflow is exported as a queue of service "workflow", its runs as jobs of tag Workflow;
# batch jobs as jobs of service "batch". The queue and job panels and variables leave both out.
JOBS_ONLY = 'service!~"workflow|batch"'
WORKFLOW_PANELS = (
    "Workflows",
    "Workflow runs finished per second by state",
    "Workflow failure ratio",
    "Workflow runs running now",
    "Failed workflow runs per second by failed step",
    "Failed workflow run duration p90 (described runs)",
    "Batch jobs finished per second by type and state",
)
_QUEUE_AND_JOB_METRICS = re.compile(r"tencent_ci_(queue_(paused|max|notify)|jobs|job_|oldest_)")


def _selectors(expr: str) -> list[Node]:
    return [n for n in parse_promql(expr).walk() if n.kind == "selector"]


@pytest.mark.parametrize("uid", [OVERVIEW, QUEUE])
def test_queue_and_job_panels_leave_workflows_and_batch_jobs_out(uid: str) -> None:
    """Summed with the jobs, a workflow's runs (and the batch jobs that start jobs and runs)
    would count the same work twice; the Workflows row shows them."""
    for panel in data_panels(BY_UID[uid]):
        if panel["title"] in WORKFLOW_PANELS:
            continue
        for target in panel["targets"]:
            for selector in _selectors(substitute(target["expr"], ALL)):
                name = selector.name.split(":")[1] if ":" in selector.name else selector.name
                if _QUEUE_AND_JOB_METRICS.match(name):
                    assert ("service", "!~", "workflow|batch") in selector.matchers, (
                        panel["title"],
                        target["refId"],
                        selector.name,
                    )
    for var in variables(BY_UID[uid]):
        if var["name"] in ("service", "queue_id", "tag"):
            assert JOBS_ONLY in var["query"], var["name"]


def test_the_workflows_row() -> None:
    dashboard = BY_UID[OVERVIEW]
    rows = [p for p in panels(dashboard) if p["type"] == "row"]
    (row,) = [r for r in rows if r["title"] == "Workflows"]
    below = sorted(
        (p for p in data_panels(dashboard) if p["gridPos"]["y"] > row["gridPos"]["y"]),
        key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]),
    )

    assert row is rows[-1]
    assert [p["title"] for p in below] == list(WORKFLOW_PANELS)
    for panel in below:
        service = "batch" if panel["title"].startswith("Batch") else "workflow"
        for target in panel["targets"]:
            # Bucket and Region only: Service, Queue and Tag pick queues and jobs.
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used == {"bucket", "region"}, (panel["title"], used)
            first = _selectors(substitute(target["expr"], ALL))[0]
            assert ("service", "=", service) in first.matchers, panel["title"]
            # The failures by step and the run durations are described runs only: said so.
            if "job_failures" in target["expr"] or "run_duration" in target["expr"]:
                assert "described by id" in panel["description"], panel["title"]
    # Described runs only: no panel pretends to time the steps.
    assert not any("step" in p["title"] and "duration" in p["title"] for p in below)


def test_replicas_up_is_red_unless_every_scraped_replica_answers() -> None:
    rule = next(r for r in alert_rules() if r["alert"] == "TencentCIExporterDown")
    down = parse_promql(rule["expr"])
    (selector,) = [n for n in down.walk() if n.kind == "selector" and n.name == "up"]
    up = f"up{{{', '.join(f'{k}{op}{json.dumps(v)}' for k, op, v in selector.matchers)}}}"
    panel = _panel(OVERVIEW, "Exporter replicas up")
    ratio = next(t for t in panel["targets"] if t["refId"] == "A")
    config = _field_config(panel, ratio["legendFormat"])

    # The same replicas TencentCIExporterDown watches: those up, out of those scraped.
    assert ratio["expr"] == f"sum({up}) / count({up})"
    assert (config["unit"], config["color"]["mode"]) == ("percentunit", "thresholds")
    severity = SEVERITY_COLOURS[rule["labels"]["severity"]]
    assert _colour_at(config, 1.0) == "green"
    for answering in (0.0, 0.5, 2 / 3, 0.999):
        assert _colour_at(config, answering) == severity, answering
    # The counts beside it.
    counts = {t["legendFormat"]: t["expr"] for t in panel["targets"] if t is not ratio}
    assert counts == {"up": f"sum({up})", "scraped": f"count({up})"}
