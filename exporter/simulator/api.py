"""The CI API itself, without HTTP: signature checks, parameter validation, the listings.

Choices where real CI is not documented (the tests pin them):
- A job listing for a queue that does not exist, or that belongs to another endpoint's
  services (a speech queue on /jobs), answers an empty list, not an error: a queue can
  vanish between the queue listing and the job listing.
- Any non-empty `tag` is accepted; a tag with no jobs lists nothing.
- A `nextToken` is a server-side cursor (creation time and id of the last job returned), so
  pages stay stable while jobs come and go. It is bound to its query (bucket, queue, tag,
  states, order, bounds), may be followed again (a retried page answers the same), and the
  newest `max_cursors` are kept; another query's, an unknown or an evicted token answers
  400 InvalidArgument. The token a repeat_token fault hands out reads as the first page.
- Unknown ids in describe-by-id come back as repeated `NonExistJobIds` elements.
- `/queue` filters by category even when `queueIds` is given; an id filtered out that way
  (or by `state`) exists, so it is not listed under `NonExistPIDs`.
- An unknown path answers 404 ResourceNotFound; a method other than GET 405 MethodNotAllowed.
- A temporary key (one with a configured token) must send that token; a wrong or missing
  token answers 403 AccessDenied.
- Workflows, their executions and batch jobs (opt-in per bucket): exporter.simulator.workflows
  says what they answer; their listings page with the same cursors as /jobs.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from email.message import Message
from urllib.parse import quote

from exporter.ci.services import SERVICES, endpoint_family
from exporter.signing import TOKEN_HEADER, expected_signature, parse_authorization
from exporter.simulator import discovery, render, workflows
from exporter.simulator.model import SimBucket
from exporter.simulator.params import (
    ApiError,
    Reply,
    bad_request,
    error_reply,
    id_list,
    int_param,
    not_found,
    order_param,
    states_param,
    time_param,
)
from exporter.simulator.records import JOB_STATES, Clock, JobKey, JobQuery

__all__ = ["BOUNDS", "JOB_PATHS", "LISTING_PATHS", "Api", "ApiError", "Reply", "error_reply"]

QUEUE_PATHS: dict[str, str] = {s.queue_path: s.name for s in SERVICES.values()}
JOB_PATHS: dict[str, frozenset[str]] = {
    path: frozenset(s.name for s in SERVICES.values() if s.job_path == path)
    for path in {s.job_path for s in SERVICES.values()}
}
MEDIA_CATEGORIES: dict[str, tuple[str, ...] | None] = {
    "Transcoding": ("Transcoding",),
    "SpeedTranscoding": ("SpeedTranscoding",),
    "CateAll": None,
}
# Job listings, which are also the families of jobs described by id, the opt-in services'
# included: the faults that spoil jobs match them (exporter.simulator.handler).
LISTING_PATHS: frozenset[str] = frozenset(JOB_PATHS).union(workflows.LISTING_PATHS)
MAX_PAGE = 100
# The token a repeat_token fault hands out; following it reads the first page again.
REPEAT_TOKEN = "simulator-repeating-token"
# How nextToken continues a listing. Real CI's token is opaque: "cursor" (the default) resumes
# after the last job returned; "offset" counts jobs already returned, so a job that leaves the
# result set between two pages shifts the rest and one is skipped, as offset paging does.
TOKEN_MODES = ("cursor", "offset")
_OFFSET_PREFIX = "offset-"
BOUNDS = ("exclusive", "inclusive")


class _Cursors:
    """nextToken -> (the query it continues, the last key returned). Bounded: oldest go."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._tokens: OrderedDict[str, tuple[str, JobQuery, JobKey]] = OrderedDict()

    def issue(self, bucket: str, query: JobQuery, last: JobKey) -> str:
        token = secrets.token_hex(12)
        with self._lock:
            self._tokens[token] = (bucket, dataclasses.replace(query, after=None), last)
            while len(self._tokens) > self._limit:
                self._tokens.popitem(last=False)
        return token

    def resume(self, bucket: str, query: JobQuery, token: str) -> JobQuery:
        with self._lock:
            entry = self._tokens.get(token)
            if entry is not None:
                self._tokens.move_to_end(token)
        if entry is None:
            raise bad_request(f"nextToken {token!r} is unknown or expired")
        if entry[0] != bucket or entry[1] != query:
            raise bad_request("nextToken belongs to another listing")
        return dataclasses.replace(query, after=entry[2])


