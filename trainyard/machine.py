"""This machine as one scheduler node: its CPUs, memory and NVIDIA GPUs.

Detected once, here, for both sides that need it: the local backend (which hands the
GPUs out to workers) and the API's local node inventory (GET /v1/cluster before the
loop has published its view). Neither imports the other; both import this.

GPUs are found through NVML (the `nvidia-ml-py` package of the `worker` extra, imported
only here and only when asked) or, without it, `nvidia-smi --query-gpu`. Both number
GPUs in PCI bus order; workers get `CUDA_DEVICE_ORDER=PCI_BUS_ID` so that CUDA's
numbering (otherwise "fastest first") agrees with the indices assigned here.

A `CUDA_VISIBLE_DEVICES` in the server's own environment limits the GPUs it hands out
(by index or UUID), as an administrator would expect.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from trainyard.scheduler.types import GPU_PRODUCT_LABEL, Node

log = logging.getLogger(__name__)

NVIDIA_SMI_TIMEOUT_SECONDS = 20


@dataclass(frozen=True, slots=True)
class Gpu:
    """One GPU: its NVML/nvidia-smi index, model name and UUID."""

    index: int
    name: str
    uuid: str = ""


def product_label(name: str) -> str:
    """A model name as the NVIDIA device plugin labels it ("NVIDIA H100 80GB HBM3" ->
    "NVIDIA-H100-80GB-HBM3"), so job `gpu_models` match local and cluster nodes alike."""
    return "-".join(name.split())


def gpus_from_nvml() -> list[Gpu] | None:
    """The GPUs NVML reports; None when NVML is not installed or finds no driver."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            gpus.append(
                Gpu(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                )
            )
        return gpus
    except pynvml.NVMLError as exc:
        log.warning("NVML failed while listing GPUs (%s); trying nvidia-smi", exc)
        return None
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def gpus_from_nvidia_smi(binary: str | None = None) -> list[Gpu]:
    """The GPUs `nvidia-smi` lists; empty without it or when it fails."""
    binary = binary or shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        result = subprocess.run(
            [binary, "--query-gpu=index,name,uuid", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("nvidia-smi could not run (%s): no GPUs", exc)
        return []
    if result.returncode != 0:
        log.warning("nvidia-smi exited %d: no GPUs", result.returncode)
        return []
    gpus = []
    for line in result.stdout.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        gpus.append(
            Gpu(index=int(parts[0]), name=parts[1], uuid=parts[2] if len(parts) > 2 else "")
        )
    return gpus


def visible_subset(gpus: list[Gpu], visible: str | None) -> list[Gpu]:
    """`gpus` limited to a CUDA_VISIBLE_DEVICES list (indices or UUIDs); all when unset."""
    if visible is None:
        return gpus
    wanted = [item.strip() for item in visible.split(",") if item.strip()]
    return [gpu for gpu in gpus if str(gpu.index) in wanted or (gpu.uuid and gpu.uuid in wanted)]


def detect_gpus(
    *, nvml: bool = True, nvidia_smi: str | None = None, environ: Mapping[str, str] | None = None
) -> list[Gpu]:
    """This machine's NVIDIA GPUs: NVML first (when `nvml`), else nvidia-smi."""
    environ = os.environ if environ is None else environ
    gpus = gpus_from_nvml() if nvml else None
    if gpus is None:
        gpus = gpus_from_nvidia_smi(nvidia_smi)
    return visible_subset(
        sorted(gpus, key=lambda gpu: gpu.index), environ.get("CUDA_VISIBLE_DEVICES")
    )


def detect_cpu_millicores() -> int:
    """The CPUs this process may run on (its affinity), in millicores."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(cpus or 1, 1) * 1000


def detect_memory_bytes() -> int:
    """Physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True, slots=True)
class Machine:
    """What this machine offers to jobs; `gpus` are the indices workers may be given."""

    name: str
    cpu_millicores: int
    memory_bytes: int
    gpus: tuple[Gpu, ...] = ()

    @classmethod
    def detect(
        cls,
        *,
        name: str | None = None,
        cpu_millicores: int | None = None,
        memory_bytes: int | None = None,
        gpu_count: int | None = None,
        nvml: bool = True,
        nvidia_smi: str | None = None,
    ) -> Machine:
        """Detect what is not given. `gpu_count` overrides the number of GPUs (the first
        `gpu_count` detected ones, or unnamed ones when fewer were detected)."""
        gpus = detect_gpus(nvml=nvml, nvidia_smi=nvidia_smi) if gpu_count != 0 else []
        if gpu_count is not None:
            gpus = gpus[:gpu_count]
            first_free = max((gpu.index for gpu in gpus), default=-1) + 1
            missing = gpu_count - len(gpus)
            gpus += [Gpu(index=first_free + n, name="unknown") for n in range(missing)]
        return cls(
            name=name or socket.gethostname(),
            cpu_millicores=detect_cpu_millicores() if cpu_millicores is None else cpu_millicores,
            memory_bytes=detect_memory_bytes() if memory_bytes is None else memory_bytes,
            gpus=tuple(gpus),
        )

    @property
    def gpu_indices(self) -> tuple[int, ...]:
        return tuple(gpu.index for gpu in self.gpus)

    def node(self) -> Node:
        """The scheduler's view: one node, GPU model in the device plugin's label."""
        models = sorted({product_label(gpu.name) for gpu in self.gpus})
        # Mixed models on one host are rare; name them all if it happens.
        labels = {GPU_PRODUCT_LABEL: "+".join(models)} if models else {}
        return Node(
            name=self.name,
            cpu_millicores=self.cpu_millicores,
            memory_bytes=self.memory_bytes,
            gpus=len(self.gpus),
            labels=labels,
        )
