"""Quotas in `trainyard serve` on the local backend: two users' jobs admitted by their
queues' quotas, and a quota file changed under a running server.

Real server, loop and worker processes. Each job is a `command` that runs until its
flag file exists, so the test decides when a job ends (and waits on stored states).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.operator.loop_support import TRAINYARD, Serve, serve, serve_env
from tests.support.servers import wait_for

pytestmark = pytest.mark.slow
HOLD = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.05)"


def quota_text(team_b_cpus: int) -> str:
    return (
        "flavors: {local: {}}\n"
        "queues:\n"
        "  team-a: {quotas: {local: {cpu: 2}}}\n"
        f"  team-b: {{quotas: {{local: {{cpu: {team_b_cpus}}}}}}}\n"
    )


def replace_file(path: Path, text: str) -> None:
    """Write next to it, then rename over it: readers see the old or the new file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def user_token(home: Path, user: str) -> str:
    done = subprocess.run(
        [TRAINYARD, "token", "create", "--user", user],
        capture_output=True,
        env=serve_env(home),
        timeout=60,
        check=True,
    )
    return done.stdout.decode().strip()


class User:
    def __init__(self, server: Serve, name: str, flags: Path) -> None:
        self.server = server
        self.token = user_token(server.home, name)
        self.flags = flags

    def submit(self, name: str, queue: str) -> str:
        import httpx

        job = {
            "name": name,
            "queue": queue,
            "resources": {"cpu": "1", "memory": "64Mi"},
            "workload": {"command": [sys.executable, "-c", HOLD, str(self.flags / name)]},
        }
        response = httpx.post(
            f"{self.server.url}/v1/jobs",
            json=job,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def release(self, name: str) -> None:
        (self.flags / name).touch()


def wait_reason(server: Serve, job_id: str, text: str) -> None:
    def explained() -> bool:
        job = server.job(job_id)
        assert job["state"] == "PENDING", job
        return text in (job.get("reason") or "")

    wait_for(explained, timeout=60, interval=0.1, what=f"reason {text!r} on {job_id}")


def test_two_users_are_admitted_by_quota_and_a_tightened_quota_applies_without_restart(
    tmp_path: Path,
) -> None:
    quota_file = tmp_path / "quotas.yaml"
    quota_file.write_text(quota_text(team_b_cpus=2))
    flags = tmp_path / "flags"
    flags.mkdir()
    with serve(tmp_path / "home", local_cpus="4", quota_file=str(quota_file)) as server:
        alice = User(server, "alice", flags)
        bob = User(server, "bob", flags)
        names: dict[str, str] = {}
        try:
            for name in ("a1", "a2", "a3"):
                names[name] = alice.submit(name, "team-a")
            for name in ("b1", "b2"):
                names[name] = bob.submit(name, "team-b")
            for name in ("a1", "a2", "b1", "b2"):
                server.wait_state(names[name], "RUNNING", timeout=120)
            # alice's third job waits for her queue's quota, not for the node (4 CPUs).
            wait_reason(server, names["a3"], "queue team-a: 2/2 local cpu used")
            loop_pid = server.loop_pid()
            with server.client() as client:
                queues = {q["name"]: q for q in client.get("/v1/queues").json()["data"]}
                metrics = client.get("/metrics").text
            cpu = queues["team-a"]["quota"]["resources"][0]
            assert (
                cpu["flavor"],
                cpu["resource"],
                cpu["nominal"],
                cpu["used"],
                cpu["pending"],
            ) == ("local", "cpu", 2, 2, 1)  # a3's one CPU waits
            assert queues["team-a"]["pending"] == 1
            assert (
                'trainyard_queue_nominal_quota{cohort="",flavor="local",queue="team-b",'
                'resource="cpu"} 2.0' in metrics
            )
            assert (
                'trainyard_queue_resource_usage{cohort="",flavor="local",queue="team-a",'
                'resource="cpu"} 2.0' in metrics
            )
            shown = server.cli("queues")
            assert shown.returncode == 0 and b"quotas" in shown.stdout, shown.stderr
            assert b"PENDING" in shown.stdout and b"SHARE" in shown.stdout, shown.stdout

            replace_file(quota_file, quota_text(team_b_cpus=1))  # tighten team-b
            bob.release("b1")
            bob.release("b2")
            server.wait_state(names["b1"], "SUCCEEDED")
            server.wait_state(names["b2"], "SUCCEEDED")
            names["b3"] = bob.submit("b3", "team-b")
            names["b4"] = bob.submit("b4", "team-b")
            server.wait_state(names["b3"], "RUNNING", timeout=120)
            wait_reason(server, names["b4"], "queue team-b: 1/1 local cpu used")

            # An invalid new file is refused: the previous quotas stay in force.
            replace_file(quota_file, "queues: {team-b: {quotas: {nope: {cpu: 1}}}}\n")
            bob.release("b3")
            server.wait_state(names["b4"], "RUNNING", timeout=120)
            names["b5"] = bob.submit("b5", "team-b")
            wait_reason(server, names["b5"], "queue team-b: 1/1 local cpu used")
            assert server.loop_pid() == loop_pid  # no restart of the loop
            assert server.job(names["a3"])["state"] == "PENDING"

            def logged() -> bool:
                return "refused, keeping the previous one" in server.out.read_text()

            wait_for(logged, timeout=30, what="the refused quota file in the log")
            with server.client() as client:
                assert "trainyard_quota_file_refused 1.0" in client.get("/metrics").text
        finally:
            for name in names:
                (flags / name).touch()
            for job_id in names.values():
                server.wait_state(job_id, "SUCCEEDED", "PENDING", timeout=120)


def test_a_borrower_fills_the_cohort_and_the_owner_reclaims_its_quota(tmp_path: Path) -> None:
    """Two cohorts, four queues: team-b borrows team-a's idle CPUs, then team-a's job
    takes them back by preempting one of team-b's jobs, which waits again."""
    quota_file = tmp_path / "quotas.yaml"
    quota_file.write_text(
        "flavors: {local: {}}\n"
        "cohorts: {org: {}, ops: {}}\n"
        "queues:\n"
        "  team-a: {cohort: org, quotas: {local: {cpu: 2}},"
        " preemption: {reclaim_within_cohort: any}}\n"
        "  team-b: {cohort: org, quotas: {local: {cpu: 2}}}\n"
        "  ops-1: {cohort: ops, quotas: {local: {cpu: 0}}}\n"
        "  ops-2: {cohort: ops, quotas: {local: {cpu: 0}}}\n"
    )
    flags = tmp_path / "flags"
    flags.mkdir()
    with serve(tmp_path / "home", local_cpus="4", quota_file=str(quota_file)) as server:
        alice = User(server, "alice", flags)
        bob = User(server, "bob", flags)
        names: dict[str, str] = {}
        try:
            for name in ("b1", "b2", "b3", "b4"):
                names[name] = bob.submit(name, "team-b")
            for name in ("b1", "b2", "b3", "b4"):
                server.wait_state(names[name], "RUNNING", timeout=120)  # 2 own + 2 borrowed
            names["o1"] = alice.submit("o1", "ops-1")
            wait_reason(server, names["o1"], "queue ops-1: 0/0 local cpu used")
            names["a1"] = alice.submit("a1", "team-a")
            server.wait_state(names["a1"], "RUNNING", timeout=120)
            events = {name: [e["to_state"] for e in server.events(names[name])] for name in names}
            preempted = [n for n in ("b1", "b2", "b3", "b4") if "PREEMPTED" in events[n]]
            assert len(preempted) == 1, events
            with server.client() as client:
                queues = {q["name"]: q for q in client.get("/v1/queues").json()["data"]}
            b = queues["team-b"]["quota"]["resources"][0]
            assert (b["used"], b["borrowed"]) == (3, 1), b
        finally:
            for name in names:
                (flags / name).touch()
            for job_id in names.values():
                server.wait_state(job_id, "SUCCEEDED", "PENDING", timeout=120)