class Api:
    """What CI answers, given a parsed request. Settings are plain attributes, changeable
    while the simulator runs."""

    def __init__(
        self,
        clock: Clock,
        credentials: Mapping[str, str] | None = None,
        tokens: Mapping[str, str] | None = None,
        creation_bounds: str = "exclusive",
        max_cursors: int = 100_000,
    ) -> None:
        if creation_bounds not in BOUNDS:
            raise ValueError(f"creation_bounds must be one of {BOUNDS}, not {creation_bounds!r}")
        self.clock = clock
        self.credentials: dict[str, str] = dict(credentials or {})
        self.tokens: dict[str, str] = dict(tokens or {})
        self.creation_bounds = creation_bounds
        self.token_mode = "cursor"
        self._cursors = _Cursors(max_cursors)

    def __repr__(self) -> str:
        # No keys or tokens: reprs end up in logs.
        return f"Api(ids={sorted(self.credentials)}, creation_bounds={self.creation_bounds!r})"

    def answer(
        self,
        bucket: SimBucket,
        method: str,
        path: str,
        params: Mapping[str, str],
        headers: Message,
        request_id: str = "",
        repeat_token: bool = False,
        skew: float = 0.0,
    ) -> Reply:
        """Authorize and route one request: a Reply, or ApiError raised. `skew`: how far the
        front end's clock is off for this request (a skew fault)."""
        self._authorize(method, path, params, headers, skew)
        if method != "GET":
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on {path}")
        family = endpoint_family(path)
        if path in QUEUE_PATHS:
            return self._list_queues(bucket, QUEUE_PATHS[path], params, request_id)
        if path in JOB_PATHS:
            return self._list_jobs(bucket, JOB_PATHS[path], params, repeat_token)
        if family in JOB_PATHS and path.startswith(family + "/"):
            return self._describe(bucket, JOB_PATHS[family], path[len(family) + 1 :])
        if family in workflows.FAMILIES:
            return workflows.answer(self, bucket, path, params, request_id, repeat_token)
        raise not_found(path)

    def answer_service(
        self,
        region: str,
        buckets: Iterable[SimBucket],
        method: str,
        path: str,
        params: Mapping[str, str],
        headers: Message,
        request_id: str = "",
        skew: float = 0.0,
    ) -> Reply:
        """One request to the service host `ci.<region>.myqcloud.com`: bucket listings
        (exporter.simulator.discovery), signed and checked as every call."""
        self._authorize(method, path, params, headers, skew)
        if method != "GET":
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on {path}")
        service = discovery.BUCKET_PATHS.get(path)
        if service is None:
            raise not_found(path)
        try:
            body = discovery.bucket_list_body(service, region, buckets, params, request_id)
        except discovery.BadRequest as exc:
            raise bad_request(str(exc)) from None
        return Reply(200, body)

    def _authorize(
        self, method: str, path: str, params: Mapping[str, str], headers: Message, skew: float
    ) -> None:
        value = headers.get("Authorization")
        if not value:
            raise ApiError(401, "MissingAuthorization", "the Authorization header is missing")
        auth = parse_authorization(value)
        needed = ("q-sign-algorithm", "q-ak", "q-sign-time", "q-key-time", "q-signature")
        if any(k not in auth for k in needed) or auth["q-sign-algorithm"] != "sha1":
            raise ApiError(401, "InvalidAuthorization", "the Authorization header is malformed")
        secret_key = self.credentials.get(auth["q-ak"])
        if secret_key is None:
            raise ApiError(401, "SecretidNotExist", "the SecretId does not exist")
        self._check_time(auth["q-sign-time"], auth["q-key-time"], skew)
        signed = self._signed_headers(auth.get("q-header-list", ""), headers)
        listed = {k for k in auth.get("q-url-param-list", "").split(";") if k}
        if listed != {quote(k, safe="-_.~").lower() for k in params}:
            raise ApiError(
                401, "InvalidAuthorization", "q-url-param-list must name every query parameter"
            )
        want = expected_signature(secret_key, method, path, params, signed, auth["q-key-time"])
        if not secrets.compare_digest(want, auth["q-signature"]):
            raise ApiError(401, "InvalidAuthorization", "the signature does not match")
        self._check_token(auth["q-ak"], signed)

    def _check_time(self, sign_time: str, key_time: str, skew: float = 0.0) -> None:
        try:
            start, end = (int(x) for x in sign_time.split(";"))
        except ValueError:
            raise ApiError(401, "InvalidAuthorization", "q-sign-time is malformed") from None
        if key_time != sign_time:
            raise ApiError(401, "InvalidAuthorization", "q-key-time differs from q-sign-time")
        # CI judges validity by its own clock, offset included.
        if not start <= self.clock.now() + skew <= end:
            raise ApiError(401, "SignatureExpired", "the signature is not valid at this time")

    @staticmethod
    def _signed_headers(header_list: str, headers: Message) -> dict[str, str]:
        names = [n for n in header_list.split(";") if n]
        if "host" not in names:
            raise ApiError(401, "InvalidAuthorization", "the host header must be signed")
        signed: dict[str, str] = {}
        for name in names:
            value = headers.get(name)
            if value is None:
                raise ApiError(401, "InvalidAuthorization", f"signed header {name} is missing")
            signed[name] = value
        if headers.get(TOKEN_HEADER) is not None and TOKEN_HEADER not in signed:
            raise ApiError(401, "InvalidAuthorization", f"{TOKEN_HEADER} must be signed")
        return signed

    def _check_token(self, secret_id: str, signed: Mapping[str, str]) -> None:
        expected = self.tokens.get(secret_id)
        if expected is None:
            return
        sent = signed.get(TOKEN_HEADER)
        if sent is None or not secrets.compare_digest(sent, expected):
            raise ApiError(403, "AccessDenied", "the security token is missing or invalid")

    def _list_queues(
        self, bucket: SimBucket, service: str, params: Mapping[str, str], request_id: str
    ) -> Reply:
        ids = id_list(params.get("queueIds", ""), "queueIds")
        state = params.get("state", "") or "All"
        if state not in ("Active", "Paused", "All"):
            raise bad_request(f"state {state!r} is not Active, Paused or All")
        page_number = int_param(params, "pageNumber", 1, 1, None)
        page_size = int_param(params, "pageSize", 10, 1, MAX_PAGE)
        categories: tuple[str, ...] | None = None
        if service == "media":
            category = params.get("category", "") or "Transcoding"
            if category not in MEDIA_CATEGORIES:
                raise bad_request(
                    f"category {category!r} is not one of {', '.join(MEDIA_CATEGORIES)}"
                )
            categories = MEDIA_CATEGORIES[category]
        queues, missing = bucket.list_queues(
            service, ids, None if state == "All" else state, categories
        )
        first = (page_number - 1) * page_size
        return Reply(
            200,
            render.queue_list_body(
                request_id,
                queues[first : first + page_size],
                len(queues),
                page_number,
                page_size,
                missing,
                bucket.name,
            ),
        )

    def _list_jobs(
        self,
        bucket: SimBucket,
        services: frozenset[str],
        params: Mapping[str, str],
        repeat_token: bool,
    ) -> Reply:
        return self.list_page(bucket, self._job_query(services, params), params, repeat_token)

    def list_page(
        self,
        bucket: SimBucket,
        query: JobQuery,
        params: Mapping[str, str],
        repeat_token: bool,
        body: render.PageBody = render.job_list_body,
    ) -> Reply:
        """One page of a job listing (`size`, `nextToken` as for /jobs), rendered by `body`."""
        size = int_param(params, "size", 10, 1, MAX_PAGE)
        token = params.get("nextToken", "")
        if self.token_mode == "offset":
            return self._list_jobs_by_offset(bucket, query, size, token, repeat_token, body)
        if token and token != REPEAT_TOKEN:
            query = self._cursors.resume(bucket.name, query, token)
        jobs, more = bucket.list_jobs(query, size)
        next_token = ""
        if repeat_token:
            next_token = REPEAT_TOKEN
        elif more:
            next_token = self._cursors.issue(bucket.name, query, jobs[-1].key)
        return Reply(200, body(jobs, next_token, bucket.name, bucket.region))

    def _list_jobs_by_offset(
        self,
        bucket: SimBucket,
        query: JobQuery,
        size: int,
        token: str,
        repeat_token: bool,
        body: render.PageBody,
    ) -> Reply:
        offset = 0
        if token and token != REPEAT_TOKEN:
            digits = token.removeprefix(_OFFSET_PREFIX)
            if not token.startswith(_OFFSET_PREFIX) or not digits.isdigit():
                raise bad_request(f"nextToken {token!r} is unknown or expired")
            offset = int(digits)
        jobs, more = bucket.list_jobs(query, offset + size)
        next_token = REPEAT_TOKEN if repeat_token else ""
        if more and not repeat_token:
            next_token = f"{_OFFSET_PREFIX}{offset + size}"
        return Reply(200, body(jobs[offset:], next_token, bucket.name, bucket.region))

    def _job_query(self, services: frozenset[str], params: Mapping[str, str]) -> JobQuery:
        queue_id = params.get("queueId", "")
        tag = params.get("tag", "")
        if not queue_id:
            raise bad_request("queueId is required")
        if not tag:
            raise bad_request("tag is required")
        return self.job_query(params, services, queue_id, tag, JOB_STATES)

    def job_query(
        self,
        params: Mapping[str, str],
        services: frozenset[str],
        queue_id: str,
        tag: str,
        states: tuple[str, ...],
    ) -> JobQuery:
        """A job listing's query (jobs, runs, batch jobs): its states among `states`, its
        creation-time bounds and order, the bounds read as this API reads them."""
        return JobQuery(
            services=services,
            queue_id=queue_id,
            tag=tag,
            states=states_param(params.get("states", ""), states),
            start=time_param(params, "startCreationTime"),
            end=time_param(params, "endCreationTime"),
            inclusive=self.creation_bounds == "inclusive",
            descending=order_param(params),
        )

    @staticmethod
    def _describe(bucket: SimBucket, services: frozenset[str], id_text: str) -> Reply:
        ids = id_list(id_text, "job ids")
        if not ids:
            raise bad_request("no job id given")
        jobs, missing = bucket.describe_jobs(services, ids)
        return Reply(200, render.describe_body(jobs, missing, bucket.name, bucket.region))
