"""The HTTP side of the CI API: sign, send, time out, classify failures, retry, paginate.

One CIClient per target (bucket, region, endpoint), with its own requests.Session. `_attempt`
is exactly one HTTP attempt, counted once in the self-metrics; `_request` wraps it in the
retry policy, the target's pacing and the shared request gate (exporter.ratelimit). Every
failure leaves here as a CIError whose message is one line, names the endpoint family, and
never carries a key, a token or the signature.

What is tried again (at most `retry.attempts` calls, exponential back-off with full jitter):

- 429, 503, or Code SlowDown whatever the status (throttling): yes, after Retry-After (at most
  5 min) or the back-off, whichever is longer; the target's pacing doubles (exporter.ratelimit).
- other 5xx, a gateway's error page, timeouts, connection refused or reset, a body cut short:
  yes, after the back-off.
- a body that is not CI's XML (malformed, HTML with 200, fields missing): yes, after the
  back-off (mostly damage on the way).
- a body too large, a job in a state we do not know: no, CI would answer the same.
- 401, 403, or an auth Code (AccessDenied, InvalidAuthorization, MissingAuthorization,
  SecretidNotExist, SignatureExpired): no; CIAuthError, kind = the Code.
- any other 4xx (InvalidArgument, ResourceNotFound, ...): no, the request is wrong, not CI.
- the credential provider fails: no; CICredentialsError, kind "credentials".
- shutdown (`stopping` set): no; CIStopped, and every wait is cut short.
"""

from __future__ import annotations

import dataclasses
import os
import random as random_module
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import TypeVar
from urllib.parse import quote, urlsplit

import requests

from exporter import __version__
from exporter.api_stats import OTHER_ERROR, ApiStats
from exporter.ci.models import (
    ALL_STATES,
    CIAPIError,
    CIAuthError,
    CIConnectionError,
    CICredentialsError,
    CIError,
    CIInvalidResponse,
    CIStopped,
    CITimeout,
    DescribeResult,
    Job,
    JobPage,
    Queue,
)
from exporter.ci.parse import (
    is_job_id,
    one_line,
    parse_describe,
    parse_error,
    parse_job_page,
    parse_queue_page,
)
from exporter.ci.services import Service, endpoint_family
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
QUEUE_PAGE_SIZE = 100
# Answers slower than this do not update the measure of CI's clock (see _measure_clock).
MAX_CLOCK_SAMPLE_RTT = 2.0
JOB_PAGE_SIZE = 100  # the documented maximum of `size`
DESCRIBE_CHUNK = 10  # the documented maximum of ids per describe call
# Listings end long before these; they only stop a server that never says "last page".
MAX_QUEUE_PAGES = 1000
MAX_JOB_PAGES = 100_000
CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")
_READ_CHUNK = 64 * 1024
_SAFE = "-_.~"  # what the signature leaves unencoded; the URL uses the same encoding
# The `error` label of the self-metrics: CI's Code when it looks like one, else "other", so a
# proxy answering junk cannot put arbitrary text (or unbounded variety) into a label.
MAX_ERROR_LABEL = 64
_ERROR_LABEL_RE = re.compile(rf"[A-Za-z0-9_.-]{{1,{MAX_ERROR_LABEL}}}")

T = TypeVar("T")


def format_creation_time(epoch: float) -> str:
    """Epoch seconds -> `2001-01-01T00:00:00+0800`, the form the job listings take."""
    moment = datetime.fromtimestamp(int(epoch), CHINA_STANDARD_TIME)
    return moment.strftime("%Y-%m-%dT%H:%M:%S+0800")


def _query(params: Mapping[str, str]) -> str:
    return "&".join(f"{quote(k, safe=_SAFE)}={quote(v, safe=_SAFE)}" for k, v in params.items())


