"""Checkpoint retention: a finished job's checkpoints are kept for a while, then deleted.

`CheckpointRetention.sweep()` runs in the loop's process every
`retention_sweep_seconds` (only while it leads). It asks where checkpoints are kept
(the backend's `storage_jobs()` / `delete_storage(job)` hooks: the Kubernetes
backend's per-job claims; otherwise the job directories under the home, the local
backend's storage) and deletes those of jobs that finished (SUCCEEDED, FAILED,
CANCELLED) more than `retention_seconds` ago, unless a live model service serves that
job's checkpoints (`checkpoint_job`). A live job's storage is never touched,
and neither is that of a job the store does not know (it may belong to another
store, or to a submit not yet committed): only the store's word deletes data.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from trainyard import layout
from trainyard.store import TERMINAL_STATES, read_transaction, write_transaction
from trainyard.store.checkpoints import forget_checkpoints
from trainyard.store.scheduling import LIVE_STATES
from trainyard.store.tables import jobs

log = logging.getLogger(__name__)
US = 1_000_000
_BATCH = 500


class HomeStorage:
    """Checkpoints in `<home>/jobs/<job>/output` (the local backend's storage)."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def storage_jobs(self) -> set[str]:
        root = self.home / "jobs"
        if not root.is_dir():
            return set()
        return {entry.name for entry in root.iterdir() if (entry / "output").is_dir()}

    def delete_storage(self, job_id: str) -> None:
        shutil.rmtree(layout.job_output_dir(self.home, job_id), ignore_errors=True)


def served_jobs(engine: Engine) -> set[str]:
    """Training jobs whose checkpoints a live model service reads (`checkpoint_job`):
    their storage is kept whatever its age, the service would lose its model."""
    live = [state.value for state in LIVE_STATES]
    served: set[str] = set()
    query = select(jobs.c.spec).where(jobs.c.state.in_(live), jobs.c.kind == "inference")
    with read_transaction(engine) as conn:
        for row in conn.execute(query):
            try:
                source = json.loads(row.spec).get("checkpoint_job")
            except (ValueError, AttributeError):
                continue
            if isinstance(source, str) and source:
                served.add(source)
    return served


def finished_before(engine: Engine, job_ids: Iterable[str], cutoff_us: int) -> list[str]:
    """The jobs among `job_ids` that finished at or before `cutoff_us`."""
    ids = sorted(job_ids)
    terminal = [state.value for state in TERMINAL_STATES]
    expired: list[str] = []
    with read_transaction(engine) as conn:
        for start in range(0, len(ids), _BATCH):
            query = select(jobs.c.id).where(
                jobs.c.id.in_(ids[start : start + _BATCH]),
                jobs.c.state.in_(terminal),
                jobs.c.finished_at.is_not(None),
                jobs.c.finished_at <= cutoff_us,
            )
            expired += [row.id for row in conn.execute(query)]
    return sorted(expired)


class CheckpointRetention:
    """Deletes the checkpoint storage of jobs finished longer ago than the retention."""

    def __init__(
        self,
        engine: Engine,
        backend: Any,
        *,
        home: Path,
        retention_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        hooks = hasattr(backend, "storage_jobs") and hasattr(backend, "delete_storage")
        self.storage: Any = backend if hooks else HomeStorage(home)
        self.retention_seconds = retention_seconds
        self.clock = clock

    def sweep(self, now: float | None = None) -> list[str]:
        """Delete expired jobs' checkpoints; returns the job ids swept."""
        now = self.clock() if now is None else now
        held = self.storage.storage_jobs()
        if not held:
            return []
        cutoff = int((now - self.retention_seconds) * US)
        swept = []
        expired = finished_before(self.engine, held, cutoff)
        served = served_jobs(self.engine) if expired else set()
        for job_id in expired:
            if job_id in served:
                continue
            try:
                self.storage.delete_storage(job_id)
                with write_transaction(self.engine) as conn:
                    forget_checkpoints(conn, job_id=job_id)  # the reported listing
                swept.append(job_id)
            except Exception:  # one job's storage must not stop the sweep of the others
                log.exception("deleting the checkpoints of job %s failed", job_id)
        if swept:
            log.info("retention: deleted the checkpoints of %d finished job(s)", len(swept))
        return swept
