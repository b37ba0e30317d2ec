"""exporter.config: the YAML contract, and one exact one-line message per kind of mistake.

Durations: a number of seconds (90, 1.5, or "90" so `${VAR}` works) or decimal amounts with
units ms/s/m/h ("30s", "2m", "1h", "1m30s", "1.5s", "1500ms"); poll_interval must be >= 1s.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from exporter.ci.services import SERVICES
from exporter.config import (
    Config,
    ConfigError,
    RateLimitConfig,
    RetryConfig,
    ServiceConfig,
    load_config,
    parse_config,
)
from exporter.credentials import Credentials, CredentialsFile, CVMRole
from exporter.snapshot import QUEUE_WAIT_BUCKETS, RUN_TIME_BUCKETS, HistogramLayout
from exporter.strictyaml import StrictLoader

SECRET_KEY = "s3cr3t-k3y-value"
TOKEN = "t0k3n-value"
ENV = {"TENCENTCLOUD_SECRET_ID": "AKIDenv", "TENCENTCLOUD_SECRET_KEY": SECRET_KEY}
TARGET = "targets:\n  - bucket: b-1250000000\n    region: ap-chongqing\n"
ALL_SERVICES = tuple(ServiceConfig(s.name, s.tags) for s in SERVICES.values())
TOP_ALLOWED = (
    "targets, discovery, poll_interval, request_timeout, failure_code_limit, "
    "max_queues_per_service, clock_skew_tolerance, rate_limit, retry, idle_tag_backoff, "
    "state_file, histograms, callbacks"
)
NO_TARGETS = "must list at least one target (or give discovery)"
CREDENTIALS_ALLOWED = (
    "secret_id, secret_key, token, expiration, file, profile, cvm_role, metadata_endpoint"
)
TARGET_ALLOWED = "bucket, region, endpoint, credentials, services, workflows, batch_jobs"
HINT = "use e.g. 30s, 2m, 1h, 1m30s, 500ms or a number of seconds"
ENDPOINT_FORM = "(expected http(s)://host[:port])"


def parse(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, "config.yml", ENV if env is None else env)


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text, env)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    return message


def with_target(extra: str) -> str:
    """TARGET plus more keys of targets[0], given at the target's indentation."""
    return TARGET + "".join(f"    {line}\n" for line in extra.splitlines())


# --- good configs -------------------------------------------------------------------------


def test_minimal_config_takes_every_default() -> None:
    config = parse(TARGET)
    assert config.poll_interval == 60.0
    assert config.request_timeout == 10.0
    assert config.failure_code_limit == 50
    assert config.max_queues_per_service == 100
    assert config.clock_skew_tolerance == 30.0
    (target,) = config.targets
    assert (target.bucket, target.region) == ("b-1250000000", "ap-chongqing")
    assert target.endpoint == "https://b-1250000000.ci.ap-chongqing.myqcloud.com"
    assert target.credentials == Credentials("AKIDenv", SECRET_KEY, None)
    assert target.services == ALL_SERVICES


def test_credentials_from_environment_carry_the_session_token() -> None:
    env = {**ENV, "TENCENTCLOUD_SESSION_TOKEN": TOKEN}
    assert parse(TARGET, env).targets[0].credentials == Credentials("AKIDenv", SECRET_KEY, TOKEN)


def test_the_documented_example() -> None:
    text = """\
poll_interval: 60s
request_timeout: 10s
failure_code_limit: 50
max_queues_per_service: 100
clock_skew_tolerance: 30s
targets:
  - bucket: examplebucket-1250000000
    region: ap-chongqing
    endpoint: http://127.0.0.1:8080
    credentials:
      secret_id: ${TENCENTCLOUD_SECRET_ID}
      secret_key: ${TENCENTCLOUD_SECRET_KEY}
      token: ${TENCENTCLOUD_SESSION_TOKEN}
    services:
      media: {tags: [Transcode, VoiceSeparate]}
      speech: {}
      ai:
"""
    env = {**ENV, "TENCENTCLOUD_SESSION_TOKEN": TOKEN}
    config = parse(text, env)
    (target,) = config.targets
    assert target.endpoint == "http://127.0.0.1:8080"
    assert target.credentials == Credentials("AKIDenv", SECRET_KEY, TOKEN)
    # SERVICES order, not the file's order.
    assert target.services == (
        ServiceConfig("media", ("Transcode", "VoiceSeparate")),
        ServiceConfig("ai", SERVICES["ai"].tags),
        ServiceConfig("speech", SERVICES["speech"].tags),
    )


def test_explicit_credentials_win_over_the_environment() -> None:
    config = parse(with_target("credentials: {secret_id: AKIDfile, secret_key: filekey}"))
    assert config.targets[0].credentials == Credentials("AKIDfile", "filekey", None)


def test_an_empty_token_means_permanent_keys() -> None:
    text = with_target(
        "credentials:\n  secret_id: a\n  secret_key: b\n  token: ${TENCENTCLOUD_SESSION_TOKEN:-}"
    )
    assert parse(text).targets[0].credentials.token is None


def test_env_expansion_embedded_escaped_and_defaulted() -> None:
    text = """\
failure_code_limit: ${LIMIT}
poll_interval: ${POLL}
targets:
  - bucket: ${NAME}-${APPID}
    region: ${REGION:-ap-beijing}
    endpoint: http://${HOST}:8080
    services:
      media: {tags: ["$${NOT_A_VAR}", "Tag${SUFFIX}", "$$ and $x"]}
"""
    env = {
        **ENV,
        "LIMIT": "7",
        "POLL": "90",
        "NAME": "logs",
        "APPID": "1250000000",
        "HOST": "127.0.0.1",
        "SUFFIX": "X",
    }
    config = parse(text, env)
    target = config.targets[0]
    assert (config.failure_code_limit, config.poll_interval) == (7, 90.0)
    assert (target.bucket, target.region) == ("logs-1250000000", "ap-beijing")
    assert target.endpoint == "http://127.0.0.1:8080"
    assert target.services[0].tags == ("${NOT_A_VAR}", "TagX", "$$ and $x")


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("90", 90.0),
        ("'90'", 90.0),
        ("1.5s", 1.5),
        ("1500ms", 1.5),
        ("1h2m3s", 3723.0),
        ("' 45s '", 45.0),
        ("1", 1.0),
        ("2.5", 2.5),
    ],
)
def test_poll_interval_forms(written: str, seconds: float) -> None:
    assert parse(f"poll_interval: {written}\n{TARGET}").poll_interval == seconds


def test_poll_interval_as_yaml_numbers() -> None:
    assert parse(f"poll_interval: 90\n{TARGET}").poll_interval == 90.0
    assert parse(f"poll_interval: 1.5\n{TARGET}").poll_interval == 1.5


def test_zero_clock_skew_is_allowed() -> None:
    assert parse(f"clock_skew_tolerance: 0s\n{TARGET}").clock_skew_tolerance == 0.0


def test_a_duration_below_its_minimum_names_both() -> None:
    assert parse(f"poll_interval: 1m30s\n{TARGET}").poll_interval == 90.0
    assert parse(f"idle_tag_backoff: 0\n{TARGET}").idle_tag_backoff == 0.0
    with pytest.raises(ConfigError) as caught:
        parse(f"poll_interval: 0.5s\n{TARGET}")
    assert str(caught.value) == "config.yml: poll_interval: 0.5s is too short (minimum 1s)"


def test_unknown_tags_are_allowed_and_tags_null_means_defaults() -> None:
    text = with_target(
        "services:\n  media: {tags: [Transcode, NotDocumentedYet]}\n  pic: {tags: null}"
    )
    assert parse(text).targets[0].services == (
        ServiceConfig("media", ("Transcode", "NotDocumentedYet")),
        ServiceConfig("pic", SERVICES["pic"].tags),
    )


def test_endpoint_trailing_slash_is_dropped_and_ipv6_kept() -> None:
    assert parse(with_target("endpoint: https://ci.example:9443/")).targets[0].endpoint == (
        "https://ci.example:9443"
    )
    assert parse(with_target("endpoint: 'http://[::1]:8080'")).targets[0].endpoint == (
        "http://[::1]:8080"
    )


