"""GET /v1/jobs serializes raw rows without parsing the stored document; the page must be
the same JSON as building each job with `job_public` from a parsed record."""

from __future__ import annotations

import json

from sqlalchemy import Engine

from trainyard.api.schemas import JobCreate, JobsPublic
from trainyard.api.views import job_public, jobs_page_response
from trainyard.store import (
    JobState,
    list_job_rows,
    list_jobs,
    read_transaction,
    submit_job,
    transition_job,
    write_transaction,
)


def test_raw_row_page_equals_the_record_page(engine: Engine) -> None:
    documents = [
        {"name": "plain", "workload": {"builtin": "gpt", "args": {"steps": 10, "lr": 0.5}}},
        {
            "name": "unicode",
            "workload": {"command": ["echo", "héllo ✓ \U0001f680", 'quote"back\\slash']},
            "env": {"GREETING": "grüße"},
            "labels": {"team": "ml"},
        },
        {"name": "placed", "workers": 12, "workload": {"builtin": "gpt"}},
    ]
    ids = []
    for document in documents:
        spec = JobCreate.model_validate(document).model_dump(mode="json")
        job, _ = submit_job(engine, owner="alice", spec=spec, priority_value=500)
        ids.append(job.id)
    with write_transaction(engine) as conn:
        placement = {index: f"node-{index}" for index in range(12)}
        transition_job(
            conn, job_id=ids[2], to_state=JobState.ADMITTED, reason="fits", placement=placement
        )
        transition_job(conn, job_id=ids[2], to_state=JobState.RUNNING)
    with read_transaction(engine) as conn:
        rows = list_job_rows(conn, owner="alice", limit=10)
        records = list_jobs(conn, owner="alice", limit=10)

    page = json.loads(jobs_page_response(rows, "7").body)
    assert page == {"data": [job_public(r) for r in records], "count": 3, "next_cursor": "7"}
    JobsPublic.model_validate(page)  # and it is a valid JobsPublic document
    assert page["data"][0]["placement"]["11"] == "node-11"
    assert page["data"][1]["workload"]["command"][1] == "héllo ✓ \U0001f680"


def test_a_job_stored_with_an_empty_document_still_makes_valid_json(engine: Engine) -> None:
    """Other writers of the store (the scheduler's tests, future migrations) may store a
    document without fields; splicing must not produce '{,'."""
    spec = {"name": "x", "kind": "training", "queue": "default", "priority": "low"}
    submit_job(engine, owner="bob", spec=spec, priority_value=1)
    with write_transaction(engine) as conn:
        conn.exec_driver_sql("UPDATE jobs SET spec = '{}'")
    with read_transaction(engine) as conn:
        rows = list_job_rows(conn, owner="bob")
    (job,) = json.loads(jobs_page_response(rows, None).body)["data"]
    assert job["owner"] == "bob" and job["state"] == "PENDING"
