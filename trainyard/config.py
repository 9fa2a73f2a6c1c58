"""One settings object for the whole service, read from TRAINYARD_* environment variables.

Defaults are the embedded, single-machine setup: SQLite under $TRAINYARD_HOME and the
local backend. Everything a deployment changes (database, backend, queues) is here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from trainyard.store import DatabaseTimeouts
from trainyard.scheduler.policies import check_live_policy

# A price per accelerator-hour: a finite amount, never negative (a cost cannot be a credit).
Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class QueueConfig(BaseModel):
    """A queue jobs are submitted to, and the policy that orders it."""

    name: str
    policy: str = "backfill"

    @field_validator("policy")
    @classmethod
    def _known_live_policy(cls, value: str) -> str:
        """Refused at start: an unknown name, or an oracle (it needs the future)."""
        return check_live_policy(value)


def _default_queues() -> list[QueueConfig]:
    return [QueueConfig(name="default")]


def _default_priority_classes() -> dict[str, int]:
    return {"low": 100, "normal": 500, "high": 1000}


class Settings(BaseSettings):
    """Trainyard's configuration; every field can be set as TRAINYARD_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="TRAINYARD_", env_nested_delimiter="__")

    home: Path = Field(default_factory=lambda: Path.home() / ".trainyard")
    database_url: str | None = None
    admin_token: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    backend: Literal["local", "kubernetes"] = "local"
    kubeconfig: Path | None = None
    # The kubernetes backend: the namespace of Trainyard's pods, Services, Events and
    # Lease; the image of a job without `image`; seconds a node may be NotReady before
    # its workers count as failed.
    namespace: str = Field(default="default", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    worker_image: str = "trainyard/worker:0.1.0"
    node_lost_grace: float = Field(default=60.0, ge=0)
    # Volumes and checkpoints (see README "Volumes, mounts and checkpoint storage"):
    # whether admins may mount host paths; the ReadWriteMany storage class of per-job
    # checkpoint claims (storage: auto uses a claim only when this is set); how long a
    # finished job's checkpoints are kept, and how often the loop sweeps expired ones.
    allow_host_path: bool = False
    checkpoint_storage_class: str | None = None
    # Without that class: a directory on every node, writable by the workers' user, where
    # worker 0 keeps a job's checkpoints (a hostPath); a restart puts worker 0 back on
    # that node when it has room. Unset: pod-local (emptyDir), lost with the pod.
    checkpoint_node_path: str | None = Field(default=None, pattern=r"^/")
    checkpoint_retention_seconds: float = Field(default=7 * 86400.0, ge=0)
    retention_sweep_seconds: float = Field(default=300.0, gt=0)
    queues: list[QueueConfig] = Field(default_factory=_default_queues)
    priority_classes: dict[str, int] = Field(default_factory=_default_priority_classes)
    max_body_bytes: int = 1024 * 1024
    # Price of one accelerator-hour per GPU model / TPU type (as the node inventory names
    # it), for `GET /v1/usage` and `trainyard usage`; e.g.
    # TRAINYARD_ACCELERATOR_PRICES='{"NVIDIA H100 80GB HBM3": 2.5}'.
    accelerator_prices: dict[str, Price] = Field(default_factory=dict)
    price_currency: str = "USD"
    # The scheduling loop (runs in its own process, started by `trainyard serve`).
    loop: bool = Field(default=True, description="Run the scheduling loop in `serve`.")
    loop_period_seconds: float = Field(default=1.0, gt=0, le=60)
    stop_grace_seconds: float = Field(default=30.0, ge=0, le=3600)
    retry_backoff_seconds: float = Field(default=10.0, ge=0, le=3600)
    retry_backoff_max_seconds: float = Field(default=300.0, ge=0, le=86400)
    lease_ttl_seconds: float = Field(default=10.0, gt=0.5, le=300)
    default_policy: str = "backfill"
    # Quotas, cohorts and fair sharing (see trainyard.scheduler.quota_file); re-read on change.
    quota_file: Path | None = None
    # The local backend's node; detected when unset (tests pin them).
    local_cpus: int | None = Field(default=None, ge=1)
    local_memory_bytes: int | None = Field(default=None, ge=1)
    local_gpus: int | None = Field(default=None, ge=0)
    # The stored job document (canonical JSON) of one job; larger submits are refused 413.
    max_job_document_bytes: int = Field(default=256 * 1024, ge=1024)
    # A page of GET /v1/jobs ends once its job documents reach this many bytes (the
    # first job is always returned); next_cursor carries on.
    max_page_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Every PostgreSQL session: a statement or a lock wait past these fails (503).
    db_statement_timeout_ms: int = Field(default=15_000, ge=0)
    db_lock_timeout_ms: int = Field(default=3_000, ge=0)
    # Slow clients (see trainyard.api.server): a connection must send complete request
    # headers within header_timeout_seconds of opening (or of its previous response), a
    # request body within body_timeout_seconds of its headers; idle keep-alive
    # connections close after keep_alive_seconds.
    header_timeout_seconds: float = Field(default=5.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    keep_alive_seconds: int = Field(default=5, ge=1)
    # Open connections from one client address; beyond it a connection is answered 429
    # and closed. And the server's total (uvicorn answers 503 beyond it).
    max_connections_per_client: int = Field(default=64, ge=1)
    max_connections: int = Field(default=2048, ge=1)
    # Streams of GET /v1/jobs/{id}/logs?follow=true one user may hold open at once.
    max_log_followers_per_user: int = Field(default=16, ge=1)

    def database_timeouts(self) -> DatabaseTimeouts:
        from trainyard.store import DatabaseTimeouts  # the store is not needed to read settings

        return DatabaseTimeouts(
            statement_ms=self.db_statement_timeout_ms, lock_ms=self.db_lock_timeout_ms
        )

    def resolved_database_url(self) -> str:
        """The configured database, or SQLite inside $TRAINYARD_HOME."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'trainyard.db'}"