def test_same_bucket_in_two_regions_is_two_targets() -> None:
    text = TARGET + "  - bucket: b-1250000000\n    region: ap-beijing\n"
    assert [t.region for t in parse(text).targets] == ["ap-chongqing", "ap-beijing"]


def test_repr_of_a_config_holds_no_secret() -> None:
    env = {**ENV, "TENCENTCLOUD_SESSION_TOKEN": TOKEN}
    shown = repr(parse(TARGET, env))
    assert SECRET_KEY not in shown and TOKEN not in shown


def test_load_config_reads_the_file_and_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "exporter.yml"
    path.write_text("poll_interval: 2m\n" + TARGET, encoding="utf-8")
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert load_config(str(path)).poll_interval == 120.0
    assert load_config(
        str(path), {"TENCENTCLOUD_SECRET_ID": "i", "TENCENTCLOUD_SECRET_KEY": "k"}
    ).targets[0].credentials == (Credentials("i", "k"))


# --- files --------------------------------------------------------------------------------


def _load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), ENV)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yml"
    assert _load_error(path) == f"{path}: cannot read file: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert _load_error(tmp_path) == f"{tmp_path}: cannot read file: Is a directory"


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yml"
    path.write_bytes(b"targets: \xff\n")
    assert _load_error(path) == f"{path}: not UTF-8 text (bad byte at offset 9)"


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("targets: []\n", encoding="utf-8")
    assert _load_error(path) == f"{path}: targets: {NO_TARGETS}"


@pytest.mark.parametrize("opening", ["[", "{a: ", "- "])
def test_deep_nesting_is_one_line_naming_the_file(tmp_path: Path, opening: str) -> None:
    path = tmp_path / "deep.yml"
    path.write_text(opening * 20000, encoding="utf-8")
    assert _load_error(path) == f"{path}: YAML nested too deeply"


# --- bad configs: one exact line each -----------------------------------------------------

