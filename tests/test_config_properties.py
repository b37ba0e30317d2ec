"""Properties of the config loader: whatever the input, a Config or exactly one ConfigError whose
text is one line, never another exception, and never a secret in the message.

Inputs: arbitrary text, YAML-looking text assembled from YAML's own punctuation and the
loader's keys, structures dumped to YAML (free-form, and shaped like a real file so that the
deeper checks run), and arbitrary bytes through load_config. Derandomized: the same examples
on every run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config import Config, ConfigError, config_schema, load_config, parse_config

SECRET = "Zq9SecretMarker7Kx"
ENV = {
    "TENCENTCLOUD_SECRET_ID": "AKIDenv",
    "TENCENTCLOUD_SECRET_KEY": SECRET,
    "POLL": "30s",
    "EMPTY": "",
    "KEY": SECRET,
}
PROPERTIES = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def property_names(schema: object) -> set[str]:
    """Every key the schema declares, at any depth (the services' names among them)."""
    if isinstance(schema, list):
        return set().union(*map(property_names, schema))
    if not isinstance(schema, dict):
        return set()
    return set(schema.get("properties", ())).union(*map(property_names, schema.values()))


ALL_KEYS = sorted(property_names(config_schema()))


def outcome(load: Callable[[], Config]) -> Config | ConfigError:
    """The loader's answer; any exception but ConfigError propagates and fails the test."""
    try:
        config = load()
    except ConfigError as error:
        message = str(error)
        assert message, "an empty error message"
        assert "\n" not in message and "\r" not in message, message
        return error
    assert isinstance(config, Config)
    assert config.targets
    return config


def check(text: str) -> Config | ConfigError:
    result = outcome(lambda: parse_config(text, "config.yml", ENV))
    if isinstance(result, ConfigError):
        assert str(result).startswith("config.yml"), str(result)
    return result


# --- arbitrary text ---------------------------------------------------------------------------


@PROPERTIES
@given(st.text(max_size=300))
def test_any_text(text: str) -> None:
    check(text)


# --- YAML-looking text ------------------------------------------------------------------------

PUNCTUATION = [
    ": ",
    ":",
    "- ",
    "-",
    "[",
    "]",
    "{",
    "}",
    ", ",
    "\n",
    "\n  ",
    "\n    ",
    "  ",
    "#",
    "'",
    '"',
    "|",
    ">",
    "&a ",
    "*a",
    "<<: ",
    "!!int ",
    "!!str ",
    "!foo ",
    "? ",
    "---\n",
    "...\n",
    "${",
    "$${",
    "}",
    "${KEY}",
    "${NOPE}",
    "${EMPTY:-5}",
    "~",
    "null",
    "yes",
    "no",
    "on",
    "0x1f",
    "010",
    "1_000",
    "1:30",
    ".nan",
    ".inf",
    "-1",
    "0",
    "1.5",
    "30s",
    "1m30s",
    "500ms",
    "99999999999999999999999999999999999",
    "2026-11-21T10:00:00Z",
    "2001-13-45",
    "http://127.0.0.1:8080/",
    "auto",
    "b-1250000000",
    "ap-chongqing",
    "Transcode",
    "\t",
    "\u2028",
    "\x85",
    "\\",
    "%",
    "@",
    "`",
    "\ufeff",
]
TOKENS = st.one_of(st.sampled_from(PUNCTUATION), st.sampled_from(ALL_KEYS), st.text(max_size=6))


@PROPERTIES
@given(st.lists(TOKENS, max_size=60).map("".join))
def test_yaml_looking_text(text: str) -> None:
    check(text)


def line(keys: list[str]) -> st.SearchStrategy[str]:
    values = st.one_of(st.sampled_from(PUNCTUATION), st.text(max_size=8), st.just(SECRET))
    return st.builds(
        lambda indent, key, value: f"{indent}{key}: {value}",
        st.sampled_from(["", "  ", "    ", "  - ", "      ", "- "]),
        st.sampled_from(keys),
        values,
    )


@PROPERTIES
@given(st.lists(line(ALL_KEYS), min_size=1, max_size=25).map("\n".join))
def test_lines_of_known_keys(text: str) -> None:
    check(text)


# --- structures dumped to YAML ----------------------------------------------------------------

# No secret in these: a value that is not a secret may be shown in an error.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from([p for p in PUNCTUATION if p != "${KEY}"]),
)
# Secrets where secrets go: literally, from the environment, or inside other text.
SECRETS = st.one_of(
    st.sampled_from([SECRET, "${KEY}", f"x{SECRET}", f"{SECRET} y", f"${{{SECRET}}}"]),
    st.builds(lambda a, b: a + SECRET + b, st.text(max_size=4), st.text(max_size=4)),
    st.lists(st.just(SECRET), max_size=2),
    st.dictionaries(st.just(SECRET), st.just(SECRET), max_size=1),
)
KEYS = st.one_of(st.sampled_from(ALL_KEYS), st.text(max_size=8))
TREES = st.recursive(
    st.one_of(SCALARS, st.just(SECRET)),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(KEYS, children, max_size=5),
    ),
    max_leaves=25,
)


