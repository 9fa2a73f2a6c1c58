"""Rules on a job's volumes that depend on who submits it and where it will run.

The document's own rules (one source per volume, mounts naming known volumes, absolute
and distinct paths) are in the schema; these need the caller and the deployment:

- `host_path` exposes the node's filesystem: admins only, and only when the deployment
  allows it (TRAINYARD_ALLOW_HOST_PATH), since a worker running as any user could read
  or write whatever the node's path holds.
- The local backend runs each worker as a plain process on this machine: there is no
  mount namespace to put a volume at a path, and no PersistentVolumeClaim, ConfigMap or
  Secret to mount. It refuses every volume at submit with that reason, rather than
  accepting a job whose mounts would silently be missing. (Its checkpoints already live
  in the job's directory under the home, which every attempt reaches.)
"""

from __future__ import annotations

from trainyard.api.auth import Principal
from trainyard.api.errors import FieldRuleError
from trainyard.api.schemas import JobCreate
from trainyard.config import Settings


def check_volumes(job: JobCreate, principal: Principal, settings: Settings) -> None:
    """Raise FieldRuleError (a 422 naming the field) for a volume this caller may not use."""
    for index, volume in enumerate(job.volumes):
        field = f"volumes[{index}].{volume.source}"
        if volume.host_path is not None:
            if not principal.is_admin:
                raise FieldRuleError(field, "admin_only", "host_path volumes need an admin token")
            if not settings.allow_host_path:
                raise FieldRuleError(
                    field,
                    "host_path_disabled",
                    "host_path volumes are disabled in this deployment (TRAINYARD_ALLOW_HOST_PATH)",
                )
        if settings.backend == "local":
            raise FieldRuleError(
                field,
                "needs_kubernetes",
                "volumes need the kubernetes backend: a local worker is a plain process "
                "and cannot see a volume at a path",
            )
    pvc = job.checkpoint is not None and job.checkpoint.storage == "pvc"
    if pvc and settings.backend == "local":
        raise FieldRuleError(
            "checkpoint.storage",
            "needs_kubernetes",
            "pvc needs the kubernetes backend; the local backend keeps checkpoints in "
            "the job's directory under the home (use auto)",
        )
