"""The scheduling loop end to end on the local backend: `trainyard serve` runs jobs.

Real server process, real loop process, real worker processes (torchrun + gloo for the
built-in gpt, plain programs for `command` jobs). Each test waits on the job's stored
state with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from tests.integration.operator.loop_support import (
    free_port,
    processes_of,
    serve,
    serve_env,
    summary,
    tiny_gpt,
)
from tests.support.servers import wait_for

pytestmark = pytest.mark.slow
PY = sys.executable


def _states(events: list[dict]) -> list[str]:
    """The transitions; notes (events that keep the state, e.g. a warning) are left out."""
    return [e["to_state"] for e in events if e["from_state"] != e["to_state"]]


def test_cli_submit_of_a_two_worker_ddp_gpt_job_runs_to_success(tmp_path: Path) -> None:
    with serve(tmp_path / "home") as server:
        document = {
            "name": "gpt-ddp",
            "workers": 2,
            "resources": {"cpu": "1", "memory": "1Gi"},
            "workload": {"builtin": "gpt", "args": tiny_gpt(12)},
            "precision": "bf16",
        }
        submitted = server.cli("submit", "-", "-o", "json", stdin=yaml.safe_dump(document).encode())
        assert submitted.returncode == 0, submitted.stderr
        job = json.loads(submitted.stdout)
        done = server.wait_state(job["id"], "SUCCEEDED", timeout=300)
        assert done["placement"] and len(done["placement"]) == 2
        assert _states(server.events(job["id"])) == ["PENDING", "ADMITTED", "RUNNING", "SUCCEEDED"]
        result = summary(server.home, job["id"])
        assert result["world_size"] == 2 and result["steps"] == 12
        logs = server.cli("logs", job["id"])
        assert logs.returncode == 0
        assert b"step 12 loss" in logs.stdout  # the worker's training lines
        assert processes_of(job["id"]) == []


def test_a_command_job_runs_the_users_argument_list_with_the_torchrun_environment(
    tmp_path: Path,
) -> None:
    script = (
        "import os, sys; print('argv', sys.argv[1:]); "
        "print('rank', os.environ['RANK'], 'of', os.environ['WORLD_SIZE'], "
        "'master', os.environ['MASTER_ADDR'], os.environ['MASTER_PORT'])"
    )
    with serve(tmp_path / "home") as server:
        job = server.submit(
            {
                "name": "cmd",
                "workers": 2,
                "resources": {"cpu": "100m"},
                "workload": {"command": [PY, "-c", script, "a b", "--flag"]},
            }
        )
        server.wait_state(job["id"], "SUCCEEDED", timeout=120)
        with server.client() as client:
            first = client.get(f"/v1/jobs/{job['id']}/logs").text
        assert "argv ['a b', '--flag']" in first  # one argument with a space: no shell
        assert "rank 0 of 2 master 127.0.0.1" in first


def test_a_failing_job_is_retried_then_fails_naming_the_worker_and_exit_code(
    tmp_path: Path,
) -> None:
    with serve(tmp_path / "home") as server:
        job = server.submit(
            {
                "name": "fails",
                "retries": 2,
                "resources": {"cpu": "100m"},
                "workload": {"command": [PY, "-c", "print('about to fail'); raise SystemExit(1)"]},
            }
        )
        done = server.wait_state(job["id"], "FAILED", timeout=120)
        assert "worker 0 exited 1" in done["reason"]
        assert "about to fail" in done["reason"]  # the last log lines
        assert done["attempt"] == 3 and done["failures"] == 3
        states = _states(server.events(job["id"]))
        assert states.count("ADMITTED") == 3 and states[-1] == "FAILED"


def test_an_executable_that_does_not_exist_fails_at_once_without_retries(tmp_path: Path) -> None:
    with serve(tmp_path / "home") as server:
        job = server.submit(
            {
                "name": "missing",
                "retries": 5,
                "resources": {"cpu": "100m"},
                "workload": {"command": ["no-such-program-xyz", "--help"]},
            }
        )
        done = server.wait_state(job["id"], "FAILED", timeout=60)
        assert "executable not found: no-such-program-xyz" in done["reason"]
        assert done["attempt"] == 1


def test_cancel_of_a_running_job_checkpoints_and_leaves_no_process(tmp_path: Path) -> None:
    with serve(tmp_path / "home") as server:
        job = server.submit(
            {
                "name": "long",
                "resources": {"cpu": "1"},
                "workload": {"builtin": "gpt", "args": tiny_gpt(100000, checkpoint_every=100000)},
            }
        )
        server.wait_state(job["id"], "RUNNING", timeout=120)
        log = server.home / "logs" / job["id"] / "worker-0.log"
        wait_for(lambda: b" loss " in log.read_bytes(), timeout=120, what="a training step")
        cancelled = server.cli("cancel", job["id"], "-o", "json")
        assert cancelled.returncode == 0, cancelled.stderr
        assert json.loads(cancelled.stdout)["stopping"] == "CANCELLED"
        server.wait_state(job["id"], "CANCELLED", timeout=120)
        output = server.home / "jobs" / job["id"] / "output"
        assert list(output.glob("checkpoint-*.pt")), "the worker checkpoints on SIGTERM"
        assert processes_of(job["id"]) == []


def test_a_job_no_node_can_hold_stays_pending_as_unschedulable(tmp_path: Path) -> None:
    with serve(tmp_path / "home") as server:
        job = server.submit(
            {"name": "huge", "resources": {"cpu": "64"}, "workload": {"command": ["true"]}}
        )

        def explained() -> bool:
            return (server.job(job["id"]).get("reason") or "").startswith("unschedulable:")

        wait_for(explained, timeout=30, what="an unschedulable reason")
        assert server.job(job["id"])["state"] == "PENDING"
        listed = server.cli("list", "-o", "json")
        assert "unschedulable" in listed.stdout.decode()


def test_high_priority_job_preempts_a_low_one_which_resumes_from_its_checkpoint(
    tmp_path: Path,
) -> None:
    queues = json.dumps([{"name": "default", "policy": "priority"}])
    with serve(tmp_path / "home", queues=queues) as server:
        low = server.submit(
            {
                "name": "low",
                "priority": "low",
                "resources": {"cpu": "2"},
                "workload": {"builtin": "gpt", "args": tiny_gpt(400, checkpoint_every=5)},
            }
        )
        server.wait_state(low["id"], "RUNNING", timeout=120)
        output = server.home / "jobs" / low["id"] / "output"
        wait_for(lambda: list(output.glob("checkpoint-*.pt")), timeout=180, what="a checkpoint")
        high = server.submit(
            {
                "name": "high",
                "priority": "high",
                "resources": {"cpu": "2"},
                "workload": {"command": [PY, "-c", "print('high ran')"]},
            }
        )
        server.wait_state(high["id"], "SUCCEEDED", timeout=180)
        done = server.wait_state(low["id"], "SUCCEEDED", timeout=400)
        states = _states(server.events(low["id"]))
        assert "PREEMPTED" in states and states.count("ADMITTED") == 2
        assert done["attempt"] == 2 and done["failures"] == 0
        resumed = summary(server.home, low["id"])["resumed_from_step"]
        assert resumed > 0
        # The checkpoints left are the resumed attempt's, past the step it resumed from.
        listed = server.cli("checkpoints", low["id"], "-o", "json")
        assert listed.returncode == 0, listed.stderr.decode()
        found = json.loads(listed.stdout)
        assert found["source"] == "local" and found["count"] >= 1
        newest = found["data"][0]
        assert newest["attempt"] == 2 and newest["step"] > resumed and newest["size_bytes"] > 0
        assert "ATTEMPT" in server.cli("checkpoints", low["id"]).stdout.decode()


def test_server_killed_while_a_job_runs_adopts_its_workers_after_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    script = "import time; [time.sleep(0.05) for _ in range(100)]; print('done')"
    with serve(home, port) as server:
        job = server.submit(
            {
                "name": "adopt",
                "workers": 2,
                "resources": {"cpu": "100m"},
                "workload": {"command": [PY, "-c", script]},
            }
        )
        server.wait_state(job["id"], "RUNNING", timeout=60)
        before = processes_of(job["id"])
        os.kill(server.loop_pid(), signal.SIGKILL)
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=30)
    assert set(processes_of(job["id"])) <= set(before)  # workers outlive the server
    with serve(home, port) as server:
        done = server.wait_state(job["id"], "SUCCEEDED", timeout=120)
        assert done["attempt"] == 1  # adopted, not relaunched
        log = (home / "logs" / job["id"] / "worker-0.log").read_text()
        assert log.splitlines().count("done") == 1


def test_loop_killed_while_a_gang_is_half_launched_launches_each_worker_once(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    script = "import time; time.sleep(2); print('worker done')"
    with serve(home, loop="false") as server:
        job = server.submit(
            {
                "name": "half",
                "workers": 2,
                "resources": {"cpu": "100m"},
                "workload": {"command": [PY, "-c", script]},
            }
        )
        env = serve_env(home, fault_kill_after_spawns="1")
        crashed = subprocess.run(
            [PY, "-m", "trainyard.operator"], env=env, capture_output=True, timeout=120
        )
        assert crashed.returncode == -signal.SIGKILL
        assert server.job(job["id"])["state"] == "ADMITTED"
        env = serve_env(home)
        loop = subprocess.Popen([PY, "-m", "trainyard.operator"], env=env)
        try:
            server.wait_state(job["id"], "SUCCEEDED", timeout=120)
        finally:
            loop.terminate()
            loop.wait(timeout=60)
        for worker in (0, 1):
            log = (home / "logs" / job["id"] / f"worker-{worker}.log").read_text()
            assert log.splitlines().count("worker done") == 1, log  # one run, one header
            assert log.count("==== trainyard: job") == 1, log


def test_a_burst_of_sigterms_stops_the_loop_process(tmp_path: Path) -> None:
    """Several SIGTERMs at once (a serve's terminate and the parent-death signal arrive
    together) end the loop process. A handler that took a lock once deadlocked on the
    second signal, leaving an orphaned loop; the burst makes that interleaving likely
    rather than certain for such a handler, while any correct one exits every time."""
    home = tmp_path / "home"
    with serve(home, loop="false") as server:
        job = server.submit({"name": "first", "workload": {"command": [PY, "-c", "pass"]}})
        loop = subprocess.Popen([PY, "-m", "trainyard.operator"], env=serve_env(home))
        try:
            server.wait_state(job["id"], "SUCCEEDED", timeout=120)  # it leads and cycles
            for _ in range(200):
                loop.send_signal(signal.SIGTERM)
            assert loop.wait(timeout=60) == 0
        finally:
            if loop.poll() is None:
                loop.kill()
                loop.wait(timeout=30)


def test_two_hundred_jobs_never_overlap_beyond_the_nodes_capacity(tmp_path: Path) -> None:
    with serve(tmp_path / "home") as server:
        ids = []
        with server.client() as client:
            for i in range(200):
                response = client.post(
                    "/v1/jobs",
                    json={
                        "name": f"j{i}",
                        "resources": {"cpu": "500m", "memory": "10Mi"},
                        "workload": {"command": ["true"]},
                    },
                )
                assert response.status_code == 201
                ids.append(response.json()["id"])
        for job_id in ids:
            server.wait_state(job_id, "SUCCEEDED", timeout=300)
        engine = create_engine(f"sqlite:///{server.home / 'trainyard.db'}")
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT admitted_at, ended_at, cpu_millicores, workers FROM job_attempts")
            ).all()
        engine.dispose()
    assert len(rows) == 200 and all(r.ended_at is not None for r in rows)
    # Resources are held from admission to the end of the attempt: at every admission
    # instant, what all attempts then holding add up to fits the 2-CPU node.
    for row in rows:
        held = sum(
            r.cpu_millicores * r.workers
            for r in rows
            if r.admitted_at <= row.admitted_at < r.ended_at
        )
        assert held <= 2000, held


def test_two_servers_on_one_store_run_one_loop_and_hand_it_over(tmp_path: Path) -> None:
    """Only the lease holder acts; killing it hands the loop to the other within the ttl."""
    home = tmp_path / "home"
    with serve(home, lease_ttl_seconds="2") as first, serve(home, lease_ttl_seconds="2") as second:
        leader = first.loop_pid()
        assert leader in (_loop_child(first), _loop_child(second))
        os.kill(leader, signal.SIGKILL)  # its serve restarts it, but the other may win
        job = second.submit(
            {"name": "after", "resources": {"cpu": "100m"}, "workload": {"command": ["true"]}}
        )
        second.wait_state(job["id"], "SUCCEEDED", timeout=60)
        assert first.loop_pid() != leader
        events = second.events(job["id"])
        assert [e["to_state"] for e in events].count("ADMITTED") == 1


def _loop_child(server: object) -> int:
    """The pid of the loop process a `serve` started (its only python child)."""
    pid = server.process.pid  # type: ignore[attr-defined]
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0])


def test_max_runtime_stops_the_job_and_fails_it_with_that_reason(tmp_path: Path) -> None:
    with serve(tmp_path / "home", stop_grace_seconds="2") as server:
        job = server.submit(
            {
                "name": "slow",
                "max_runtime": "2s",
                "retries": 3,
                "resources": {"cpu": "100m"},
                "workload": {"command": [PY, "-c", "import time; time.sleep(600)"]},
            }
        )
        done = server.wait_state(job["id"], "FAILED", timeout=60)
        assert "max_runtime 2s exceeded" in done["reason"]
        assert done["attempt"] == 1  # a time limit is not retried
        assert processes_of(job["id"]) == []


def test_an_image_on_the_local_backend_is_ignored_with_a_warning_event(tmp_path: Path) -> None:
    with serve(tmp_path / "home") as server:
        job = server.submit(
            {
                "name": "img",
                "image": "ghcr.io/example/trainer:1",
                "resources": {"cpu": "100m"},
                "workload": {"command": ["true"]},
            }
        )
        server.wait_state(job["id"], "SUCCEEDED", timeout=60)
        reasons = [e["reason"] or "" for e in server.events(job["id"])]
        assert any(
            r.startswith("warning: image 'ghcr.io/example/trainer:1' ignored") for r in reasons
        )


def test_an_unwritable_log_directory_fails_the_job_and_the_server_keeps_serving(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    with serve(home) as server:
        logs = home / "logs"
        if logs.is_dir():
            logs.rmdir()
        logs.write_text("a file where the log directory should be")
        job = server.submit(
            {"name": "nolog", "resources": {"cpu": "100m"}, "workload": {"command": ["true"]}}
        )
        done = server.wait_state(job["id"], "FAILED", timeout=60)
        assert "launch failed" in done["reason"] and "logs" in done["reason"]
        logs.unlink()
        after = server.submit(
            {"name": "fine", "resources": {"cpu": "100m"}, "workload": {"command": ["true"]}}
        )
        server.wait_state(after["id"], "SUCCEEDED", timeout=60)


def test_env_from_secret_reaches_the_worker_and_a_missing_secret_fails_naming_it(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    with serve(home) as server:
        secret = home / "secrets" / "wandb" / "api-key"
        secret.parent.mkdir(parents=True, mode=0o700)
        secret.write_text("s3cret\n")
        secret.chmod(0o600)
        script = "import os; print('key is', os.environ['WANDB_API_KEY'])"
        job = server.submit(
            {
                "name": "secret",
                "resources": {"cpu": "100m"},
                "env_from_secret": {"WANDB_API_KEY": {"secret": "wandb", "key": "api-key"}},
                "workload": {"command": [PY, "-c", script]},
            }
        )
        server.wait_state(job["id"], "SUCCEEDED", timeout=60)
        with server.client() as client:
            assert "key is s3cret" in client.get(f"/v1/jobs/{job['id']}/logs").text
        assert "s3cret" not in (home / "trainyard.db").read_bytes().decode("latin-1")
        missing = server.submit(
            {
                "name": "nosecret",
                "resources": {"cpu": "100m"},
                "env_from_secret": {"TOKEN": {"secret": "absent", "key": "token"}},
                "workload": {"command": ["true"]},
            }
        )
        done = server.wait_state(missing["id"], "FAILED", timeout=60)
        assert "env_from_secret" in done["reason"] and "absent" in done["reason"]
