"""exporter.credentials: keys given, from a file that changes, from a CVM role's metadata service.

The metadata service is a loopback stand-in (http.server on a port the OS picks) that counts
requests, serves keys that expire, fails on demand and can hold its answers. Time is frozen
(freezegun) and moved past refresh margins and expiries.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory

from exporter.credentials import (
    Credentials,
    CredentialsError,
    CredentialsFile,
    CVMRole,
    CVMRoleCredentials,
    FileCredentials,
    StaticCredentials,
    credential_key,
    provider_for,
)

SECRET = "s3cr3t-k3y-value"
TOKEN = "t0k3n-value"
START = datetime(2026, 11, 21, 9, 0, 0, tzinfo=timezone.utc)
HOUR = 3600.0
ROLE = "exporter-role"
WAIT = 10.0  # generous: a condition that never comes fails the test instead of hanging it


def epoch(moment: datetime) -> float:
    return moment.timestamp()


def later(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and TOKEN not in text, text


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record with its extra fields: secrets must be in none of them."""
    return "\n".join(str(record.__dict__) for record in caplog.records)


@pytest.fixture
def frozen() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(START) as frozen_time:
        yield frozen_time


@pytest.fixture(autouse=True)
def credential_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO, logger="exporter.credentials")
    yield
    assert_no_secret(log_text(caplog), caplog.text)


# --- keys given in the configuration -------------------------------------------------------


def test_static_keys_without_expiration_last() -> None:
    keys = Credentials("AKID", SECRET, None)
    provider = StaticCredentials(keys)
    with freeze_time("2999-01-01"):
        assert provider.get() is keys


def test_static_temporary_keys_expire(frozen: FrozenDateTimeFactory) -> None:
    keys = Credentials("AKID", SECRET, TOKEN, epoch(later(HOUR)))
    provider = StaticCredentials(keys)
    assert provider.get() is keys
    frozen.move_to(later(HOUR - 1))
    assert provider.get() is keys
    frozen.move_to(later(HOUR))
    with pytest.raises(CredentialsError) as caught:
        provider.get()
    assert str(caught.value) == "temporary credentials expired at 2026-11-21T10:00:00Z"


def test_static_keys_take_an_injected_clock() -> None:
    provider = StaticCredentials(Credentials("AKID", SECRET, TOKEN, 100.0), clock=lambda: 100.0)
    with pytest.raises(CredentialsError, match="expired at 1970-01-01T00:01:40Z"):
        provider.get()


# --- a credentials file --------------------------------------------------------------------


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def keys_file(secret_id: str = "AKIDfile", n: int = 1, extra: str = "") -> str:
    return f"[default]\nsecret_id = {secret_id}\nsecret_key = {SECRET}-{n}\n{extra}"