def dumped(value: object) -> str:
    return yaml.safe_dump(value, allow_unicode=True, default_flow_style=None)


@PROPERTIES
@given(TREES)
def test_any_structure(tree: object) -> None:
    check(dumped(tree))


def optional(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Mappings with any subset of `keys`, each with its strategy's value."""
    return st.fixed_dictionaries({}, optional=keys)


DURATIONS = st.one_of(
    st.sampled_from(["30s", "1m30s", "500ms", "0", "10m", "25h", "5 s", "-1", "${POLL}"]),
    st.floats(min_value=-10, max_value=1e6),
    st.integers(min_value=-10, max_value=10**6),
    SCALARS,
)
NUMBERS = st.one_of(
    st.integers(min_value=-5, max_value=20000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["15", "0.5", "${NOPE}", "fast", "1e3"]),
    SCALARS,
)
CREDENTIALS = optional(
    {
        "secret_id": st.one_of(st.just("AKIDx"), SCALARS),
        "secret_key": st.one_of(SECRETS, SCALARS),
        "token": st.one_of(SECRETS, SCALARS),
        "expiration": st.one_of(
            st.sampled_from(["2999-01-01T00:00:00Z", "2001-01-01T00:00:00Z", "soon"]), SCALARS
        ),
        "file": st.one_of(st.sampled_from(["/dev/null", "/nonexistent", "/tmp", ""]), SCALARS),
        "profile": st.one_of(st.sampled_from(["default", "[x]", ""]), SCALARS),
        "cvm_role": st.one_of(st.sampled_from(["auto", "", "r", "a b"]), SCALARS),
        "metadata_endpoint": st.one_of(
            st.sampled_from(["http://127.0.0.1:1/m", "ftp://x", "http://u:p@h/"]), SCALARS
        ),
    }
)
TARGET = optional(
    {
        "bucket": st.one_of(st.just("b-1250000000"), SCALARS),
        "region": st.one_of(st.just("ap-chongqing"), SCALARS),
        "endpoint": st.one_of(st.just("http://127.0.0.1:8080"), SCALARS),
        "credentials": st.one_of(CREDENTIALS, SCALARS),
        "services": st.one_of(
            st.dictionaries(
                st.sampled_from(["media", "ai", "speech", "pic", "doc", "video"]),
                st.one_of(
                    optional(
                        {
                            "tags": st.lists(st.text(max_size=10), max_size=3),
                            "histograms": SCALARS,
                        }
                    ),
                    SCALARS,
                ),
                max_size=3,
            ),
            SCALARS,
        ),
    }
)
DOCUMENTS = optional(
    {
        "poll_interval": DURATIONS,
        "request_timeout": DURATIONS,
        "failure_code_limit": NUMBERS,
        "clock_skew_tolerance": DURATIONS,
        "idle_tag_backoff": DURATIONS,
        "rate_limit": st.one_of(
            optional({"requests_per_second": NUMBERS, "burst": NUMBERS, "concurrency": NUMBERS}),
            SCALARS,
        ),
        "retry": st.one_of(
            optional({"attempts": NUMBERS, "initial_backoff": DURATIONS, "max_backoff": DURATIONS}),
            SCALARS,
        ),
        "histograms": st.one_of(
            optional(
                {
                    "run_time_buckets": st.one_of(st.lists(DURATIONS, max_size=32), SCALARS),
                    "queue_wait_buckets": st.one_of(st.lists(DURATIONS, max_size=32), SCALARS),
                }
            ),
            SCALARS,
        ),
        "state_file": st.one_of(st.sampled_from(["/tmp/state.json", "/nope/s", "/tmp"]), SCALARS),
        "targets": st.one_of(st.lists(TARGET, max_size=3), SCALARS),
    }
)


@PROPERTIES
@given(DOCUMENTS)
def test_documents_shaped_like_a_configuration(document: dict[str, Any]) -> None:
    result = check(dumped(document))
    if isinstance(result, ConfigError):
        assert SECRET not in str(result), str(result)


@PROPERTIES
@given(DOCUMENTS)
def test_every_config_stays_within_its_limits(document: dict[str, Any]) -> None:
    """When the loader accepts a file, every value is within the documented bounds."""
    result = check(dumped(document))
    if isinstance(result, Config):
        assert 1 <= result.poll_interval <= 86400
        assert 0 < result.request_timeout <= 600
        assert 0 <= result.idle_tag_backoff <= 86400
        assert 0 < result.rate_limit.requests_per_second <= 10000
        assert 1 <= result.rate_limit.burst <= 10000
        assert 1 <= result.rate_limit.concurrency <= 64
        assert 1 <= result.retry.attempts <= 10
        assert 0 <= result.retry.initial_backoff <= result.retry.max_backoff <= 300
        for bounds in (result.histograms.run_time, result.histograms.queue_wait):
            assert 1 <= len(bounds) <= 30
            assert bounds[0] > 0 and bounds[-1] <= 720 * 3600
            assert list(bounds) == sorted(set(bounds))  # strictly ascending
        assert SECRET not in repr(result)


# --- bytes through load_config ----------------------------------------------------------------


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("properties") / "config.yml"


@PROPERTIES
@given(
    st.one_of(
        st.binary(max_size=300),
        st.lists(TOKENS, max_size=40).map(lambda parts: "".join(parts).encode("utf-8")),
    )
)
def test_any_bytes_in_a_file(config_path: Path, data: bytes) -> None:
    config_path.write_bytes(data)
    result = outcome(lambda: load_config(str(config_path), ENV))
    if isinstance(result, ConfigError):
        assert str(result).startswith(str(config_path)), str(result)


# --- every documented value is accepted ------------------------------------------------------

NAME_TEXT = st.from_regex(r"[!-#%-~]{1,24}", fullmatch=True)  # printable ASCII, no space or $
FUTURE = st.sampled_from(["2999-01-01T00:00:00Z", "2999-06-30T12:00:00.5+08:00"])


def seconds_between(low: float, high: float) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.floats(min_value=low, max_value=high),
        st.integers(min_value=int(low) + (low % 1 > 0), max_value=int(high)),
        st.integers(min_value=int(low * 1000) + 1, max_value=int(high * 1000)).map(
            lambda ms: f"{ms}ms"
        ),
    )


