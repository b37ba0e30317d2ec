"""The CI API as the poller sees it: queue and job listings, followed to their end, and jobs
described by id, each answer checked as it comes in (exporter.ci.listing).

Thread ownership: a CIClient is shared by the threads polling its target (see
exporter.ci.calls for its state); a listing's own state lives in the generator paging it.

One CIClient per target (bucket, region, endpoint), with its own requests.Session; how each
call is made, timed out, classified and tried again is exporter.ci.calls.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone

from exporter.ci.calls import Answer, CICaller, error_label
from exporter.ci.listing import (
    JOB_PAGE_SIZE,
    MAX_LISTING_JOBS,
    QUEUE_PAGE_SIZE,
    JobListing,
    QueueListing,
    check_jobs,
)
from exporter.ci.models import (
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

__all__ = [
    "DESCRIBE_CHUNK",
    "JOB_PAGE_SIZE",
    "QUEUE_PAGE_SIZE",
    "CIClient",
    "error_label",
    "format_creation_time",
]

DESCRIBE_CHUNK = 10  # the documented maximum of ids per describe call
CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")


def format_creation_time(epoch: float) -> str:
    """Epoch seconds -> `2001-01-01T00:00:00+0800`, the form the job listings take."""
    moment = datetime.fromtimestamp(int(epoch), CHINA_STANDARD_TIME)
    return moment.strftime("%Y-%m-%dT%H:%M:%S+0800")


class CIClient(CICaller):
    def __enter__(self) -> CIClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Listings

    def list_queues(self, service: Service) -> list[Queue]:
        """Every queue of the service, all pages, each queue once."""
        listing = QueueListing(self._queue_page_size)
        number = 0
        while not listing.done:  # QueueListing ends it at its page cap
            number += 1
            params = {
                "pageNumber": str(number),
                "pageSize": str(self._queue_page_size),
                "state": "All",
            }
            params.update(service.queue_params)
            parse = functools.partial(_queue_page, listing, number, self._queue_page_size)
            self._request(service.queues.path, params, parse)
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
        params = {"tag": tag, "size": str(JOB_PAGE_SIZE), "orderByTime": order}
        if queue_id:
            params["queueId"] = queue_id
        if states:
            params["states"] = ",".join(states)
        if start_creation_time is not None:
            params["startCreationTime"] = format_creation_time(start_creation_time)
        if end_creation_time is not None:
            params["endCreationTime"] = format_creation_time(end_creation_time)
        listing = JobListing(start=start_creation_time, end=end_creation_time, max_jobs=max_jobs)
        parse = functools.partial(_job_page, listing)
        while True:  # JobListing ends it at its caps
            page = self._request(service.jobs.path, dict(params), parse)
            yield [_fill(job, tag, queue_id) for job in page.jobs]
            if not page.next_token:
                return
            params["nextToken"] = page.next_token

    def describe_jobs(self, service: Service, job_ids: Sequence[str]) -> DescribeResult:
        """Jobs by id, at most 10 per call; the answers merged in the order asked."""
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
        for start in range(0, len(ids), DESCRIBE_CHUNK):
            chunk = ids[start : start + DESCRIBE_CHUNK]
            path = service.job.with_ids(chunk)
            result = self._request(path, {}, functools.partial(_described, len(chunk)))
            jobs.extend(result.jobs)
            missing.extend(result.non_exist_ids)
        return DescribeResult(tuple(jobs), tuple(dict.fromkeys(missing)))


def _fill(job: Job, tag: str, queue_id: str) -> Job:
    """A listing is per (queue, tag): a job that leaves either out belongs to the one asked for."""
    if job.tag and (job.queue_id or not queue_id):
        return job
    return dataclasses.replace(job, tag=job.tag or tag, queue_id=job.queue_id or queue_id)


def _queue_page(
    listing: QueueListing, number: int, page_size: int, body: bytes, answer: Answer
) -> QueuePage:
    # Checked as part of the answer, so the self-metrics count a failed check as an invalid one.
    page = parse_queue_page(body, max_queues=page_size)
    listing.check(number, page)
    return page


def _job_page(listing: JobListing, body: bytes, answer: Answer) -> JobPage:
    page = parse_job_page(body, redact=answer.redact, max_jobs=JOB_PAGE_SIZE)
    listing.check(page, answer.now)
    return page


def _described(asked: int, body: bytes, answer: Answer) -> DescribeResult:
    result = parse_describe(body, redact=answer.redact, max_jobs=asked)
    check_jobs(result.jobs, answer.now)
    return result
