"""One settings object for the whole service, read from TRAINYARD_* environment variables.

Defaults are the embedded, single-machine setup: SQLite under $TRAINYARD_HOME and the
local backend. Everything a deployment changes (database, backend, queues) is here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class QueueConfig(BaseModel):
    """A queue jobs are submitted to, and the policy that orders it."""

    name: str
    policy: str = "backfill"


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
    queues: list[QueueConfig] = Field(default_factory=_default_queues)
    priority_classes: dict[str, int] = Field(default_factory=_default_priority_classes)
    max_body_bytes: int = 1024 * 1024
    # The scheduling loop (runs in its own process, started by `trainyard serve`).
    loop: bool = Field(default=True, description="Run the scheduling loop in `serve`.")
    loop_period_seconds: float = Field(default=1.0, gt=0, le=60)
    stop_grace_seconds: float = Field(default=30.0, ge=0, le=3600)
    retry_backoff_seconds: float = Field(default=10.0, ge=0, le=3600)
    retry_backoff_max_seconds: float = Field(default=300.0, ge=0, le=86400)
    lease_ttl_seconds: float = Field(default=10.0, gt=0.5, le=300)
    default_policy: str = "backfill"
    # The local backend's node; detected when unset (tests pin them).
    local_cpus: int | None = Field(default=None, ge=1)
    local_memory_bytes: int | None = Field(default=None, ge=1)
    local_gpus: int | None = Field(default=None, ge=0)

    def resolved_database_url(self) -> str:
        """The configured database, or SQLite inside $TRAINYARD_HOME."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'trainyard.db'}"
