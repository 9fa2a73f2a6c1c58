"""Process helpers for the worker integration tests (torchrun jobs, the HTTP service).

A uniquely named module rather than conftest, so importing it can never pick up another
directory's conftest.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

PORT_RANGE = range(27000, 28000)
REPO_ROOT = Path(__file__).resolve().parents[3]


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def find_free_ports(count: int = 1) -> int:
    """The first of `count` consecutive free ports in the worker's test range 27000-27999."""
    offset = (os.getpid() * 7) % 900  # spread parallel sessions across the range
    for start in range(PORT_RANGE.start + offset, PORT_RANGE.stop - count):
        if all(_is_free(start + i) for i in range(count)):
            return start
    raise RuntimeError("no free port in 27000-27999")


def worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def torchrun_cmd(*args: str, nproc: int = 2) -> list[str]:
    """torchrun as an argument list; --standalone picks a free rendezvous port itself."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "trainyard.worker",
        "train",
        *args,
    ]


def run_torchrun(*args: str, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        torchrun_cmd(*args, nproc=nproc),
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_for(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    """Poll `condition` until it holds or the deadline passes (then fail saying `what`)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")
