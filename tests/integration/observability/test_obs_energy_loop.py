"""GPU energy reaches the accounting through the real loop: a worker's per-rank energy
file (what `WorkerMetrics.write_energy` writes from NVML's counter at exit) is summed by
the loop when the attempt ends and reported by `/v1/usage`.

This machine has no GPU, so NVML cannot measure anything here: the job is a `command`
that writes the two ranks' files itself, standing in for the NVML readings only. The
server, the loop, the local backend, the worker processes and the store are real (the
NVML meter itself is unit-tested in tests/unit/observability/test_obs_recorders.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.integration.operator.loop_support import serve

WRITE_ENERGY = """
import json, os, pathlib
out = pathlib.Path(os.environ["TRAINYARD_OUTPUT_DIR"]) / "energy"
out.mkdir(parents=True, exist_ok=True)
attempt = os.environ["TRAINYARD_ATTEMPT"]
for rank, joules in ((0, 1500.0), (1, 250.5)):
    path = out / f"attempt-{attempt}-rank-{rank}.json"
    path.write_text(json.dumps({"rank": rank, "joules": joules}))
"""


def test_an_attempt_s_recorded_energy_is_in_the_usage(tmp_path: Path) -> None:
    with serve(tmp_path / "home") as server:
        job = server.submit(
            {
                "name": "energy",
                "resources": {"cpu": "1"},
                "workload": {"command": [sys.executable, "-c", WRITE_ENERGY]},
            }
        )
        server.wait_state(job["id"], "SUCCEEDED", timeout=120)
        silent = server.submit(
            {"name": "no-nvml", "resources": {"cpu": "1"}, "workload": {"command": ["true"]}}
        )
        server.wait_state(silent["id"], "SUCCEEDED", timeout=120)
        with server.client() as client:
            response = client.get("/v1/usage", params={"group_by": "job", "since": "1h"})
        assert response.status_code == 200, response.text
        by_job = {g["key"]: g for g in response.json()["data"]}
        assert by_job[job["id"]]["energy_joules"] == pytest.approx(1750.5)
        assert by_job[silent["id"]]["energy_joules"] is None  # not measured: not zero
