"""Start-time estimates end to end: `trainyard serve` forecasts when pending jobs start.

Real server, loop and worker processes (local backend, 2 CPUs). A job holding both CPUs
until the test releases it keeps a second job pending; the loop's forward simulation
must then give the pending job an `estimated_start`, shown by GET /v1/jobs/{id},
`trainyard list` and `trainyard queues`, and the queue's expected-wait metric. The
finished jobs are then replayed with `trainyard simulate --from-store`.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import pytest

from tests.integration.operator.loop_support import Serve, serve
from tests.support.servers import wait_for

pytestmark = pytest.mark.slow
PY = sys.executable


def _hold_until(release: Path) -> list[str]:
    """A worker that runs until `release` exists (bounded, so nothing is left behind)."""
    script = (
        "import os, sys, time\n"
        "deadline = time.monotonic() + 120\n"
        "while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
    )
    return [PY, "-c", script, str(release)]


def _estimated(server: Serve, job_id: str) -> dict:
    """The pending job once the loop's forecast has given it an estimated start."""
    seen: dict = {}

    def estimated() -> bool:
        seen.update(server.job(job_id))
        return seen["state"] == "PENDING" and seen.get("estimated_start") is not None

    wait_for(estimated, timeout=60, interval=0.2, what="an estimated start")
    return seen


def test_a_pending_job_gets_an_estimated_start_in_api_cli_and_metric(tmp_path: Path) -> None:
    release = tmp_path / "release"
    with serve(tmp_path / "home") as server:
        warm = server.submit(
            {"name": "nap", "resources": {"cpu": "2"}, "workload": {"command": [PY, "-c", ""]}}
        )
        server.wait_state(warm["id"], "SUCCEEDED", timeout=120)
        holder = server.submit(
            {"name": "hold", "resources": {"cpu": "2"},
             "workload": {"command": _hold_until(release)}}
        )  # fmt: skip
        server.wait_state(holder["id"], "RUNNING", timeout=120)
        waiting = server.submit(
            {"name": "nap", "resources": {"cpu": "2"}, "workload": {"command": [PY, "-c", ""]}}
        )
        seen = _estimated(server, waiting["id"])
        start = datetime.fromisoformat(seen["estimated_start"])
        submitted = datetime.fromisoformat(seen["created_at"])
        assert start >= submitted
        assert (start - submitted).total_seconds() < 3600
        assert server.job(holder["id"]).get("estimated_start") is None  # running: no estimate

        listing = server.cli("list", "--output", "table")
        assert listing.returncode == 0, listing.stderr
        assert b"STARTS IN" in listing.stdout and b"~" in listing.stdout
        queues = server.cli("queues", "--output", "json")
        assert queues.returncode == 0, queues.stderr
        (default,) = [q for q in json.loads(queues.stdout)["data"] if q["name"] == "default"]
        assert default["expected_wait_seconds"] is not None
        with server.client() as client:
            metrics = client.get("/metrics").text
        assert 'trainyard_queue_expected_wait_seconds{queue="default"}' in metrics

        release.write_text("go")
        server.wait_state(waiting["id"], "SUCCEEDED", timeout=120)
        assert server.job(waiting["id"])["estimated_start"] is None  # started: none shown

        out = tmp_path / "whatif"
        replay = server.cli(
            "simulate", "--from-store", "--database-url",
            f"sqlite:///{server.home / 'trainyard.db'}", "--policy", "fifo,las",
            "--nodes", "1", "--gpus-per-node", "0", "--out", str(out), "--no-progress",
        )  # fmt: skip
        assert replay.returncode == 0, replay.stderr + replay.stdout
        metrics_json = json.loads((out / "metrics.json").read_text())
        assert metrics_json["fifo"]["jobs"] == metrics_json["las"]["jobs"] == 3


def test_an_estimate_never_reaches_past_the_running_jobs_max_runtime(tmp_path: Path) -> None:
    """With no history the estimator's prior is an hour; but the job holding the CPUs has
    `max_runtime: 90s` and the loop stops it there, so the pending job's estimated start
    is within 90 s of the holder's start, not an hour away."""
    release = tmp_path / "release"
    with serve(tmp_path / "home") as server:
        holder = server.submit(
            {"name": "hold", "resources": {"cpu": "2"}, "max_runtime": "90s",
             "workload": {"command": _hold_until(release)}}
        )  # fmt: skip
        server.wait_state(holder["id"], "RUNNING", timeout=120)
        waiting = server.submit(
            {"name": "nap", "resources": {"cpu": "2"}, "workload": {"command": [PY, "-c", ""]}}
        )
        seen = _estimated(server, waiting["id"])
        started = datetime.fromisoformat(server.job(holder["id"])["started_at"])
        start = datetime.fromisoformat(seen["estimated_start"])
        assert 0 <= (start - started).total_seconds() <= 90 + 5, (started, start)
        release.write_text("go")
        server.wait_state(waiting["id"], "SUCCEEDED", timeout=120)
