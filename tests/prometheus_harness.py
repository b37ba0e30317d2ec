"""Real Prometheus tools for the tests: the binaries (Debian's prometheus and
prometheus-alertmanager packages, which .ci/run installs), a Prometheus server and an exporter
process on loopback, the HTTP API, and the dashboards' queries with their variables filled in.

A missing binary fails the test that needs it: these tests prove the dashboards and alerts work,
and a skip would hide that they were never run.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTMANAGER_CONFIG = PROMETHEUS_DIR / "alertmanager.yml"
RECORDING_RULES = PROMETHEUS_DIR / "rules" / "recording.rules.yml"
ALERT_RULES = PROMETHEUS_DIR / "rules" / "alerts.rules.yml"
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
RUNBOOKS = REPO / "docs" / "runbooks.md"
RUNBOOK_URL = (
    "https://github.com/tencent-ci-exporter/tencent-ci-exporter/blob/main/docs/runbooks.md"
)
EXPORTER_JOB = "tencent-ci-exporter"
DATASOURCE = "${datasource}"

HTTP_TIMEOUT = 10.0
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

T = TypeVar("T")


def binary(name: str) -> str:
    """The path of a Prometheus tool; the test fails when it is not installed."""
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/bin") / name, Path("/usr/local/bin") / name) if p.exists()),
        None,
    )
    if found is None:
        pytest.fail(
            f"{name} is not installed: apt-get install prometheus prometheus-alertmanager"
            " (.ci/run installs them)",
            pytrace=False,
        )
    return found


def run_tool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary(args[0]), *args[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def wait_until(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll `condition` until it returns something truthy; fail naming `what` at the deadline.

    `what` may end in a colon: the last falsy value (a list of what is missing, say) follows."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} {last!r}")
        time.sleep(0.25)


# libyaml's loader when PyYAML has it: the promtool test files are long.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(ALERT_RULES)["groups"] for r in g["rules"] if "alert" in r]


def recording_rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(RECORDING_RULES)["groups"] for r in g["rules"] if "record" in r]


def write_alert_rules_without_for(directory: Path) -> Path:
    """A copy of the alert rules with every `for:` removed, so that an alert whose condition
    holds fires at the next evaluation: a test cannot wait the real 10 or 15 minutes."""
    document = load_yaml(ALERT_RULES)
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    path = directory / "alerts.rules.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


# --- dashboards -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str  # uid
    panel: str  # title
    ref: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


@dataclass(frozen=True)
class VariableQuery:
    dashboard: str
    name: str
    query: str
    regex: str = ""  # Grafana's regex over what the query returns ("" for none)


def load_dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard."""
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in DASHBOARDS}


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    return [
        PanelQuery(dashboard["uid"], panel["title"], target["refId"], target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(dashboard.get("templating", {}).get("list", []))


def variable_queries(dashboard: Mapping[str, Any]) -> list[VariableQuery]:
    return [
        VariableQuery(
            dashboard["uid"], var["name"], _variable_query_text(var), var.get("regex") or ""
        )
        for var in variables(dashboard)
        if var["type"] == "query"
    ]


def _variable_query_text(var: Mapping[str, Any]) -> str:
    query = var["query"]
    return str(query["query"] if isinstance(query, dict) else query)


_VARIABLE_RE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(text: str, values: Mapping[str, str], rate_interval: str = "1m") -> str:
    """Fill in Grafana's variables as it does for Prometheus: a value (or `.*` for All) in
    place of `$name`; `$__rate_interval` becomes `rate_interval`. An unknown variable fails."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name == "__rate_interval":
            return rate_interval
        if name not in values:
            raise KeyError(f"unknown variable ${name} in {text!r}")
        return values[name]

    return _VARIABLE_RE.sub(value, text)


_LABEL_VALUES_RE = re.compile(
    r"^label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>\w+)\s*\)$"
)


def parse_label_values(query: str) -> tuple[str | None, str]:
    """`label_values(selector, label)` -> (selector, label); the selector may be absent."""
    match = _LABEL_VALUES_RE.match(query.strip())
    if match is None:
        raise ValueError(f"not a label_values() query: {query!r}")
    return match.group("selector"), match.group("label")


# Grafana's Prometheus variable queries and its variable regex, as its source has them
# (public/app/plugins/datasource/prometheus/metric_find_query.ts; public/app/features/variables/
# utils.ts, metricNamesToVariableValues; @grafana/data stringToJsRegex). Grafana cannot run
# here, so the tests apply the regex the way Grafana does, in Python.

_QUERY_RESULT_RE = re.compile(r"^query_result\((?P<query>.+)\)\s*$")


@dataclass(frozen=True)
class VariableSource:
    """What a variable query asks Prometheus: `label_values` (`expr` is the selector or None,
    `label` the label) or `query_result` (`expr` an instant query, `label` None)."""

    kind: str
    expr: str | None
    label: str | None


def parse_variable_query(query: str) -> VariableSource:
    match = _QUERY_RESULT_RE.match(query.strip())
    if match is not None:
        return VariableSource("query_result", match.group("query"), None)
    selector, label = parse_label_values(query)
    return VariableSource("label_values", selector, label)


def _js_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def grafana_query_result_texts(result: list[dict[str, Any]]) -> list[str]:
    """The option Grafana makes of each sample of a query_result() variable query:
    `name{label="value",...} value timestamp_ms`, the labels in the order Prometheus answers them
    (sorted by name), their values as they are (not escaped), no space after the commas."""
    texts = []
    for sample in result:
        metric = dict(sample["metric"])
        name = metric.pop("__name__", "")
        labels = ",".join(f'{key}="{value}"' for key, value in metric.items())
        at, value = sample["value"]
        texts.append(f"{name}{{{labels}}} {value} {_js_number(float(at) * 1000)}")
    return texts


_JS_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}


def js_regex(text: str) -> tuple[re.Pattern[str], bool]:
    """Grafana's stringToJsRegex in Python: `/source/flags` as written (anything else is
    anchored, ^text$), and whether it has the g flag. JavaScript spells a named group
    `(?<name>...)`, Python `(?P<name>...)`; the lookbehinds `(?<=`, `(?<!` are the same in both."""
    if not text.startswith("/"):
        return re.compile(f"^{text}$"), False
    match = re.fullmatch(r"/(.*?)/([gimys]*)", text, re.DOTALL)
    if match is None:
        raise ValueError(f"{text!r} is not a valid regular expression")
    source, flags = match.groups()
    python_flags = 0
    for flag in flags:
        python_flags |= _JS_FLAGS.get(flag, 0)
    return re.compile(re.sub(r"\(\?<(?![=!])", "(?P<", source), python_flags), "g" in flags


def grafana_variable_options(regex: str, texts: list[str]) -> list[tuple[str, str]]:
    """(text, value) of each option Grafana makes of `texts` (a query's answers) with the
    variable's `regex`, in order, before sorting: metricNamesToVariableValues. With named groups
    `text` and `value`, an empty group counts as missing and the other stands in for it; an
    answer the regex does not match is dropped; options with the same value are kept once."""
    options: list[tuple[str, str]] = []
    pattern, global_flag = js_regex(regex) if regex else (None, False)
    for item in texts:
        text = value = item
        if pattern is not None:
            first = pattern.search(item)
            matches = list(pattern.finditer(item)) if global_flag else [first] if first else []
            if not matches:
                continue
            value_group = next((m for m in matches if m.groupdict().get("value")), None)
            text_group = next((m for m in matches if m.groupdict().get("text")), None)
            first_group = next((m for m in matches if m.re.groups >= 1), None)
            if value_group or text_group:
                value = (value_group or text_group)["value" if value_group else "text"]
                text = (text_group or value_group)["text" if text_group else "value"]
            elif len(matches) > 1 and first_group:
                options += [(m[1], m[1]) for m in matches]
                continue
            elif first_group:
                text = value = first_group[1] or ""
        options.append((text, value))
    seen: set[str] = set()
    unique = []
    for text, value in options:
        if value not in seen:
            seen.add(value)
            unique.append((text, value))
    return unique


# --- processes -------------------------------------------------------------------------------


class PromQLError(AssertionError):
    """Prometheus refused a query: its error text names the problem."""


class _Process:
    """A child process whose output goes to a log file (read to find its address and to explain
    failures), stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], log: Path, env: Mapping[str, str] | None = None):
        self.name = name
        self.log = log
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            argv,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
        )

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def find_in_log(self, pattern: re.Pattern[str], what: str) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            return pattern.search(self.log_text())

        try:
            return wait_until(found, START_TIMEOUT, f"{self.name} to log {what}")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.name} log:\n{self.log_tail()}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        self._log_file.close()


