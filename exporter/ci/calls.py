"""One call to the CI API: sign, send, time out, classify the failure, try again.

Thread ownership: a CICaller (a CIClient) is shared by the threads polling its target; its only
mutable state is the last clock measure and the cached redactor, each replaced whole (one
assignment) by whichever call saw it last.

`_attempt` is exactly one HTTP attempt, counted once in the self-metrics; `_request` wraps it
in the retry policy, the target's pacing and the shared request gate (exporter.ratelimit).
Every failure leaves here as a CIError whose message is one line, names the endpoint family,
and never carries a key, a token, the secret id or a signature (exporter.ci.redact). Every
attempt ends within `timeout` whatever the peer does, and within a tenth of a second of
`stopping` being set (exporter.ci.http). An answer's body is checked by the parser it is
handed to, inside the attempt, so whatever the parser refuses counts as that call's failure.

What is tried again (at most `retry.attempts` calls, exponential back-off with full jitter):

- 429, 503, or Code SlowDown whatever the status (throttling): yes, after Retry-After (at most
  5 min) or the back-off, whichever is longer; the target's pacing doubles (exporter.ratelimit).
- other 5xx, a gateway's error page, timeouts, connection refused or reset, a body cut short:
  yes, after the back-off.
- a body that is not CI's XML (malformed, HTML with 200, fields missing): yes, after the
  back-off (mostly damage on the way).
- a body too large, a job in a state we do not know, a listing that fails its checks
  (exporter.ci.listing): no, CI would answer the same.
- 401, 403, or an auth Code (AccessDenied, InvalidAuthorization, MissingAuthorization,
  SecretidNotExist, SignatureExpired): no; CIAuthError, kind = the Code, its message naming
  the CAM action and resource the call needs (exporter.ci.services, docs/permissions.md).
- any other 4xx (InvalidArgument, ResourceNotFound, ...): no, the request is wrong, not CI.
- the credential provider fails: no; CICredentialsError, kind "credentials".
- shutdown (`stopping` set): no; CIStopped, not counted, and every wait is cut short.
"""

from __future__ import annotations

import dataclasses
import http.client
import random as random_module
import threading
import time
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import quote, urlsplit

import requests
import urllib3

from exporter import __version__
from exporter.api_stats import OTHER_ERROR, ApiStats
from exporter.ci.body import read_body
from exporter.ci.http import (
    Deadline,
    bounded_by,
    http_date,
    is_timeout,
    reason,
    session_for,
)
from exporter.ci.listing import QUEUE_PAGE_SIZE
from exporter.ci.models import (
    CIAPIError,
    CIAuthError,
    CIConnectionError,
    CICredentialsError,
    CIError,
    CIInvalidResponse,
    CIStopped,
    CITimeout,
)
from exporter.ci.parse import one_line, parse_error
from exporter.ci.permissions import resource_of
from exporter.ci.redact import Redactor, is_code
from exporter.ci.services import endpoint_family, endpoint_of
from exporter.credentials import CredentialProvider, Credentials, CredentialsError
from exporter.ratelimit import (
    MAX_RETRY_AFTER,
    NO_RETRY,
    Pacer,
    RequestGate,
    RetryPolicy,
    Sleep,
    wait_on,
)
from exporter.signing import CLOCK_LEEWAY, DEFAULT_VALIDITY, TOKEN_HEADER, authorization

USER_AGENT = f"tencent-ci-exporter/{__version__}"
# Answers slower than this do not update the measure of CI's clock (see _measure_clock).
MAX_CLOCK_SAMPLE_RTT = 2.0
# The largest body taken (inflated): a page of 100 jobs in full is well under 1 MiB. Reading
# one costs about twice this at most, parsing it at most some 25 MB (exporter.ci.parse).
MAX_BODY_BYTES = 4 * 1024 * 1024
SAFE = "-_.~"  # what the signature leaves unencoded; the URL uses the same encoding
# Asked for explicitly: requests would also offer br and zstd when their packages are
# installed, and read_body inflates only these two.
_ACCEPT_ENCODING = "gzip, deflate"

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """What a parser is told about the answer besides its body: CI's clock as best known (its
    Date, or ours when later) and the redactor for the keys that signed the call."""

    now: float
    redact: Redactor


