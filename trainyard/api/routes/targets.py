"""/v1/metrics/targets: Prometheus HTTP service discovery for running workers' metrics.

On the local backend the workers' metrics endpoints are on this machine at ports the
backend chose; this lists them in Prometheus's http_sd format, so one scrape config
(`http_sd_configs` with a bearer token, `honor_labels: true` so the workers' own `job`
label is kept) finds every worker. Read from the store only: a worker whose endpoint is
down shows as a down target in Prometheus and never affects this route.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from trainyard.api.deps import EngineDep, PrincipalDep
from trainyard.api.routes.common import ERRORS
from trainyard.store import read_transaction
from trainyard.store.telemetry import MetricsTarget, running_metrics_targets

router = APIRouter(prefix="/v1/metrics", tags=["metrics"], responses=ERRORS)


class TargetGroup(BaseModel):
    targets: list[str]
    labels: dict[str, str]


def target_groups(running: list[MetricsTarget]) -> list[TargetGroup]:
    """One group per worker; a worker with several GPUs runs one process per GPU, each
    serving on the worker's base port + its local rank."""
    groups = []
    for job in running:
        for index, address in sorted(job.targets.items()):
            host, _, port = address.rpartition(":")
            ranks = max(1, job.gpus_per_worker)
            if ranks > 1 and port.isdigit():
                addresses = [f"{host}:{int(port) + r}" for r in range(ranks)]
            else:
                addresses = [address]
            groups.append(
                TargetGroup(
                    targets=addresses,
                    labels={
                        "trainyard_job_id": job.job_id,
                        "trainyard_job_name": job.name,
                        "trainyard_queue": job.queue,
                        "trainyard_owner": job.owner,
                        "trainyard_attempt": str(job.attempt),
                        "trainyard_worker": str(index),
                    },
                )
            )
    return groups


@router.get(
    "/targets",
    response_model=list[TargetGroup],
    summary="Running workers' metrics endpoints (Prometheus http_sd)",
)
def metrics_targets(principal: PrincipalDep, engine: EngineDep) -> list[TargetGroup]:
    """Users get their own jobs' workers; admins (and Prometheus with an admin token) all."""
    owner = None if principal.is_admin else principal.user
    with read_transaction(engine) as conn:
        running = running_metrics_targets(conn, owner=owner)
    return target_groups(running)
