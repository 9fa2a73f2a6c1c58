"""GET /v1/usage and GET /v1/metrics/targets over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import database_url, postgres_admin, postgres_schema  # noqa: F401
from tests.support.servers import ApiServer, running_server
from tests.support.store_rows import admit, end, job_spec, start, submit
from trainyard.store import JobState, get_job, now_us, read_transaction, write_transaction
from trainyard.store.telemetry import set_metrics_targets

H100 = "NVIDIA-H100"


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ApiServer]:  # noqa: F811
    with running_server(
        home=tmp_path / "home",
        database_url=database_url,
        accelerator_prices={H100: 2.5},
    ) as running:
        yield running


def _history(server: ApiServer) -> dict[str, str]:
    engine = server.engine
    day_ago = now_us() - 86_400_000_000
    ids = {
        "alice-gpu": submit(
            engine, job_spec("a1", gpu=2, workers=2), owner="alice", created_at=day_ago
        ),
        "bob-cpu": submit(engine, job_spec("b1"), owner="bob", created_at=day_ago),
    }
    with read_transaction(engine) as conn:
        created = {k: get_job(conn, job_id=v).created_at for k, v in ids.items()}
    job = ids["alice-gpu"]
    a = admit(engine, job, at=created["alice-gpu"], node="gpu-1", model=H100)
    start(engine, job, a, at=created["alice-gpu"] + 60_000_000)  # waited 60 s
    end(
        engine,
        job,
        a,
        at=created["alice-gpu"] + 60_000_000 + 1_800_000_000,  # ran 30 min
        to_state=JobState.SUCCEEDED,
        energy_joules=1234.5,
    )
    job = ids["bob-cpu"]
    a = admit(engine, job, at=created["bob-cpu"])
    start(engine, job, a, at=created["bob-cpu"])
    end(engine, job, a, at=created["bob-cpu"] + 3_600_000_000, to_state=JobState.FAILED)
    return ids


def test_usage_by_queue_owner_model_with_cost(server: ApiServer) -> None:
    _history(server)
    with server.client() as client:
        by_queue = client.get("/v1/usage", params={"group_by": "queue", "since": "7d"}).json()
        by_owner = client.get("/v1/usage", params={"group_by": "owner"}).json()
        by_model = client.get("/v1/usage", params={"group_by": "model"}).json()
    (default,) = by_queue["data"]
    assert default["key"] == "default" and default["jobs"] == 2
    # 2 workers x 2 GPUs x 0.5 h
    assert default["gpu_hours"] == pytest.approx(2.0)
    # alice 2 workers x 2 cores x 0.5 h + bob 1 x 2 cores x 1 h
    assert default["cpu_core_hours"] == pytest.approx(4.0)
    owners = {g["key"]: g for g in by_owner["data"]}
    assert owners["alice"]["cost"] == pytest.approx(5.0)  # 2 GPU-hours x 2.5
    assert owners["alice"]["energy_joules"] == pytest.approx(1234.5)
    assert owners["alice"]["wait_seconds_avg"] == pytest.approx(60.0)
    assert owners["bob"]["cost"] is None and owners["bob"]["gpu_hours"] == 0
    models = {g["key"]: g for g in by_model["data"]}
    assert set(models) == {H100, "none"}


def test_users_see_only_their_own_usage(server: ApiServer) -> None:
    _history(server)
    with server.client(server.token("bob")) as client:
        data = client.get("/v1/usage", params={"group_by": "owner"}).json()["data"]
    assert [g["key"] for g in data] == ["bob"]


def test_a_window_after_the_history_has_no_usage(server: ApiServer) -> None:
    _history(server)
    with server.client() as client:
        data = client.get("/v1/usage", params={"since": "1s"}).json()["data"]
    assert all(g["gpu_hours"] == 0 for g in data)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"group_by": "gpu"}, "group_by"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2999-01-01T00:00:00Z"}, "since"),
        ({"since": "7y"}, "since"),
        ({"since": "abc"}, "since"),
        ({"since": "2026-13-01"}, "since"),
        ({"group_by": "x"}, "group_by"),
        ({"bogus": "1"}, "bogus"),
    ],
)
def test_bad_usage_parameters_are_422_naming_them(
    server: ApiServer, params: dict[str, str], field: str
) -> None:
    with server.client() as client:
        response = client.get("/v1/usage", params=params)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]
    if field == "since":  # the rule in words, not the published regex
        (error,) = response.json()["errors"]
        assert error["rule"] == "since_format", error
        assert "ISO 8601" in error["message"] and "24h" in error["message"], error
        assert "(?:" not in response.json()["detail"], response.text


def test_usage_needs_a_token(server: ApiServer) -> None:
    with server.client("") as client:
        assert client.get("/v1/usage").status_code == 401
        assert client.get("/v1/metrics/targets").status_code == 401


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again: nothing listens there


def test_targets_list_running_workers_and_survive_dead_endpoints(server: ApiServer) -> None:
    engine = server.engine
    running = submit(engine, job_spec("r", workers=2), owner="alice")
    multi_gpu = submit(engine, job_spec("g", gpu=4), owner="bob")
    finished = submit(engine, job_spec("f"), owner="alice")
    dead = _dead_port()
    for job_id, targets in (
        (running, {0: f"127.0.0.1:{dead}", 1: "127.0.0.1:9401"}),
        (multi_gpu, {0: "127.0.0.1:9500"}),
        (finished, {0: "127.0.0.1:9600"}),
    ):
        attempt = admit(engine, job_id, at=1)
        start(engine, job_id, attempt, at=2)
        with write_transaction(engine) as conn:
            assert set_metrics_targets(conn, job_id=job_id, attempt=attempt, targets=targets)
            assert not set_metrics_targets(conn, job_id=job_id, attempt=attempt, targets=targets)
    end(engine, finished, 1, at=3, to_state=JobState.SUCCEEDED)

    with server.client() as client:
        groups = client.get("/v1/metrics/targets").json()
        assert client.get("/metrics").status_code == 200
    by_worker = {
        (g["labels"]["trainyard_job_id"], g["labels"]["trainyard_worker"]): g for g in groups
    }
    assert set(by_worker) == {(running, "0"), (running, "1"), (multi_gpu, "0")}
    assert by_worker[(running, "0")]["targets"] == [f"127.0.0.1:{dead}"]
    # one process per GPU, each on base port + local rank
    assert by_worker[(multi_gpu, "0")]["targets"] == [f"127.0.0.1:{p}" for p in range(9500, 9504)]
    assert by_worker[(running, "1")]["labels"]["trainyard_queue"] == "default"

    with server.client(server.token("bob")) as client:
        mine = client.get("/v1/metrics/targets").json()
    assert {g["labels"]["trainyard_job_id"] for g in mine} == {multi_gpu}


def test_usage_per_attempt_of_a_retried_job(server: ApiServer) -> None:
    """Every attempt is accounted on its own: GPU-, CPU-core- and wall hours, energy."""
    engine = server.engine
    hour = 3_600_000_000
    created = now_us() - 3 * hour
    job = submit(engine, job_spec("retried", gpu=4), owner="alice", created_at=created)
    a = admit(engine, job, at=created, node="gpu-1", model=H100)
    start(engine, job, a, at=created + 60_000_000)  # the job waited 60 s
    end(engine, job, a, at=created + 60_000_000 + hour, to_state=JobState.PENDING,
        energy_joules=900.0)  # fmt: skip
    a = admit(engine, job, at=created + 2 * hour, node="gpu-1", model=H100)
    start(engine, job, a, at=created + 2 * hour)
    end(engine, job, a, at=created + 2 * hour + hour // 2, to_state=JobState.SUCCEEDED)
    with server.client() as client:
        data = client.get("/v1/usage", params={"group_by": "attempt"}).json()["data"]
        (whole,) = client.get("/v1/usage", params={"group_by": "job"}).json()["data"]
    by_attempt = {g["key"]: g for g in data}
    assert set(by_attempt) == {f"{job}/1", f"{job}/2"}
    first, second = by_attempt[f"{job}/1"], by_attempt[f"{job}/2"]
    assert first["gpu_hours"] == pytest.approx(4.0) and second["gpu_hours"] == pytest.approx(2.0)
    assert first["cpu_core_hours"] == pytest.approx(2.0)  # 1 worker x 2 cores x 1 h
    assert first["wall_hours"] == pytest.approx(1.0) and second["wall_hours"] == pytest.approx(0.5)
    assert first["energy_joules"] == pytest.approx(900.0) and second["energy_joules"] is None
    assert first["cost"] == pytest.approx(10.0)  # 4 GPU-hours x 2.5
    assert first["wait_seconds_avg"] == pytest.approx(60.0)
    assert second["wait_seconds_avg"] is None  # the job's wait is its first attempt's
    assert whole["attempts"] == 2 and whole["gpu_hours"] == pytest.approx(6.0)
