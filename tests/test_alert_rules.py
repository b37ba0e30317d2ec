"""The rule files, their promtool unit tests, the example Prometheus and Alertmanager
configurations and the runbooks, checked with Debian's promtool and amtool."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest
from prometheus_harness import (
    ALERT_RULES,
    ALERTMANAGER_CONFIG,
    EXPORTER_JOB,
    PROMETHEUS_CONFIG,
    PROMETHEUS_DIR,
    RECORDING_RULES,
    RULE_TESTS,
    RUNBOOK_URL,
    RUNBOOKS,
    alert_rules,
    load_yaml,
    recording_rules,
    run_tool,
)

ALERTS = (
    "TencentCIExporterDown",
    "TencentCIExporterAbsent",
    "TencentCIPollsFailing",
    "TencentCIPollsStale",
    "TencentCIJobFailureRatioHigh",
    "TencentCIJobFailureCodeBurst",
    "TencentCIJobRunningTooLong",
    "TencentCIQueuePaused",
    "TencentCIBacklogStuck",
    "TencentCIQueueSaturated",
    "TencentCIQueueNearlyFull",
    "TencentCIWorkflowFailureRatioHigh",
    "TencentCIWorkflowPaused",
    "TencentCIApiThrottled",
    "TencentCIApiCredentialsRejected",
)
TEAM_RECEIVER = "media-jobs-team"
DEFAULT_RECEIVER = "platform-oncall"
# Label -> how a description must name it.
NAMED_BY = {
    "bucket": ("{{ $labels.bucket }}",),
    "queue_id": ("{{ $labels.name }}", "{{ $labels.queue_id }}"),
    "tag": ("{{ $labels.tag }}",),
    "code": ("{{ $labels.code }}",),
    "error": ("{{ $labels.error }}",),
    "instance": ("{{ $labels.instance }}",),
}


@cache
def unit_tests() -> list[tuple[str, dict[str, Any]]]:
    """(test group name, alert_rule_test case) of every promtool test file."""
    return [
        (group["name"], case)
        for path in RULE_TESTS
        for group in load_yaml(path)["tests"]
        for case in group.get("alert_rule_test", [])
    ]


def firing_case(alertname: str) -> dict[str, Any]:
    cases = [c for _, c in unit_tests() if c["alertname"] == alertname and c["exp_alerts"]]
    assert cases, f"{alertname}: no promtool test where it fires"
    return cases[0]


def test_promtool_check_rules() -> None:
    checked = run_tool("promtool", "check", "rules", str(RECORDING_RULES), str(ALERT_RULES))

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout
    assert "SUCCESS: 15 rules found" in checked.stdout


def test_promtool_unit_tests_pass() -> None:
    assert [p.name for p in RULE_TESTS] == ["alerts.test.yml", "recording.test.yml"]

    tested = run_tool("promtool", "test", "rules", *(str(p) for p in RULE_TESTS))

    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_the_alerts_are_the_ones_the_issue_asks_for() -> None:
    assert [rule["alert"] for rule in alert_rules()] == list(ALERTS)


@pytest.mark.parametrize("alertname", ALERTS)
def test_every_alert_has_a_firing_and_a_quiet_unit_test(alertname: str) -> None:
    rule = next(r for r in alert_rules() if r["alert"] == alertname)
    cases = [c for _, c in unit_tests() if c["alertname"] == alertname]

    assert any(c["exp_alerts"] == [] for c in cases), f"{alertname}: no case where it must not"
    fired = firing_case(alertname)
    for alert in fired["exp_alerts"]:
        # Labels and every annotation checked exactly, not just that something fired.
        assert alert["exp_labels"]["severity"] == rule["labels"]["severity"]
        assert set(alert["exp_annotations"]) == set(rule["annotations"])


@pytest.mark.parametrize("alertname", ALERTS)
def test_every_alert_is_annotated(alertname: str) -> None:
    rule = next(r for r in alert_rules() if r["alert"] == alertname)
    annotations = rule["annotations"]

    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert "{{" not in annotations["summary"], "the summary is static"
    assert "{{" in annotations["description"], "the description is templated"
    assert annotations["runbook_url"] == f"{RUNBOOK_URL}#{alertname.lower()}"
    # The description names what the alert's labels identify: bucket, queue, tag, ...
    labels = firing_case(alertname)["exp_alerts"][0]["exp_labels"]
    for label, templates in NAMED_BY.items():
        if label in labels:
            for template in templates:
                assert template in annotations["description"], (label, template)


def _github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_every_runbook_url_has_its_section() -> None:
    text = RUNBOOKS.read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    by_anchor = {_github_anchor(s.splitlines()[0]): s for s in sections}

    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_URL + "#")
        anchor = url.split("#", 1)[1]
        assert anchor in by_anchor, f"{rule['alert']}: docs/runbooks.md has no #{anchor}"
        section = by_anchor[anchor]
        for part in ("**Means.**", "**Check.**", "**Fix.**"):
            assert part in section, (rule["alert"], part)
    assert len(by_anchor) == len(ALERTS)


def test_recording_rules_follow_the_naming_convention() -> None:
    names = [rule["record"] for rule in recording_rules()]

    for name in names:
        level, metric, operations = name.split(":")
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", level), name
        assert metric.startswith("tencent_ci_"), name
        assert re.fullmatch(r"(ratio_)?rate5m", operations), name
    assert len(set(names)) == len(names)


def test_rule_group_names_are_unique_across_files() -> None:
    # The Kubernetes PrometheusRule takes the groups of both files side by side.
    names = [
        g["name"] for path in (RECORDING_RULES, ALERT_RULES) for g in load_yaml(path)["groups"]
    ]

    assert len(set(names)) == len(names)


@pytest.mark.parametrize("alertname", ["TencentCIExporterDown", "TencentCIExporterAbsent"])
def test_exporter_alerts_select_the_example_scrape_job(alertname: str) -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    rule = next(r for r in alert_rules() if r["alert"] == alertname)

    assert EXPORTER_JOB in jobs
    assert f'up{{job="{EXPORTER_JOB}"}}' in rule["expr"]


# The job and queue alerts that would otherwise fire for workflow runs or batch jobs, and the
# two alerts of the workflows' own (a workflow is a queue of service "workflow").
JOBS_ONLY = 'service!~"workflow|batch"'
LEAVE_OUT_WORKFLOWS_AND_BATCH = (
    "TencentCIJobFailureRatioHigh",
    "TencentCIJobFailureCodeBurst",
    "TencentCIJobRunningTooLong",
    "TencentCIQueuePaused",
    "TencentCIBacklogStuck",
)
WORKFLOW_ALERTS = ("TencentCIWorkflowFailureRatioHigh", "TencentCIWorkflowPaused")


@pytest.mark.parametrize("alertname", LEAVE_OUT_WORKFLOWS_AND_BATCH)
def test_job_and_queue_alerts_leave_workflows_and_batch_jobs_out(alertname: str) -> None:
    rule = next(r for r in alert_rules() if r["alert"] == alertname)
    quiet = [
        name
        for name, case in unit_tests()
        if case["alertname"] == alertname and case["exp_alerts"] == [] and "workflow" in name
    ]

    assert JOBS_ONLY in rule["expr"]
    # A promtool test feeds it workflow and batch series that would make it fire.
    assert quiet, f"{alertname}: no promtool test with workflow and batch series"


@pytest.mark.parametrize("alertname", WORKFLOW_ALERTS)
def test_workflow_alerts_read_workflows_only(alertname: str) -> None:
    rule = next(r for r in alert_rules() if r["alert"] == alertname)
    selectors = re.findall(r"\b(tencent_ci_\w+|\w+:tencent_ci_\w+:\w+)\{([^}]*)\}", rule["expr"])

    assert selectors
    assert all('service="workflow"' in matchers for _, matchers in selectors), selectors
    # Not the failures by step: only the runs described by id are counted there.
    assert "tencent_ci_job_failures" not in rule["expr"]
    # One alert per workflow, not per tag (always Workflow): no aggregation keeps it.
    assert not re.search(r"\b(?:by|on) \([^)]*\btag\b", rule["expr"]), rule["expr"]


def test_the_workflow_failure_ratio_mirrors_the_job_one() -> None:
    rules = {r["alert"]: r for r in alert_rules()}
    jobs, runs = rules["TencentCIJobFailureRatioHigh"], rules["TencentCIWorkflowFailureRatioHigh"]

    def levels(expr: str) -> list[str]:
        return re.findall(r"(?:>|>=) ([0-9.]+)\n", expr)

    assert levels(runs["expr"]) == levels(jobs["expr"]) == ["0.1", "20", "5"]
    assert (runs["for"], runs["labels"]) == (jobs["for"], jobs["labels"])
    paused = rules["TencentCIWorkflowPaused"]
    assert (paused["for"], paused["labels"]) == (
        rules["TencentCIQueuePaused"]["for"],
        rules["TencentCIQueuePaused"]["labels"],
    )


def test_throttling_alert_counts_what_the_exporter_counts_as_throttled() -> None:
    # Not the `error` label: a bare 503 is http_503, a 429 with a Code is that Code.
    rule = next(r for r in alert_rules() if r["alert"] == "TencentCIApiThrottled")

    assert "tencent_ci_api_throttled_requests_total" in rule["expr"]
    assert "error" not in rule["expr"]


def test_promtool_check_config_on_the_example() -> None:
    checked = run_tool("promtool", "check", "config", PROMETHEUS_CONFIG.name, cwd=PROMETHEUS_DIR)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Both rule files are found relative to prometheus.yml, and checked.
    assert "SUCCESS: 2 rule files found" in checked.stdout
    assert load_yaml(PROMETHEUS_CONFIG)["rule_files"] == [
        "rules/recording.rules.yml",
        "rules/alerts.rules.yml",
    ]


def test_amtool_check_config_on_the_example() -> None:
    checked = run_tool("amtool", "check-config", str(ALERTMANAGER_CONFIG))

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


@pytest.mark.parametrize(
    ("alertname", "receiver"),
    [
        ("TencentCIJobFailureRatioHigh", TEAM_RECEIVER),
        ("TencentCIJobFailureCodeBurst", TEAM_RECEIVER),
        ("TencentCIQueuePaused", TEAM_RECEIVER),
        ("TencentCIWorkflowFailureRatioHigh", TEAM_RECEIVER),
        ("TencentCIWorkflowPaused", TEAM_RECEIVER),
        ("TencentCIExporterDown", DEFAULT_RECEIVER),
        ("TencentCIExporterAbsent", DEFAULT_RECEIVER),
        ("TencentCIApiCredentialsRejected", DEFAULT_RECEIVER),
    ],
)
def test_failed_job_alerts_route_to_the_team(alertname: str, receiver: str) -> None:
    routed = run_tool(
        "amtool",
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"alertname={alertname}",
        "bucket=media-1250000000",
        "severity=critical",
    )

    assert routed.returncode == 0, routed.stdout + routed.stderr
    assert routed.stdout.strip() == receiver


def test_alertmanager_example_holds_no_secret() -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    hooks = [hook for r in config["receivers"] for hook in r.get("webhook_configs", [])]

    assert hooks
    for hook in hooks:
        assert hook["url"].startswith("https://alerts.example.com/")
        assert set(hook) <= {"url", "send_resolved"}