def error_label(kind: str) -> str:
    """`kind` when it is a plausible code (<= 64 of [A-Za-z0-9_.-]), else "other".

    Junk is replaced rather than cleaned up: a cleaned-up junk value would still be junk, and
    still one more label value.
    """
    return kind if _ERROR_LABEL_RE.fullmatch(kind) else OTHER_ERROR


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it wraps (requests and urllib3 nest them in args and `reason`)."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending and len(seen) < 20:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [a for a in current.args if isinstance(a, BaseException)]
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            nested.append(reason)
        nested += [e for e in (current.__cause__, current.__context__) if e is not None]
        pending.extend(nested)


def _reason(exc: BaseException) -> str:
    """The innermost cause, short: `ConnectionResetError: [Errno 104] Connection reset by peer`."""
    innermost = list(_causes(exc))[-1]
    text = one_line(str(innermost), 160)
    return f"{type(innermost).__name__}: {text}" if text else type(innermost).__name__


def _is_timeout(exc: BaseException) -> bool:
    # requests reports a read timeout in the middle of a streamed body as a ConnectionError.
    return any(
        isinstance(e, (TimeoutError, requests.Timeout)) or type(e).__name__ == "ReadTimeoutError"
        for e in _causes(exc)
    )


def _session_for(endpoint: str) -> requests.Session:
    """A session that reads the environment once. By default requests looks up proxies, netrc
    and CA bundles in the environment on every request: about 1 ms of CPU each, a fifth of a
    poll's CPU. The endpoint never changes, so the answers cannot either."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.proxies.update(requests.utils.get_environ_proxies(endpoint))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False
    return session


class CIClient:
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
        max_body_bytes: int = 32 * 1024 * 1024,
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
        short (CIStopped); `sleep` and `random` are there for tests."""
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
        self._session = session if session is not None else _session_for(self.endpoint)
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

    def __enter__(self) -> CIClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Listings

    def list_queues(self, service: Service) -> list[Queue]:
        """Every queue of the service, all pages, each queue once."""
        family = endpoint_family(service.queue_path)
        queues: dict[str, Queue] = {}
        for number in range(1, MAX_QUEUE_PAGES + 1):
            params = {
                "pageNumber": str(number),
                "pageSize": str(self._queue_page_size),
                "state": "All",
            }
            params.update(service.queue_params)
            page = self._request(service.queue_path, params, parse_queue_page)
            if not page.queues:
                return list(queues.values())
            before = len(queues)
            for queue in page.queues:
                queues.setdefault(queue.queue_id, queue)
            if len(queues) >= page.total_count:
                return list(queues.values())
            if len(queues) == before:
                # A server ignoring pageNumber would otherwise be paged up to the cap.
                raise CIInvalidResponse(
                    f"GET {family}: page {number} lists only queues already listed "
                    f"({len(queues)} of TotalCount {page.total_count})",
                    endpoint=family,
                )
        raise CIInvalidResponse(
            f"GET {family}: listing did not end within {MAX_QUEUE_PAGES} pages", endpoint=family
        )

    def list_jobs(
        self,
        service: Service,
        queue_id: str,
        tag: str,
        states: Sequence[str],
        *,
        start_creation_time: int | None = None,
        end_creation_time: int | None = None,
        order: str = "Desc",
    ) -> list[Job]:
        """Every job of (queue, tag) in those states, following NextToken to the end.

        An empty `queue_id` leaves the queueId parameter out; no `states` means all.
        Jobs that come back without Tag or QueueId get the ones asked for.
        """
        pages = self.iter_job_pages(
            service,
            queue_id,
            tag,
            states,
            start_creation_time=start_creation_time,
            end_creation_time=end_creation_time,
            order=order,
        )
        return [job for page in pages for job in page]

    def iter_job_pages(
        self,
        service: Service,
        queue_id: str,
        tag: str,
        states: Sequence[str],
        *,
        start_creation_time: int | None = None,
        end_creation_time: int | None = None,
        order: str = "Desc",
    ) -> Iterator[list[Job]]:
        """The pages of `list_jobs`, each requested only when asked for (one request per next()).

        A caller that has seen enough stops iterating and no further page is fetched. A page
        whose NextToken was already followed raises before it is yielded.
        """
        family = endpoint_family(service.job_path)
        params = {"tag": tag, "size": str(JOB_PAGE_SIZE), "orderByTime": order}
        if queue_id:
            params["queueId"] = queue_id
        if states:
            params["states"] = ",".join(states)
        if start_creation_time is not None:
            params["startCreationTime"] = format_creation_time(start_creation_time)
        if end_creation_time is not None:
            params["endCreationTime"] = format_creation_time(end_creation_time)
        followed: set[str] = set()

        def parse_page(body: bytes) -> JobPage:
            # Checked as part of the answer, so the self-metrics count it as an invalid one.
            page = _parse_checked_page(body)
            if page.next_token in followed:
                raise CIInvalidResponse(
                    f"NextToken {one_line(repr(page.next_token), 80)} repeated in one listing",
                    retryable=False,  # the same page would come back
                )
            return page

        for _ in range(MAX_JOB_PAGES):
            page = self._request(service.job_path, dict(params), parse_page)
            token = page.next_token
            yield [_fill(job, tag, queue_id) for job in page.jobs]
            if not token:
                return
            followed.add(token)
            params["nextToken"] = token
        raise CIInvalidResponse(
            f"GET {family}: listing did not end within {MAX_JOB_PAGES} pages", endpoint=family
        )

    def describe_jobs(self, service: Service, job_ids: Sequence[str]) -> DescribeResult:
        """Jobs by id, at most 10 per call; the answers merged in the order asked."""
        ids = list(dict.fromkeys(job_ids))
        family = endpoint_family(service.job_path)
        for job_id in ids:
            if not is_job_id(job_id):
                # Refused before any request: sent, it would ask for other jobs or another path.
                raise CIInvalidResponse(
                    f"GET {family}: not a job id: {one_line(repr(job_id), 80)}", endpoint=family
                )
        jobs: list[Job] = []
        missing: list[str] = []
        for start in range(0, len(ids), DESCRIBE_CHUNK):
            path = f"{service.job_path}/{','.join(ids[start : start + DESCRIBE_CHUNK])}"
            result = self._request(path, {}, _parse_checked_describe)
            jobs.extend(result.jobs)
            missing.extend(result.non_exist_ids)
        return DescribeResult(tuple(jobs), tuple(dict.fromkeys(missing)))

    # Retries, pacing and the gate

    def _request(self, path: str, params: Mapping[str, str], parse: Callable[[bytes], T]) -> T:
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

    def _attempt(self, path: str, params: Mapping[str, str], parse: Callable[[bytes], T]) -> T:
        """One signed GET of `path`, its body handed to `parse`. Counted once in the stats."""
        family = endpoint_family(path)
        full_path = self._prefix + path
        url = f"{self.endpoint}{quote(full_path, safe='/,' + _SAFE)}"
        if params:
            url += "?" + _query(params)
        credentials = self._keys()
        headers = self._headers(credentials, full_path, params)
        started = time.monotonic()
        status, error = "error", None
        try:
            sent_at = self._clock()
            response = self._open(url, headers, family)
            with response:
                self._measure_clock(response.headers.get("Date"), sent_at, self._clock())
                status = str(response.status_code)
                body = self._read(response, family, started + self._timeout)
            if not 200 <= response.status_code < 300:
                failure = parse_error(response.status_code, body, response.headers, endpoint=family)
                raise _redacted(failure, credentials)
            try:
                return parse(body)
            except CIInvalidResponse as exc:
                raise CIInvalidResponse(
                    f"GET {family}: {exc}", endpoint=family, retryable=exc.retryable
                ) from None
        except CIError as exc:
            error = error_label(exc.kind)
            raise
        except Exception:
            # Not one of ours: still a failed call in the self-metrics, never a success.
            error = "invalid_response"
            raise
        finally:
            if self._stats is not None:
                self._stats.record(
                    self.bucket, self.region, family, status, error, time.monotonic() - started
                )

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
        }

    def _open(self, url: str, headers: Mapping[str, str], family: str) -> requests.Response:
        try:
            return self._session.get(
                url, headers=headers, timeout=self._timeout, stream=True, allow_redirects=False
            )
        except requests.Timeout:
            raise CITimeout(
                f"GET {family}: no answer within {self._timeout:g}s", endpoint=family
            ) from None
        except requests.RequestException as exc:
            raise CIConnectionError(f"GET {family}: {_reason(exc)}", endpoint=family) from None

    def _read(self, response: requests.Response, family: str, deadline: float) -> bytes:
        """The body, streamed: stops as soon as it passes max_body_bytes or the deadline."""
        too_large = CIInvalidResponse(
            f"GET {family}: body larger than {self._max_body} bytes",
            endpoint=family,
            retryable=False,
        )
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self._max_body:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(_READ_CHUNK):
                size += len(chunk)
                if size > self._max_body:
                    raise too_large
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise CITimeout(
                        f"GET {family}: body not complete within {self._timeout:g}s",
                        endpoint=family,
                    )
        except requests.exceptions.ContentDecodingError as exc:
            raise CIInvalidResponse(f"GET {family}: {_reason(exc)}", endpoint=family) from None
        except requests.RequestException as exc:
            if _is_timeout(exc):
                raise CITimeout(
                    f"GET {family}: body not complete within {self._timeout:g}s", endpoint=family
                ) from None
            raise CIConnectionError(
                f"GET {family}: body cut short: {_reason(exc)}", endpoint=family
            ) from None
        return b"".join(chunks)

    def _measure_clock(self, date: str | None, sent_at: float, received_at: float) -> None:
        if not date:
            return
        try:
            server = parsedate_to_datetime(date)
        except (TypeError, ValueError, IndexError):
            return
        if server.tzinfo is None:  # an HTTP date is always GMT
            server = server.replace(tzinfo=timezone.utc)
        # The Date was written somewhere between sending and receiving: a slow answer says
        # little about CI's clock, so it never counts, even with no measure yet (None makes
        # callers fall back to the configured tolerance, which a bad measure would not).
        if received_at - sent_at > MAX_CLOCK_SAMPLE_RTT:
            return
        self._clock_offset = server.timestamp() - (sent_at + received_at) / 2


