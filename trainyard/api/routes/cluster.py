"""/v1/cluster: capacity, allocated and free resources per resource and accelerator model."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from trainyard.api.deps import EngineDep, InventoryDep, PrincipalDep, SettingsDep
from trainyard.api.routes.common import ERRORS
from trainyard.api.schemas import ClusterPublic, ErrorBody
from trainyard.api.views import cluster_public
from trainyard.store import list_active, read_transaction

router = APIRouter(prefix="/v1/cluster", tags=["cluster"], responses=ERRORS)


@router.get(
    "",
    response_model=ClusterPublic,
    summary="Cluster capacity and allocation",
    responses={503: {"model": ErrorBody, "description": "The node inventory cannot be read"}},
)
def get_cluster(
    _principal: PrincipalDep,
    settings: SettingsDep,
    engine: EngineDep,
    inventory: InventoryDep,
) -> ClusterPublic:
    """Allocated counts the requests of ADMITTED and RUNNING jobs that have a placement."""
    try:
        nodes = inventory.nodes()
    except Exception as exc:  # the cluster API is unreachable or refuses us: not our 500
        reason = " ".join(str(exc).split())[:300]
        raise HTTPException(
            status_code=503,
            detail=f"cannot read the cluster's nodes: {type(exc).__name__}: {reason}",
        ) from exc
    with read_transaction(engine) as conn:
        active = list_active(conn)
    return cluster_public(backend=settings.backend, nodes=nodes, active_jobs=active)
