"""Plain records the client hands upward. Nothing above the client sees XML.

Thread ownership: records are frozen; an error belongs to the thread that raised it.

Times are epoch seconds (float) or None when CI reports a time not reached yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.ci.redact import is_code

ACTIVE_STATES: tuple[str, ...] = ("Submitted", "Running", "Pause")
FINISHED_STATES: tuple[str, ...] = ("Success", "Failed", "Cancel")
ALL_STATES: tuple[str, ...] = ACTIVE_STATES + FINISHED_STATES


@dataclass(frozen=True, slots=True)
class Queue:
    queue_id: str
    name: str
    state: str  # "Active" or "Paused"
    max_size: int
    max_concurrent: int
    category: str
    notify_enabled: bool
    create_time: float | None = None
    update_time: float | None = None

    @property
    def paused(self) -> bool:
        return self.state == "Paused"


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    tag: str
    state: str
    queue_id: str
    creation_time: float | None
    start_time: float | None = None
    end_time: float | None = None
    code: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class QueuePage:
    queues: tuple[Queue, ...]
    total_count: int
    page_number: int
    page_size: int
    request_id: str = ""
    non_exist_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: tuple[Job, ...]
    next_token: str = ""


@dataclass(frozen=True, slots=True)
class DiscoveredBucket:
    """A bucket a service is enabled on, as a bucket listing (discovery) gives it."""

    bucket_id: str  # BucketName-APPID, the bucket's host is <bucket_id>.ci.<region>...
    name: str  # "the same as BucketId" (CI's pages); kept as CI gives it
    region: str
    create_time: float | None = None


@dataclass(frozen=True, slots=True)
class BucketPage:
    buckets: tuple[DiscoveredBucket, ...]
    total_count: int
    page_number: int
    page_size: int


@dataclass(frozen=True, slots=True)
class DescribeResult:
    jobs: tuple[Job, ...]
    non_exist_ids: tuple[str, ...] = ()


class CIError(Exception):
    """Anything that made an API call fail. `kind` is the label used in error metrics;
    `retryable` says whether the same call may answer differently if tried again."""

    kind: str = "error"

    def __init__(self, message: str, *, endpoint: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.retryable = retryable


# CI's Codes for a request it will not take from these keys, whatever the HTTP status.
AUTH_CODES: frozenset[str] = frozenset(
    (
        "AccessDenied",
        "InvalidAuthorization",
        "MissingAuthorization",
        "SecretidNotExist",
        "SignatureExpired",
    )
)


@dataclass(eq=False)
class CIAPIError(CIError):
    """CI answered with an error body (or an error status)."""

    status: int
    code: str
    message: str
    request_id: str = ""
    endpoint: str = ""
    retry_after: float | None = field(default=None)

    def __post_init__(self) -> None:
        rid = f" (RequestId {self.request_id})" if self.request_id else ""
        # Throttling and CI's own failures pass; any other 4xx is the same answer next time.
        super().__init__(
            f"HTTP {self.status} {self.code}: {self.message}{rid}",
            endpoint=self.endpoint,
            retryable=self.throttled or self.status >= 500,
        )

    @property
    def kind(self) -> str:  # type: ignore[override]
        """CI's Code when it has the shape of one (exporter.ci.redact.CODE_RE), "other" when
        it has not: a proxy's junk or an echo is never a label."""
        if not self.code:
            return f"http_{self.status}"
        return self.code if is_code(self.code) else "other"

    @property
    def throttled(self) -> bool:
        return self.status in (429, 503) or self.code == "SlowDown"

    @property
    def auth_failed(self) -> bool:
        return self.status in (401, 403) or self.code in AUTH_CODES


@dataclass(eq=False)
class CIAuthError(CIAPIError):
    """CI refused the keys (401/403 or an auth Code): never retried, the target is down until
    the keys, their permissions or the clock are put right. `permission` names what the call
    needs ("CAM action ci:DescribeMediaJobs on qcs::ci:..."; docs/permissions.md)."""

    permission: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.retryable = False
        if self.code in ("SignatureExpired", "RequestTimeTooSkewed"):
            hint = "check this host's clock"
        else:
            hint = "check the credentials and their permissions"
            if self.permission:
                hint += f" (the call needs {self.permission}; see docs/permissions.md)"
        self.args = (f"{self.args[0]}; not retried: {hint}",)

    @classmethod
    def from_error(cls, error: CIAPIError, permission: str = "") -> CIAuthError:
        return cls(
            status=error.status,
            code=error.code,
            message=error.message,
            request_id=error.request_id,
            endpoint=error.endpoint,
            retry_after=error.retry_after,
            permission=permission,
        )


class CIInvalidResponse(CIError):
    """The body was not what CI sends: not XML, wrong root, missing fields, too large."""

    kind = "invalid_response"

    def __init__(self, message: str, *, endpoint: str = "", retryable: bool = True) -> None:
        # Mostly a body damaged on the way, so tried again by default; a well-formed answer
        # that CI would give again (too large, a state we do not know) is not.
        super().__init__(message, endpoint=endpoint, retryable=retryable)


class CITimeout(CIError):
    kind = "timeout"

    def __init__(self, message: str, *, endpoint: str = "", retryable: bool = True) -> None:
        super().__init__(message, endpoint=endpoint, retryable=retryable)


class CIConnectionError(CIError):
    kind = "connection"

    def __init__(self, message: str, *, endpoint: str = "", retryable: bool = True) -> None:
        super().__init__(message, endpoint=endpoint, retryable=retryable)


class CICredentialsError(CIError):
    """No keys to sign with (the provider failed). The message comes from CredentialsError,
    which never holds a secret."""

    kind = "credentials"


class CIStopped(CIError):
    """The exporter is shutting down: a wait or a retry was cut short. Not a CI failure."""

    kind = "stopped"
