"""Rolling updates and autoscaling of a model service on the local backend, end to end:
a real `trainyard serve`, real gpt training checkpoints, real replica processes, client
loops through the control plane's /predict proxy. Waits on stored state and on answers
with deadlines (never sleeps).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.operator.loop_support import (
    Serve,
    processes_of,
    serve,
    submit_tiny_gpt_training,
)
from tests.support.servers import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, str, str]]:
    """One server for the module and two finished gpt training jobs: an older model
    (4 steps) and a newer one (6 steps)."""
    home = tmp_path_factory.mktemp("rollout") / "home"
    with serve(home, reap_workers=True) as server:  # services are left running
        jobs = [submit_tiny_gpt_training(server, steps) for steps in (4, 6)]
        for job in jobs:
            server.wait_state(job["id"], "SUCCEEDED", timeout=300)
        yield server, jobs[0]["id"], jobs[1]["id"]


def _service(train_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "gpt-svc",
        "kind": "inference",
        "mode": "service",
        "checkpoint_job": train_id,
        "precision": "fp32",
        "resources": {"cpu": "250m", "memory": "512Mi"},
        "workload": {"builtin": "gpt", "args": {"batch_size": 4, "max_wait_ms": 2}},
        **extra,
    }


def _replicas(job_id: str) -> dict[int, tuple[int, int]]:
    """Live replica processes of the job: index -> (revision, serving port), read from
    each `trainyard.worker infer` process's own environment."""
    found = {}
    for pid in processes_of(job_id):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"infer" not in cmdline:
            continue
        env = dict(item.decode().split("=", 1) for item in environ if b"=" in item)
        index = int(env["TRAINYARD_WORKER_INDEX"])
        found[index] = (
            int(env.get("TRAINYARD_SERVICE_REVISION", "1")),
            int(env["TRAINYARD_SERVE_PORT"]),
        )
    return found


class ClientLoop:
    """Threads sending /predict through the control plane until stopped; every answer's
    status is kept (-1: no HTTP answer at all)."""

    def __init__(self, server: Serve, job_id: str, *, concurrency: int = 1) -> None:
        self.server, self.job_id = server, job_id
        self.outcomes: list[int] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(concurrency)]

    def _run(self) -> None:
        with self.server.client() as client:
            while not self._stop.is_set():
                try:
                    reply = client.post(
                        f"/v1/jobs/{self.job_id}/predict", json={"text": "The train"}
                    )
                    self.outcomes.append(reply.status_code)
                except httpx.HTTPError:
                    self.outcomes.append(-1)

    def __enter__(self) -> ClientLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def wait_sent(self, more: int) -> None:
        goal = len(self.outcomes) + more
        wait_for(lambda: len(self.outcomes) >= goal, timeout=60, interval=0.05, what="traffic")


def _ready(server: Serve, job_id: str, count: int, what: str) -> None:
    wait_for(
        lambda: server.job(job_id).get("ready_replicas") == count,
        timeout=240,
        interval=0.2,
        what=what,
    )


def test_a_rolling_update_to_a_newer_checkpoint_drops_no_request(
    trained: tuple[Serve, str, str],
) -> None:
    server, older, newer = trained
    job = server.submit(_service(older, replicas=2))
    job_id = job["id"]
    server.wait_state(job_id, "RUNNING", timeout=240)
    _ready(server, job_id, 2, "both replicas ready")
    before = _replicas(job_id)
    assert sorted(before) == [0, 1] and {rev for rev, _ in before.values()} == {1}
    for _, port in before.values():
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["step"] == 4

    with ClientLoop(server, job_id, concurrency=2) as clients:
        clients.wait_sent(10)
        with server.client() as client:
            reply = client.patch(f"/v1/jobs/{job_id}", json={"checkpoint_job": newer})
        assert reply.status_code == 200, reply.text
        assert reply.json()["revision"] == 2 and reply.json()["checkpoint_job"] == newer

        def rolled_out() -> bool:
            replicas = _replicas(job_id)
            return (
                len(replicas) == 2
                and {rev for rev, _ in replicas.values()} == {2}
                and server.job(job_id)["ready_replicas"] == 2
                and any(
                    "rolled out revision 2" in (e["reason"] or "") for e in server.events(job_id)
                )
            )

        wait_for(rolled_out, timeout=300, interval=0.2, what="revision 2 rolled out")
        clients.wait_sent(10)
    failed = [code for code in clients.outcomes if code != 200]
    assert failed == [], (failed, len(clients.outcomes))

    after = _replicas(job_id)
    assert set(after).isdisjoint(before)  # every replica replaced, none reused
    for _, port in after.values():
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["step"] == 6
    status = server.job(job_id)
    assert status["state"] == "RUNNING" and status["failures"] == 0
    assert sorted(int(i) for i in status["placement"]) == sorted(after)
    notes = [e["reason"] or "" for e in server.events(job_id)]
    added = [n for n in notes if "(revision 2) added" in n]
    retired = [n for n in notes if "retired: replaced by revision 2" in n]
    assert len(added) == 2 and len(retired) == 2, notes
    # One at a time: each retirement comes after an addition, never two old ones first.
    order = [("add" if n in added else "retire") for n in notes if n in added or n in retired]
    assert order == ["add", "retire", "add", "retire"], order

    with server.client() as client:
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    server.wait_state(job_id, "CANCELLED", timeout=120)
    assert processes_of(job_id) == []


