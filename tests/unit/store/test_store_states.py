"""The state machine table itself."""

from __future__ import annotations

import pytest

from trainyard.store import (
    ACTIVE_STATES,
    CANCELLABLE_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    JobState,
    can_transition,
)


def test_every_state_has_an_entry() -> None:
    assert set(TRANSITIONS) == set(JobState)


def test_terminal_states_are_exactly_the_final_three() -> None:
    assert {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED} == TERMINAL_STATES


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (JobState.PENDING, JobState.ADMITTED),
        (JobState.ADMITTED, JobState.RUNNING),
        (JobState.RUNNING, JobState.SUCCEEDED),
        (JobState.RUNNING, JobState.FAILED),
        (JobState.RUNNING, JobState.PREEMPTED),
        (JobState.PREEMPTED, JobState.PENDING),
        (JobState.PENDING, JobState.CANCELLED),
    ],
    ids=lambda s: s.value,
)
def test_documented_lifecycle_is_allowed(current: JobState, target: JobState) -> None:
    assert can_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (JobState.PENDING, JobState.RUNNING),
        (JobState.PENDING, JobState.SUCCEEDED),
        (JobState.SUCCEEDED, JobState.PENDING),
        (JobState.CANCELLED, JobState.CANCELLED),
        (JobState.PREEMPTED, JobState.RUNNING),
        (JobState.FAILED, JobState.RUNNING),
    ],
    ids=lambda s: s.value,
)
def test_shortcuts_and_resurrections_are_refused(current: JobState, target: JobState) -> None:
    assert not can_transition(current, target)


def test_only_admitted_and_running_hold_resources() -> None:
    assert {JobState.ADMITTED, JobState.RUNNING} == ACTIVE_STATES


def test_every_unfinished_state_can_be_cancelled() -> None:
    assert set(JobState) - TERMINAL_STATES == CANCELLABLE_STATES