Parse = Callable[[bytes, Answer], T]


def _query(params: Mapping[str, str]) -> str:
    return "&".join(f"{quote(k, safe=SAFE)}={quote(v, safe=SAFE)}" for k, v in params.items())


def error_label(kind: str) -> str:
    """`kind` when it has the shape of a CI Code (exporter.ci.redact.CODE_RE), else "other".

    The `error` label of the self-metrics: junk is replaced rather than cleaned up, since a
    cleaned-up junk value would still be junk, and still one more label value.
    """
    return kind if is_code(kind) else OTHER_ERROR


class CICaller:
    def __init__(
        self,
        *,
        bucket: str,
        region: str,
        endpoint: str,
        credentials: CredentialProvider,
        timeout: float = 10.0,
        stats: ApiStats | None = None,
        session: requests.Session | None = None,
        clock: Callable[[], float] | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        signature_validity: int = DEFAULT_VALIDITY,
        queue_page_size: int = QUEUE_PAGE_SIZE,
        retry: RetryPolicy | None = None,
        gate: RequestGate | None = None,
        stopping: threading.Event | None = None,
        sleep: Sleep | None = None,
        random: Callable[[], float] | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        """`retry` None is the bare client: one attempt per request and no pacing. With a
        policy, throttled answers also slow the target down (`pacer`, a Pacer() by default).
        `gate` is shared by the clients signing with the same keys. `stopping` cuts every wait
        and every call short (CIStopped); `sleep` and `random` are there for tests. A session
        passed in is used as it is: only the client's own obeys the call's deadline."""
        parts = urlsplit(endpoint)
        host = parts.netloc.rpartition("@")[2]
        if parts.scheme not in ("http", "https") or not host or parts.query or parts.fragment:
            raise ValueError(f"endpoint must look like https://host[:port], got {endpoint!r}")
        self.bucket = bucket
        self.region = region
        self.endpoint = f"{parts.scheme}://{host}"
        self._host = host
        self._prefix = parts.path.rstrip("/")  # a proxy path, when there is one; it is signed
        self._credentials = credentials
        self._timeout = timeout
        self._stats = stats
        self._session = session if session is not None else session_for(self.endpoint)
        self._owns_session = session is None
        # Looked up at each call so that freezegun can move it in tests.
        self._clock = clock or (lambda: time.time())
        self._max_body = max_body_bytes
        self._validity = signature_validity
        self._clock_offset: float | None = None
        self._queue_page_size = queue_page_size
        self._retry = retry if retry is not None else NO_RETRY
        self._gate = gate
        self._stopping = stopping if stopping is not None else threading.Event()
        self._sleep = sleep or wait_on
        self._random = random or random_module.random
        self._pacer = pacer if pacer is not None or retry is None else Pacer()
        self._redactor: tuple[Credentials, Redactor] | None = None

    def __repr__(self) -> str:
        return (
            f"CIClient(bucket={self.bucket!r}, region={self.region!r}, endpoint={self.endpoint!r})"
        )

    @property
    def clock_offset(self) -> float | None:
        """CI's clock minus ours in seconds, from the Date header of the last answer whose round
        trip was within MAX_CLOCK_SAMPLE_RTT (None: no such answer yet).

        Measured against the middle of the request, so it is good to about a second (Date's
        resolution) plus half the round trip.
        """
        return self._clock_offset

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    # Retries, pacing and the gate

    def _request(self, path: str, params: Mapping[str, str], parse: Parse[T]) -> T:
        """One request: attempts as the retry policy allows (see the module)."""
        family = endpoint_family(path)
        for attempt in range(1, self._retry.attempts + 1):
            self._wait(self._pacer.reserve() if self._pacer is not None else 0.0)
            try:
                if self._gate is None:
                    result = self._attempt(path, params, parse)
                else:
                    with self._gate.slot(self._stopping):
                        result = self._attempt(path, params, parse)
            except CIError as error:
                delay = self._retry_delay(error, attempt, family)
                if delay is None:
                    raise
                if self._stats is not None:
                    self._stats.record_retry(self.bucket, self.region, family)
                self._wait(delay)
                continue
            if self._pacer is not None:
                self._pacer.succeeded()
                self._report_spacing()
            return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _retry_delay(self, error: CIError, attempt: int, family: str) -> float | None:
        """How long to wait before trying again after `error`; None: not to be tried again.
        A throttled answer slows the target down even when it is not retried."""
        hold = None
        if isinstance(error, CIAPIError) and error.throttled:
            hold = min(error.retry_after or 0.0, MAX_RETRY_AFTER)
            if self._stats is not None:
                self._stats.record_throttle(self.bucket, self.region, family)
            if self._pacer is not None:
                self._pacer.throttled(hold)
                self._report_spacing()
        if not error.retryable or attempt >= self._retry.attempts:
            return None
        backoff = self._retry.backoff(attempt, self._random)
        return backoff if hold is None else max(backoff, hold)

    def _report_spacing(self) -> None:
        if self._stats is not None and self._pacer is not None:
            self._stats.set_spacing(self.bucket, self.region, self._pacer.spacing)

    def _wait(self, seconds: float) -> None:
        if self._stopping.is_set() or (seconds > 0 and self._sleep(self._stopping, seconds)):
            raise CIStopped("stopped while waiting to call CI")

    # One attempt

    def _attempt(self, path: str, params: Mapping[str, str], parse: Parse[T]) -> T:
        """One signed GET of `path`, its body handed to `parse`. Counted once in the stats,
        unless cut short by `stopping` (not a failure of CI's). A path without a CAM action in
        exporter.ci.services is refused (LookupError) before anything is sent."""
        endpoint = endpoint_of(path)
        family = endpoint_family(path)
        full_path = self._prefix + path
        url = f"{self.endpoint}{quote(full_path, safe='/,' + SAFE)}"
        if params:
            url += "?" + _query(params)
        credentials = self._keys()
        redact = self._redactor_for(credentials)
        headers = self._headers(credentials, full_path, params)
        started = time.monotonic()
        status, error, stopped = "error", None, False
        try:
            deadline = Deadline(self._timeout, self._stopping)
            with bounded_by(deadline):
                sent_at = self._clock()
                response = self._open(url, headers, family, deadline)
                with response:
                    received_at = self._clock()
                    date = http_date(response.headers.get("Date"))
                    self._measure_clock(date, sent_at, received_at)
                    status = str(response.status_code)
                    body = self._read(response, family)
            if not 200 <= response.status_code < 300:
                raise _as_raised(
                    parse_error(
                        response.status_code, body, response.headers, endpoint=family, redact=redact
                    ),
                    f"CAM action {endpoint.action} on "
                    f"{resource_of(endpoint, self.region, self.bucket)}",
                )
            try:
                return parse(body, Answer(max(received_at, date or 0.0), redact))
            except CIInvalidResponse as exc:
                raise CIInvalidResponse(
                    f"GET {family}: {exc}", endpoint=family, retryable=exc.retryable
                ) from None
        except CIError as exc:
            body = b""  # the traceback keeps this frame: not the body with it
            clean: CIError | None = _without_secrets(exc, redact)
            assert clean is not None
            stopped = isinstance(clean, CIStopped)
            error = error_label(clean.kind)
            # No local may hold the error it raises: error, traceback and this frame would keep
            # each other (and whatever the frames hold) alive until a cycle collection.
            try:
                if clean is exc:
                    raise
                raise clean from None
            finally:
                clean = None
        except Exception:
            # Not one of ours: still a failed call in the self-metrics, never a success.
            error = "invalid_response"
            raise
        finally:
            if self._stats is not None and not stopped:
                self._stats.record(
                    self.bucket, self.region, family, status, error, time.monotonic() - started
                )

    def _redactor_for(self, credentials: Credentials) -> Redactor:
        cached = self._redactor
        if cached is not None and cached[0] == credentials:
            return cached[1]
        redactor = Redactor((credentials.secret_id, credentials.secret_key, credentials.token))
        self._redactor = (credentials, redactor)
        return redactor

    def _keys(self) -> Credentials:
        try:
            return self._credentials.get()
        except CredentialsError as exc:
            raise CICredentialsError(f"credentials: {one_line(str(exc))}") from None

    def _headers(
        self, credentials: Credentials, path: str, params: Mapping[str, str]
    ) -> dict[str, str]:
        """Host (and the token) signed with every query parameter; keys fetched per attempt."""
        signed = {"host": self._host}
        if credentials.token:
            signed[TOKEN_HEADER] = credentials.token
        now = int(self._clock())
        auth = authorization(
            credentials.secret_id,
            credentials.secret_key,
            "get",
            path,
            params,
            signed,
            now - CLOCK_LEEWAY,
            now + self._validity,
        )
        return {
            **signed,
            "Authorization": auth,
            "User-Agent": USER_AGENT,
            "Accept": "application/xml",
            "Accept-Encoding": _ACCEPT_ENCODING,
        }

    def _open(
        self, url: str, headers: Mapping[str, str], family: str, deadline: Deadline
    ) -> requests.Response:
        wait = max(deadline.remaining(), 0.001)
        try:
            return self._session.get(
                url, headers=headers, timeout=(wait, wait), stream=True, allow_redirects=False
            )
        except requests.RequestException as exc:
            if self._stopping.is_set():
                raise CIStopped(f"GET {family}: stopped", endpoint=family) from None
            # Past the deadline, whatever broke was broken by it (a handshake the guard ended).
            if isinstance(exc, requests.Timeout) or is_timeout(exc) or deadline.remaining() <= 0:
                raise CITimeout(
                    f"GET {family}: no answer within {self._timeout:g}s", endpoint=family
                ) from None
            raise CIConnectionError(f"GET {family}: {reason(exc)}", endpoint=family) from None

    def _read(self, response: requests.Response, family: str) -> bytes:
        """The body (exporter.ci.body.read_body), with failures as CIErrors."""
        try:
            return read_body(response, family, self._max_body)
        except (
            requests.RequestException,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
        ) as exc:
            if self._stopping.is_set():
                raise CIStopped(f"GET {family}: stopped", endpoint=family) from None
            if is_timeout(exc):
                raise CITimeout(
                    f"GET {family}: body not complete within {self._timeout:g}s", endpoint=family
                ) from None
            raise CIConnectionError(
                f"GET {family}: body cut short: {reason(exc)}", endpoint=family
            ) from None

    def _measure_clock(self, date: float | None, sent_at: float, received_at: float) -> None:
        if date is None:
            return
        # The Date was written somewhere between sending and receiving: a slow answer says
        # little about CI's clock, so it never counts, even with no measure yet (None makes
        # callers fall back to the configured tolerance, which a bad measure would not).
        if received_at - sent_at > MAX_CLOCK_SAMPLE_RTT:
            return
        self._clock_offset = date - (sent_at + received_at) / 2


def _as_raised(error: CIAPIError, permission: str) -> CIAPIError:
    """An auth refusal as a CIAuthError (never retried) saying what the call needs, any other
    error answer as it is."""
    return CIAuthError.from_error(error, permission) if error.auth_failed else error


def _without_secrets(error: CIError, redact: Redactor) -> CIError:
    """`error`, or a copy of it without whatever `redact` finds in its text. The last guard:
    the parser redacts CI's free text before cutting it, this catches what else quotes an
    answer (a parser's message, an odd value shown in one)."""
    if isinstance(error, CIAPIError):
        fields = (error.code, error.message, error.request_id)
        clean = tuple(redact(field) for field in fields)
        if clean == fields:
            return error
        code, message, request_id = clean
        return dataclasses.replace(error, code=code, message=message, request_id=request_id)
    text = str(error)
    cleaned = redact(text)
    if cleaned == text:
        return error
    return type(error)(cleaned, endpoint=error.endpoint, retryable=error.retryable)
