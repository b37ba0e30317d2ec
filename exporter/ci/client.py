"""The CI API as the poller sees it: queue and job listings, followed to their end, and jobs
described by id, each answer checked as it comes in (exporter.ci.listing).

Thread ownership: a CIClient is shared by the threads polling its target (see
exporter.ci.calls for its state); a listing's own state lives in the generator paging it.

One CIClient per target (bucket, region, endpoint), with its own requests.Session; how each
call is made, timed out, classified and tried again is exporter.ci.calls.

Every service goes through the same three calls, spelled as its dialect says
(exporter.ci.dialect): workflows are listed as queues and their executions as jobs; batch jobs
have one fixed pseudo-queue, listed without a request. The job listing's `states` are the ones
the service's listing takes (an execution is never Submitted or Pause: those are not sent), and
a service without a tag parameter (executions) takes only its fixed tag. Describe-by-id sends
as many ids a call as the endpoint takes (10 for jobs, 1 for executions and batch jobs); an
error answer the dialect reads as "no such id" (400 ResourceNotFound for an execution) puts the
id in non_exist_ids, and a one-id answer about another id is invalid.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from exporter.ci.calls import Answer, CICaller, error_label
from exporter.ci.dialect import Dialect, JobShape, QueueShape
from exporter.ci.listing import (
    JOB_PAGE_SIZE,
    MAX_LISTING_JOBS,
    QUEUE_PAGE_SIZE,
    JobListing,
    QueueListing,
    check_jobs,
)
from exporter.ci.models import (
    CIAPIError,
    CIInvalidResponse,
    DescribeResult,
    Job,
    JobPage,
    Queue,
    QueuePage,
)
from exporter.ci.parse import (
    is_job_id,
    one_line,
    parse_describe,
    parse_job_page,
    parse_queue_page,
)
from exporter.ci.services import Service, endpoint_family
from exporter.ci.workflows import parse_execution

__all__ = [
    "DESCRIBE_CHUNK",
    "JOB_PAGE_SIZE",
    "QUEUE_PAGE_SIZE",
    "CIClient",
    "error_label",
    "format_creation_time",
]

DESCRIBE_CHUNK = 10  # the documented maximum of ids per describe call of /jobs
CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")


def format_creation_time(epoch: float) -> str:
    """Epoch seconds -> `2001-01-01T00:00:00+0800`, the form the job listings take."""
    moment = datetime.fromtimestamp(int(epoch), CHINA_STANDARD_TIME)
    return moment.strftime("%Y-%m-%dT%H:%M:%S+0800")


# A workflow run's listing carries no times and no failed step: a Failed run is described
# once (one call), at most RUN_DETAILS_PER_LISTING per listing, and remembered by RunId. The
# runs not described within that bound keep the listing's record (failure code "unknown").
RUN_DETAILS_PER_LISTING = 20
RUN_DETAILS_KEPT = 4096


class CIClient(CICaller):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # RunId -> the described run; shared by the target's pool threads, under the lock.
        self._run_details: OrderedDict[str, Job] = OrderedDict()
        self._run_details_lock = threading.Lock()

    def __enter__(self) -> CIClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Listings

    def list_queues(self, service: Service) -> list[Queue]:
        """Every queue of the service, all pages, each queue once; a service without a queue
        listing (batch jobs) has its dialect's fixed queues, without a request."""
        dialect = service.dialect
        if service.queues is None or dialect.queues is None:
            return list(dialect.fixed_queues)
        path, shape = service.queues.path, dialect.queues
        listing = QueueListing(self._queue_page_size)
        number = 0
        while not listing.done:  # QueueListing ends it at its page cap
            number += 1
            params = {"pageNumber": str(number), "pageSize": str(self._queue_page_size)}
            params.update(dialect.queue_filters)
            params.update(service.queue_params)
            parse = functools.partial(_queue_page, listing, number, self._queue_page_size, shape)
            self._request(path, params, parse)
        return list(listing.queues.values())

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
        max_jobs: int = MAX_LISTING_JOBS,
    ) -> list[Job]:
        """Every job of (queue, tag) in those states, following NextToken to the end.

        An empty `queue_id` leaves the queueId parameter out; no `states` means all.
        Jobs that come back without Tag or QueueId get the ones asked for. A listing longer
        than `max_jobs` is an invalid response (see exporter.ci.listing for every check).
        ValueError for a queue or tag the service's listing cannot be asked for (see the
        module).
        """
        pages = self.iter_job_pages(
            service,
            queue_id,
            tag,
            states,
            start_creation_time=start_creation_time,
            end_creation_time=end_creation_time,
            order=order,
            max_jobs=max_jobs,
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
        max_jobs: int = MAX_LISTING_JOBS,
    ) -> Iterator[list[Job]]:
        """The pages of `list_jobs`, each requested only when asked for (one request per next()).

        A caller that has seen enough stops iterating and no further page is fetched. A page
        that fails the listing's checks (a NextToken already followed, jobs outside the
        creation-time window asked for, ...) raises before it is yielded.
        """
        dialect = service.dialect
        params = _job_params(dialect, queue_id, tag, order)
        if states:
            wanted = [state for state in states if state in dialect.states]
            if not wanted:
                return  # none the listing takes: nothing of them to list
            params["states"] = ",".join(wanted)
        if start_creation_time is not None:
            params["startCreationTime"] = format_creation_time(start_creation_time)
        if end_creation_time is not None:
            params["endCreationTime"] = format_creation_time(end_creation_time)
        listing = JobListing(start=start_creation_time, end=end_creation_time, max_jobs=max_jobs)
        parse = functools.partial(_job_page, listing, dialect.jobs)
        budget = [RUN_DETAILS_PER_LISTING if dialect.describe == "execution" else 0]
        while True:  # JobListing ends it at its caps
            page = self._request(service.jobs.path, dict(params), parse)
            jobs = [_fill(job, tag, queue_id) for job in page.jobs]
            yield self._with_details(service, jobs, budget) if budget[0] else jobs
            if not page.next_token:
                return
            params["nextToken"] = page.next_token

    def _with_details(self, service: Service, jobs: list[Job], budget: list[int]) -> list[Job]:
        """Failed runs as described (their failed step's type as the code, their times),
        within `budget` calls; a run CI no longer knows keeps the listing's record."""
        detailed = []
        for job in jobs:
            if job.state == "Failed" and not job.code:
                with self._run_details_lock:
                    known = self._run_details.get(job.job_id)
                if known is None and budget[0] > 0:
                    budget[0] -= 1
                    described = self.describe_jobs(service, [job.job_id]).jobs
                    known = described[0] if described else None
                    if known is not None:
                        self._remember(known)
                if known is not None and known.state == job.state:
                    # The listing's identity and creation time, the detail's failure and times.
                    job = dataclasses.replace(
                        job,
                        code=known.code,
                        message=known.message,
                        start_time=known.start_time,
                        end_time=known.end_time,
                    )
            detailed.append(job)
        return detailed

    def _remember(self, run: Job) -> None:
        with self._run_details_lock:
            self._run_details[run.job_id] = run
            while len(self._run_details) > RUN_DETAILS_KEPT:
                self._run_details.popitem(last=False)

    def describe_jobs(self, service: Service, job_ids: Sequence[str]) -> DescribeResult:
        """Jobs by id, as many per call as the endpoint takes; the answers merged in the order
        asked."""
        ids = list(dict.fromkeys(job_ids))
        family = endpoint_family(service.job.path)
        for job_id in ids:
            if not is_job_id(job_id):
                # Refused before any request: sent, it would ask for other jobs or another path.
                raise CIInvalidResponse(
                    f"GET {family}: not a job id: {one_line(repr(job_id), 80)}", endpoint=family
                )
        jobs: list[Job] = []
        missing: list[str] = []
        chunk_size = max(1, service.job.max_ids)
        for start in range(0, len(ids), chunk_size):
            result = self._describe(service, ids[start : start + chunk_size])
            jobs.extend(result.jobs)
            missing.extend(result.non_exist_ids)
        return DescribeResult(tuple(jobs), tuple(dict.fromkeys(missing)))

    def _describe(self, service: Service, chunk: list[str]) -> DescribeResult:
        dialect = service.dialect
        one = chunk[0] if len(chunk) == 1 and service.job.max_ids == 1 else None
        parse: functools.partial[DescribeResult]
        if dialect.describe == "execution":
            parse = functools.partial(_execution, chunk[0], dialect.missing)
        else:
            parse = functools.partial(_described, len(chunk), dialect, one)
        try:
            return self._request(service.job.with_ids(chunk), {}, parse)
        except CIAPIError as error:
            if one is not None and (error.status, error.code) == dialect.not_found:
                return DescribeResult((), (one,))
            raise