def test_file_keys_are_read(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    write(path, keys_file(extra=f"token = {TOKEN}\nexpiration = 2999-01-01T00:00:00Z\n"))
    assert FileCredentials(str(path)).get() == Credentials(
        "AKIDfile", f"{SECRET}-1", TOKEN, epoch(datetime(2999, 1, 1, tzinfo=timezone.utc))
    )


def test_file_format_as_the_sdks_write_it(tmp_path: Path) -> None:
    """Comments, other profiles and keys other tools keep, `:` as separator, any key case, a
    byte order mark, the profile chosen by name."""
    path = tmp_path / "credentials"
    text = (
        "\ufeff# written by a rotation job\n"
        "[default]\n"
        "secret_id = AKIDdefault\n"
        "secret_key = other\n\n"
        "[ prod ]\n"
        "; the production account\n"
        "Secret_Id: AKIDprod\n"
        f"  SECRET_KEY  =   {SECRET}  \n"
        "region = ap-guangzhou\n"
        "role_arn = qcs::cam::uin/1:roleName/x\n"
        "token =\n"
    )
    path.write_bytes(text.encode("utf-8"))
    assert FileCredentials(str(path), "prod").get() == Credentials("AKIDprod", SECRET, None)
    assert FileCredentials(str(path)).get() == Credentials("AKIDdefault", "other", None)


def test_file_is_read_again_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    write(path, keys_file(n=1))
    provider = FileCredentials(str(path))
    assert provider.get().secret_key == f"{SECRET}-1"
    before = os.stat(path)

    # Same size, same inode, mtime put back: the same version of the file, not read again.
    write(path, keys_file(n=2))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert provider.get().secret_key == f"{SECRET}-1"

    # The mtime moves: read again.
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert provider.get().secret_key == f"{SECRET}-2"

    # Rewritten in place with a new size.
    write(path, keys_file(n=30))
    assert provider.get().secret_key == f"{SECRET}-30"

    # Replaced by rename (as rotation tools and Kubernetes do): a new inode, even with the
    # same size and mtime.
    current = os.stat(path)
    replacement = tmp_path / "credentials.new"
    write(replacement, keys_file(n=31))
    os.utime(replacement, ns=(current.st_atime_ns, current.st_mtime_ns))
    os.replace(replacement, path)
    assert provider.get().secret_key == f"{SECRET}-31"


def test_file_with_expired_keys_until_it_is_rewritten(
    tmp_path: Path, frozen: FrozenDateTimeFactory
) -> None:
    path = tmp_path / "credentials"
    write(path, keys_file(n=1, extra=f"token = {TOKEN}\nexpiration = 2026-11-21T10:00:00Z\n"))
    provider = FileCredentials(str(path))
    assert provider.get().expiration == epoch(later(HOUR))
    frozen.move_to(later(HOUR))
    with pytest.raises(CredentialsError) as caught:
        provider.get()
    assert str(caught.value) == (
        f"credentials file {path} [default]: temporary credentials expired at 2026-11-21T10:00:00Z"
    )
    write(path, keys_file(n=2, extra=f"token = {TOKEN}\nexpiration = 2026-11-21T11:00:00Z\n"))
    assert provider.get().secret_key == f"{SECRET}-2"


BAD_FILES = [
    (
        "no_separator",
        f"[default]\nsecret_id = a\nsecret_key {SECRET}\n",
        'line 3: expected "key = value", "[section]" or a comment',
    ),
    (
        "key_before_section",
        f"secret_key = {SECRET}\n[default]\n",
        'line 1: "key = value" before any [section]',
    ),
    ("no_section", "# empty\n", "no [default] section"),
    (
        "other_section_only",
        f"[prod]\nsecret_id = a\nsecret_key = {SECRET}\n",
        "no [default] section",
    ),
    ("no_secret_key", "[default]\nsecret_id = a\n", "[default]: secret_key is missing"),
    ("no_secret_id", f"[default]\nsecret_key = {SECRET}\n", "[default]: secret_id is missing"),
    (
        "empty_secret_key",
        "[default]\nsecret_id = a\nsecret_key =\n",
        "line 3: secret_key: must not be empty",
    ),
    (
        "secret_key_with_space",
        f"[default]\nsecret_id = a\nsecret_key = x {SECRET}\n",
        "line 3: secret_key: must be printable ASCII without spaces (the value is not shown)",
    ),
    (
        "token_not_ascii",
        f"[default]\nsecret_id = a\nsecret_key = b\ntoken = {TOKEN}\u00e9\n",
        "line 4: token: must be printable ASCII without spaces (the value is not shown)",
    ),
    (
        "secret_key_twice",
        f"[default]\nsecret_id = a\nsecret_key = {SECRET}\nsecret_key = {SECRET}2\n",
        "line 4: secret_key given twice in [default]",
    ),
    (
        "section_twice",
        f"[default]\nsecret_id = a\n[prod]\n[default]\nsecret_key = {SECRET}\n",
        "line 4: a second [default] section",
    ),
    (
        "bad_expiration",
        f"[default]\nsecret_id = a\nsecret_key = b\nexpiration = {SECRET}\n",
        "line 4: expiration: not an ISO 8601 time with a zone, e.g. 2026-11-21T10:00:00Z",
    ),
    (
        "expiration_without_zone",
        "[default]\nsecret_id = a\nsecret_key = b\nexpiration = 2999-01-01T00:00:00\n",
        "line 4: expiration: not an ISO 8601 time with a zone, e.g. 2026-11-21T10:00:00Z",
    ),
]


@pytest.mark.parametrize(
    ("text", "problem"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES]
)
def test_bad_file_is_one_line_naming_file_and_line(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "credentials"
    write(path, text)
    with pytest.raises(CredentialsError) as caught:
        FileCredentials(str(path)).get()
    assert str(caught.value) == f"credentials file {path}: {problem}"
    assert_no_secret(str(caught.value))


def test_unreadable_files(tmp_path: Path) -> None:
    def error_of(path: Path) -> str:
        with pytest.raises(CredentialsError) as caught:
            FileCredentials(str(path)).get()
        return str(caught.value)

    missing = tmp_path / "missing"
    assert (
        error_of(missing)
        == f"credentials file {missing}: cannot read it: No such file or directory"
    )
    assert error_of(tmp_path) == f"credentials file {tmp_path}: cannot read it: Is a directory"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert error_of(fifo) == f"credentials file {fifo}: cannot read it: not a regular file"
    big = tmp_path / "big"
    write(big, keys_file() + "#" * 65536)
    assert error_of(big) == (
        f"credentials file {big}: cannot read it: larger than 64 KiB (not a credentials file?)"
    )
    latin = tmp_path / "latin1"
    latin.write_bytes(b"[default]\nsecret_id = \xe9\n")
    assert error_of(latin) == f"credentials file {latin}: not UTF-8 text (bad byte at offset 22)"


def test_relative_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "credentials", keys_file())
    monkeypatch.chdir(tmp_path)
    provider = FileCredentials("credentials")
    monkeypatch.chdir("/")
    assert provider.get().secret_id == "AKIDfile"


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING]


