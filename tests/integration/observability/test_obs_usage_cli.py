"""`trainyard usage` against a real server: table, JSON and CSV, and its errors."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import ApiServer, running_server
from tests.support.store_rows import admit, end, job_spec, start, submit
from trainyard.store import JobState, now_us

TRAINYARD = str(Path(sys.executable).with_name("trainyard"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ApiServer]:
    with running_server(
        home=tmp_path / "home",
        database_url=f"sqlite:///{tmp_path}/t.db",
        accelerator_prices={"NVIDIA-H100": 3.0},
    ) as running:
        engine = running.engine
        hour_ago = now_us() - 3_600_000_000
        job = submit(engine, job_spec("gpu-job", gpu=4, queue="default"), created_at=hour_ago)
        attempt = admit(engine, job, at=hour_ago, model="NVIDIA-H100")
        start(engine, job, attempt, at=hour_ago)
        end(engine, job, attempt, at=hour_ago + 1_800_000_000, to_state=JobState.SUCCEEDED)
        yield running


def _usage(server: ApiServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRAINYARD_URL": server.url, "TRAINYARD_TOKEN": server.admin_token}
    return subprocess.run(
        [TRAINYARD, "usage", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_usage_table_shows_gpu_hours_per_queue(server: ApiServer) -> None:
    result = _usage(server)
    assert result.returncode == 0, result.stderr
    assert "GPU-HOURS" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.strip().startswith("default"))
    assert "2.00" in row  # 4 GPUs x 0.5 h
    assert "6.00" in row  # x 3.0 per GPU-hour


def test_usage_json_and_csv(server: ApiServer) -> None:
    data = json.loads(_usage(server, "-g", "model", "-o", "json").stdout)
    assert [(g["key"], g["gpu_hours"]) for g in data["data"]] == [("NVIDIA-H100", 2.0)]
    rows = list(csv.DictReader(io.StringIO(_usage(server, "-o", "csv", "--since", "7d").stdout)))
    assert rows[0]["queue"] == "default"
    assert float(rows[0]["gpu_hours"]) == pytest.approx(2.0)
    assert float(rows[0]["cost"]) == pytest.approx(6.0)


def test_usage_bad_since_is_one_error_line(server: ApiServer) -> None:
    result = _usage(server, "--since", "last tuesday")
    assert result.returncode == 1
    assert result.stderr.startswith("error: 422") and "since" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
