"""`trainyard serve` as a real process: what `make serve` runs, end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.servers import free_port, wait_for

TRAINYARD = str(Path(sys.executable).parent / "trainyard")


@contextmanager
def serve(home: Path, port: int, *extra: str) -> Iterator[tuple[str, Path]]:
    """Run `trainyard serve` until the block ends; yields its URL and stdout file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env["TRAINYARD_HOME"] = str(home)
    out = home.parent / f"serve-{port}.out"
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [TRAINYARD, "serve", "--host", "127.0.0.1", "--port", str(port), *extra],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"serve exited: {out.read_text()}")
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, timeout=60, interval=0.1, what="trainyard serve")
        yield url, out
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def test_serve_prints_where_things_are_and_keeps_jobs_across_restarts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    with serve(home, port, "--backend", "local") as (url, out):
        printed = out.read_text()
        assert f"http://127.0.0.1:{port}" in printed
        assert str(home / "admin-token") in printed
        token = (home / "admin-token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        job = {"name": "persisted", "workload": {"builtin": "gpt"}}
        created = httpx.post(f"{url}/v1/jobs", json=job, headers=auth)
        assert created.status_code == 201, created.text
        assert httpx.post(f"{url}/v1/jobs", json=job).status_code == 401
        negative = httpx.post(
            f"{url}/v1/jobs", json={**job, "resources": {"gpu": -1}}, headers=auth
        )
        assert negative.status_code == 422 and "resources.gpu" in negative.text
    with serve(home, port) as (url, _):
        again = httpx.get(f"{url}/v1/jobs/{created.json()['id']}", headers=auth)
    assert again.status_code == 200, again.text
    assert again.json()["name"] == "persisted"


def test_serve_records_the_kubernetes_backend_choice(tmp_path: Path) -> None:
    """The backend is accepted and recorded; a missing kubeconfig fails in one clear line."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env["TRAINYARD_HOME"] = str(home)
    result = subprocess.run(
        [
            TRAINYARD,
            "serve",
            "--port",
            str(free_port()),
            "--backend",
            "kubernetes",
            "--kubeconfig",
            str(tmp_path / "missing-kubeconfig"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot start:") and result.stderr.count("\n") == 1
    assert "kube-config" in result.stderr
