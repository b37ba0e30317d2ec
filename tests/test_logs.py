"""exporter.logs: logfmt and JSON lines, one per record, levels and formats validated."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from freezegun import freeze_time

from exporter.logs import LEVELS, parse_format, parse_level, setup_logging

NOW = "2026-01-01T00:00:00.123Z"


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def _emit(level: str, fmt: str, *records: tuple[int, str, dict[str, object]]) -> list[str]:
    stream = io.StringIO()
    setup_logging(level, fmt, stream=stream)
    logger = logging.getLogger("exporter.poller")
    with freeze_time(NOW):
        for lvl, msg, extra in records:
            logger.log(lvl, msg, extra=extra)
    return stream.getvalue().splitlines()


def _raise_and_log(level: str, fmt: str) -> str:
    stream = io.StringIO()
    setup_logging(level, fmt, stream=stream)
    with freeze_time(NOW):
        try:
            raise ValueError("bad page\nsecond line")
        except ValueError:
            logging.getLogger("exporter.client").exception("poll failed", extra={"target": "b-1"})
    return stream.getvalue()


def test_logfmt_line() -> None:
    lines = _emit(
        "info", "logfmt", (logging.INFO, "poll done", {"target": "b-1", "error": "timed out"})
    )
    assert lines == [
        f'ts={NOW} level=info logger=exporter.poller msg="poll done" target=b-1 error="timed out"'
    ]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain", "plain"),
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a=b", '"a=b"'),
        ("", '""'),
        ("line\nbreak", '"line\\nbreak"'),
        ("back\\slash", '"back\\\\slash"'),
        ("中文", "中文"),
        (3, "3"),
        (1.5, "1.5"),
        (True, "true"),
        (None, "null"),
    ],
)
def test_logfmt_values_are_quoted_when_needed(value: object, shown: str) -> None:
    (line,) = _emit("info", "logfmt", (logging.INFO, "m", {"v": value}))
    assert line.endswith(f" v={shown}")


def test_json_line() -> None:
    (line,) = _emit(
        "info", "json", (logging.WARNING, "slow down", {"target": "b-1", "retry_in": 2.5})
    )
    assert json.loads(line) == {
        "ts": NOW,
        "level": "warn",
        "logger": "exporter.poller",
        "msg": "slow down",
        "target": "b-1",
        "retry_in": 2.5,
    }


def test_json_values_that_are_not_json_become_text() -> None:
    (line,) = _emit("info", "json", (logging.INFO, "m", {"what": ValueError("x")}))
    assert json.loads(line)["what"] == "x"


def test_level_names_and_filtering() -> None:
    records: list[tuple[int, str, dict[str, object]]] = [
        (lvl, name, {}) for name, lvl in LEVELS.items()
    ]
    lines = _emit("warn", "logfmt", *records)
    assert [line.split(" ")[1] for line in lines] == ["level=warn", "level=error"]
    lines = _emit("debug", "logfmt", *records)
    assert [line.split(" ")[1] for line in lines] == [
        "level=debug",
        "level=info",
        "level=warn",
        "level=error",
    ]


def test_an_extra_named_like_a_core_field_does_not_hide_it() -> None:
    (line,) = _emit("info", "logfmt", (logging.INFO, "m", {"level": "x", "ts": "y"}))
    assert line == f"ts={NOW} level=info logger=exporter.poller msg=m level_=x ts_=y"


def test_message_arguments_are_applied() -> None:
    stream = io.StringIO()
    setup_logging("info", "logfmt", stream=stream)
    logging.getLogger("x").info("polled %d queues in %s", 3, "b-1")
    assert 'msg="polled 3 queues in b-1"' in stream.getvalue()


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_an_exception_is_one_line_above_debug(fmt: str) -> None:
    out = _raise_and_log("info", fmt)
    assert out.count("\n") == 1 and "Traceback" not in out
    if fmt == "logfmt":
        assert out == (
            f'ts={NOW} level=error logger=exporter.client msg="poll failed" '
            'target=b-1 exc="ValueError: bad page\\nsecond line"\n'
        )
    else:
        assert json.loads(out)["exc"] == "ValueError: bad page\nsecond line"


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_debug_adds_the_traceback_still_on_one_line(fmt: str) -> None:
    out = _raise_and_log("debug", fmt)
    assert out.count("\n") == 1
    assert "Traceback (most recent call last):" in out and "_raise_and_log" in out


def test_default_stream_is_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "logfmt")
    logging.getLogger("exporter").info("hello")
    captured = capsys.readouterr()
    assert captured.out == "" and "msg=hello" in captured.err


def test_setting_up_again_replaces_our_handler_and_keeps_others() -> None:
    foreign = logging.NullHandler()
    logging.getLogger().addHandler(foreign)
    first, second = io.StringIO(), io.StringIO()
    setup_logging("info", "logfmt", stream=first)
    setup_logging("info", "json", stream=second)
    logging.getLogger("x").info("once")
    assert first.getvalue() == "" and len(second.getvalue().splitlines()) == 1
    assert foreign in logging.getLogger().handlers


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("debug", logging.DEBUG),
        ("INFO", logging.INFO),
        ("warn", logging.WARNING),
        ("warning", logging.WARNING),
        (" error ", logging.ERROR),
    ],
)
def test_parse_level(text: str, level: int) -> None:
    assert parse_level(text) == level


def test_bad_level_and_format_are_clear_errors() -> None:
    with pytest.raises(ValueError) as level_error:
        parse_level("verbose")
    assert str(level_error.value) == (
        "unknown log level 'verbose' (use one of: debug, info, warn, error)"
    )
    with pytest.raises(ValueError) as format_error:
        parse_format("text")
    assert str(format_error.value) == "unknown log format 'text' (use one of: logfmt, json)"
    assert parse_format("JSON") == "json"


def test_bad_arguments_leave_logging_as_it_was() -> None:
    stream = io.StringIO()
    setup_logging("info", "logfmt", stream=stream)
    for level, fmt in (("loud", "logfmt"), ("info", "xml")):
        with pytest.raises(ValueError):
            setup_logging(level, fmt)
    logging.getLogger("x").info("still here")
    assert 'msg="still here"' in stream.getvalue()


# Every character str.splitlines breaks at; shippers that split there would cut a record.
LINE_BREAKS = ["\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
@pytest.mark.parametrize("char", LINE_BREAKS, ids=[f"U+{ord(c):04X}" for c in LINE_BREAKS])
def test_no_line_breaking_character_is_written_raw(fmt: str, char: str) -> None:
    text = f"a{char}b"
    stream = io.StringIO()
    setup_logging("info", fmt, stream=stream)
    try:
        raise ValueError(text)
    except ValueError:
        logging.getLogger("x").exception(text, extra={"target": text, f"k{char}": 1})
    out = stream.getvalue()
    assert len(out.splitlines()) == 1 and out.endswith("\n")
    line = out[:-1]
    if fmt == "json":
        record = json.loads(line)
        assert (record["msg"], record["target"]) == (text, text)
        assert record["exc"] == f"ValueError: {text}"
    else:
        escaped = json.dumps(text)  # \uXXXX for every one of them, as JSON writes it
        assert f"msg={escaped} target={escaped}" in line
        assert f'exc="ValueError: {escaped[1:]}' in line


def _strict_json(line: str) -> dict[str, object]:
    def refuse(name: str) -> object:
        raise ValueError(f"not JSON: {name}")

    loaded: dict[str, object] = json.loads(line, parse_constant=refuse)
    return loaded


def test_json_has_no_nan_or_infinity() -> None:
    (line,) = _emit(
        "info",
        "json",
        (
            logging.INFO,
            "m",
            {
                "nan": float("nan"),
                "inf": float("inf"),
                "ninf": float("-inf"),
                "inside": [1.5, float("nan")],
                "ok": 2.5,
                "n": 3,
                "b": True,
                "none": None,
            },
        ),
    )
    record = _strict_json(line)
    assert record["nan"] == "nan" and record["inf"] == "inf" and record["ninf"] == "-inf"
    assert record["inside"] == "[1.5, nan]"
    assert (record["ok"], record["n"], record["b"], record["none"]) == (2.5, 3, True, None)


def test_json_survives_a_value_that_contains_itself() -> None:
    loop: list[object] = ["x"]
    loop.append(loop)
    (line,) = _emit("info", "json", (logging.INFO, "m", {"loop": loop}))
    assert _strict_json(line)["loop"] == "['x', [...]]"
