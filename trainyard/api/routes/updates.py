"""PATCH /v1/jobs/{id}: change a model service (a rolling update, or a new size).

Only a service that has not finished can change, and only in what its replicas run and
how many there are (`schemas.UPDATABLE_FIELDS`): resources, queue and the rest decide
placement and quota, so they make a new job. The merged document goes through every
rule a submitted one does (the same 422s, naming the field and the rule), and is stored
with one version-conditional write (store/revisions.py), retried on a fresh read when
the loop or another update got there first: two updates never interleave and neither is
lost. The loop then rolls the new revision out replica by replica.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from trainyard.api.auth import Principal
from trainyard.api.body import YamlBodyRoute
from trainyard.api.deps import EngineDep, PrincipalDep, SettingsDep, WakerDep
from trainyard.api.document_rules import check_document
from trainyard.api.errors import FieldRuleError
from trainyard.api.routes.common import CONFLICT, ERRORS, NOT_FOUND, TOO_LARGE
from trainyard.api.routes.jobs import check_checkpoint_job, check_stored_size
from trainyard.api.schemas import UPDATABLE_FIELDS, JobCreate, JobPublic, JobUpdate
from trainyard.api.views import job_public, json_response
from trainyard.config import Settings
from trainyard.service_revisions import is_new_revision, revision_of
from trainyard.store import (
    TERMINAL_STATES,
    ConcurrentUpdate,
    JobNotFound,
    JobRecord,
    dump_document,
    get_job,
    write_transaction,
)
from trainyard.store.revisions import lock_job, replace_spec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=YamlBodyRoute, responses=ERRORS)

# Derived or bookkeeping keys of a stored document, set again by validation / here.
_DERIVED = ("workers", "revision")


@router.patch(
    "/{job_id}",
    response_model=JobPublic,
    summary="Update a model service (rolled out one replica at a time)",
    responses={**NOT_FOUND, **CONFLICT, **TOO_LARGE},
    openapi_extra={
        "requestBody": {
            "content": {"application/yaml": {"schema": {"$ref": "#/components/schemas/JobUpdate"}}}
        }
    },
)
async def update(
    job_id: str,
    patch: JobUpdate,  # type: ignore[valid-type]
    principal: PrincipalDep,
    settings: SettingsDep,
    engine: EngineDep,
    waker: WakerDep,
) -> Response:
    """Replace the named fields of a service's document (null: back to the default).

    A change of what its replicas run (checkpoint, image, runtime, precision, env,
    workload) makes a new `revision`: replicas are replaced one at a time, each new one
    ready before an old one stops. A change of only `replicas`, `min_replicas`,
    `max_replicas` or `autoscale` resizes it. 409 for a job that is no service, has
    finished or is stopping.
    """
    fields = sorted(patch.model_fields_set)
    if not fields:
        raise FieldRuleError(
            "body",
            "min_properties",
            "name at least one field to change: " + ", ".join(JobUpdate.model_fields),
        )
    changes = patch.model_dump(mode="json", include=set(fields))
    workload = getattr(patch, "workload", None)
    if workload is not None:  # free-form args first (dumping would turn NaN into null)
        check_document(workload.args, "workload.args")
    if changes.get("checkpoint_job") is not None:
        await run_in_threadpool(
            check_checkpoint_job, engine, changes["checkpoint_job"], principal, settings
        )
    record = await run_in_threadpool(_apply, engine, job_id, changes, principal, settings)
    waker.wake()
    return json_response(job_public(record))


def _apply(
    engine: Engine,
    job_id: str,
    changes: dict[str, Any],
    principal: Principal,
    settings: Settings,
) -> JobRecord:
    owner = None if principal.is_admin else principal.user
    for attempt in range(5):
        try:
            with write_transaction(engine) as conn:
                lock_job(conn, job_id)  # concurrent updates queue here
                job = get_job(conn, job_id=job_id, owner=owner)
                if job is None:
                    raise JobNotFound(job_id)
                _check_updatable(job)
                spec = merged_document(job.spec, changes)
                if spec == job.spec:
                    return job  # nothing changes: no event, no new version
                check_stored_size(dump_document(dict(spec)), settings)
                revision = revision_of(spec)
                what = ", ".join(sorted(changes))
                kind = (
                    f"revision {revision}, rolled out replica by replica"
                    if revision != revision_of(job.spec)
                    else f"still revision {revision}"
                )
                return replace_spec(
                    conn,
                    job=job,
                    spec=spec,
                    expected_version=job.version,
                    note=f"updated by {principal.user}: {what} ({kind})",
                )
        except ConcurrentUpdate:
            # The loop (which does not lock) wrote the job after our read: merge again
            # onto what is stored now.
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def _check_updatable(job: JobRecord) -> None:
    spec = job.spec
    if spec.get("kind") != "inference" or spec.get("mode") != "service":
        what = "a batch inference job" if spec.get("kind") == "inference" else "a training job"
        raise HTTPException(
            status_code=409,
            detail=f"job {job.id} is {what}; only a model service (kind inference, mode "
            "service) can be updated: submit a new job instead",
        )
    if job.state in TERMINAL_STATES:
        raise HTTPException(
            status_code=409,
            detail=f"job {job.id} is {job.state.value}: {job.reason or 'no reason recorded'}",
        )
    if job.stop_target is not None:
        raise HTTPException(
            status_code=409,
            detail=f"job {job.id} is stopping ({job.stop_target.value}): {job.stop_reason}",
        )


def merged_document(stored: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The stored document with `changes` applied, validated like a submitted one, with
    its `revision` moved on when what replicas run changed. Raises the 422s."""
    document = {k: v for k, v in stored.items() if k not in _DERIVED}
    for name, value in changes.items():
        if value is None:
            document.pop(name, None)
        else:
            document[name] = value
    # The model comes from exactly one place: naming one source drops the other.
    if changes.get("serve_checkpoint") is not None:
        document.pop("checkpoint_job", None)
    if changes.get("checkpoint_job") is not None:
        document.pop("serve_checkpoint", None)
    if "replicas" not in changes and document.get("replicas") is not None:
        # New bounds alone: the current count moves into them instead of a 422.
        low, high = document.get("min_replicas"), document.get("max_replicas")
        replicas = int(document["replicas"])
        replicas = max(replicas, int(low)) if low is not None else replicas
        document["replicas"] = min(replicas, int(high)) if high is not None else replicas
    new = _validated(document)
    before = _validated({k: v for k, v in stored.items() if k not in _DERIVED})
    revision = revision_of(stored) + (1 if is_new_revision(before, new) else 0)
    if revision > 1:
        new["revision"] = revision
    return new


def _validated(document: dict[str, Any]) -> dict[str, Any]:
    try:
        job = JobCreate.model_validate(document)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    spec = job.model_dump(mode="json")
    check_document(spec)
    return spec


__all__ = ["UPDATABLE_FIELDS", "merged_document", "router"]