BAD = [
    # YAML itself
    (
        "yaml_syntax",
        "poll_interval: 60s\n  targets: x\n",
        None,
        "config.yml: line 2, column 10: YAML syntax error: mapping values are not allowed here",
    ),
    (
        "yaml_unclosed",
        "targets:\n  - bucket: [a\n",
        None,
        "config.yml: line 3, column 1: YAML syntax error: expected ',' or ']', but got "
        "'<stream end>'",
    ),
    (
        "yaml_duplicate_key",
        with_target("bucket: c-1250000000"),
        None,
        'config.yml: line 4: duplicate key "bucket"',
    ),
    ("top_is_list", "- a\n", None, "config.yml: top level: expected a mapping, got list"),
    ("top_is_scalar", "hello\n", None, "config.yml: top level: expected a mapping, got string"),
    (
        "empty_document",
        "# nothing\n",
        None,
        "config.yml: top level: expected a mapping, got an empty document",
    ),
    # keys
    (
        "unknown_top_key",
        "pol_interval: 60s\n" + TARGET,
        None,
        f"config.yml: pol_interval: unknown key (allowed: {TOP_ALLOWED})",
    ),
    (
        "unknown_target_key",
        with_target("regoin: x"),
        None,
        f"config.yml: targets[0].regoin: unknown key (allowed: {TARGET_ALLOWED})",
    ),
    (
        "unknown_credentials_key",
        with_target("credentials: {secret_id: a, secretkey: b}"),
        None,
        "config.yml: targets[0].credentials.secretkey: unknown key "
        f"(allowed: {CREDENTIALS_ALLOWED})",
    ),
    (
        "unknown_service_key",
        with_target("services: {media: {tag: [Transcode]}}"),
        None,
        "config.yml: targets[0].services.media.tag: unknown key (allowed: tags, histograms)",
    ),
    (
        "newline_in_key",
        '"a\\nb": 1\n' + TARGET,
        None,
        f'config.yml: "a\\nb": unknown key (allowed: {TOP_ALLOWED})',
    ),
    (
        "missing_targets",
        "poll_interval: 60s\n",
        None,
        f"config.yml: targets: {NO_TARGETS}",
    ),
    (
        "missing_bucket",
        "targets:\n  - region: ap-chongqing\n",
        None,
        "config.yml: targets[0].bucket: required key is missing",
    ),
    (
        "missing_region",
        "targets:\n  - bucket: b-1250000000\n",
        None,
        "config.yml: targets[0].region: required key is missing",
    ),
    # targets
    ("empty_targets", "targets: []\n", None, f"config.yml: targets: {NO_TARGETS}"),
    ("null_targets", "targets:\n", None, f"config.yml: targets: {NO_TARGETS}"),
    (
        "targets_is_mapping",
        "targets: {bucket: b-1250000000}\n",
        None,
        "config.yml: targets: expected a list, got mapping",
    ),
    (
        "target_is_string",
        "targets: [b-1250000000]\n",
        None,
        "config.yml: targets[0]: expected a mapping, got string",
    ),
    (
        "duplicate_target",
        TARGET + "  - bucket: b-1250000000\n    region: ap-chongqing\n",
        None,
        "config.yml: targets[1]: duplicate target: same bucket and region as targets[0]",
    ),
    # bucket, region, endpoint
    (
        "bucket_without_appid",
        "targets:\n  - bucket: foo\n    region: ap-chongqing\n",
        None,
        'config.yml: targets[0].bucket: "foo" has no -APPID suffix (expected BucketName-APPID)',
    ),
    (
        "bucket_appid_not_digits",
        "targets:\n  - bucket: foo-12a\n    region: ap-chongqing\n",
        None,
        'config.yml: targets[0].bucket: "foo-12a" has no -APPID suffix (expected BucketName-APPID)',
    ),
    (
        "bucket_uppercase",
        "targets:\n  - bucket: Foo-1250000000\n    region: ap-chongqing\n",
        None,
        'config.yml: targets[0].bucket: "Foo-1250000000" is not a valid bucket name '
        "(lowercase letters, digits and dashes, then -APPID)",
    ),
    (
        "bucket_is_number",
        "targets:\n  - bucket: 1250000000\n    region: ap-chongqing\n",
        None,
        "config.yml: targets[0].bucket: expected a string, got integer",
    ),
    (
        "bucket_empty",
        "targets:\n  - bucket: ''\n    region: ap-chongqing\n",
        None,
        "config.yml: targets[0].bucket: must not be empty",
    ),
    (
        "region_bad",
        "targets:\n  - bucket: b-1250000000\n    region: AP_Chongqing\n",
        None,
        'config.yml: targets[0].region: "AP_Chongqing" is not a region '
        "(lowercase letters, digits and dashes, e.g. ap-guangzhou)",
    ),
    (
        "endpoint_scheme",
        with_target("endpoint: ftp://host"),
        None,
        f'config.yml: targets[0].endpoint: "ftp://host" must start with http:// or https:// '
        f"{ENDPOINT_FORM}",
    ),
    (
        "endpoint_path",
        with_target("endpoint: http://127.0.0.1:8080/ci"),
        None,
        f'config.yml: targets[0].endpoint: "http://127.0.0.1:8080/ci" must not have a path, '
        f"query or fragment {ENDPOINT_FORM}",
    ),
    (
        "endpoint_port",
        with_target("endpoint: http://127.0.0.1:99999"),
        None,
        f'config.yml: targets[0].endpoint: "http://127.0.0.1:99999" has a bad port {ENDPOINT_FORM}',
    ),
    (
        "endpoint_no_host",
        with_target("endpoint: 'http://:8080'"),
        None,
        f'config.yml: targets[0].endpoint: "http://:8080" has no host {ENDPOINT_FORM}',
    ),
    (
        "endpoint_user_info",
        with_target("endpoint: http://u:hunter2@host"),
        None,
        f"config.yml: targets[0].endpoint: must not contain user info {ENDPOINT_FORM}",
    ),
    # durations and numbers
    (
        "bad_duration",
        "poll_interval: 5x\n" + TARGET,
        None,
        f'config.yml: poll_interval: bad duration "5x" ({HINT})',
    ),
    (
        "duration_without_unit_at_end",
        "poll_interval: 1m30\n" + TARGET,
        None,
        f'config.yml: poll_interval: bad duration "1m30" ({HINT})',
    ),
    (
        "negative_duration",
        "clock_skew_tolerance: -5\n" + TARGET,
        None,
        'config.yml: clock_skew_tolerance: bad duration "-5" '
        "(must be a finite amount of time, not negative)",
    ),
    (
        "duration_is_list",
        "request_timeout: [10s]\n" + TARGET,
        None,
        f"config.yml: request_timeout: expected a duration, got list ({HINT})",
    ),
    (
        "poll_interval_too_short",
        "poll_interval: 0.5s\n" + TARGET,
        None,
        "config.yml: poll_interval: 0.5s is too short (minimum 1s)",
    ),
    (
        "poll_interval_zero",
        "poll_interval: 0\n" + TARGET,
        None,
        "config.yml: poll_interval: 0s is too short (minimum 1s)",
    ),
    (
        "request_timeout_zero",
        "request_timeout: 0s\n" + TARGET,
        None,
        "config.yml: request_timeout: must be more than 0s",
    ),
    (
        "failure_code_limit_zero",
        "failure_code_limit: 0\n" + TARGET,
        None,
        "config.yml: failure_code_limit: must be at least 1, got 0",
    ),
    (
        "failure_code_limit_float",
        "failure_code_limit: 1.5\n" + TARGET,
        None,
        "config.yml: failure_code_limit: expected an integer, got number",
    ),
    (
        "failure_code_limit_text",
        "failure_code_limit: many\n" + TARGET,
        None,
        'config.yml: failure_code_limit: expected an integer, got string "many"',
    ),
    (
        "failure_code_limit_bool",
        "failure_code_limit: true\n" + TARGET,
        None,
        "config.yml: failure_code_limit: expected an integer, got boolean",
    ),
    (
        "max_queues_per_service_zero",
        "max_queues_per_service: 0\n" + TARGET,
        None,
        "config.yml: max_queues_per_service: must be at least 1, got 0",
    ),
    (
        "max_queues_per_service_too_many",
        "max_queues_per_service: 10001\n" + TARGET,
        None,
        "config.yml: max_queues_per_service: must be at most 10000, got 10001",
    ),
    # services and tags
    (
        "unknown_service",
        with_target("services: {media: {}, video: {}}"),
        None,
        "config.yml: targets[0].services.video: unknown service "
        "(valid: media, ai, speech, pic, doc)",
    ),
    (
        "services_is_list",
        with_target("services: [media]"),
        None,
        "config.yml: targets[0].services: expected a mapping, got list",
    ),
    (
        "services_empty",
        with_target("services: {}"),
        None,
        "config.yml: targets[0].services: names no service (leave it out to watch every service)",
    ),
    (
        "service_is_list",
        with_target("services: {media: [Transcode]}"),
        None,
        "config.yml: targets[0].services.media: expected a mapping, got list",
    ),
    (
        "tags_is_string",
        with_target("services: {media: {tags: Transcode}}"),
        None,
        "config.yml: targets[0].services.media.tags: expected a list, got string",
    ),
    (
        "tags_empty",
        with_target("services: {media: {tags: []}}"),
        None,
        "config.yml: targets[0].services.media.tags: is empty "
        "(leave tags out for the service's documented tags)",
    ),
    (
        "tag_empty_string",
        with_target("services: {media: {tags: [Transcode, '']}}"),
        None,
        "config.yml: targets[0].services.media.tags[1]: must not be empty",
    ),
    (
        "tag_not_string",
        with_target("services: {media: {tags: [Transcode, 7]}}"),
        None,
        "config.yml: targets[0].services.media.tags[1]: expected a string, got integer",
    ),
    (
        "tag_duplicate",
        with_target("services: {speech: {tags: [A, B, A]}}"),
        None,
        'config.yml: targets[0].services.speech.tags[2]: duplicate tag "A"',
    ),
    # credentials
    (
        "no_credentials",
        TARGET,
        {},
        "config.yml: targets[0].credentials: no credentials: set TENCENTCLOUD_SECRET_ID and "
        "TENCENTCLOUD_SECRET_KEY (and TENCENTCLOUD_SESSION_TOKEN for temporary keys) in the "
        "environment, or give secret_id and secret_key here",
    ),
    (
        "env_secret_id_only",
        TARGET,
        {"TENCENTCLOUD_SECRET_ID": "AKID"},
        "config.yml: targets[0].credentials: no credentials: TENCENTCLOUD_SECRET_ID is set but "
        "TENCENTCLOUD_SECRET_KEY is not",
    ),
    (
        "secret_id_without_secret_key",
        with_target("credentials: {secret_id: AKID}"),
        None,
        "config.yml: targets[0].credentials.secret_key: required when secret_id is given",
    ),
    (
        "secret_key_without_secret_id",
        with_target("credentials: {secret_key: k}"),
        None,
        "config.yml: targets[0].credentials.secret_id: required when secret_key is given",
    ),
    (
        "credentials_token_only",
        with_target("credentials: {token: t}"),
        None,
        "config.yml: targets[0].credentials: give secret_id and secret_key, or a file, or a "
        "cvm_role, or leave credentials out to use TENCENTCLOUD_SECRET_ID and "
        "TENCENTCLOUD_SECRET_KEY",
    ),
    (
        "credentials_is_string",
        with_target("credentials: AKID:key"),
        None,
        "config.yml: targets[0].credentials: expected a mapping, got string",
    ),
    (
        "secret_key_wrong_type",
        with_target(f"credentials: {{secret_id: a, secret_key: [{SECRET_KEY}]}}"),
        None,
        "config.yml: targets[0].credentials.secret_key: expected a string, got list",
    ),
    (
        "secret_key_number",
        with_target("credentials: {secret_id: a, secret_key: 31415926535}"),
        None,
        "config.yml: targets[0].credentials.secret_key: expected a string, got integer",
    ),
    (
        "secret_key_empty_variable",
        with_target("credentials: {secret_id: a, secret_key: '${EMPTY}'}"),
        {**ENV, "EMPTY": ""},
        "config.yml: targets[0].credentials.secret_key: must not be empty",
    ),
    # ${VAR}
    (
        "missing_variable",
        with_target("credentials: {secret_id: a, secret_key: '${MY_KEY}'}"),
        None,
        "config.yml: targets[0].credentials.secret_key: environment variable MY_KEY is not set",
    ),
    (
        "missing_variable_embedded",
        "targets:\n  - bucket: b-${APPID}\n    region: x\n",
        None,
        "config.yml: targets[0].bucket: environment variable APPID is not set",
    ),
    (
        "missing_variable_top",
        "poll_interval: ${POLL}\n" + TARGET,
        None,
        "config.yml: poll_interval: environment variable POLL is not set",
    ),
    (
        "unterminated_variable",
        "targets:\n  - bucket: b-${APPID\n    region: x\n",
        None,
        "config.yml: targets[0].bucket: unterminated ${ (write $${ for a literal ${)",
    ),
    (
        "bad_variable_name",
        "targets:\n  - bucket: b-${1X}\n    region: x\n",
        None,
        'config.yml: targets[0].bucket: bad variable name "1X" in ${...} '
        "(letters, digits and _; write $${ for a literal ${)",
    ),
]


@pytest.mark.parametrize(("text", "env", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_config_gives_one_exact_line(
    text: str, env: dict[str, str] | None, expected: str
) -> None:
    assert error_of(text, env) == expected


def test_no_error_shows_a_secret() -> None:
    """Secrets given literally or through the environment stay out of every message."""
    env = {**ENV, "TENCENTCLOUD_SESSION_TOKEN": TOKEN, "MY_KEY": SECRET_KEY}
    texts = [
        with_target(f"credentials: {{secret_id: a, secret_key: [{SECRET_KEY}]}}"),
        with_target(f"credentials: {{secret_id: a, secret_key: {{k: {SECRET_KEY}}}}}"),
        with_target(f"credentials: {{secret_key: {SECRET_KEY}}}"),
        with_target(f"credentials: {{secret_id: a, secret_key: b, token: [{TOKEN}]}}"),
        with_target(f"credentials: {{secret_id: a, secret_key: {SECRET_KEY}, bad: 1}}"),
        with_target("credentials: {secret_id: a, secret_key: '${MY_KEY}'}") + "    x: 1\n",
        TARGET + "  - bucket: b-1250000000\n    region: ap-chongqing\n",
    ]
    for text in texts:
        message = error_of(text, env)
        assert SECRET_KEY not in message and TOKEN not in message, message


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        (
            with_target("credentials: {secret_id: a, secret_key: 'has space'}"),
            None,
            "config.yml: targets[0].credentials.secret_key: must be printable ASCII without "
            "spaces (the value is not shown)",
        ),
        (
            with_target("credentials: {secret_id: a, secret_key: b, token: 't\u00f6ken'}"),
            None,
            "config.yml: targets[0].credentials.token: must be printable ASCII without spaces "
            "(the value is not shown)",
        ),
        (
            TARGET,
            {**ENV, "TENCENTCLOUD_SECRET_KEY": "key\twith\ttabs"},
            "config.yml: targets[0].credentials (from TENCENTCLOUD_SECRET_KEY): must be "
            "printable ASCII without spaces (the value is not shown)",
        ),
    ],
    ids=["space-in-key", "non-ascii-token", "tab-in-env-key"],
)
def test_credentials_that_cannot_travel_in_a_header(
    text: str, env: dict[str, str] | None, expected: str
) -> None:
    assert error_of(text, env) == expected


