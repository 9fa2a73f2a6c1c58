"""Errors the store raises; the API maps each to one HTTP status."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of everything the store raises on purpose."""


class JobNotFound(StoreError):
    """No job with this id (or none visible to this owner)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found")
        self.job_id = job_id


class IllegalTransition(StoreError):
    """The state machine does not allow this state change."""

    def __init__(self, job_id: str, current: str, target: str) -> None:
        super().__init__(f"job {job_id!r} cannot go from {current} to {target}")
        self.job_id = job_id
        self.current = current
        self.target = target


class ConcurrentUpdate(StoreError):
    """Another writer changed the job first (its version moved on); re-read and retry."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} was changed concurrently; re-read it and retry")
        self.job_id = job_id


class IdempotencyConflict(StoreError):
    """An Idempotency-Key was reused with a different job document."""

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used for job {job_id!r} with a different body"
        )
        self.key = key
        self.job_id = job_id
