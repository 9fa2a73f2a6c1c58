"""/v1/usage: resource-hours and cost per queue, owner, accelerator model, job or attempt.

Users see their own usage, admins everyone's. Computed from the stored attempts on each
call (see trainyard.observability.accounting for the rules).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from trainyard.api.deps import EngineDep, PrincipalDep, SettingsDep
from trainyard.api.routes.common import ERRORS
from trainyard.observability.accounting import SINCE_PATTERN, GroupBy, aggregate, parse_since
from trainyard.store import now_us, read_transaction
from trainyard.store.telemetry import usage_rows

SINCE_RULE = (
    "must be an ISO 8601 time (2026-12-01 or 2026-12-01T00:00:00Z, years 1900-2199) "
    "or a span back from now of at most 6 digits and a unit s, m, h, d or w (90m, 24h, 7d)"
)

router = APIRouter(prefix="/v1/usage", tags=["usage"], responses=ERRORS)


class UsageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group_by: GroupBy = Field(default="queue", description="queue, owner, model, job or attempt.")
    since: str = Field(
        default="30d",
        max_length=64,
        pattern=SINCE_PATTERN,
        description="Start of the window: ISO 8601 time, or a span back from now (24h, 7d).",
    )

    @field_validator("since", mode="before")
    @classmethod
    def _since_is_a_time_or_a_span(cls, value: object) -> object:
        """Say the rule in words: the published pattern alone would answer with a regex."""
        if isinstance(value, str) and not re.match(SINCE_PATTERN, value):
            raise PydanticCustomError("since_format", SINCE_RULE)
        return value

    @field_validator("since")
    @classmethod
    def _since_parses(cls, value: str) -> str:
        parse_since(value, now=datetime.now(UTC))
        return value


class UsageGroupPublic(BaseModel):
    key: str = Field(
        description="The queue, owner, accelerator model ('none': CPU), job id or "
        "'<job id>/<attempt>'."
    )
    jobs: int
    attempts: int
    gpu_hours: float
    tpu_chip_hours: float
    cpu_core_hours: float
    wall_hours: float = Field(description="Attempt wall time (all attempts, not per worker).")
    wait_seconds_avg: float | None = Field(description="Mean submit -> first RUNNING.")
    energy_joules: float | None = Field(description="GPU energy where NVML measured it.")
    cost: float | None = Field(description="Accelerator-hours x configured price; None: no price.")


class UsagePublic(BaseModel):
    group_by: str
    since: datetime
    until: datetime
    currency: str
    data: list[UsageGroupPublic]


@router.get("", response_model=UsagePublic, summary="Usage (GPU-hours, cost) by group")
def get_usage(
    principal: PrincipalDep,
    settings: SettingsDep,
    engine: EngineDep,
    query: Annotated[UsageQuery, Query()],
) -> UsagePublic:
    """GPU-, TPU-chip- and CPU-core-hours held, wall and wait time, energy and cost over
    the window, per group. Running attempts count up to now."""
    now = now_us()
    since = parse_since(query.since, now=datetime.fromtimestamp(now / 1e6, UTC))
    since_us = int(since.timestamp() * 1e6)
    owner = None if principal.is_admin else principal.user
    with read_transaction(engine) as conn:
        rows = usage_rows(conn, since_us=since_us, owner=owner)
    groups = aggregate(
        rows,
        group_by=query.group_by,
        since_us=since_us,
        now_us=now,
        prices=settings.accelerator_prices,
    )
    return UsagePublic(
        group_by=query.group_by,
        since=since,
        until=datetime.fromtimestamp(now / 1e6, UTC),
        currency=settings.price_currency,
        data=[
            UsageGroupPublic(
                key=g.key,
                jobs=g.jobs,
                attempts=g.attempts,
                gpu_hours=g.gpu_hours,
                tpu_chip_hours=g.tpu_chip_hours,
                cpu_core_hours=g.cpu_core_hours,
                wall_hours=g.wall_hours,
                wait_seconds_avg=g.wait_seconds_avg,
                energy_joules=g.energy_joules,
                cost=g.cost,
            )
            for g in groups
        ],
    )
