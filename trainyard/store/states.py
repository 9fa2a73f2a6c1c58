"""The job state machine, written down once: every state and every allowed transition.

Nothing else in Trainyard decides whether a state change is legal; the store refuses
anything this table does not list, and the API turns that refusal into a 409.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its life."""

    PENDING = "PENDING"
    ADMITTED = "ADMITTED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    PREEMPTED = "PREEMPTED"


TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    # Admitted by the scheduler, cancelled by its owner, or failed before it ever ran
    # (for example an image that can never be pulled).
    JobState.PENDING: frozenset({JobState.ADMITTED, JobState.CANCELLED, JobState.FAILED}),
    # Admission can be undone (its pods could not be created): back to PENDING.
    JobState.ADMITTED: frozenset(
        {
            JobState.RUNNING,
            JobState.PENDING,
            JobState.PREEMPTED,
            JobState.FAILED,
            JobState.CANCELLED,
        }
    ),
    # RUNNING -> PENDING is a retry after a failed attempt with retries left.
    JobState.RUNNING: frozenset(
        {
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.PREEMPTED,
            JobState.PENDING,
        }
    ),
    # A preempted job goes back to the queue, keeping its submit time and so its place.
    JobState.PREEMPTED: frozenset({JobState.PENDING, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}

TERMINAL_STATES: frozenset[JobState] = frozenset(
    state for state, targets in TRANSITIONS.items() if not targets
)

# States whose jobs hold cluster resources (their placement counts as allocated).
ACTIVE_STATES: frozenset[JobState] = frozenset({JobState.ADMITTED, JobState.RUNNING})

# States from which a user's cancel request is honoured.
CANCELLABLE_STATES: frozenset[JobState] = frozenset(
    state for state, targets in TRANSITIONS.items() if JobState.CANCELLED in targets
)


def can_transition(current: JobState, target: JobState) -> bool:
    """Whether the state machine allows moving a job from `current` to `target`."""
    return target in TRANSITIONS[current]