def test_load_raises_the_replica_count_within_max_and_its_end_lowers_it(
    trained: tuple[Serve, str, str],
) -> None:
    server, older, _ = trained
    job = server.submit(
        _service(
            older,
            replicas=1,
            min_replicas=1,
            max_replicas=3,
            autoscale={"metric": "inflight", "target": 1, "cooldown": "3s"},
        )
    )
    job_id = job["id"]
    server.wait_state(job_id, "RUNNING", timeout=240)
    _ready(server, job_id, 1, "one replica ready")

    seen: list[int] = []
    with ClientLoop(server, job_id, concurrency=6) as clients:

        def grew() -> bool:
            count = len(_replicas(job_id))
            seen.append(count)
            return server.job(job_id).get("ready_replicas", 0) >= 2

        wait_for(grew, timeout=240, interval=0.2, what="a second replica under load")
        clients.wait_sent(20)
    assert max(seen) <= 3  # never beyond max_replicas
    assert [c for c in clients.outcomes if c != 200] == []
    notes = [e["reason"] or "" for e in server.events(job_id)]
    assert any("autoscaling: inflight" in n and "above target" in n for n in notes), notes

    # No load: after the cooldown it shrinks, one at a time, to min_replicas.
    def shrunk() -> bool:
        return len(_replicas(job_id)) == 1 and server.job(job_id).get("ready_replicas") == 1

    wait_for(shrunk, timeout=240, interval=0.2, what="back to one replica")
    notes = [e["reason"] or "" for e in server.events(job_id)]
    assert any("well below target" in n for n in notes), notes
    assert any("retired: scaled down" in n for n in notes), notes
    status = server.job(job_id)
    assert status["state"] == "RUNNING" and len(status["placement"]) == 1

    with server.client() as client:
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    server.wait_state(job_id, "CANCELLED", timeout=120)


def test_a_replica_that_finds_no_room_waits_with_the_cores_reason(
    trained: tuple[Serve, str, str],
) -> None:
    """The local node has 2 CPUs: a service of 1-CPU replicas resized to 3 gets a second
    one placed by the core, and the third waits with the core's reason on the job."""
    server, older, _ = trained
    job = server.submit(_service(older, replicas=1, resources={"cpu": "1", "memory": "512Mi"}))
    job_id = job["id"]
    server.wait_state(job_id, "RUNNING", timeout=240)
    _ready(server, job_id, 1, "one replica ready")
    with server.client() as client:
        assert client.patch(f"/v1/jobs/{job_id}", json={"replicas": 3}).status_code == 200
    _ready(server, job_id, 2, "a second replica (room for one more CPU)")

    def waits() -> bool:
        reason = server.job(job_id)["reason"] or ""
        return "a new replica waits:" in reason and "cpu" in reason.lower()

    wait_for(waits, timeout=120, interval=0.2, what="the third replica's pending reason")
    assert len(_replicas(job_id)) == 2
    with server.client() as client:
        assert client.patch(f"/v1/jobs/{job_id}", json={"replicas": 1}).status_code == 200
    wait_for(lambda: len(_replicas(job_id)) == 1, timeout=120, interval=0.2, what="scaled to 1")
    wait_for(
        lambda: "waits" not in (server.job(job_id)["reason"] or ""),
        timeout=60,
        interval=0.2,
        what="the reason cleared",
    )
    with server.client() as client:
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    server.wait_state(job_id, "CANCELLED", timeout=120)


def test_a_new_revision_whose_checkpoint_does_not_load_is_rolled_back(
    trained: tuple[Serve, str, str], tmp_path: Path
) -> None:
    """The new replica exits with the loader's error; the old replica serves on, the
    service's document goes back to revision 1, the reason and an event say why."""
    server, older, _ = trained
    job = server.submit(_service(older, replicas=1))
    job_id = job["id"]
    server.wait_state(job_id, "RUNNING", timeout=240)
    _ready(server, job_id, 1, "one replica ready")
    before = _replicas(job_id)
    empty = tmp_path / "no-checkpoint-here"
    empty.mkdir()

    with ClientLoop(server, job_id) as clients:
        clients.wait_sent(5)
        with server.client() as client:
            reply = client.patch(f"/v1/jobs/{job_id}", json={"serve_checkpoint": str(empty)})
        assert reply.status_code == 200, reply.text
        assert reply.json()["revision"] == 2

        def rolled_back() -> bool:
            status = server.job(job_id)
            return status.get("revision", 1) == 1 and "revision 2 failed" in (
                status["reason"] or ""
            )

        wait_for(rolled_back, timeout=240, interval=0.2, what="revision 2 rolled back")
        clients.wait_sent(5)
    assert [code for code in clients.outcomes if code != 200] == []

    status = server.job(job_id)
    assert status["state"] == "RUNNING" and status["checkpoint_job"] == older
    assert status.get("serve_checkpoint") is None
    assert "no valid checkpoint" in status["reason"], status["reason"]
    notes = [e["reason"] or "" for e in server.events(job_id)]
    [note] = [n for n in notes if "rolled back to revision 1" in n]
    assert "revision 2 failed: replica 1 cannot start" in note and str(empty) in note
    wait_for(
        lambda: _replicas(job_id) == before, timeout=60, interval=0.2, what="only the old replica"
    )
    with server.client() as client:
        assert client.post(f"/v1/jobs/{job_id}/predict", json={"text": "The"}).status_code == 200
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    server.wait_state(job_id, "CANCELLED", timeout=120)