def _job_params(dialect: Dialect, queue_id: str, tag: str, order: str) -> dict[str, str]:
    """The job listing's first parameters: the tag, size, order and the queue, as named."""
    params: dict[str, str] = {}
    if dialect.tag_param is not None:
        params[dialect.tag_param] = tag
    elif tag != dialect.fixed_tag:
        # Listed under another tag, the same runs would be counted once per tag.
        raise ValueError(f"this listing's only tag is {dialect.fixed_tag!r}, not {tag!r}")
    params["size"] = str(JOB_PAGE_SIZE)
    params["orderByTime"] = order
    if dialect.queue_param is not None:
        if queue_id:
            params[dialect.queue_param] = queue_id
    elif queue_id:
        raise ValueError(f"this listing has no queue to name, not {queue_id!r}")
    return params


def _fill(job: Job, tag: str, queue_id: str) -> Job:
    """A listing is per (queue, tag): a job that leaves either out belongs to the one asked for."""
    if job.tag and (job.queue_id or not queue_id):
        return job
    return dataclasses.replace(job, tag=job.tag or tag, queue_id=job.queue_id or queue_id)


def _queue_page(
    listing: QueueListing,
    number: int,
    page_size: int,
    shape: QueueShape,
    body: bytes,
    answer: Answer,
) -> QueuePage:
    # Checked as part of the answer, so the self-metrics count a failed check as an invalid one.
    page = parse_queue_page(body, max_queues=page_size, shape=shape)
    listing.check(number, page)
    return page