def test_a_bad_rewrite_keeps_the_last_good_keys_with_one_warning_per_change(
    tmp_path: Path, frozen: FrozenDateTimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "credentials"
    expiry = f"token = {TOKEN}\nexpiration = 2026-11-21T10:00:00Z\n"
    write(path, keys_file(n=1, extra=expiry))
    provider = FileCredentials(str(path))
    good = provider.get()

    write(path, f"[default]\nsecret_id = AKIDfile\nsecret_key {SECRET}-2\n")  # half written
    assert provider.get() is good
    assert provider.get() is good
    (warning,) = warnings(caplog)
    assert warning.getMessage() == (
        "credentials file unusable; keeping the keys read before until they expire"
    )
    assert warning.__dict__["error"] == (
        f'credentials file {path}: line 3: expected "key = value", "[section]" or a comment'
    )
    assert warning.__dict__["expires"] == "2026-11-21T10:00:00Z"

    write(path, "[default]\nsecret_id = AKIDfile\n")  # another bad version: one more line
    assert provider.get() is good
    path.unlink()  # gone: one more
    assert provider.get() is good
    assert provider.get() is good
    assert [w.__dict__["error"] for w in warnings(caplog)][1:] == [
        f"credentials file {path}: [default]: secret_key is missing",
        f"credentials file {path}: cannot read it: No such file or directory",
    ]

    # Once the kept keys expire, the file's own problem is the error.
    frozen.move_to(later(HOUR))
    with pytest.raises(CredentialsError) as caught:
        provider.get()
    assert str(caught.value) == (
        f"credentials file {path}: cannot read it: No such file or directory"
    )

    write(path, keys_file(n=3, extra=expiry.replace("10:00", "12:00")))
    assert provider.get().secret_key == f"{SECRET}-3"
    assert len(warnings(caplog)) == 3
    assert caplog.records[-1].getMessage() == "credentials file usable again"


def test_a_bad_file_with_nothing_read_before_is_an_error_each_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "credentials"
    write(path, "[default]\nsecret_id = a\n")
    provider = FileCredentials(str(path))
    for _ in range(2):
        with pytest.raises(CredentialsError, match="secret_key is missing"):
            provider.get()
    assert warnings(caplog) == []  # the caller reports the error; nothing was kept
    write(path, keys_file())
    assert provider.get().secret_id == "AKIDfile"


def test_file_provider_is_thread_safe(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    write(path, keys_file())
    provider = FileCredentials(str(path))
    found: list[Credentials] = []

    def read_many() -> None:
        for _ in range(200):
            found.append(provider.get())

    threads = [threading.Thread(target=read_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert len(found) == 800 and len(set(found)) == 1


# --- a CVM role: the metadata service stand-in ---------------------------------------------


class MetadataService:
    """Loopback stand-in for http://metadata.tencentyun.com/latest/meta-data/."""

    PREFIX = "/latest/meta-data/cam/security-credentials/"

    def __init__(self) -> None:
        self.roles: list[str] = [ROLE]
        self.answers: dict[str, object] = {}  # role -> the JSON to serve
        self.status = 200  # anything else: fail with it
        self.hold: threading.Event | None = None  # answers wait until it is set
        self.paths: list[str] = []
        self.arrived = threading.Condition()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with service.arrived:
                    service.paths.append(self.path)
                    service.arrived.notify_all()
                hold = service.hold
                if hold is not None:
                    hold.wait(WAIT)
                body, status = service.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A short poll interval: shutdown() waits for the loop to look at its flag.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/latest/meta-data/"

    def answer(self, path: str) -> tuple[bytes, int]:
        if self.status != 200:
            return b"<html>failure</html>", self.status
        if path == self.PREFIX:
            return "\n".join(self.roles).encode(), 200
        role = path.removeprefix(self.PREFIX)
        if path.startswith(self.PREFIX) and role in self.answers:
            answer = self.answers[role]
            return (answer if isinstance(answer, bytes) else json.dumps(answer).encode()), 200
        return b"not found", 404

    def issue(self, n: int, expires: datetime, role: str = ROLE) -> Credentials:
        """Serve the n-th keys of `role`, expiring at `expires`."""
        self.answers[role] = {
            "TmpSecretId": f"AKIDtmp{n}",
            "TmpSecretKey": f"{SECRET}-{n}",
            "Token": f"{TOKEN}-{n}",
            "ExpiredTime": int(epoch(expires)),
            "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Code": "Success",
        }
        return Credentials(f"AKIDtmp{n}", f"{SECRET}-{n}", f"{TOKEN}-{n}", epoch(expires))

    def role_fetches(self, role: str = ROLE) -> int:
        return self.paths.count(self.PREFIX + role)

    def wait_for_requests(self, count: int) -> None:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.paths) >= count, WAIT)

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def metadata() -> Iterator[MetadataService]:
    service = MetadataService()
    yield service
    service.close()


def role_provider(
    metadata: MetadataService,
    role: str | None = ROLE,
    *,
    refresh_margin: float = 300.0,
    timeout: float = 2.0,
) -> CVMRoleCredentials:
    return CVMRoleCredentials(
        role, metadata.endpoint, refresh_margin=refresh_margin, timeout=timeout
    )


def test_role_keys_are_fetched_once_and_cached(
    metadata: MetadataService, frozen: FrozenDateTimeFactory
) -> None:
    issued = metadata.issue(1, later(6 * HOUR))
    provider = role_provider(metadata)
    assert provider.get() == issued
    frozen.move_to(later(6 * HOUR - 301))
    assert provider.get() == issued
    assert metadata.paths == [MetadataService.PREFIX + ROLE]


def test_role_keys_are_refreshed_inside_the_margin(
    metadata: MetadataService, frozen: FrozenDateTimeFactory
) -> None:
    metadata.issue(1, later(HOUR))
    provider = role_provider(metadata)  # margin: 5 minutes
    provider.get()
    second = metadata.issue(2, later(2 * HOUR))
    frozen.move_to(later(HOUR - 300))
    assert provider.get() == second
    assert metadata.role_fetches() == 2


def test_the_margin_is_a_parameter(
    metadata: MetadataService, frozen: FrozenDateTimeFactory
) -> None:
    metadata.issue(1, later(HOUR))
    provider = role_provider(metadata, refresh_margin=1800)
    first = provider.get()
    metadata.issue(2, later(2 * HOUR))
    frozen.move_to(later(HOUR - 1801))
    assert provider.get() == first
    frozen.move_to(later(HOUR - 1800))
    assert provider.get().secret_id == "AKIDtmp2"


def test_the_role_is_discovered(metadata: MetadataService, frozen: FrozenDateTimeFactory) -> None:
    metadata.roles = ["discovered-role", "ignored-second-line"]
    issued = metadata.issue(1, later(HOUR), role="discovered-role")
    provider = role_provider(metadata, role=None)
    assert provider.get() == issued
    metadata.issue(2, later(2 * HOUR), role="discovered-role")
    frozen.move_to(later(HOUR - 60))
    assert provider.get().secret_id == "AKIDtmp2"
    # Discovered once; each refresh then asks for the role's keys only.
    assert metadata.paths == [
        MetadataService.PREFIX,
        MetadataService.PREFIX + "discovered-role",
        MetadataService.PREFIX + "discovered-role",
    ]


def test_a_role_that_disappears_is_discovered_again(
    metadata: MetadataService, frozen: FrozenDateTimeFactory
) -> None:
    metadata.roles = ["old-role"]
    metadata.issue(1, later(HOUR), role="old-role")
    provider = role_provider(metadata, role=None)
    provider.get()
    # The instance got another role: the old one's keys are gone.
    metadata.answers.clear()
    metadata.roles = ["new-role"]
    metadata.issue(2, later(2 * HOUR), role="new-role")
    frozen.move_to(later(HOUR - 60))
    assert provider.get().secret_id == "AKIDtmp1"  # the refresh failed: keep the old keys
    frozen.move_to(later(HOUR - 40))
    assert provider.get().secret_id == "AKIDtmp2"


def test_no_role_bound_to_the_instance(metadata: MetadataService) -> None:
    metadata.roles = []
    with pytest.raises(CredentialsError) as caught:
        role_provider(metadata, role=None).get()
    assert str(caught.value) == (
        f"CVM role discovery: GET {metadata.endpoint}cam/security-credentials/: "
        "no CAM role is bound to this instance"
    )


def test_a_failed_refresh_keeps_the_cached_keys_until_they_expire(
    metadata: MetadataService, frozen: FrozenDateTimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    first = metadata.issue(1, later(HOUR))
    provider = role_provider(metadata)
    provider.get()
    metadata.status = 500
    url = f"{metadata.endpoint}cam/security-credentials/{ROLE}"

    frozen.move_to(later(HOUR - 300))
    assert provider.get() == first
    assert metadata.role_fetches() == 2
    # Not one metadata call per request: the next attempt waits the retry interval (10 s).
    frozen.move_to(later(HOUR - 291))
    assert provider.get() == first
    assert metadata.role_fetches() == 2
    frozen.move_to(later(HOUR - 290))
    assert provider.get() == first
    assert metadata.role_fetches() == 3

    (warning,) = warnings(caplog)  # the same failure twice: one line
    assert warning.__dict__["error"] == f"CVM role {ROLE}: GET {url}: HTTP 500"
    assert warning.__dict__["expires"] == "2026-11-21T10:00:00Z"

    frozen.move_to(later(HOUR))
    with pytest.raises(CredentialsError) as caught:
        provider.get()
    assert str(caught.value) == f"CVM role {ROLE}: GET {url}: HTTP 500"

    metadata.status = 200
    second = metadata.issue(2, later(2 * HOUR))
    assert provider.get() == second
    assert caplog.records[-1].getMessage() == "CVM role credentials refreshed again"


def test_expired_keys_are_fetched_at_once_even_after_a_failure(
    metadata: MetadataService, frozen: FrozenDateTimeFactory
) -> None:
    """Without usable keys every get() tries: there is nothing to fall back on."""
    metadata.status = 503
    provider = role_provider(metadata)
    for _ in range(2):
        with pytest.raises(CredentialsError, match="HTTP 503"):
            provider.get()
    metadata.status = 200
    issued = metadata.issue(1, later(HOUR))
    assert provider.get() == issued
    assert metadata.role_fetches() == 3


def bad_answer(metadata: MetadataService, answer: object) -> str:
    metadata.answers[ROLE] = answer
    with pytest.raises(CredentialsError) as caught:
        role_provider(metadata).get()
    message = str(caught.value)
    assert_no_secret(message)
    prefix = f"CVM role {ROLE}: GET {metadata.endpoint}cam/security-credentials/{ROLE}: "
    assert message.startswith(prefix)
    return message.removeprefix(prefix)


def good_answer(**changes: object) -> dict[str, object]:
    answer: dict[str, object] = {
        "TmpSecretId": "AKIDtmp",
        "TmpSecretKey": SECRET,
        "Token": TOKEN,
        "ExpiredTime": int(epoch(later(HOUR))),
        "Expiration": "2026-11-21T10:00:00Z",
        "Code": "Success",
    }
    answer.update(changes)
    return {k: v for k, v in answer.items() if v is not None}


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (good_answer(Code="InternalError"), "the answer's Code is InternalError, not Success"),
        (good_answer(Code=f"bad code {SECRET}"), "the answer's Code is ?, not Success"),
        (good_answer(Token=None), "the answer has no usable Token"),
        (good_answer(TmpSecretKey=""), "the answer has no usable TmpSecretKey"),
        (good_answer(TmpSecretId=7), "the answer has no usable TmpSecretId"),
        (good_answer(TmpSecretKey=f"{SECRET}\n"), "the answer has no usable TmpSecretKey"),
        (
            good_answer(ExpiredTime=None, Expiration=None),
            "the answer has no usable ExpiredTime or Expiration",
        ),
        (
            good_answer(ExpiredTime=int(epoch(START)) - 1),
            "the answer holds keys that expired at 2026-11-21T08:59:59Z",
        ),
        (f"not json {SECRET}".encode(), "the answer is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "the answer is larger than 64 KiB"),
        (b"[" * 10_000 + b"]" * 10_000, "the answer is not JSON"),
        ([SECRET], "the answer is not a JSON object"),
    ],
    ids=[
        "code",
        "code-not-shown",
        "no-token",
        "empty-key",
        "id-not-text",
        "key-with-newline",
        "no-expiry",
        "expired",
        "not-json",
        "too-large",
        "too-deep",
        "not-an-object",
    ],
)
def test_bad_metadata_answers(
    metadata: MetadataService, frozen: FrozenDateTimeFactory, answer: object, problem: str
) -> None:
    assert bad_answer(metadata, answer) == problem


def test_expiration_text_when_there_is_no_expired_time(
    metadata: MetadataService, frozen: FrozenDateTimeFactory
) -> None:
    metadata.answers[ROLE] = good_answer(ExpiredTime=None, Expiration="2026-11-21T18:00:00+08:00")
    assert role_provider(metadata).get().expiration == epoch(later(HOUR))
    metadata.answers[ROLE] = good_answer(ExpiredTime=str(int(epoch(later(2 * HOUR)))))
    assert role_provider(metadata).get().expiration == epoch(later(2 * HOUR))


def test_missing_role_and_unreachable_service(metadata: MetadataService) -> None:
    with pytest.raises(CredentialsError) as caught:
        role_provider(metadata, role="no-such-role").get()
    assert str(caught.value) == (
        f"CVM role no-such-role: GET {metadata.endpoint}cam/security-credentials/no-such-role: "
        "HTTP 404"
    )
    # A port nothing listens on: bound, then closed.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}/latest/meta-data/"
    with pytest.raises(CredentialsError) as caught:
        CVMRoleCredentials(None, endpoint, timeout=1.0).get()
    assert str(caught.value) == (
        f"CVM role discovery: GET {endpoint}cam/security-credentials/: "
        "metadata service unreachable (ConnectionError)"
    )


def test_a_slow_metadata_service_times_out(metadata: MetadataService) -> None:
    metadata.issue(1, later(HOUR))
    metadata.hold = threading.Event()
    provider = role_provider(metadata, timeout=0.2)
    with pytest.raises(CredentialsError) as caught:
        provider.get()
    assert str(caught.value).endswith("metadata service unreachable (ReadTimeout)")


def test_one_fetch_at_a_time_when_nothing_is_cached(metadata: MetadataService) -> None:
    issued = metadata.issue(1, later(HOUR))
    metadata.hold = threading.Event()
    # get() reads its cache, then the clock: once a thread has called the clock it has seen
    # the empty cache. Without the fetch lock each such thread would fetch too.
    clock_calls: set[str] = set()
    called = threading.Condition()

    def clock() -> float:
        with called:
            clock_calls.add(threading.current_thread().name)
            called.notify_all()
        return epoch(START)

    provider = CVMRoleCredentials(ROLE, metadata.endpoint, clock=clock)
    found: list[Credentials] = []
    threads = [
        threading.Thread(target=lambda: found.append(provider.get()), name=f"poller-{i}")
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    with called:
        assert called.wait_for(lambda: len(clock_calls) == 8, WAIT)
    metadata.wait_for_requests(1)
    metadata.hold.set()
    for thread in threads:
        thread.join(WAIT)
    assert found == [issued] * 8
    assert metadata.role_fetches() == 1


def test_others_use_the_cached_keys_while_one_thread_refreshes(
    metadata: MetadataService,
) -> None:
    # An injected clock: freezegun gives threads started by `threading` the real time.
    now = [epoch(START)]
    first = metadata.issue(1, later(HOUR))
    provider = CVMRoleCredentials(ROLE, metadata.endpoint, clock=lambda: now[0])
    provider.get()
    second = metadata.issue(2, later(2 * HOUR))
    now[0] = epoch(later(HOUR - 60))
    metadata.hold = threading.Event()
    refreshed: list[Credentials] = []
    refresher = threading.Thread(target=lambda: refreshed.append(provider.get()))
    refresher.start()
    metadata.wait_for_requests(2)  # the refresh is held by the service
    # Meanwhile other callers are not blocked, and do not fetch.
    assert [provider.get() for _ in range(3)] == [first] * 3
    metadata.hold.set()
    refresher.join(WAIT)
    assert refreshed == [second]
    assert provider.get() == second
    assert metadata.role_fetches() == 2


def test_proxies_from_the_environment_are_not_used(
    metadata: MetadataService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An HTTP proxy meant for the internet must not see (or break) metadata requests."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    issued = metadata.issue(1, later(HOUR))
    with freeze_time(START):
        assert role_provider(metadata).get() == issued


# --- provider_for, credential_key, and secrets ---------------------------------------------


def test_provider_for_each_source(
    tmp_path: Path, metadata: MetadataService, frozen: FrozenDateTimeFactory
) -> None:
    static = Credentials("AKIDstatic", SECRET, TOKEN)
    assert provider_for(static).get() is static

    path = tmp_path / "credentials"
    write(path, f"[prod]\nsecret_id = AKIDprod\nsecret_key = {SECRET}\n")
    assert provider_for(CredentialsFile(str(path), "prod")).get().secret_id == "AKIDprod"

    issued = metadata.issue(1, later(HOUR))
    assert provider_for(CVMRole(ROLE, metadata.endpoint)).get() == issued


def test_provider_for_passes_the_clock(tmp_path: Path) -> None:
    expired = Credentials("AKID", SECRET, TOKEN, 100.0)
    with pytest.raises(CredentialsError):
        provider_for(expired, clock=lambda: 100.0).get()
    assert provider_for(expired, clock=lambda: 99.0).get() is expired


def test_credential_keys_name_who_calls_without_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    endpoint = "http://metadata.tencentyun.com/latest/meta-data/"
    assert credential_key(Credentials("AKIDx", SECRET, TOKEN)) == "AKIDx"
    assert credential_key(CredentialsFile("keys", "prod")) == f"file:{tmp_path}/keys#prod"
    assert credential_key(CVMRole("r", endpoint)) == f"cvm_role:r@{endpoint}"
    assert credential_key(CVMRole(None, endpoint)) == f"cvm_role:auto@{endpoint}"
    # The same keys given twice share a key; another profile of one file does not.
    assert credential_key(Credentials("AKIDx", "other")) == "AKIDx"
    assert credential_key(CredentialsFile("keys")) != credential_key(CredentialsFile("keys", "p"))


def test_reprs_hold_no_secret(
    tmp_path: Path, metadata: MetadataService, frozen: FrozenDateTimeFactory
) -> None:
    keys = Credentials("AKIDstatic", SECRET, TOKEN, epoch(later(HOUR)))
    path = tmp_path / "credentials"
    write(path, keys_file(extra=f"token = {TOKEN}\n"))
    metadata.issue(1, later(HOUR))
    providers: list[StaticCredentials | FileCredentials | CVMRoleCredentials] = [
        StaticCredentials(keys),
        FileCredentials(str(path)),
        role_provider(metadata),
    ]
    for provider in providers:
        assert_no_secret(repr(provider), str(provider))
        fetched = provider.get()
        assert_no_secret(repr(provider), str(provider), repr(fetched), str(fetched))
    assert repr(keys) == f"Credentials(secret_id='AKIDstatic', expiration={epoch(later(HOUR))})"
    assert repr(providers[1]) == f"FileCredentials(path='{path}', profile='default')"
    assert repr(providers[2]) == (
        f"CVMRoleCredentials(role='{ROLE}', endpoint='{metadata.endpoint}')"
    )


def test_secrets_stay_out_of_errors_and_logs_across_failures(
    tmp_path: Path,
    metadata: MetadataService,
    frozen: FrozenDateTimeFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every failure path with the secret near it: in the file, in the answer, in the line."""
    messages: list[str] = []
    path = tmp_path / "credentials"
    write(path, keys_file(extra=f"token = {TOKEN}\nexpiration = 2026-11-21T10:00:00Z\n"))
    provider = FileCredentials(str(path))
    provider.get()
    for text in (
        f"[default]\n{SECRET}\n",
        f"[default]\nsecret_id = {SECRET}\nsecret_key = {SECRET} {TOKEN}\n",
        f"[default]\nsecret_id = a\nsecret_key = {SECRET}\nexpiration = {TOKEN}\n",
    ):
        write(path, text)
        provider.get()  # kept, with a warning
        with pytest.raises(CredentialsError) as caught:
            FileCredentials(str(path)).get()
        messages.append(str(caught.value))
    metadata.issue(1, later(HOUR))
    role = role_provider(metadata)
    role.get()
    metadata.answers[ROLE] = f'{{"TmpSecretKey": "{SECRET}", "Token": "{TOKEN}"}}'.encode()
    frozen.move_to(later(HOUR - 60))
    role.get()  # kept, with a warning
    frozen.move_to(later(HOUR))
    with pytest.raises(CredentialsError) as caught:
        role.get()
    messages.append(str(caught.value))
    assert len(warnings(caplog)) == 4
    assert_no_secret(*messages, log_text(caplog), caplog.text)


def test_callable_clock_is_looked_up_at_each_call() -> None:
    """The default clock is time.time looked up when called, so freezegun moves it."""
    keys = Credentials("AKID", SECRET, TOKEN, time.time() + HOUR)
    provider = StaticCredentials(keys)
    assert provider.get() is keys
    later_on = datetime.fromtimestamp(time.time() + 2 * HOUR, tz=timezone.utc)
    with freeze_time(later_on), pytest.raises(CredentialsError):
        provider.get()


class _QuietServer(ThreadingHTTPServer):
    """A client that leaves while its answer is held is the test's doing: no traceback on
    stderr (socketserver prints one, after the test's capture when the thread ends late)."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass
