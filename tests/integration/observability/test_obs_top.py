"""`trainyard top` in a real terminal: tmux runs it against a real server, capture-pane
reads the screen. The running job's worker endpoint is the worker runtime's own
exporter (WorkerMetrics) serving on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import ApiServer, running_server, wait_for
from tests.support.store_rows import admit, job_spec, start, submit
from trainyard.api.inventory import NodeCapacity
from trainyard.store import now_us, write_transaction
from trainyard.store.telemetry import set_metrics_targets

TRAINYARD = str(Path(sys.executable).with_name("trainyard"))


class GpuInventory:
    """A CPU node and an 8-GPU node: this machine has no GPU, so the GPU node is
    described, not detected (the only stand-in in this module)."""

    def nodes(self) -> list[NodeCapacity]:
        return [
            NodeCapacity(name="node-a", cpu_millicores=8000, memory_bytes=32 * 2**30),
            NodeCapacity(name="gpu-1", cpu_millicores=32000, memory_bytes=256 * 2**30,
                         gpu=8, gpu_model="NVIDIA-H100"),
        ]  # fmt: skip


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ApiServer]:
    with running_server(
        home=tmp_path / "home", database_url=f"sqlite:///{tmp_path}/t.db", inventory=GpuInventory()
    ) as s:
        yield s


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    """A tmux on a private socket, killed afterwards (hack/tmux.sh installs tmux)."""
    binary = shutil.which("tmux")
    if binary is None:
        pytest.fail("tmux is not installed: run hack/tmux.sh")
    command = [binary, "-L", f"trainyard-top-{uuid.uuid4().hex[:8]}"]
    yield command
    subprocess.run([*command, "kill-server"], capture_output=True, check=False)


def _screen(tmux: list[str]) -> str:
    result = subprocess.run(
        [*tmux, "capture-pane", "-p", "-t", "top"], capture_output=True, text=True, check=False
    )
    return result.stdout


def test_top_shows_queues_running_jobs_and_allocation(
    server: ApiServer, tmux: list[str], tmp_path: Path
) -> None:
    from trainyard.worker.metrics import WorkerMetrics

    engine = server.engine
    for i in range(3):  # the oldest has waited 2 hours
        submit(engine, job_spec(f"waiting-{i}"), created_at=now_us() - 7_200_000_000 + i)
    running = submit(engine, job_spec("trainer-xyz", workers=1, gpu=2), owner="alice")
    attempt = admit(engine, running, at=1, node="gpu-1", model="NVIDIA-H100")
    start(engine, running, attempt, at=2)
    worker = WorkerMetrics("trainer-xyz", 0, queue="default")
    worker.step.set(4)
    worker.samples_per_second.set(123.5)
    port = _free_port()
    worker.serve(port, "127.0.0.1")
    try:
        with write_transaction(engine) as conn:
            set_metrics_targets(
                conn, job_id=running, attempt=attempt, targets={0: f"127.0.0.1:{port}"}
            )
        env = {
            "TRAINYARD_URL": server.url,
            "TRAINYARD_TOKEN": server.admin_token,
            "TRAINYARD_HOME": str(tmp_path / "client-home"),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            "TERM": "xterm-256color",
            # Under pytest the tmux server hands its panes COLUMNS=80/LINES=24, which rich
            # prefers to the pane's real size; state the size the session is created with.
            "COLUMNS": "160",
            "LINES": "50",
        }
        subprocess.run(
            [
                *tmux,
                "new-session",
                "-d",
                "-s",
                "top",
                "-x",
                "160",
                "-y",
                "50",
                *[arg for key, value in env.items() for arg in ("-e", f"{key}={value}")],
                TRAINYARD,
                "top",
                "--interval",
                "0.5",
            ],
            check=True,
        )
        try:
            wait_for(lambda: "trainer-xyz" in _screen(tmux), timeout=60, what="top's frame")
        except TimeoutError:
            print(_screen(tmux))
            raise
        screen = _screen(tmux)
        queue, pending, admitted, running_jobs, oldest = _queue_row(screen)
        assert [queue, pending, admitted, running_jobs] == ["default", "3", "0", "1"], screen
        assert oldest.startswith("2h0"), screen  # the oldest pending job's wait
        job_row = _row(screen, "trainer-xyz")
        assert job_row[5] == "2", screen  # GPUS: 1 worker x 2
        assert job_row[6] == "123.5" and job_row[7] == "4/5 (80%)", screen  # samples/s, progress
        # allocation per GPU model: 2 of the 8 H100s
        assert _row(screen, "gpu NVIDIA-H100") == ["gpu NVIDIA-H100", "2", "8", "25%"], screen
        assert _row(screen, "cpu (cores)")[2] == "40", screen

        submit(engine, job_spec("late"))  # the view refreshes by itself
        wait_for(
            lambda: _queue_row(_screen(tmux))[:2] == ["default", "4"],
            timeout=30,
            what="top to show 4 pending",
        )
    finally:
        worker.close()


def _queue_row(screen: str) -> list[str]:
    """The queues table's row (queue, pending, admitted, running, oldest wait)."""
    for line in screen.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == 5 and cells[0] == "default":
            return cells
    return []


def _row(screen: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first`."""
    for line in screen.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0] == first:
            return cells
    return []


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_one_frame_scrapes_every_running_job_at_once(server: ApiServer) -> None:
    """Workers that hang must not add up: the frame asks every running job's worker 0 at
    the same time. The scrape waits at a barrier that only all of them together pass
    (one at a time, the first would wait for the others and break it)."""
    from trainyard.api.client import TrainyardClient
    from trainyard.observability.top import WorkerSample, fetch

    engine = server.engine
    jobs = []
    for i in range(4):
        job = submit(engine, job_spec(f"hanging-{i}"))
        attempt = admit(engine, job, at=1)
        start(engine, job, attempt, at=2)
        with write_transaction(engine) as conn:
            set_metrics_targets(conn, job_id=job, attempt=attempt, targets={0: f"10.0.0.{i}:1"})
        jobs.append(job)
    barrier = threading.Barrier(len(jobs), timeout=30)

    def scrape(address: str) -> WorkerSample:
        barrier.wait()  # BrokenBarrierError unless all four are asked together
        return WorkerSample(step=float(address.split(".")[-1].split(":")[0]))

    with TrainyardClient(server.url, server.admin_token) as client:
        frame = fetch(client, scrape=scrape)
    assert frame.error is None
    assert {job_id: sample.step for job_id, sample in frame.samples.items()} == {
        job: float(i) for i, job in enumerate(jobs)
    }