class PrometheusServer(_Process):
    """A real Prometheus on 127.0.0.1, on a port the OS picks, with its own storage."""

    _LISTENING = re.compile(r'msg="Listening on" address=(127\.0\.0\.1:\d+)')

    def __init__(self, name: str, config: Mapping[str, Any], workdir: Path) -> None:
        workdir.mkdir(parents=True)
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
        check = run_tool("promtool", "check", "config", str(config_path))
        assert check.returncode == 0, f"promtool check config:\n{check.stdout}{check.stderr}"
        super().__init__(
            name,
            [
                binary("prometheus"),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                "--web.listen-address=127.0.0.1:0",
                "--log.level=info",
            ],
            workdir / "prometheus.log",
        )
        try:
            address = self.find_in_log(self._LISTENING, "its address").group(1)
            self.url = f"http://{address}"
            wait_until(self._ready, START_TIMEOUT, f"{name} to be ready")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/-/ready", timeout=HTTP_TIMEOUT).status_code == 200
        except requests.ConnectionError:
            return False

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        response = requests.get(f"{self.url}{path}", params=params, timeout=HTTP_TIMEOUT)
        body = response.json()
        if body.get("status") != "success":
            raise PromQLError(f"{path} {dict(params or {})}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) of `expr`; a refused query raises."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        if data["resultType"] != "vector":
            raise PromQLError(f"{expr}: a {data['resultType']}, not an instant vector")
        return list(data["result"])

    def label_values(self, label: str, selector: str | None) -> list[str]:
        params = {"match[]": selector} if selector else None
        return list(self._get(f"/api/v1/label/{label}/values", params))

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/alerts")["alerts"])

    def rules(self) -> list[dict[str, Any]]:
        return [r for g in self._get("/api/v1/rules")["groups"] for r in g["rules"]]


def finite_samples(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The samples that carry a number (histogram_quantile and 0/0 give NaN)."""
    return [s for s in result if math.isfinite(float(s["value"][1]))]


class ExporterProcess(_Process):
    """`python3 -m exporter --config.file=...` on 127.0.0.1, on a port the OS picks."""

    _SERVING = re.compile(r'msg="serving metrics".*? url=http://(127\.0\.0\.1:\d+)/metrics')

    def __init__(self, config: Mapping[str, Any], workdir: Path) -> None:
        workdir.mkdir(parents=True)
        config_path = workdir / "exporter.yml"
        config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        super().__init__(
            "exporter",
            [
                sys.executable,
                "-m",
                "exporter",
                f"--config.file={config_path}",
                "--web.listen-address=127.0.0.1:0",
            ],
            workdir / "exporter.log",
            env,
        )
        try:
            self.address = self.find_in_log(self._SERVING, "where it serves").group(1)
        except BaseException:
            self.stop()
            raise
