"""Checkpoint retention on the local backend's storage (job directories under the home).

The sweep against a real store (SQLite) and real directories, with the clock passed in;
and the same sweep running inside a real `trainyard serve` loop process.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import update

from tests.integration.operator.loop_support import serve, tiny_gpt
from tests.support.servers import wait_for
from trainyard import layout
from trainyard.api.schemas import JobCreate
from trainyard.operator.retention import CheckpointRetention
from trainyard.store import Submission, make_engine, migrate, submit_jobs, write_transaction
from trainyard.store.tables import jobs

DAY = 86400


def _job(engine: Any, state: str, finished_at_s: float | None) -> str:
    spec = JobCreate(name="j", workload={"builtin": "gpt"}).model_dump(mode="json")
    [result] = submit_jobs(
        engine,
        submissions=[
            Submission(owner="u", spec=spec, priority_value=500, idempotency_key=uuid.uuid4().hex)
        ],
    )
    assert not isinstance(result, Exception)
    job_id = result[0].id
    finished = None if finished_at_s is None else int(finished_at_s * 1_000_000)
    with write_transaction(engine) as conn:
        conn.execute(
            update(jobs).where(jobs.c.id == job_id).values(state=state, finished_at=finished)
        )
    return job_id


def _checkpoint(home: Path, job_id: str) -> Path:
    output = layout.job_output_dir(home, job_id)
    output.mkdir(parents=True)
    path = output / "checkpoint-5.pt"
    path.write_bytes(b"weights")
    return path


def test_retention_deletes_expired_jobs_checkpoints_and_keeps_the_rest(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    home = tmp_path / "home"
    now = 100 * DAY
    expired = _job(engine, "SUCCEEDED", now - 8 * DAY)
    failed_expired = _job(engine, "FAILED", now - 7 * DAY - 1)
    recent = _job(engine, "SUCCEEDED", now - 6 * DAY)
    running = _job(engine, "RUNNING", None)
    paths = {job: _checkpoint(home, job) for job in (expired, failed_expired, recent, running)}
    unknown = _checkpoint(home, uuid.uuid4().hex)  # not in this store: never ours to delete

    retention = CheckpointRetention(engine, object(), home=home, retention_seconds=7 * DAY)
    assert retention.sweep(now=now) == sorted([expired, failed_expired])
    assert not paths[expired].exists() and not paths[failed_expired].exists()
    assert paths[recent].exists() and paths[running].exists() and unknown.exists()
    assert retention.sweep(now=now) == []  # nothing left to do
    engine.dispose()


def test_the_serve_loop_sweeps_a_finished_jobs_checkpoints(tmp_path: Path) -> None:
    """Retention 0 s: a finished job's checkpoints go at the next sweep; a running job's stay."""
    with serve(
        tmp_path / "home", checkpoint_retention_seconds="0", retention_sweep_seconds="0.5"
    ) as server:
        running = server.submit(
            {
                "name": "long",
                "workload": {"builtin": "gpt", "args": tiny_gpt(100000, checkpoint_every=5)},
            }
        )
        done = server.submit(
            {
                "name": "short",
                "workload": {"builtin": "gpt", "args": tiny_gpt(10, checkpoint_every=5)},
            }
        )
        long_output = layout.job_output_dir(server.home, running["id"])
        wait_for(
            lambda: list(long_output.glob("checkpoint-*.pt")), timeout=180, what="a checkpoint"
        )
        server.wait_state(done["id"], "SUCCEEDED", timeout=180)
        short_output = layout.job_output_dir(server.home, done["id"])
        wait_for(lambda: not short_output.exists(), timeout=30, what="the sweep")
        assert list(long_output.glob("checkpoint-*.pt")), "a running job's checkpoints stay"
        with server.client() as client:
            assert client.post(f"/v1/jobs/{running['id']}/cancel").status_code == 200
        server.wait_state(running["id"], "CANCELLED", timeout=120)
