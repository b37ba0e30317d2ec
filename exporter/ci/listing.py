"""What the pages of a listing must look like, checked as each answer comes in.

Thread ownership: a JobListing or QueueListing belongs to the one thread paging that listing;
the module holds no other mutable state.

Each check runs as part of parsing the answer, inside the call, so a failed one is counted as
that call's `invalid_response` (exporter.api_stats), and the listing stops at the first sign of
a server that is not behaving like CI:

- more items on a page than the page size asked for (refused by the parser, before any more is
  built);
- a NextToken already followed, a page that lists only jobs (or queues) already listed, more
  than MAX_EMPTY_PAGES empty pages in a row that still say "more";
- a listing longer than the caps (MAX_LISTING_JOBS jobs or MAX_JOB_PAGES pages; MAX_QUEUES
  queues, also when TotalCount says so up front);
- a job created outside the creation-time window asked for (give or take WINDOW_EDGE), which
  would otherwise be counted again on every poll;
- a job time more than FUTURE_LIMIT ahead of CI's clock: such a job would never age out of
  the accounting or the state file.

None of these is retried: CI, or whatever answers in its name, would answer the same.
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter.ci.models import ALL_STATES, CIInvalidResponse, Job, JobPage, Queue, QueuePage
from exporter.ci.parse import one_line

JOB_PAGE_SIZE = 100  # the documented maximum of `size`
QUEUE_PAGE_SIZE = 100  # pageSize asked of queue listings (CI documents no maximum)
# A queue holds at most 10,000 jobs (MaxSize); a listing ten times that is not CI's. Paged in
# full, it is some 40 MB of records: the caller may pass a tighter max_jobs.
MAX_LISTING_JOBS = 100_000
MAX_JOB_PAGES = MAX_LISTING_JOBS // JOB_PAGE_SIZE
MAX_EMPTY_PAGES = 3
MAX_QUEUES = 10_000  # per service and bucket
FUTURE_LIMIT = 86_400.0  # seconds a job time may be ahead of CI's clock
WINDOW_EDGE = 1.0  # CI's creation-time bounds have one-second granularity


def _invalid(message: str) -> CIInvalidResponse:
    return CIInvalidResponse(message, retryable=False)


def check_jobs(jobs: Sequence[Job], now: float) -> None:
    """What the accounting needs of every job, beyond what the parser checks.

    A state we do not know is refused, not skipped: a job left out of a listing may be one
    that was tracked and will finish later, out of every window, and would never be counted.
    Refused, the stream's poll fails loudly (up 0, the state named), keeps its state, and
    catches up exactly once CI's answers are known again. A job without CreationTime cannot
    be placed in a creation-time window, so it could be counted twice: refused as well. `now`
    is CI's clock as best known (the answer's Date, or ours).
    """
    limit = now + FUTURE_LIMIT
    for job in jobs:
        if job.state not in ALL_STATES:
            raise _invalid(f"job {job.job_id}: unknown State {one_line(repr(job.state), 60)}")
        if job.creation_time is None:
            raise CIInvalidResponse(f"job {job.job_id}: missing CreationTime")
        for name, value in (
            ("CreationTime", job.creation_time),
            ("StartTime", job.start_time),
            ("EndTime", job.end_time),
        ):
            if value is not None and value > limit:
                raise _invalid(f"job {job.job_id}: {name} more than a day ahead of CI's clock")


class JobListing:
    """The checks one job listing's pages pass in order (see the module); what a page adds is
    kept only once the whole page has passed."""

    def __init__(
        self,
        *,
        start: int | None = None,
        end: int | None = None,
        max_jobs: int = MAX_LISTING_JOBS,
    ) -> None:
        self._low = None if start is None else start - WINDOW_EDGE
        self._high = None if end is None else end + WINDOW_EDGE
        self._max_jobs = max_jobs
        self._max_pages = min(MAX_JOB_PAGES, max(1, -(-max_jobs // JOB_PAGE_SIZE)) + 1)
        self._pages = 0
        self._jobs = 0
        self._empty = 0
        self._seen: set[str] = set()
        self._followed: set[str] = set()

    def check(self, page: JobPage, now: float) -> None:
        number = self._pages + 1
        check_jobs(page.jobs, now)
        self._check_window(page.jobs)
        token = page.next_token
        if token and token in self._followed:
            raise _invalid(f"NextToken {one_line(repr(token), 80)} repeated in one listing")
        new = {job.job_id for job in page.jobs}.difference(self._seen)
        if page.jobs and not new:
            raise _invalid(f"page {number} lists only jobs already listed")
        count = self._jobs + len(page.jobs)
        if count > self._max_jobs:
            raise _invalid(f"listing longer than {self._max_jobs} jobs")
        empty = 0 if page.jobs else self._empty + 1
        if token and empty >= MAX_EMPTY_PAGES:
            raise _invalid(f"{empty} empty pages in a row, each with a NextToken")
        if token and number >= self._max_pages:
            raise _invalid(f"listing did not end within {self._max_pages} pages")
        self._pages, self._jobs, self._empty = number, count, empty
        self._seen.update(new)
        if token:
            self._followed.add(token)

    def _check_window(self, jobs: Sequence[Job]) -> None:
        low, high = self._low, self._high
        if low is None and high is None:
            return
        for job in jobs:
            created = job.creation_time
            assert created is not None  # check_jobs refused it otherwise
            if low is not None and created < low:
                raise _invalid(f"job {job.job_id}: created before the startCreationTime asked for")
            if high is not None and created > high:
                raise _invalid(f"job {job.job_id}: created after the endCreationTime asked for")


class QueueListing:
    """The checks of one queue listing's pages (see the module), and the queues so far."""

    def __init__(self, page_size: int) -> None:
        self.queues: dict[str, Queue] = {}
        self.done = False
        self._max_pages = max(1, -(-MAX_QUEUES // page_size))

    def check(self, number: int, page: QueuePage) -> None:
        if page.total_count > MAX_QUEUES:
            raise _invalid(
                f"TotalCount {page.total_count} is more than the {MAX_QUEUES} queues "
                "a listing may hold"
            )
        if not page.queues:
            self.done = True  # fewer queues than TotalCount said: some went since it was said
            return
        new: dict[str, Queue] = {}
        for queue in page.queues:
            if queue.queue_id not in self.queues:
                new.setdefault(queue.queue_id, queue)
        if not new:
            # A server ignoring pageNumber would otherwise be paged up to the cap.
            raise _invalid(
                f"page {number} lists only queues already listed "
                f"({len(self.queues)} of TotalCount {page.total_count})"
            )
        listed = len(self.queues) + len(new)
        if listed > MAX_QUEUES:
            raise _invalid(f"listing longer than {MAX_QUEUES} queues")
        done = listed >= page.total_count
        if not done and number >= self._max_pages:
            raise _invalid(f"listing did not end within {self._max_pages} pages")
        self.queues.update(new)
        self.done = done
