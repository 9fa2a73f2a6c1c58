"""PostgreSQL session limits, unknown COMMIT outcomes, opaque cursors and bounded pages
(issue 14, items 9 and 11)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.support.databases import postgres_schema  # noqa: F401
from tests.support.servers import ApiServer, running_server
from trainyard.store import SERVER_KEY_PREFIX, get_job, read_transaction

JOB: dict[str, Any] = {"name": "job", "workload": {"builtin": "gpt"}}


@pytest.fixture
def pg_server(postgres_schema: str, tmp_path: Path) -> Iterator[ApiServer]:  # noqa: F811
    with running_server(
        home=tmp_path / "home", database_url=postgres_schema, db_lock_timeout_ms=300
    ) as running:
        yield running


@pytest.mark.postgres
def test_a_stuck_lock_answers_503_with_the_reason_instead_of_hanging(
    pg_server: ApiServer,
    postgres_schema: str,  # noqa: F811
) -> None:
    holder = create_engine(postgres_schema)
    try:
        with holder.connect() as conn, conn.begin():
            conn.execute(text("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"))
            with pg_server.client() as client:
                client.timeout = 20  # before the fix this waited for the lock forever
                submitted = client.post("/v1/jobs", json=JOB)
                listed = client.get("/v1/jobs")
        for response in (submitted, listed):
            assert response.status_code == 503, response.text
            assert "lock timeout" in response.json()["detail"]
            assert response.headers["Retry-After"]
        with pg_server.client() as client:
            assert client.post("/v1/jobs", json=JOB).status_code == 201
    finally:
        holder.dispose()


def test_a_submit_without_a_key_gets_one_from_the_server(server: ApiServer) -> None:
    with server.client() as client:
        first = client.post("/v1/jobs", json=JOB).json()
        second = client.post("/v1/jobs", json=JOB).json()
    assert first["id"] != second["id"]  # identical documents are still two jobs
    with read_transaction(server.engine) as conn:
        keys = [get_job(conn, job_id=j["id"]).idempotency_key for j in (first, second)]
    assert all(k.startswith(SERVER_KEY_PREFIX) for k in keys) and keys[0] != keys[1]


def test_the_list_cursor_is_opaque_and_reveals_no_count(server: ApiServer) -> None:
    alice = server.token("alice")
    with server.client() as admin, server.client(alice) as a:
        ids = [admin.post("/v1/jobs", json=JOB).json()["id"] for _ in range(3)]
        page = admin.get("/v1/jobs", params={"limit": 1}).json()
        cursor = page["next_cursor"]
        rest = admin.get("/v1/jobs", params={"limit": 5, "cursor": cursor}).json()
        numeric = admin.get("/v1/jobs", params={"cursor": "2"})
        forged = admin.get("/v1/jobs", params={"cursor": "0" * 32})
        # Alice cannot page from a job she cannot see (the cursor names one).
        foreign = a.get("/v1/jobs", params={"cursor": cursor})
    assert [j["id"] for j in page["data"] + rest["data"]] == ids[::-1]
    assert not cursor.isdigit()
    assert numeric.status_code == 422 and numeric.json()["errors"][0]["field"] == "cursor"
    # A cursor naming no job the caller can see: nothing after it, and no hint why.
    for response in (forged, foreign):
        assert response.status_code == 200, response.text
        assert response.json() == {"data": [], "count": 0, "next_cursor": None}


@pytest.fixture
def small_pages(database_url: str, tmp_path: Path) -> Iterator[ApiServer]:
    with running_server(
        home=tmp_path / "home",
        database_url=database_url,
        max_page_bytes=64 * 1024,
        max_job_document_bytes=48 * 1024,
    ) as running:
        yield running


def test_a_list_page_is_bounded_by_bytes_and_the_cursor_carries_on(
    small_pages: ApiServer,
) -> None:
    big = {"annotations": {"note": "x" * 4000, **{f"k{i}": "y" * 3000 for i in range(12)}}}
    with small_pages.client() as client:
        ids = [client.post("/v1/jobs", json={**JOB, **big}).json()["id"] for _ in range(5)]
        seen: list[str] = []
        pages = 0
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 5}
            if cursor:
                params["cursor"] = cursor
            response = client.get("/v1/jobs", params=params)
            assert response.status_code == 200, response.text
            # ~40 KB documents and a 64 KiB budget: one job per page, never the five.
            assert len(response.content) < 64 * 1024 + 40 * 1024
            page = response.json()
            seen += [j["id"] for j in page["data"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert seen == ids[::-1]
    assert pages >= 5


def test_a_job_document_over_the_stored_limit_is_413(small_pages: ApiServer) -> None:
    huge = {"annotations": {f"k{i}": "z" * 4000 for i in range(13)}}
    with small_pages.client() as client:
        response = client.post("/v1/jobs", json={**JOB, **huge})
        assert client.get("/v1/jobs").json()["count"] == 0
    assert response.status_code == 413, response.text
    assert "TRAINYARD_MAX_JOB_DOCUMENT_BYTES" in response.json()["detail"]


def test_an_update_that_takes_the_document_over_the_stored_limit_is_413(
    small_pages: ApiServer,
) -> None:
    """PATCH merged into the stored document without the size check a submit has, so a
    service's document could grow past the cap one update at a time."""
    service = {
        **JOB,
        "kind": "inference",
        "mode": "service",
        "serve_checkpoint": "/models/a",
    }
    with small_pages.client() as client:
        job = client.post("/v1/jobs", json=service).json()
        grown = client.patch(
            f"/v1/jobs/{job['id']}", json={"env": {f"K{i}": "z" * 4000 for i in range(13)}}
        )
        small = client.patch(f"/v1/jobs/{job['id']}", json={"env": {"K": "v"}})
        stored = client.get(f"/v1/jobs/{job['id']}").json()
    assert grown.status_code == 413, grown.text[:300]
    assert "TRAINYARD_MAX_JOB_DOCUMENT_BYTES" in grown.json()["detail"]
    assert small.status_code == 200, small.text[:300]
    assert stored["env"] == {"K": "v"}
