"""The worker image cannot be built here (no Docker engine), so test what it runs directly:
its entrypoint script, and the Dockerfile's security-relevant lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from worker_procs import REPO_ROOT, worker_env

IMAGE_DIR = REPO_ROOT / "worker-image"


def _entrypoint(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = worker_env()
    # `python` in the script must be this interpreter, as it is the image's python.
    full_env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), full_env["PATH"]])
    full_env.update(env)
    return subprocess.run(
        [str(IMAGE_DIR / "entrypoint.sh"), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_entrypoint_train_runs_torchrun_and_trains(tmp_path: Path) -> None:
    result = _entrypoint(
        "train", "--steps", "2", "--batch-size", "4", "--output-dir", str(tmp_path),
        "--metrics-port", "0", TRAINYARD_NPROC_PER_NODE="1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["backend"] == "gloo"  # torchrun set RANK etc.


def test_entrypoint_multi_node_requires_a_rendezvous_endpoint() -> None:
    result = _entrypoint("train", TRAINYARD_NNODES="2")
    assert result.returncode != 0
    assert "TRAINYARD_RDZV_ENDPOINT" in result.stderr


def test_entrypoint_passes_other_commands_through() -> None:
    result = _entrypoint("python", "-c", "print('hello from the image')")
    assert result.returncode == 0 and result.stdout.strip() == "hello from the image"


def test_dockerfile_uses_an_official_pytorch_runtime_base_and_a_non_root_user() -> None:
    text = (IMAGE_DIR / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base and re.fullmatch(r"pytorch/pytorch:[\d.]+-cuda[\d.]+-cudnn\d+-runtime", base[1])
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["/usr/local/bin/trainyard-worker"]' in text
    assert ".[worker]" in text
    ignore = (IMAGE_DIR / ".dockerignore").read_text().split()
    assert ".venv" in ignore and ".git" in ignore