def _job_page(listing: JobListing, shape: JobShape, body: bytes, answer: Answer) -> JobPage:
    page = parse_job_page(body, redact=answer.redact, max_jobs=JOB_PAGE_SIZE, shape=shape)
    listing.check(page, answer.now)
    return page


def _described(
    asked: int, dialect: Dialect, one: str | None, body: bytes, answer: Answer
) -> DescribeResult:
    result = parse_describe(
        body,
        redact=answer.redact,
        max_jobs=asked,
        shape=dialect.jobs,
        missing_elements=dialect.missing,
    )
    if one is not None:
        _only(one, result)
    check_jobs(result.jobs, answer.now)
    return result


def _execution(
    run_id: str, missing: tuple[str, ...], body: bytes, answer: Answer
) -> DescribeResult:
    result = parse_execution(body, run_id, redact=answer.redact, missing_elements=missing)
    check_jobs(result.jobs, answer.now)
    return result


def _only(asked: str, result: DescribeResult) -> None:
    """A describe of one id answers about that id only."""
    for job_id in [job.job_id for job in result.jobs] + list(result.non_exist_ids):
        if job_id != asked:
            raise CIInvalidResponse(
                f"answers about {one_line(repr(job_id), 80)}, not the id asked for",
                retryable=False,
            )
