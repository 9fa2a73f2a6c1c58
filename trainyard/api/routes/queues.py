"""/v1/queues: what is waiting where, and in which order."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from trainyard.api.deps import EngineDep, PrincipalDep, SettingsDep
from trainyard.api.quota_view import queue_quotas
from trainyard.api.routes.common import ERRORS
from trainyard.api.schemas import QueueQuotaPublic, QueuesPublic, QuotaResourcePublic
from trainyard.api.views import queues_public
from trainyard.quotas import effective_priority_classes, effective_queues
from trainyard.store import now_us, pending_positions, queue_counts, read_transaction
from trainyard.store.estimates import expected_waits

router = APIRouter(prefix="/v1/queues", tags=["queues"], responses=ERRORS)


class QueuesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=100, ge=0, le=1000, description="Positions listed per queue.")


@router.get("", response_model=QueuesPublic, summary="Queues, their counts and pending order")
def list_queues(
    principal: PrincipalDep,
    settings: SettingsDep,
    engine: EngineDep,
    query: Annotated[QueuesQuery, Query()],
) -> QueuesPublic:
    """Per configured queue: pending/admitted/running counts, the oldest pending job's wait,
    and each pending job's position (1 = next). Users see only their own jobs' positions,
    but positions count everyone's jobs."""
    owner = None if principal.is_admin else principal.user
    queues = effective_queues(settings)
    at = now_us()
    with read_transaction(engine) as conn:
        counts = queue_counts(conn)
        positions = {
            q.name: pending_positions(conn, queue=q.name, owner=owner, limit=query.limit)
            for q in queues
        }
        quotas = queue_quotas(settings, conn)
        waits = expected_waits(conn, at)
    data = queues_public(queues=queues, counts=counts, positions=positions, now_us=at, waits=waits)
    for queue in data:
        status = quotas.get(queue.name)
        if status is not None:
            queue.quota = QueueQuotaPublic(
                cohort=status.cohort,
                weight=status.weight,
                weighted_share=status.weighted_share,
                resources=[QuotaResourcePublic(**asdict(r)) for r in status.resources],
            )
    return QueuesPublic(data=data, priority_classes=effective_priority_classes(settings))