# --- YAML read strictly: no constructor failure, no YAML 1.1 surprise ----------------------

TAGS = "explicit YAML tags (!!int, !!binary, !foo, ...) are not supported; write the plain value"
AMBIGUOUS = (
    "is ambiguous in YAML (a leading 0, 0x, 0b, _ or : changes how it is read); "
    "write a plain decimal number"
)
STRICT_YAML = [
    # An explicit tag runs a constructor on text the user chose; on a secret its error
    # used to print the secret in a traceback.
    (
        "int_tag_on_secret",
        with_target(f"credentials:\n  secret_id: a\n  secret_key: !!int {SECRET_KEY}"),
        f"config.yml: line 6, column 19: {TAGS}",
    ),
    (
        "bool_tag_on_secret",
        with_target(f"credentials: {{secret_id: a, secret_key: !!bool {SECRET_KEY}}}"),
        f"config.yml: line 4, column 45: {TAGS}",
    ),
    ("float_tag", "poll_interval: !!float 1s\n" + TARGET, f"config.yml: line 1, column 16: {TAGS}"),
    (
        "timestamp_tag",
        "poll_interval: !!timestamp 2001-13-45\n" + TARGET,
        f"config.yml: line 1, column 16: {TAGS}",
    ),
    (
        "python_tag",
        "targets: !!python/object/apply:os.system [echo hi]\n",
        f"config.yml: line 1, column 10: {TAGS}",
    ),
    ("set_tag", "targets: !!set {a}\n", f"config.yml: line 1, column 10: {TAGS}"),
    (
        "binary_tag",
        with_target("credentials: {secret_id: a, secret_key: !!binary c2VjcmV0}"),
        f"config.yml: line 4, column 45: {TAGS}",
    ),
    (
        "local_tag",
        with_target("services: {media: {tags: !foo [x]}}"),
        f"config.yml: line 4, column 30: {TAGS}",
    ),
    # Dates stay text, so an impossible one is a bad duration, not a constructor crash.
    (
        "impossible_date",
        "poll_interval: 2001-13-45\n" + TARGET,
        f'config.yml: poll_interval: bad duration "2001-13-45" ({HINT})',
    ),
    (
        "date",
        "clock_skew_tolerance: 2001-01-01\n" + TARGET,
        f'config.yml: clock_skew_tolerance: bad duration "2001-01-01" ({HINT})',
    ),
    # More digits than int() converts (4300).
    (
        "int_of_5000_digits",
        "failure_code_limit: " + "9" * 5000 + "\n" + TARGET,
        "config.yml: failure_code_limit: must be at most 10000, got a 5000-digit number",
    ),
    (
        "string_of_5000_digits",
        "failure_code_limit: '" + "9" * 5000 + "'\n" + TARGET,
        "config.yml: failure_code_limit: must be at most 10000, got a 5000-digit number",
    ),
    (
        "negative_int_of_400_digits",
        "failure_code_limit: -" + "9" * 400 + "\n" + TARGET,
        "config.yml: failure_code_limit: must be at least 1, got a 400-digit number",
    ),
    (
        "tag_of_5000_digits",
        with_target("services: {media: {tags: [" + "9" * 5000 + "]}}"),
        "config.yml: targets[0].services.media.tags[0]: expected a string, got integer",
    ),
    # YAML 1.1 integers that do not mean what they look like.
    (
        "octal",
        "failure_code_limit: 010\n" + TARGET,
        f"config.yml: failure_code_limit: 010 {AMBIGUOUS}",
    ),
    (
        "hex",
        "failure_code_limit: 0x1e\n" + TARGET,
        f"config.yml: failure_code_limit: 0x1e {AMBIGUOUS}",
    ),
    (
        "binary",
        "failure_code_limit: 0b11\n" + TARGET,
        f"config.yml: failure_code_limit: 0b11 {AMBIGUOUS}",
    ),
    (
        "negative_octal",
        "failure_code_limit: -010\n" + TARGET,
        f"config.yml: failure_code_limit: -010 {AMBIGUOUS}",
    ),
    (
        "underscore",
        "poll_interval: 1_000\n" + TARGET,
        f"config.yml: poll_interval: 1_000 {AMBIGUOUS}",
    ),
    ("base_60", "poll_interval: 1:30\n" + TARGET, f"config.yml: poll_interval: 1:30 {AMBIGUOUS}"),
    (
        "base_60_float",
        "request_timeout: 1:30.5\n" + TARGET,
        f"config.yml: request_timeout: 1:30.5 {AMBIGUOUS}",
    ),
    (
        "octal_as_secret_not_shown",
        with_target("credentials: {secret_id: a, secret_key: 0777}"),
        "config.yml: targets[0].credentials.secret_key: expected a string, got integer",
    ),
    # Keys are their text, whatever YAML would read them as.
    ("null_key", "~: x\n" + TARGET, f"config.yml: ~: unknown key (allowed: {TOP_ALLOWED})"),
    ("bool_key", "yes: x\n" + TARGET, f"config.yml: yes: unknown key (allowed: {TOP_ALLOWED})"),
    ("int_key", "1: x\n" + TARGET, f"config.yml: 1: unknown key (allowed: {TOP_ALLOWED})"),
    ("empty_key", '"": x\n' + TARGET, f'config.yml: "": unknown key (allowed: {TOP_ALLOWED})'),
    (
        "bool_service",
        with_target("services: {on: {}}"),
        "config.yml: targets[0].services.on: unknown service (valid: media, ai, speech, pic, doc)",
    ),
    (
        "list_key",
        "? [a]\n: x\n" + TARGET,
        "config.yml: line 1, column 3: a key must be text, not a list or mapping",
    ),
    # A secret holding `${` is no variable name to show.
    (
        "bad_variable_name_in_secret",
        with_target(f"credentials: {{secret_id: a, secret_key: 'x${{{SECRET_KEY}}}'}}"),
        "config.yml: targets[0].credentials.secret_key: bad variable name in ${...} "
        "(letters, digits and _; write $${ for a literal ${)",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in STRICT_YAML], ids=[c[0] for c in STRICT_YAML]
)
def test_yaml_is_read_strictly_with_one_line_errors(text: str, expected: str) -> None:
    message = error_of(text)
    assert message == expected
    assert SECRET_KEY not in message


def test_dates_and_plain_text_stay_text() -> None:
    text = with_target(
        "credentials: {secret_id: !!str 123, secret_key: k}\n"
        "services: {media: {tags: [2001-01-01, '010']}}"
    )
    target = parse(text).targets[0]
    assert target.credentials.secret_id == "123"
    assert target.services[0].tags == ("2001-01-01", "010")


def test_plain_integers_keep_working() -> None:
    assert parse("failure_code_limit: +7\n" + TARGET).failure_code_limit == 7
    # A quoted string of digits is decimal, as it would be from ${VAR}.
    assert parse("failure_code_limit: '010'\n" + TARGET).failure_code_limit == 10


