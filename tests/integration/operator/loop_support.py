"""A real `trainyard serve` (API + loop process + local backend) for the loop's tests.

Everything is the product as a user runs it: the `trainyard` console script, its own
loop process, real worker processes. Tests talk to it over HTTP or through the CLI and
wait on conditions with deadlines (never sleeps).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import wait_for

TRAINYARD = str(Path(sys.executable).parent / "trainyard")
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


@dataclass
class Serve:
    """A running `trainyard serve`."""

    url: str
    home: Path
    process: subprocess.Popen[bytes]
    out: Path
    env: dict[str, str]

    @property
    def token(self) -> str:
        return (self.home / "admin-token").read_text().strip()

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def submit(self, job: dict[str, Any]) -> dict[str, Any]:
        with self.client() as client:
            response = client.post("/v1/jobs", json=job)
        assert response.status_code == 201, response.text
        return response.json()

    def job(self, job_id: str) -> dict[str, Any]:
        with self.client() as client:
            response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def events(self, job_id: str) -> list[dict[str, Any]]:
        with self.client() as client:
            return client.get(f"/v1/jobs/{job_id}/events").json()["data"]

    def wait_state(self, job_id: str, *states: str, timeout: float = 180) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def reached() -> bool:
            seen.update(self.job(job_id))
            if seen["state"] in TERMINAL and seen["state"] not in states:
                raise AssertionError(f"job ended {seen['state']}: {seen.get('reason')}")
            return seen["state"] in states

        wait_for(reached, timeout=timeout, interval=0.1, what=f"job {job_id} in {states}")
        return dict(seen)

    def cli(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        env = {**self.env, "TRAINYARD_URL": self.url, "TRAINYARD_TOKEN": self.token}
        return subprocess.run(
            [TRAINYARD, *args], input=stdin, capture_output=True, env=env, timeout=120
        )

    def loop_pid(self) -> int:
        """The pid of the process holding the scheduler lease (the loop)."""
        from sqlalchemy import create_engine, text

        engine = create_engine(f"sqlite:///{self.home / 'trainyard.db'}")
        with engine.connect() as conn:
            holder = conn.execute(text("SELECT holder FROM leases")).scalar_one()
        engine.dispose()
        return int(holder.split(":")[1])


def free_port() -> int:
    """A port the kernel picks (not a fixed range: other suites may run beside us)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_env(home: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env.update(
        TRAINYARD_HOME=str(home),
        TRAINYARD_LOOP_PERIOD_SECONDS="0.5",
        TRAINYARD_RETRY_BACKOFF_SECONDS="0.2",
        TRAINYARD_STOP_GRACE_SECONDS="20",
        TRAINYARD_LOCAL_CPUS="2",
    )
    env.update({f"TRAINYARD_{k.upper()}": v for k, v in settings.items()})
    return env


@contextmanager
def serve(
    home: Path, port: int | None = None, *, reap_workers: bool = False, **settings: str
) -> Iterator[Serve]:
    """Run `trainyard serve` (local backend) until the block ends; with `reap_workers`,
    then also kill the workers it left (off by default: tests of adoption after a
    restart, and two servers on one store, need them to outlive this server)."""
    port = port or free_port()
    env = serve_env(home, **settings)
    home.mkdir(parents=True, exist_ok=True)
    out = home.parent / f"serve-{port}.out"
    with out.open("ab") as sink:
        process = subprocess.Popen(
            [TRAINYARD, "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"serve exited: {out.read_text()[-3000:]}")
            try:
                up = httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False
            # Ours, not something else on a reused port: our home has the token now.
            return up and (home / "admin-token").exists()

        wait_for(healthy, timeout=90, interval=0.1, what="trainyard serve")
        yield Serve(url, home, process, out, env)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        if reap_workers:
            _reap_workers_of(home)


def _reap_workers_of(home: Path) -> None:
    """Kill what the server's local backend started and left running. Workers outlive
    their server by design (the next one adopts them), so a test that ends with a service
    still up, or fails before cancelling its jobs, would otherwise leave them behind.
    A worker is found by its output directory under `home`; its supervisor leads its
    session and goes first, so that nothing restarts it."""
    mine = os.getsid(0)
    for pid in _pids_with_env(f"TRAINYARD_OUTPUT_DIR={home}/".encode(), prefix=True):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            session, group = os.getsid(pid), os.getpgid(pid)
            if session != mine:
                os.kill(session, signal.SIGKILL)
            os.killpg(group, signal.SIGKILL)


def _pids_with_env(needle: bytes, *, prefix: bool = False) -> list[int]:
    """Live processes with `needle` as one entry of their environment (or one entry's
    beginning, with `prefix`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        entries = environ.split(b"\0")
        found = any(e.startswith(needle) for e in entries) if prefix else needle in entries
        if state != "Z" and found:
            pids.append(int(entry.name))
    return pids


def processes_of(job_id: str) -> list[int]:
    """Live processes (any) whose environment names this job: its workers and children."""
    return _pids_with_env(f"TRAINYARD_JOB_ID={job_id}".encode())


def summary(home: Path, job_id: str) -> dict[str, Any]:
    return json.loads((home / "jobs" / job_id / "output" / "summary.json").read_text())


def tiny_gpt(steps: int, **extra: Any) -> dict[str, Any]:
    """Arguments of a built-in gpt small enough to train in seconds on 2 shared cores."""
    return {
        "steps": steps,
        "n_layer": 1,
        "n_head": 2,
        "n_embd": 32,
        "block_size": 32,
        "batch_size": 4,
        "log_every": 1,
        **extra,
    }


def submit_tiny_gpt_training(server: Serve, steps: int = 4) -> dict[str, Any]:
    """A single-process gpt training job whose checkpoints a model service can serve."""
    return server.submit(
        {
            "name": f"gpt-{steps}",
            "resources": {"cpu": "1", "memory": "1Gi"},
            "workload": {"builtin": "gpt", "args": tiny_gpt(steps)},
            "ddp": False,
        }
    )
