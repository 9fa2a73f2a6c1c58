"""Write jobs through their lifecycle the way the scheduling loop does, for tests that
need history in the store (events, attempts) without running real workers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, insert, update

from trainyard.store import JobState, Submission, submit_jobs, transition_job, write_transaction
from trainyard.store.tables import job_attempts, jobs


def job_spec(
    name: str = "j", *, queue: str = "default", workers: int = 1, gpu: int = 0, **extra: Any
) -> dict[str, Any]:
    """A stored job document (as the API would have validated it)."""
    resources: dict[str, Any] = {"cpu": "2", "memory": "1Gi"}
    if gpu:
        resources["gpu"] = gpu
    return {
        "name": name,
        "kind": "training",
        "queue": queue,
        "priority": "normal",
        "workers": workers,
        "resources": resources,
        "workload": {"builtin": "gpt", "args": {"steps": 5}},
        **extra,
    }


def submit(
    engine: Engine, spec: Mapping[str, Any], *, owner: str = "alice", created_at: int | None = None
) -> str:
    """Store a PENDING job; `created_at` (us) backdates its submission."""
    (result,) = submit_jobs(
        engine, submissions=[Submission(owner=owner, spec=spec, priority_value=500)]
    )
    assert not isinstance(result, Exception), result
    job_id = result[0].id
    if created_at is not None:
        with write_transaction(engine) as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(created_at=created_at))
    return job_id


def admit(
    engine: Engine,
    job_id: str,
    *,
    at: int,
    node: str = "node-a",
    model: str | None = None,
) -> int:
    """PENDING -> ADMITTED with a placement and a job_attempts row; returns the attempt."""
    with write_transaction(engine) as conn:
        job = transition_job(conn, job_id=job_id, to_state=JobState.ADMITTED, reason="admitted")
        attempt = job.attempt + 1
        workers = int(job.spec.get("workers", 1))
        placement = {i: node for i in range(workers)}
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id)
            .values(
                attempt=attempt, placement=json.dumps({str(i): n for i, n in placement.items()})
            )
        )
        resources = job.spec["resources"]
        conn.execute(
            insert(job_attempts).values(
                job_id=job_id,
                attempt=attempt,
                queue=job.queue,
                owner=job.owner,
                placement=json.dumps({str(i): n for i, n in placement.items()}),
                workers=workers,
                cpu_millicores=int(resources["cpu"]) * 1000,
                memory_bytes=2**30,
                gpus=int(resources.get("gpu", 0)),
                tpu_chips=0,
                accelerator_model=model,
                admitted_at=at,
            )
        )
    return attempt


def start(engine: Engine, job_id: str, attempt: int, *, at: int) -> None:
    """ADMITTED -> RUNNING, the attempt's start time set to `at` (and the job's, first time)."""
    with write_transaction(engine) as conn:
        transition_job(conn, job_id=job_id, to_state=JobState.RUNNING, reason="running")
        conn.execute(
            update(job_attempts)
            .where(job_attempts.c.job_id == job_id, job_attempts.c.attempt == attempt)
            .values(started_at=at)
        )
        if attempt == 1:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(started_at=at))


def end(
    engine: Engine,
    job_id: str,
    attempt: int,
    *,
    at: int,
    to_state: JobState,
    energy_joules: float | None = None,
) -> None:
    """End the attempt, moving the job to `to_state`, as the loop records it: a retry
    (back to PENDING) ends its attempt FAILED; a preemption goes on to PENDING."""
    outcome = JobState.FAILED if to_state is JobState.PENDING else to_state
    with write_transaction(engine) as conn:
        transition_job(conn, job_id=job_id, to_state=to_state, reason=to_state.value.lower())
        if to_state is JobState.PREEMPTED:
            transition_job(conn, job_id=job_id, to_state=JobState.PENDING, reason="requeued")
        conn.execute(
            update(job_attempts)
            .where(job_attempts.c.job_id == job_id, job_attempts.c.attempt == attempt)
            .values(ended_at=at, outcome=outcome.value, energy_joules=energy_joules)
        )
        if to_state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(finished_at=at))