def _fill(job: Job, tag: str, queue_id: str) -> Job:
    """A listing is per (queue, tag): a job that leaves either out belongs to the one asked for."""
    if job.tag and (job.queue_id or not queue_id):
        return job
    return dataclasses.replace(job, tag=job.tag or tag, queue_id=job.queue_id or queue_id)


def _check_jobs(jobs: Sequence[Job]) -> None:
    """What the accounting needs of every job, beyond what the parser checks.

    A state we do not know is refused, not skipped: a job left out of a listing may be one
    that was tracked and will finish later, out of every window, and would never be counted.
    Refused, the stream's poll fails loudly (up 0, the state named), keeps its state, and
    catches up exactly once CI's answers are known again. A job without CreationTime cannot
    be placed in a creation-time window, so it could be counted twice: refused as well.
    """
    for job in jobs:
        if job.state not in ALL_STATES:
            raise CIInvalidResponse(
                f"job {job.job_id}: unknown State {one_line(repr(job.state), 60)}",
                retryable=False,
            )
        if job.creation_time is None:
            raise CIInvalidResponse(f"job {job.job_id}: missing CreationTime")


def _parse_checked_page(body: bytes) -> JobPage:
    page = parse_job_page(body)
    _check_jobs(page.jobs)
    return page


def _parse_checked_describe(body: bytes) -> DescribeResult:
    result = parse_describe(body)
    _check_jobs(result.jobs)
    return result


def _redacted(error: CIAPIError, credentials: Credentials) -> CIAPIError:
    """CI's own words, without our secrets should a proxy or CI echo them; auth refusals
    become CIAuthError."""
    message, request_id = error.message, error.request_id
    for secret in (credentials.secret_key, credentials.token):
        if secret:
            message = message.replace(secret, "<redacted>")
            request_id = request_id.replace(secret, "<redacted>")
    if (message, request_id) != (error.message, error.request_id):
        error = dataclasses.replace(error, message=message, request_id=request_id)
    return CIAuthError.from_error(error) if error.auth_failed else error
