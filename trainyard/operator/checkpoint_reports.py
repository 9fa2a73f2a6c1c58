"""The checkpoints pods reported, into the store (the loop's side of listing them).

A backend that cannot let the API read a job's storage (Kubernetes: the claim is
mounted only in the job's pods) offers `checkpoint_reports()`: what each job's pods
reported since the last call (trainyard.checkpoint_index). Each cycle the loop stores
them (store.checkpoints), in their own transaction: a failed write gives them back to
the backend for the next cycle and never costs the cycle its decisions.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine

from trainyard.store import write_transaction
from trainyard.store.checkpoints import record_checkpoints

log = logging.getLogger(__name__)


class CheckpointReports:
    def __init__(self, engine: Engine, backend: Any) -> None:
        self.engine = engine
        self._drain = getattr(backend, "checkpoint_reports", None)
        self._give_back = getattr(backend, "return_reports", None)

    def store(self) -> int:
        """Store what was reported since the last call; returns the jobs written."""
        if self._drain is None:
            return 0
        reports = self._drain()
        if not reports:
            return 0
        written = 0
        try:
            with write_transaction(self.engine) as conn:
                for job_id, (attempt, checkpoints) in sorted(reports.items()):
                    written += record_checkpoints(
                        conn, job_id=job_id, attempt=attempt, checkpoints=checkpoints
                    )
        except Exception:
            log.exception("storing the checkpoints pods reported failed; retried next cycle")
            if self._give_back is not None:
                self._give_back(reports)
            return 0
        return written
