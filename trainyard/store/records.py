"""Plain, immutable records the repository returns (no ORM objects leak out)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from trainyard.store.states import JobState


def to_datetime(microseconds: int | None) -> datetime | None:
    """Stored microseconds since the epoch to an aware UTC datetime."""
    if microseconds is None:
        return None
    return datetime.fromtimestamp(microseconds / 1_000_000, tz=UTC)


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as stored: identity, lifecycle columns and the submitted document."""

    seq: int
    id: str
    owner: str
    name: str
    kind: str
    queue: str
    priority: str
    priority_value: int
    state: JobState
    reason: str | None
    spec: dict[str, Any]
    placement: dict[int, str] | None
    version: int
    idempotency_key: str | None
    request_hash: str | None
    created_at: int
    updated_at: int
    started_at: int | None
    finished_at: int | None
    attempt: int = 0
    failures: int = 0
    not_before: int | None = None
    stop_target: JobState | None = None
    stop_reason: str | None = None
    attempt_started_at: int | None = None
    estimated_start: int | None = None  # forecast start of a pending job (advisory)


@dataclass(frozen=True, slots=True)
class Submission:
    """A job to store: who submits it, the validated document, and its idempotency data."""

    owner: str
    spec: Mapping[str, Any]
    priority_value: int
    idempotency_key: str | None = None
    request_hash: str | None = None
    spec_json: str | None = None
    """`spec` as the store writes it, when the caller already has it (saves a dump)."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One stored state transition of a job."""

    id: int
    job_id: str
    at: int
    from_state: JobState | None
    to_state: JobState
    reason: str | None


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An API token's owner and role; the token itself is never stored."""

    id: int
    user: str
    role: str
    description: str | None
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def refusal(self, at: int) -> str | None:
        """Why this token is refused at time `at` (microseconds), or None if it is valid."""
        if self.revoked_at is not None:
            return "token revoked"
        if self.expires_at is not None and self.expires_at <= at:
            return "token expired"
        return None


@dataclass(frozen=True, slots=True)
class QueuePosition:
    """A pending job's place in its queue (1 = next to be considered)."""

    position: int
    id: str
    name: str
    owner: str
    priority: str
    created_at: int


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """Per-queue totals the queues view is built from."""

    queue: str
    pending: int
    running: int
    admitted: int
    oldest_pending_created_at: int | None