GOOD_CREDENTIALS = st.one_of(
    st.none(),
    optional({"token": st.one_of(NAME_TEXT, st.just("")), "expiration": FUTURE}).flatmap(
        lambda extra: st.fixed_dictionaries(
            {"secret_id": NAME_TEXT, "secret_key": st.one_of(NAME_TEXT, st.just("${KEY}"))}
        ).map(lambda keys: {**keys, **extra})
    ),
    optional({"profile": st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True)}).map(
        lambda extra: {"file": __file__, **extra}
    ),
    optional({"metadata_endpoint": st.just("http://127.0.0.1:1/latest/meta-data")}).flatmap(
        lambda extra: st.one_of(
            st.sampled_from(["auto", ""]),
            st.from_regex(r"[A-Za-z0-9+=,.@_-]{1,20}", fullmatch=True),
        ).map(lambda role: {"cvm_role": role, **extra})
    ),
)
GOOD_TARGET = optional(
    {
        "endpoint": st.just("http://127.0.0.1:8080"),
        "credentials": GOOD_CREDENTIALS,
        "services": st.dictionaries(
            st.sampled_from(["media", "ai", "speech", "pic", "doc"]),
            st.one_of(
                st.none(),
                optional(
                    {
                        "tags": st.lists(NAME_TEXT, min_size=1, max_size=3, unique=True),
                        "histograms": st.booleans(),
                    }
                ),
            ),
            min_size=1,
            max_size=3,
        ),
    }
).flatmap(
    lambda extra: st.fixed_dictionaries(
        {
            "bucket": st.from_regex(
                r"[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?-[0-9]{1,10}", fullmatch=True
            ),
            "region": st.from_regex(r"[a-z0-9]{1,5}(?:-[a-z0-9]{1,5}){0,2}", fullmatch=True),
        }
    ).map(lambda place: {**place, **extra})
)
# 1 to 30 bounds, strictly ascending, 1s to 720h: seconds, or milliseconds written "...ms".
GOOD_BOUNDS = st.lists(
    st.integers(min_value=1, max_value=720 * 3600), min_size=1, max_size=30, unique=True
).flatmap(
    lambda seconds: st.lists(st.booleans(), min_size=len(seconds), max_size=len(seconds)).map(
        lambda as_ms: [
            f"{s * 1000}ms" if ms else s for s, ms in zip(sorted(seconds), as_ms, strict=True)
        ]
    )
)
GOOD_DOCUMENTS = optional(
    {
        "poll_interval": seconds_between(1, 86400),
        "request_timeout": seconds_between(0.001, 600),
        "failure_code_limit": st.integers(min_value=1, max_value=10000),
        "clock_skew_tolerance": seconds_between(0, 3600),
        "idle_tag_backoff": seconds_between(0, 86400),
        "rate_limit": optional(
            {
                "requests_per_second": st.one_of(
                    st.floats(min_value=0.001, max_value=10000),
                    st.integers(min_value=1, max_value=10000).map(str),
                ),
                "burst": st.integers(min_value=1, max_value=10000),
                "concurrency": st.integers(min_value=1, max_value=64),
            }
        ),
        "retry": st.tuples(seconds_between(0, 300), seconds_between(0, 300)).map(
            lambda pair: {
                "initial_backoff": min(pair, key=_seconds),
                "max_backoff": max(pair, key=_seconds),
            }
        ),
        "state_file": st.just("/tmp/tencent-ci-exporter-state.json"),
        "histograms": optional(
            {"run_time_buckets": GOOD_BOUNDS, "queue_wait_buckets": GOOD_BOUNDS}
        ),
    }
).flatmap(
    lambda extra: st.lists(
        GOOD_TARGET, min_size=1, max_size=3, unique_by=lambda t: (t["bucket"], t["region"])
    ).map(lambda targets: {**extra, "targets": targets})
)


def _seconds(value: Any) -> float:
    return float(value[:-2]) / 1000 if isinstance(value, str) else float(value)


@PROPERTIES
@given(GOOD_DOCUMENTS)
def test_every_documented_value_is_accepted(document: dict[str, Any]) -> None:
    result = check(dumped(document))
    assert isinstance(result, Config), str(result)
    assert len(result.targets) == len(document["targets"])
    rate_limit = document.get("rate_limit", {})
    if "concurrency" in rate_limit:
        assert result.rate_limit.concurrency == rate_limit["concurrency"]
    if "requests_per_second" in rate_limit:
        assert result.rate_limit.requests_per_second == float(rate_limit["requests_per_second"])
    histograms = document.get("histograms", {})
    if "run_time_buckets" in histograms:
        assert list(result.histograms.run_time) == [
            _seconds(b) for b in histograms["run_time_buckets"]
        ]
    assert SECRET not in repr(result)
