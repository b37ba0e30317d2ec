"""The table of CI services: where their queues and jobs are listed and described, the CAM
action CI checks for each of those calls, and the services' tags.

Every GET the client makes is an Endpoint of this table: the client builds its paths from it,
and exporter.ci.calls looks the call's action up before sending (`cam_action`), so a path the
table does not have never leaves the client. docs/permissions.md and deploy/cam-policy.json are
checked against ENDPOINTS (tests/test_permissions.py).

SERVICES are the five polled by default. WORKFLOW (workflows and their executions) and BATCH
(batch, or inventory trigger, jobs) are services of the same shape that a target opts in to:
ALL_SERVICES holds all seven, `service_named` finds one by name. What varies between services
beyond their paths (element and parameter names, how an unknown id is answered) is each
service's `dialect` (exporter.ci.dialect). Batch jobs have no queue listing (`queues` None): the
client lists one fixed pseudo-queue for them without a request.

Each service's `buckets` endpoint (bucket discovery) is not on a bucket's host but on the
region's service host, `ci.<Region>.myqcloud.com` (`service_host`): CAM can only grant those
actions on `*` (exporter.ci.permissions). `bucket_list` is the element each listed bucket comes
in (`<MediaBucketList>`, ...), as each service's page shows (exporter.ci.buckets). Workflows and
batch jobs live on media buckets: they share media's bucket listing.

Thread ownership: no mutable state (frozen records and module constants).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from exporter.ci.dialect import BATCH_DIALECT, JOBS_DIALECT, WORKFLOW_DIALECT, Dialect

# The Tencent Cloud pages naming an action ("Authorization Description" / "授权说明").
_DOC = "https://www.tencentcloud.com/document/product/1045/"
_DOC_CN = "https://cloud.tencent.com/document/product/"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One GET of the CI API and the CAM action a sub-account's keys need for it.

    `by_id`: job ids follow the path (`/jobs/<id>,<id>`), at most `max_ids` of them.
    `source`: the Tencent Cloud page naming the action; empty when the action is inferred from
    its neighbours' names (see docs/permissions.md, "What is not certain").
    """

    path: str
    action: str
    source: str = ""
    by_id: bool = False
    service_host: bool = False  # on ci.<Region>.myqcloud.com, not on a bucket's host
    max_ids: int = 10  # ids per describe call (by_id only)

    def with_ids(self, ids: Sequence[str]) -> str:
        return f"{self.path}/{','.join(ids)}"

    def matches(self, path: str) -> bool:
        return path.startswith(self.path + "/") if self.by_id else path == self.path


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    queues: Endpoint | None  # the queue listing; None: the dialect's fixed queues, no call
    jobs: Endpoint  # the job listing
    job: Endpoint  # jobs described by id
    buckets: Endpoint  # the buckets the service is enabled on (discovery), on the service host
    bucket_list: tuple[str, ...]  # the element(s) a listed bucket comes in; the first is CI's
    tags: tuple[str, ...]
    # Extra query parameters for the queue listing. /queue leaves out SpeedTranscoding
    # queues unless asked for every category.
    queue_params: tuple[tuple[str, str], ...] = ()
    dialect: Dialect = JOBS_DIALECT

    @property
    def queue_path(self) -> str:
        """The queue listing's path; "" when the service has none."""
        return self.queues.path if self.queues is not None else ""

    @property
    def job_path(self) -> str:
        return self.jobs.path

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The calls on a bucket's host (discovery's `buckets` is not one of them)."""
        calls = (self.queues, self.jobs, self.job)
        return tuple(endpoint for endpoint in calls if endpoint is not None)


MEDIA_TAGS: tuple[str, ...] = (
    "Transcode",
    "Animation",
    "Snapshot",
    "SmartCover",
    "Concat",
    "VoiceSeparate",
    "VideoMontage",
    "SDRtoHDR",
    "VideoProcess",
    "SuperResolution",
    "Segment",
    "DigitalWatermark",
    "ExtractDigitalWatermark",
    "VideoTag",
    "MediaInfo",
    "StreamExtract",
    "QualityEstimate",
    "Tts",
    "NoiseReduction",
)

# /jobs lists and describes the jobs of every queue type (media and ai here).
JOBS = Endpoint("/jobs", "ci:DescribeMediaJobs", _DOC_CN + "460/84766")
JOBS_BY_ID = Endpoint("/jobs", "ci:DescribeMediaJob", _DOC_CN + "436/85084", by_id=True)


def _buckets(path: str, action: str, page: str) -> Endpoint:
    return Endpoint(path, action, _DOC + page, service_host=True)


MEDIA_BUCKETS = _buckets("/mediabucket", "ci:DescribeMediaBuckets", "72937")


# Bucket listings. Pages naming the action and the list element: media 1045/72937
# (MediaBucketList), speech 1045/73364 (AsrBucketList, as 1045/49551; the older
# cloud.tencent.com/document/product/436/47598 shows SpeechBucketList, so both are read), pic
# 1045/72916 (PicBucketList), doc 1045/74910 (DocBucketList), ai 1045/72921 (AiBucketList).

SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service(
            "media",
            Endpoint("/queue", "ci:DescribeMediaQueues", _DOC + "72939"),
            JOBS,
            JOBS_BY_ID,
            MEDIA_BUCKETS,
            ("MediaBucketList",),
            MEDIA_TAGS,
            (("category", "CateAll"),),
        ),
        Service(
            "ai",
            Endpoint("/ai_queue", "ci:DescribeAiProcessQueues", _DOC + "72923"),
            JOBS,
            JOBS_BY_ID,
            _buckets("/ai_bucket", "ci:DescribeAiProcessBucket", "72921"),
            ("AiBucketList",),
            ("Translation", "SpeechRecognition", "WordsGeneralize"),
        ),
        Service(
            "speech",
            Endpoint("/asrqueue", "ci:DescribeAsrQueues", _DOC + "73366"),
            Endpoint("/asr_jobs", "ci:DescribeAsrJobs"),
            Endpoint("/asr_jobs", "ci:DescribeAsrJob", by_id=True),
            _buckets("/asrbucket", "ci:DescribeAsrBuckets", "73364"),
            ("AsrBucketList", "SpeechBucketList"),
            ("SpeechRecognition",),
        ),
        Service(
            "pic",
            Endpoint("/picqueue", "ci:DescribePicProcessQueues", _DOC + "72918"),
            Endpoint("/pic_jobs", "ci:DescribePicProcessJobs"),
            Endpoint("/pic_jobs", "ci:DescribePicProcessJob", by_id=True),
            _buckets("/picbucket", "ci:DescribePicProcessBucket", "72916"),
            ("PicBucketList",),
            ("PicProcess", "PosterProduction"),
        ),
        Service(
            "doc",
            Endpoint("/docqueue", "ci:DescribeDocProcessQueues", _DOC_CN + "1250/109270"),
            Endpoint("/doc_jobs", "ci:DescribeDocProcessJobs"),
            Endpoint("/doc_jobs", "ci:DescribeDocProcessJob", by_id=True),
            _buckets("/docbucket", "ci:DescribeDocProcessBucket", "74910"),
            ("DocBucketList",),
            ("DocProcess",),
        ),
    )
}

# Workflows: the workflow listing is named by CI's authorization granularity list (1045/58195,
# read through a copy of its text), the execution listing by its own page; no page names the
# action of an execution described by id (inferred from DescribeMediaJob's). Batch jobs: each
# call's page names its action. An execution or a batch job is described one id per call.
WORKFLOW = Service(
    "workflow",
    Endpoint("/workflow", "ci:DescribeMediaWorkflows", _DOC + "58195"),
    Endpoint("/workflowexecution", "ci:DescribeMediaWorkflowExecutions", _DOC + "51276"),
    Endpoint("/workflowexecution", "ci:DescribeMediaWorkflowExecution", by_id=True, max_ids=1),
    MEDIA_BUCKETS,
    ("MediaBucketList",),
    ("Workflow",),
    dialect=WORKFLOW_DIALECT,
)
BATCH = Service(
    "batch",
    None,
    Endpoint("/inventorytriggerjob", "ci:DescribeInventoryTriggerJobs", _DOC + "47031"),
    Endpoint(
        "/inventorytriggerjob",
        "ci:DescribeInventoryTriggerJob",
        _DOC + "47030",
        by_id=True,
        max_ids=1,
    ),
    MEDIA_BUCKETS,
    ("MediaBucketList",),
    ("Workflow", "Job"),  # the batch job's Type
    dialect=BATCH_DIALECT,
)

# The default-polled services, then the opt-in ones.
ALL_SERVICES: dict[str, Service] = {
    **SERVICES,
    WORKFLOW.name: WORKFLOW,
    BATCH.name: BATCH,
}

# Every endpoint the client calls, each once (media and ai share /jobs, every media-bucket
# service /mediabucket): the bucket hosts' first, then the service hosts' bucket listings.
ENDPOINTS: tuple[Endpoint, ...] = tuple(
    dict.fromkeys(
        [e for s in ALL_SERVICES.values() for e in s.endpoints]
        + [s.buckets for s in ALL_SERVICES.values()]
    )
)


def service_named(name: str) -> Service:
    """The service called `name` (one of ALL_SERVICES); LookupError for any other name."""
    try:
        return ALL_SERVICES[name]
    except KeyError:
        raise LookupError(f"unknown service {name!r} (valid: {', '.join(ALL_SERVICES)})") from None


def endpoint_of(path: str) -> Endpoint:
    """The endpoint of a GET of `path` (ids included, no query string).

    LookupError for a path no endpoint has: a call the permissions documentation cannot cover.
    """
    for endpoint in ENDPOINTS:
        if endpoint.matches(path):
            return endpoint
    raise LookupError(f"GET {path}: no CAM action for this path in exporter.ci.services")


def cam_action(path: str) -> str:
    """The CAM action CI checks for a GET of `path` (see endpoint_of)."""
    return endpoint_of(path).action


def endpoint_family(path: str) -> str:
    """`/jobs/a,b,c` -> `/jobs`: a bounded label value for request metrics."""
    parts = path.split("/")
    return "/" + parts[1] if len(parts) > 1 else path
