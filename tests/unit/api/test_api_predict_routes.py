"""The /predict proxy's route cache on a real SQLite store: what it keeps, for how long."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from trainyard.api.routes.predict import ServiceRoutes
from trainyard.store import (
    JobState,
    Submission,
    insert_job,
    make_engine,
    migrate,
    transition_job,
    write_transaction,
)
from trainyard.store.services import publish_endpoint

SERVICE = {
    "kind": "inference",
    "mode": "service",
    "name": "svc",
    "workers": 1,
    "queue": "default",
    "priority": "normal",
}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _job(engine: Engine, spec: dict, ready: list[str] | None) -> str:
    with write_transaction(engine) as conn:
        job = insert_job(conn, submission=Submission(owner="alice", spec=spec, priority_value=1))
        if ready is not None:
            publish_endpoint(conn, job_id=job.id, endpoint=None, ready=ready)
    return job.id


def _publish(engine: Engine, job_id: str, ready: list[str]) -> None:
    with write_transaction(engine) as conn:
        publish_endpoint(conn, job_id=job_id, endpoint=None, ready=ready)


def test_a_ready_service_is_read_once_per_ttl(engine: Engine) -> None:
    clock = Clock()
    routes = ServiceRoutes(ttl=1.0, clock=clock)
    job_id = _job(engine, SERVICE, ["127.0.0.1:1"])
    job, ready = asyncio.run(routes.read(engine, job_id))
    assert job is not None and job.owner == "alice" and ready == ("127.0.0.1:1",)
    _publish(engine, job_id, ["127.0.0.1:2"])
    clock.now += 0.9
    cached = routes.cached(job_id)
    assert cached is not None and cached.ready == ("127.0.0.1:1",)  # within the ttl
    clock.now += 0.2
    assert routes.cached(job_id) is None  # expired: the next request reads the store
    assert asyncio.run(routes.read(engine, job_id))[1] == ("127.0.0.1:2",)


def test_only_running_services_with_a_ready_replica_are_kept(engine: Engine) -> None:
    routes = ServiceRoutes(clock=Clock())
    not_ready = _job(engine, SERVICE, [])
    batch = _job(engine, {**SERVICE, "mode": "batch"}, ["127.0.0.1:3"])
    for job_id in (not_ready, batch, "0" * 32):
        asyncio.run(routes.read(engine, job_id))
        assert routes.cached(job_id) is None
    ended = _job(engine, SERVICE, ["127.0.0.1:4"])
    asyncio.run(routes.read(engine, ended))
    assert routes.cached(ended) is not None
    with write_transaction(engine) as conn:
        transition_job(conn, job_id=ended, to_state=JobState.CANCELLED)
    asyncio.run(routes.read(engine, ended))  # a re-read (after every replica failed) drops it
    assert routes.cached(ended) is None


def test_the_cache_is_bounded(engine: Engine) -> None:
    clock = Clock()
    routes = ServiceRoutes(limit=2, clock=clock)
    ids = [_job(engine, SERVICE, [f"127.0.0.1:{i}"]) for i in range(3)]
    for job_id in ids:
        clock.now += 0.1
        asyncio.run(routes.read(engine, job_id))
    assert routes.cached(ids[0]) is None  # the oldest read went first
    assert routes.cached(ids[1]) is not None and routes.cached(ids[2]) is not None