def test_a_failing_constructor_is_one_line_without_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever a constructor raises, its text (which may quote a secret) is not shown."""

    def failing(loader: object, node: object) -> object:
        raise KeyError(SECRET_KEY)

    monkeypatch.setitem(StrictLoader.yaml_constructors, "tag:yaml.org,2002:bool", failing)
    text = with_target("credentials:\n  secret_id: a\n  secret_key: yes")
    assert error_of(text) == "config.yml: line 6, column 19: cannot read this value"


# --- limits -------------------------------------------------------------------------------

LIMITS = [
    (
        "poll_interval_huge",
        "poll_interval: 10000000000\n",
        "poll_interval: 10000000000s is longer than the maximum of 24h",
    ),
    (
        "poll_interval_just_over",
        "poll_interval: 24h1ms\n",
        "poll_interval: 86400.001s is longer than the maximum of 24h",
    ),
    (
        "poll_interval_hours",
        "poll_interval: 99999999999999999999h\n",
        "poll_interval: 3.6e+23s is longer than the maximum of 24h",
    ),
    (
        "poll_interval_400_digits",
        "poll_interval: 1" + "0" * 400 + "\n",
        "poll_interval: is longer than the maximum of 24h",
    ),
    (
        "poll_interval_400_digit_text",
        "poll_interval: '1" + "0" * 400 + "s'\n",
        "poll_interval: is longer than the maximum of 24h",
    ),
    (
        "request_timeout",
        "request_timeout: 3000000h\n",
        "request_timeout: 10800000000s is longer than the maximum of 10m",
    ),
    (
        "request_timeout_just_over",
        "request_timeout: 601\n",
        "request_timeout: 601s is longer than the maximum of 10m",
    ),
    (
        "clock_skew",
        "clock_skew_tolerance: 100000000000\n",
        "clock_skew_tolerance: 100000000000s is longer than the maximum of 1h",
    ),
    (
        "clock_skew_just_over",
        "clock_skew_tolerance: 3601s\n",
        "clock_skew_tolerance: 3601s is longer than the maximum of 1h",
    ),
    (
        "clock_skew_negative_400_digits",
        "clock_skew_tolerance: -" + "9" * 400 + "\n",
        'clock_skew_tolerance: bad duration "-999999999999999999999999999999999999..." '
        "(must be a finite amount of time, not negative)",
    ),
    (
        "nan",
        "poll_interval: .nan\n",
        'poll_interval: bad duration "nan" (must be a finite amount of time, not negative)',
    ),
    (
        "inf",
        "request_timeout: .inf\n",
        'request_timeout: bad duration "inf" (must be a finite amount of time, not negative)',
    ),
    (
        "float_overflow",
        "poll_interval: 1.0e+400\n",
        'poll_interval: bad duration "inf" (must be a finite amount of time, not negative)',
    ),
    ("fullwidth_digit", "poll_interval: '５s'\n", f'poll_interval: bad duration "５s" ({HINT})'),
    ("fullwidth_number", "poll_interval: '５'\n", f'poll_interval: bad duration "５" ({HINT})'),
    (
        "failure_code_limit",
        "failure_code_limit: 10001\n",
        "failure_code_limit: must be at most 10000, got 10001",
    ),
    (
        "failure_code_limit_text",
        "failure_code_limit: '10001'\n",
        "failure_code_limit: must be at most 10000, got 10001",
    ),
]


@pytest.mark.parametrize(("top", "expected"), [c[1:] for c in LIMITS], ids=[c[0] for c in LIMITS])
def test_settings_have_upper_bounds(top: str, expected: str) -> None:
    assert error_of(top + TARGET) == f"config.yml: {expected}"


def test_the_maxima_themselves_are_allowed() -> None:
    config = parse(
        "poll_interval: 24h\nrequest_timeout: 10m\nclock_skew_tolerance: 1h\n"
        "failure_code_limit: 10000\n" + TARGET
    )
    assert (
        config.poll_interval,
        config.request_timeout,
        config.clock_skew_tolerance,
        config.failure_code_limit,
    ) == (86400.0, 600.0, 3600.0, 10000)


def test_a_duration_may_equal_its_maximum_and_a_huge_one_shows_no_number() -> None:
    assert parse(f"clock_skew_tolerance: 1h\n{TARGET}").clock_skew_tolerance == 3600.0
    with pytest.raises(ConfigError) as caught:
        parse(f"clock_skew_tolerance: {'9' * 400}\n{TARGET}")
    assert str(caught.value) == (
        "config.yml: clock_skew_tolerance: is longer than the maximum of 1h"
    )


# --- only a regular file, and not a huge one ----------------------------------------------


def test_a_device_is_refused() -> None:
    # /dev/zero would be read forever; /dev/null shows the same check without that risk.
    assert _load_error(Path("/dev/null")) == "/dev/null: cannot read file: not a regular file"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    errors: list[str] = []

    def load() -> None:
        try:
            load_config(str(fifo), ENV)
        except ConfigError as error:
            errors.append(str(error))

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():
        # Blocked in open(): a writer lets it go, so the thread does not outlive the test.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=10)
        pytest.fail("load_config waited on a FIFO")
    assert errors == [f"{fifo}: cannot read file: not a regular file"]


def test_a_file_over_one_mebibyte_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yml"
    filler = "#" * (1024 * 1024 - len(TARGET) - 1) + "\n"
    path.write_text(filler + TARGET, encoding="utf-8")
    assert len(load_config(str(path), ENV).targets) == 1  # exactly 1 MiB still loads
    path.write_text(filler + "#" + TARGET, encoding="utf-8")
    assert _load_error(path) == f"{path}: file is larger than 1 MiB (not a configuration file?)"


# --- rate_limit, retry, idle_tag_backoff, state_file ---------------------------------------


def test_new_settings_default() -> None:
    config = parse(TARGET)
    assert config.rate_limit == RateLimitConfig(15.0, 15, 4)
    assert config.retry == RetryConfig(attempts=3, initial_backoff=0.5, max_backoff=10.0)
    assert config.idle_tag_backoff == 600.0
    assert config.state_file is None
    # Code that builds a Config by hand gets the same defaults.
    assert Config(config.targets) == config


def test_new_settings_given() -> None:
    text = (
        "rate_limit: {requests_per_second: 2.5, burst: 7, concurrency: 64}\n"
        "retry: {attempts: 10, initial_backoff: 250ms, max_backoff: 5m}\n"
        "idle_tag_backoff: 24h\n" + TARGET
    )
    config = parse(text)
    assert config.rate_limit == RateLimitConfig(2.5, 7, 64)
    assert config.retry == RetryConfig(10, 0.25, 300.0)
    assert config.idle_tag_backoff == 86400.0


@pytest.mark.parametrize(
    ("per_second", "burst"), [("2.5", 3), ("0.2", 1), ("15", 15), ("10000", 10000), ("'7'", 7)]
)
def test_burst_defaults_to_a_second_of_requests(per_second: str, burst: int) -> None:
    config = parse(f"rate_limit: {{requests_per_second: {per_second}}}\n" + TARGET)
    assert config.rate_limit.burst == burst
    assert config.rate_limit.concurrency == 4


def test_new_settings_from_the_environment() -> None:
    text = (
        "rate_limit: {requests_per_second: '${RPS}', burst: '${BURST}'}\n"
        "retry: {attempts: '${TRIES}', max_backoff: '${MAX}'}\n"
        "idle_tag_backoff: ${IDLE}\n" + TARGET
    )
    env = {**ENV, "RPS": "0.5", "BURST": "2", "TRIES": "5", "MAX": "1m", "IDLE": "0"}
    config = parse(text, env)
    assert config.rate_limit == RateLimitConfig(0.5, 2, 4)
    assert config.retry == RetryConfig(5, 0.5, 60.0)
    assert config.idle_tag_backoff == 0.0


def test_empty_sections_take_the_defaults() -> None:
    config = parse("rate_limit:\nretry: {}\n" + TARGET)
    assert (config.rate_limit, config.retry) == (RateLimitConfig(), RetryConfig())


def test_backoffs_may_be_equal_or_zero() -> None:
    config = parse("retry: {initial_backoff: 0, max_backoff: 0s}\n" + TARGET)
    assert config.retry == RetryConfig(3, 0.0, 0.0)
    config = parse("retry: {initial_backoff: 10s}\n" + TARGET)
    assert config.retry.initial_backoff == config.retry.max_backoff == 10.0


def test_state_file_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse(f"state_file: {tmp_path}/state.json\n" + TARGET).state_file == (
        f"{tmp_path}/state.json"
    )
    monkeypatch.chdir(tmp_path)
    assert parse("state_file: state.json\n" + TARGET).state_file == f"{tmp_path}/state.json"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse("state_file: ~/s.json\n" + TARGET).state_file == f"{tmp_path}/s.json"


def test_state_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert error_of(f"state_file: {missing}/state.json\n" + TARGET) == (
        f'config.yml: state_file: directory "{missing}" does not exist'
    )
    assert error_of(f"state_file: {tmp_path}\n" + TARGET) == (
        f'config.yml: state_file: "{tmp_path}" is a directory, not a file'
    )
    (tmp_path / "plain").write_text("x")
    assert error_of(f"state_file: {tmp_path}/plain/state.json\n" + TARGET) == (
        f'config.yml: state_file: directory "{tmp_path}/plain" does not exist'
    )


NEW_SETTINGS_BAD = [
    (
        "rate_limit_list",
        "rate_limit: [15]",
        "rate_limit: expected a mapping, got list",
    ),
    (
        "rate_limit_unknown",
        "rate_limit: {rps: 15}",
        "rate_limit.rps: unknown key (allowed: requests_per_second, burst, concurrency)",
    ),
    (
        "rps_zero",
        "rate_limit: {requests_per_second: 0}",
        "rate_limit.requests_per_second: must be more than 0, got 0",
    ),
    (
        "rps_negative",
        "rate_limit: {requests_per_second: -1.5}",
        "rate_limit.requests_per_second: must be more than 0, got -1.5",
    ),
    (
        "rps_over",
        "rate_limit: {requests_per_second: 10000.5}",
        "rate_limit.requests_per_second: must be at most 10000, got 10000.5",
    ),
    (
        "rps_text",
        "rate_limit: {requests_per_second: fast}",
        'rate_limit.requests_per_second: expected a number, got string "fast"',
    ),
    (
        "rps_unit",
        "rate_limit: {requests_per_second: 15/s}",
        'rate_limit.requests_per_second: expected a number, got string "15/s"',
    ),
    (
        "rps_bool",
        "rate_limit: {requests_per_second: true}",
        "rate_limit.requests_per_second: expected a number, got boolean",
    ),
    (
        "rps_nan",
        "rate_limit: {requests_per_second: .nan}",
        "rate_limit.requests_per_second: must be a finite number, got nan",
    ),
    (
        "rps_inf",
        "rate_limit: {requests_per_second: .inf}",
        "rate_limit.requests_per_second: must be a finite number, got inf",
    ),
    (
        "rps_400_digits",
        "rate_limit: {requests_per_second: 1" + "0" * 400 + "}",
        "rate_limit.requests_per_second: must be at most 10000, got a 401-digit number",
    ),
    (
        "rps_400_digit_text",
        "rate_limit: {requests_per_second: '1" + "0" * 400 + ".5'}",
        "rate_limit.requests_per_second: must be at most 10000, got a 401-digit number",
    ),
    (
        "rps_octal",
        "rate_limit: {requests_per_second: 015}",
        f"rate_limit.requests_per_second: 015 {AMBIGUOUS}",
    ),
    (
        "burst_zero",
        "rate_limit: {burst: 0}",
        "rate_limit.burst: must be at least 1, got 0",
    ),
    (
        "burst_over",
        "rate_limit: {burst: 10001}",
        "rate_limit.burst: must be at most 10000, got 10001",
    ),
    (
        "burst_float",
        "rate_limit: {burst: 1.5}",
        "rate_limit.burst: expected an integer, got number",
    ),
    (
        "concurrency_zero",
        "rate_limit: {concurrency: 0}",
        "rate_limit.concurrency: must be at least 1, got 0",
    ),
    (
        "concurrency_over",
        "rate_limit: {concurrency: 65}",
        "rate_limit.concurrency: must be at most 64, got 65",
    ),
    (
        "concurrency_text",
        "rate_limit: {concurrency: '${CONC}'}",
        "rate_limit.concurrency: environment variable CONC is not set",
    ),
    ("retry_scalar", "retry: 3", "retry: expected a mapping, got integer"),
    (
        "retry_unknown",
        "retry: {tries: 3}",
        "retry.tries: unknown key (allowed: attempts, initial_backoff, max_backoff)",
    ),
    ("attempts_zero", "retry: {attempts: 0}", "retry.attempts: must be at least 1, got 0"),
    ("attempts_over", "retry: {attempts: 11}", "retry.attempts: must be at most 10, got 11"),
    (
        "attempts_text",
        "retry: {attempts: three}",
        'retry.attempts: expected an integer, got string "three"',
    ),
    (
        "initial_backoff_bad",
        "retry: {initial_backoff: 5 s}",
        f'retry.initial_backoff: bad duration "5 s" ({HINT})',
    ),
    (
        "initial_backoff_negative",
        "retry: {initial_backoff: -1}",
        'retry.initial_backoff: bad duration "-1" (must be a finite amount of time, not negative)',
    ),
    (
        "initial_over_max",
        "retry: {initial_backoff: 2s, max_backoff: 1500ms}",
        "retry.initial_backoff: 2s is longer than retry.max_backoff (1.5s)",
    ),
    (
        "initial_over_default_max",
        "retry: {initial_backoff: 1m}",
        "retry.initial_backoff: 60s is longer than retry.max_backoff (10s)",
    ),
    (
        "initial_over_limit",
        "retry: {initial_backoff: 6m, max_backoff: 6m}",
        "retry.initial_backoff: 360s is longer than the maximum of 5m",
    ),
    (
        "max_backoff_over",
        "retry: {max_backoff: 5m1s}",
        "retry.max_backoff: 301s is longer than the maximum of 5m",
    ),
    (
        "idle_tag_backoff_over",
        "idle_tag_backoff: 25h",
        "idle_tag_backoff: 90000s is longer than the maximum of 24h",
    ),
    (
        "idle_tag_backoff_bad",
        "idle_tag_backoff: ten minutes",
        f'idle_tag_backoff: bad duration "ten minutes" ({HINT})',
    ),
    (
        "idle_tag_backoff_negative",
        "idle_tag_backoff: -10",
        'idle_tag_backoff: bad duration "-10" (must be a finite amount of time, not negative)',
    ),
    ("state_file_list", "state_file: [a]", "state_file: expected a string, got list"),
    ("state_file_empty", "state_file: ''", "state_file: must not be empty"),
    ("state_file_nul", 'state_file: "a\\0b"', "state_file: must not contain a NUL character"),
]


@pytest.mark.parametrize(
    ("top", "expected"),
    [c[1:] for c in NEW_SETTINGS_BAD],
    ids=[c[0] for c in NEW_SETTINGS_BAD],
)
def test_new_settings_bad_values(top: str, expected: str) -> None:
    assert error_of(top + "\n" + TARGET) == f"config.yml: {expected}"


# --- credentials: temporary keys, a file, a CVM role ---------------------------------------

FUTURE = "2999-01-02T03:04:05Z"
FUTURE_EPOCH = 32472241445.0  # FUTURE in epoch seconds


def credentials_of(text: str, env: dict[str, str] | None = None) -> object:
    return parse(with_target(text), env).targets[0].credentials


@pytest.mark.parametrize(
    "written",
    [FUTURE, "2999-01-02T11:04:05+08:00", "2999-01-01T22:04:05-0500", "'2999-01-02 03:04:05z'"],
)
def test_temporary_keys_carry_their_expiration(written: str) -> None:
    text = f"credentials: {{secret_id: a, secret_key: b, token: t, expiration: {written}}}"
    assert credentials_of(text) == Credentials("a", "b", "t", FUTURE_EPOCH)


def test_expiration_from_the_environment_with_a_fraction() -> None:
    text = "credentials: {secret_id: a, secret_key: b, token: t, expiration: '${EXP}'}"
    found = credentials_of(text, {**ENV, "EXP": "2999-01-02T03:04:05.250Z"})
    assert found == Credentials("a", "b", "t", FUTURE_EPOCH + 0.25)


def test_a_credentials_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "credentials"
    keys.write_text("[default]\nsecret_id = a\nsecret_key = b\n")
    assert credentials_of(f"credentials: {{file: {keys}}}") == CredentialsFile(str(keys))
    assert credentials_of(f"credentials: {{file: {keys}, profile: prod}}") == CredentialsFile(
        str(keys), "prod"
    )
    monkeypatch.chdir(tmp_path)
    assert credentials_of("credentials: {file: credentials}") == CredentialsFile(str(keys))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert credentials_of("credentials: {file: ~/credentials}") == CredentialsFile(str(keys))


def test_the_file_is_checked_but_not_read_at_load(tmp_path: Path) -> None:
    """Its keys are read (and checked) at each change; it may be rewritten before first use."""
    keys = tmp_path / "credentials"
    keys.write_text("not yet written\n")
    assert credentials_of(f"credentials: {{file: {keys}}}") == CredentialsFile(str(keys))


def test_credentials_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    # The path is not shown: under credentials no value is.
    assert error_of(with_target(f"credentials: {{file: {missing}}}")) == (
        "config.yml: targets[0].credentials.file: cannot read the file: No such file or directory"
    )
    assert error_of(with_target(f"credentials: {{file: {tmp_path}}}")) == (
        "config.yml: targets[0].credentials.file: cannot read the file: Is a directory"
    )
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert error_of(with_target(f"credentials: {{file: {fifo}}}")) == (
        "config.yml: targets[0].credentials.file: cannot read the file: not a regular file"
    )
    (tmp_path / "plain").write_text("x")
    under_a_file = tmp_path / "plain" / "credentials"
    assert error_of(with_target(f"credentials: {{file: {under_a_file}}}")) == (
        "config.yml: targets[0].credentials.file: cannot read the file: Not a directory"
    )


@pytest.mark.parametrize(
    ("written", "role"),
    [("exporter-role", "exporter-role"), ("auto", None), ("''", None), ("", None)],
)
def test_a_cvm_role(written: str, role: str | None) -> None:
    assert credentials_of(f"credentials: {{cvm_role: {written}}}") == CVMRole(
        role, "http://metadata.tencentyun.com/latest/meta-data/"
    )


@pytest.mark.parametrize(
    ("written", "endpoint"),
    [
        ("http://127.0.0.1:8080/latest/meta-data", "http://127.0.0.1:8080/latest/meta-data/"),
        ("http://127.0.0.1:8080/latest/meta-data/", "http://127.0.0.1:8080/latest/meta-data/"),
        ("http://[::1]:80", "http://[::1]:80/"),
    ],
)
def test_a_metadata_endpoint(written: str, endpoint: str) -> None:
    text = f"credentials: {{cvm_role: r, metadata_endpoint: '{written}'}}"
    assert credentials_of(text) == CVMRole("r", endpoint)


ALLOWED_FORMS = "(give secret_id and secret_key, or a file, or a cvm_role)"
CREDENTIALS_BAD = [
    (
        "static_and_file",
        "credentials: {secret_id: a, secret_key: b, file: /x}",
        f"targets[0].credentials: secret_id and file cannot be used together {ALLOWED_FORMS}",
    ),
    (
        "file_and_role",
        "credentials: {cvm_role: r, profile: p}",
        f"targets[0].credentials: cvm_role and profile cannot be used together {ALLOWED_FORMS}",
    ),
    (
        "all_three",
        "credentials: {metadata_endpoint: 'http://h', token: t, file: /x}",
        "targets[0].credentials: metadata_endpoint, token and file cannot be used together "
        f"{ALLOWED_FORMS}",
    ),
    (
        "null_file_still_mixes",
        "credentials: {secret_id: a, secret_key: b, file: }",
        f"targets[0].credentials: secret_id and file cannot be used together {ALLOWED_FORMS}",
    ),
    (
        "profile_without_file",
        "credentials: {profile: prod}",
        "targets[0].credentials.file: required when profile is given",
    ),
    (
        "endpoint_without_role",
        "credentials: {metadata_endpoint: 'http://127.0.0.1:1/'}",
        "targets[0].credentials.cvm_role: required when metadata_endpoint is given "
        "(auto asks the metadata service)",
    ),
    (
        "file_null",
        "credentials: {file: }",
        "targets[0].credentials.file: expected a string, got null",
    ),
    ("file_empty", "credentials: {file: ''}", "targets[0].credentials.file: must not be empty"),
    (
        "file_variable",
        "credentials: {file: '${KEYS}'}",
        "targets[0].credentials.file: environment variable KEYS is not set",
    ),
    (
        "profile_brackets",
        "credentials: {file: /x, profile: '[prod]'}",
        "targets[0].credentials.profile: is not a profile name "
        "(the name of a [section] of the file) (the value is not shown)",
    ),
    (
        "profile_number",
        "credentials: {file: /x, profile: 7}",
        "targets[0].credentials.profile: expected a string, got integer",
    ),
    (
        "role_with_space",
        "credentials: {cvm_role: 'my role'}",
        "targets[0].credentials.cvm_role: is not a CAM role name (up to 128 letters, "
        "digits and +=,.@_-; or auto to ask the metadata service) (the value is not shown)",
    ),
    (
        "role_list",
        "credentials: {cvm_role: [r]}",
        "targets[0].credentials.cvm_role: expected a string, got list",
    ),
    (
        "metadata_endpoint_scheme",
        "credentials: {cvm_role: r, metadata_endpoint: 'ftp://h/'}",
        "targets[0].credentials.metadata_endpoint: must start with http:// or "
        "https:// (expected http(s)://host[:port]/path/)",
    ),
    (
        "metadata_endpoint_query",
        "credentials: {cvm_role: r, metadata_endpoint: 'http://h/meta?x=1'}",
        "targets[0].credentials.metadata_endpoint: must not have a query "
        "or fragment (expected http(s)://host[:port]/path/)",
    ),
    (
        "metadata_endpoint_user",
        "credentials: {cvm_role: r, metadata_endpoint: 'http://u:pw@h/'}",
        "targets[0].credentials.metadata_endpoint: must not contain user info "
        "(expected http(s)://host[:port]/path/)",
    ),
    (
        "expiration_not_iso",
        "credentials: {secret_id: a, secret_key: b, expiration: tomorrow}",
        "targets[0].credentials.expiration: is not an ISO 8601 time with a zone, "
        "e.g. 2026-11-21T10:00:00Z (the value is not shown)",
    ),
    (
        "expiration_without_zone",
        "credentials: {secret_id: a, secret_key: b, expiration: 2999-01-02T03:04:05}",
        "targets[0].credentials.expiration: is not an ISO 8601 time with "
        "a zone, e.g. 2026-11-21T10:00:00Z (the value is not shown)",
    ),
    (
        "expiration_impossible",
        "credentials: {secret_id: a, secret_key: b, expiration: 2999-13-02T03:04:05Z}",
        "targets[0].credentials.expiration: is not an ISO 8601 time with "
        "a zone, e.g. 2026-11-21T10:00:00Z (the value is not shown)",
    ),
    (
        "expiration_epoch",
        "credentials: {secret_id: a, secret_key: b, expiration: 1700000000}",
        "targets[0].credentials.expiration: expected an ISO 8601 time with a zone, "
        "e.g. 2026-11-21T10:00:00Z, got integer",
    ),
    (
        "expiration_past",
        "credentials: {secret_id: a, secret_key: b, token: t, expiration: 2001-02-03T04:05:06Z}",
        "targets[0].credentials.expiration: temporary credentials expired at 2001-02-03T04:05:06Z",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in CREDENTIALS_BAD], ids=[c[0] for c in CREDENTIALS_BAD]
)
def test_credentials_forms_bad(text: str, expected: str) -> None:
    assert error_of(with_target(text)) == f"config.yml: {expected}"


def test_no_secret_in_the_errors_or_reprs_of_new_forms(tmp_path: Path) -> None:
    keys = tmp_path / "credentials"
    keys.write_text(f"[default]\nsecret_id = a\nsecret_key = {SECRET_KEY}\n")
    texts = [
        f"credentials: {{secret_id: a, secret_key: {SECRET_KEY}, file: {keys}}}",
        f"credentials: {{secret_id: a, secret_key: {SECRET_KEY}, expiration: 2001-01-01T00:00Z}}",
        f"credentials: {{secret_id: a, secret_key: {SECRET_KEY}, token: {TOKEN}, expiration: x}}",
        f"credentials: {{secret_key: {SECRET_KEY}, cvm_role: r}}",
    ]
    for text in texts:
        message = error_of(with_target(text))
        assert SECRET_KEY not in message and TOKEN not in message, message
    for text in (
        f"credentials: {{secret_id: a, secret_key: {SECRET_KEY}, token: {TOKEN}, "
        f"expiration: {FUTURE}}}",
        f"credentials: {{file: {keys}}}",
    ):
        config = parse(with_target(text))
        shown = repr(config) + repr(config.targets[0].credentials)
        assert SECRET_KEY not in shown and TOKEN not in shown


# --- histograms: bucket bounds, and a service's histograms off ------------------------------


def services_of(config: Config) -> dict[str, bool]:
    (target,) = config.targets
    return {service.name: service.histograms for service in target.services}


def test_histograms_default() -> None:
    config = parse(TARGET)
    assert config.histograms == HistogramLayout(RUN_TIME_BUCKETS, QUEUE_WAIT_BUCKETS)
    assert set(services_of(config).values()) == {True}
    # Code that builds the config by hand gets the same.
    assert Config(config.targets).histograms == config.histograms
    assert ServiceConfig("media", ("Transcode",)).histograms is True


def test_histograms_given() -> None:
    text = (
        "histograms:\n"
        "  run_time_buckets: [500ms, 1.5, '${FIRST}', 1m30s, 2h]\n"
        "  queue_wait_buckets: [1s, 720h]\n" + TARGET
    )
    config = parse(text, {**ENV, "FIRST": "10s"})
    assert config.histograms == HistogramLayout((0.5, 1.5, 10.0, 90.0, 7200.0), (1.0, 2592000.0))


def test_histograms_the_documented_defaults_written_out() -> None:
    text = (
        "histograms:\n"
        "  run_time_buckets: [5s, 30s, 1m, 5m, 15m, 1h, 4h]\n"
        "  queue_wait_buckets: [1s, 10s, 1m, 5m, 1h]\n" + TARGET
    )
    assert parse(text).histograms == HistogramLayout()


@pytest.mark.parametrize(
    "written", ["histograms:", "histograms: {}", "histograms: {run_time_buckets: ~}"]
)
def test_histograms_left_empty_take_the_defaults(written: str) -> None:
    assert parse(written + "\n" + TARGET).histograms == HistogramLayout()


def test_thirty_bounds_are_allowed() -> None:
    bounds = ", ".join(f"{n}s" for n in range(1, 31))
    config = parse(f"histograms: {{queue_wait_buckets: [{bounds}]}}\n" + TARGET)
    assert config.histograms.queue_wait == tuple(float(n) for n in range(1, 31))
    assert config.histograms.run_time == RUN_TIME_BUCKETS


def test_a_service_without_histograms() -> None:
    text = with_target(
        "services:\n"
        "  media: {tags: [Transcode], histograms: false}\n"
        "  ai: {histograms: true}\n"
        "  speech: {histograms: '${SPEECH_HISTOGRAMS}'}\n"
        "  pic: {histograms: ~}\n"
        "  doc:"
    )
    config = parse(text, {**ENV, "SPEECH_HISTOGRAMS": "False"})
    assert services_of(config) == {
        "media": False,
        "ai": True,
        "speech": False,
        "pic": True,
        "doc": True,
    }
    (target,) = config.targets
    assert target.services[0] == ServiceConfig("media", ("Transcode",), histograms=False)
    assert target.services[1].tags == SERVICES["ai"].tags


HISTOGRAMS_BAD = [
    (
        "not_ascending",
        "histograms: {run_time_buckets: [5s, 1m, 30s]}",
        "histograms.run_time_buckets[2]: must be greater than the bound before it (1m)",
    ),
    (
        "duplicate_written_differently",
        "histograms: {queue_wait_buckets: [1s, 1m30s, 90, 60]}",
        "histograms.queue_wait_buckets[2]: duplicate of the bound before it (1m30s)",
    ),
    (
        "duplicate",
        "histograms: {run_time_buckets: [5s, 1m, 60s]}",
        "histograms.run_time_buckets[2]: duplicate of the bound before it (1m)",
    ),
    (
        "descending_below_a_second",
        "histograms: {queue_wait_buckets: [500ms, 250ms]}",
        "histograms.queue_wait_buckets[1]: must be greater than the bound before it (500ms)",
    ),
    (
        "zero",
        "histograms: {run_time_buckets: [0s, 5s]}",
        "histograms.run_time_buckets[0]: must be more than 0s",
    ),
    (
        "zero_number",
        "histograms: {queue_wait_buckets: [1, 0]}",
        "histograms.queue_wait_buckets[1]: must be more than 0s",
    ),
    (
        "negative",
        "histograms: {run_time_buckets: [-5]}",
        'histograms.run_time_buckets[0]: bad duration "-5" '
        "(must be a finite amount of time, not negative)",
    ),
    (
        "negative_text",
        "histograms: {run_time_buckets: [1s, -5s]}",
        f'histograms.run_time_buckets[1]: bad duration "-5s" ({HINT})',
    ),
    (
        "too_long",
        "histograms: {run_time_buckets: [1h, 721h]}",
        "histograms.run_time_buckets[1]: 2595600s is longer than the maximum of 720h",
    ),
    (
        "too_many_digits",
        "histograms: {run_time_buckets: [" + "9" * 40 + "]}",
        "histograms.run_time_buckets[0]: is longer than the maximum of 720h",
    ),
    (
        "too_many",
        "histograms: {run_time_buckets: [" + ", ".join(f"{n}s" for n in range(1, 32)) + "]}",
        "histograms.run_time_buckets: must have at most 30 bounds, got 31",
    ),
    (
        "empty_list",
        "histograms: {queue_wait_buckets: []}",
        "histograms.queue_wait_buckets: is empty (leave it out for the default bounds)",
    ),
    (
        "not_a_list",
        "histograms: {run_time_buckets: 5s}",
        "histograms.run_time_buckets: expected a list, got string",
    ),
    (
        "not_a_list_mapping",
        "histograms: {queue_wait_buckets: {a: 1}}",
        "histograms.queue_wait_buckets: expected a list, got mapping",
    ),
    (
        "bound_not_a_duration",
        "histograms: {run_time_buckets: [5s, [1m]]}",
        f"histograms.run_time_buckets[1]: expected a duration, got list ({HINT})",
    ),
    (
        "missing_variable",
        "histograms: {run_time_buckets: ['${NOPE}']}",
        "histograms.run_time_buckets[0]: environment variable NOPE is not set",
    ),
    (
        "unknown_key",
        "histograms: {run_time_bucket: [5s]}",
        "histograms.run_time_bucket: unknown key (allowed: run_time_buckets, queue_wait_buckets)",
    ),
    ("section_not_a_mapping", "histograms: [5s]", "histograms: expected a mapping, got list"),
    ("section_false", "histograms: false", "histograms: expected a mapping, got boolean"),
]


@pytest.mark.parametrize(
    ("top", "expected"), [c[1:] for c in HISTOGRAMS_BAD], ids=[c[0] for c in HISTOGRAMS_BAD]
)
def test_histograms_bad_values(top: str, expected: str) -> None:
    assert error_of(top + "\n" + TARGET) == f"config.yml: {expected}"


SERVICE_HISTOGRAMS_BAD = [
    ("integer", "0", "expected true or false, got integer"),
    ("text", "maybe", 'expected true or false, got string "maybe"'),
    ("quoted_yes", "'yes'", 'expected true or false, got string "yes"'),
    ("list", "[false]", "expected true or false, got list"),
    ("mapping", "{off: true}", "expected true or false, got mapping"),
]


@pytest.mark.parametrize(
    ("written", "expected"),
    [c[1:] for c in SERVICE_HISTOGRAMS_BAD],
    ids=[c[0] for c in SERVICE_HISTOGRAMS_BAD],
)
def test_service_histograms_must_be_a_boolean(written: str, expected: str) -> None:
    text = with_target(f"services: {{media: {{histograms: {written}}}}}")
    assert error_of(text) == f"config.yml: targets[0].services.media.histograms: {expected}"
