"""`trainyard top`: a live terminal view of queues, running jobs and allocation.

Everything comes from the API (queues, cluster, running jobs, the workers' metrics
endpoints from /v1/metrics/targets); throughput and progress are read from each running
job's worker 0 endpoint directly, all at once and with a short timeout, so a worker that
does not answer shows "-" instead of stalling the view. Refreshes every `interval` seconds
until Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from trainyard.api.client import ApiError, TrainyardClient

SCRAPE_TIMEOUT_S = 0.5
RUNNING_LIMIT = 50
SCRAPE_THREADS = RUNNING_LIMIT  # every running job's worker 0 in one round


@dataclass(frozen=True, slots=True)
class WorkerSample:
    """What worker 0 of a job reported at its last step."""

    step: float | None = None
    samples_per_second: float | None = None


@dataclass(slots=True)
class Frame:
    """One refresh worth of data."""

    at: datetime
    queues: list[dict[str, Any]] = field(default_factory=list)
    cluster: dict[str, Any] = field(default_factory=dict)
    running: list[dict[str, Any]] = field(default_factory=list)
    samples: dict[str, WorkerSample] = field(default_factory=dict)
    error: str | None = None


def scrape_worker(address: str, *, timeout: float = SCRAPE_TIMEOUT_S) -> WorkerSample:
    """Step and samples/s from one worker's /metrics; empty when it does not answer."""
    try:
        text = httpx.get(f"http://{address}/metrics", timeout=timeout).text
    except httpx.HTTPError:
        return WorkerSample()
    values: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in ("trainyard_worker_step", "trainyard_worker_samples_per_second"):
                    values[sample.name] = sample.value
    except ValueError:  # not Prometheus text: not a worker of ours
        return WorkerSample()
    return WorkerSample(
        step=values.get("trainyard_worker_step"),
        samples_per_second=values.get("trainyard_worker_samples_per_second"),
    )


def fetch(client: TrainyardClient, scrape: Callable[[str], WorkerSample] = scrape_worker) -> Frame:
    """Read one frame from the API (and the running jobs' worker 0 metrics)."""
    frame = Frame(at=datetime.now().astimezone())
    try:
        frame.queues = client.queues()["data"]
        frame.cluster = client.cluster()
        frame.running = client.list_jobs(state=["RUNNING"], limit=RUNNING_LIMIT)["data"]
        targets = client.metrics_targets()
    except ApiError as exc:
        frame.error = str(exc)
        return frame
    first: dict[str, str] = {}
    for group in targets:
        labels = group.get("labels") or {}
        if labels.get("trainyard_worker") == "0" and group.get("targets"):
            first.setdefault(labels.get("trainyard_job_id", ""), group["targets"][0])
    running_ids = {job["id"] for job in frame.running}
    wanted = {job_id: address for job_id, address in first.items() if job_id in running_ids}
    if wanted:
        # All at once: one frame costs one scrape timeout however many workers hang,
        # so the view keeps its refresh interval with many running jobs.
        with ThreadPoolExecutor(max_workers=min(SCRAPE_THREADS, len(wanted))) as pool:
            samples = pool.map(scrape, wanted.values())
            frame.samples.update(zip(wanted, samples, strict=True))
    return frame


def _wait(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _steps_requested(job: Mapping[str, Any]) -> float | None:
    args = (job.get("workload") or {}).get("args") or {}
    steps = args.get("steps")
    return float(steps) if isinstance(steps, int | float) and steps > 0 else None


def _progress(job: Mapping[str, Any], sample: WorkerSample | None) -> str:
    if sample is None or sample.step is None:
        return "-"
    total = _steps_requested(job)
    if total is None:
        return f"step {sample.step:.0f}"
    return f"{sample.step:.0f}/{total:.0f} ({100 * min(1.0, sample.step / total):.0f}%)"


def _gpus(job: Mapping[str, Any]) -> str:
    resources = job.get("resources") or {}
    gpus = int(resources.get("gpu") or 0) * int(job.get("workers") or 1)
    return str(gpus) if gpus else "-"


def render(frame: Frame) -> RenderableType:
    """The frame as rich renderables: a header, queues, running jobs, allocation."""
    header = Text(f"trainyard top  {frame.at:%H:%M:%S}", style="bold")
    if frame.error:
        return Group(header, Text(f"error: {frame.error}", style="red"))
    queues = Table(title="Queues", header_style="bold", expand=True)
    for column in ("QUEUE", "PENDING", "ADMITTED", "RUNNING", "OLDEST WAIT"):
        queues.add_column(column)
    for q in frame.queues:
        queues.add_row(
            q["name"],
            str(q["pending"]),
            str(q["admitted"]),
            str(q["running"]),
            _wait(q.get("oldest_wait_seconds")),
        )
    jobs = Table(title=f"Running jobs ({len(frame.running)})", header_style="bold", expand=True)
    for column in ("NAME", "ID", "OWNER", "QUEUE", "WORKERS", "GPUS", "SAMPLES/S", "PROGRESS"):
        jobs.add_column(column)
    for job in frame.running:
        sample = frame.samples.get(job["id"])
        rate = sample.samples_per_second if sample else None
        jobs.add_row(
            job["name"],
            job["id"][:12],
            job["owner"],
            job["queue"],
            str(job.get("workers", 1)),
            _gpus(job),
            "-" if rate is None else f"{rate:.1f}",
            _progress(job, sample),
        )
    allocation = Table(title="Allocation", header_style="bold", expand=True)
    for column in ("RESOURCE", "ALLOCATED", "CAPACITY", "USED"):
        allocation.add_column(column)
    rows: list[tuple[str, float, float]] = [
        (f"{a['kind']} {a['model']}", a["allocated"], a["capacity"])
        for a in frame.cluster.get("accelerators", [])
    ]
    for r in frame.cluster.get("resources", []):
        if r["resource"] == "cpu":
            rows.append(("cpu (cores)", r["allocated"] / 1000, r["capacity"] / 1000))
        elif r["resource"] == "memory":
            rows.append(("memory (GiB)", r["allocated"] / 2**30, r["capacity"] / 2**30))
    for name, allocated, capacity in rows:
        share = f"{100 * allocated / capacity:.0f}%" if capacity else "-"
        allocation.add_row(name, f"{allocated:g}", f"{capacity:g}", share)
    return Group(header, queues, jobs, allocation)


def run_top(
    client: TrainyardClient,
    *,
    interval: float = 2.0,
    once: bool = False,
    console: Console | None = None,
) -> None:
    """Refresh the view every `interval` seconds until interrupted (or once)."""
    console = console or Console()
    if once:
        console.print(render(fetch(client)))
        return
    with Live(render(fetch(client)), console=console, screen=True, auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            live.update(render(fetch(client)), refresh=True)
