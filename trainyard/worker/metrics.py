"""Prometheus metrics every worker serves: `trainyard_worker_*`, labelled job, queue, rank.

Each worker process has its own registry and HTTP server (port = base + local rank), so
Prometheus scrapes every rank of a pod separately. The queue comes from TRAINYARD_QUEUE,
which the launch contract sets. GPU utilisation, memory and energy come from NVML when
`pynvml` (package nvidia-ml-py) is importable and a GPU is in use; otherwise those series
are simply absent rather than reported as zero.

Energy: NVML's total-energy counter (millijoules since the driver loaded) is read when
the GPU is first watched and at every scrape; the difference is this process's GPU
energy. At exit each rank writes it to `<output>/energy/attempt-<n>-rank-<r>.json`;
`trainyard.observability.energy.attempt_energy_joules` adds up an attempt's files (the
loop stores the sum in `job_attempts.energy_joules`). In a pod each rank also adds it to
the container's termination message (trainyard.worker.termination), from which the
Kubernetes backend sums the attempt's pods.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
from pathlib import Path
from typing import Any

import torch
from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server

from trainyard.worker.termination import report_energy

log = logging.getLogger(__name__)

LABELS = ("job", "queue", "rank")
QUEUE_ENV = "TRAINYARD_QUEUE"
ATTEMPT_ENV = "TRAINYARD_ATTEMPT"
_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak allocator memory on a GPU, else this process's peak resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class WorkerMetrics:
    """The worker's series, already bound to its (job, queue, rank) labels."""

    def __init__(
        self, job: str, rank: int, inference: bool = False, *, queue: str | None = None
    ) -> None:
        self.registry = CollectorRegistry()
        self._server: Any = None
        self._energy: Any = None
        self.rank = rank
        queue = os.environ.get(QUEUE_ENV, "") if queue is None else queue
        labels = {"job": job, "queue": queue, "rank": str(rank)}

        def gauge(name: str, doc: str) -> Any:
            return Gauge(name, doc, LABELS, registry=self.registry).labels(**labels)

        def histogram(name: str, doc: str) -> Any:
            return Histogram(
                name, doc, LABELS, registry=self.registry, buckets=_SECONDS_BUCKETS
            ).labels(**labels)

        self.step = gauge("trainyard_worker_step", "Optimizer steps completed")
        self.loss = gauge("trainyard_worker_loss", "Loss of the last step, mean over ranks")
        self.samples_per_second = gauge(
            "trainyard_worker_samples_per_second", "Global samples per second, last step"
        )
        self.tokens_per_second = gauge(
            "trainyard_worker_tokens_per_second", "Global tokens per second, last step (gpt)"
        )
        self.step_seconds = histogram(
            "trainyard_worker_step_duration_seconds", "Wall time of one optimizer step"
        )
        self.data_wait_seconds = histogram(
            "trainyard_worker_data_wait_seconds", "Time a step spent waiting for its batches"
        )
        self.peak_memory = gauge(
            "trainyard_worker_peak_memory_bytes", "Peak GPU allocator memory, or peak RSS on CPU"
        )
        self.mfu = gauge("trainyard_worker_mfu_ratio", "Model FLOPs utilisation estimate (gpt)")
        self.checkpoint_seconds = histogram(
            "trainyard_worker_checkpoint_duration_seconds", "Time to write one checkpoint"
        )
        self._labels = labels
        if inference:
            self._add_inference_series()

    def _add_inference_series(self) -> None:
        """Request latency and batch fill: the two numbers that tune dynamic batching."""
        labels = self._labels
        self.inference_latency = Histogram(
            "trainyard_worker_inference_latency_seconds",
            "Inference request latency",
            LABELS,
            registry=self.registry,
            buckets=_SECONDS_BUCKETS,
        ).labels(**labels)
        # What the autoscaler reads (operator/autoscale.py): requests inside /predict now.
        self.inference_inflight = Gauge(
            "trainyard_worker_inference_inflight",
            "Inference requests being answered",
            LABELS,
            registry=self.registry,
        ).labels(**labels)
        self.inference_batch_size = Histogram(
            "trainyard_worker_inference_batch_size",
            "Records per inference batch",
            LABELS,
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        ).labels(**labels)

    def watch_gpu(self, device: torch.device) -> bool:
        """Export NVML utilisation and memory for `device`; False when NVML is unavailable."""
        if device.type != "cuda":
            return False
        try:
            import pynvml  # optional: nvidia-ml-py

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        except Exception as exc:  # no library, no driver, or no such device
            log.info("NVML unavailable, GPU utilisation not exported: %s", exc)
            return False
        util = Gauge(
            "trainyard_worker_gpu_utilization_ratio",
            "GPU utilisation (NVML)",
            LABELS,
            registry=self.registry,
        ).labels(**self._labels)
        util.set_function(lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
        mem = Gauge(
            "trainyard_worker_gpu_memory_used_bytes",
            "GPU memory in use (NVML)",
            LABELS,
            registry=self.registry,
        ).labels(**self._labels)
        mem.set_function(lambda: float(pynvml.nvmlDeviceGetMemoryInfo(handle).used))
        self._watch_energy(pynvml, handle)
        return True

    def _watch_energy(self, pynvml: Any, handle: Any) -> None:
        """Export the GPU energy used since now (GPUs older than Volta have no counter)."""
        try:
            meter = EnergyMeter(pynvml, handle)
        except Exception as exc:
            log.info("NVML energy counter unavailable: %s", exc)
            return
        self._energy = meter
        energy = Gauge(
            "trainyard_worker_gpu_energy_joules",
            "GPU energy used by this process so far (NVML)",
            LABELS,
            registry=self.registry,
        ).labels(**self._labels)
        energy.set_function(meter.joules)

    def energy_joules(self) -> float | None:
        """GPU energy used so far, or None where NVML cannot measure it."""
        return None if self._energy is None else self._energy.joules()

    def write_energy(self, output_dir: Path, attempt: int | None = None) -> Path | None:
        """Record this rank's GPU energy for the attempt (nothing without a measurement):
        a file in the output directory, and, in a pod, a line in its termination message
        (the only place a Kubernetes control plane can read it from)."""
        joules = self.energy_joules()
        if joules is None:
            return None
        report_energy(self.rank, joules)
        if attempt is None:
            attempt = int(os.environ.get(ATTEMPT_ENV, "0") or 0)
        path = Path(output_dir) / "energy" / f"attempt-{attempt}-rank-{self.rank}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rank": self.rank, "joules": joules}), encoding="utf-8")
        os.replace(tmp, path)
        return path

    def serve(self, port: int, addr: str) -> None:
        """Start the scrape endpoint; port 0 means metrics are not served."""
        if port <= 0:
            return
        try:
            self._server, _ = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:  # losing metrics must not cost the job its training
            log.error("metrics NOT served: cannot listen on %s:%d: %s", addr, port, exc)
            return
        log.info("metrics on http://%s:%d/metrics", addr, port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class EnergyMeter:
    """GPU energy since construction, from NVML's cumulative counter (millijoules)."""

    def __init__(self, pynvml: Any, handle: Any) -> None:
        self._read = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        self._start = int(self._read())
        self._last = 0.0

    def joules(self) -> float:
        with contextlib.suppress(Exception):  # a transient NVML error: the last reading
            self._last = max(self._last, (int(self._read()) - self._start) / 1000.0)
        return self._last
