"""Machine detection: nvidia-smi parsing, the device plugin's label, overrides.

GPUs cannot run here: nvidia-smi is a fake script printing what a real one prints, and
NVML is skipped (`nvml=False`); what is tested is everything around the query.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from trainyard.machine import (
    Gpu,
    Machine,
    detect_gpus,
    gpus_from_nvidia_smi,
    product_label,
    visible_subset,
)
from trainyard.scheduler.types import GPU_PRODUCT_LABEL


def _fake_nvidia_smi(tmp_path: Path, output: str, code: int = 0) -> str:
    script = tmp_path / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3"),
        ("NVIDIA A100-SXM4-40GB", "NVIDIA-A100-SXM4-40GB"),
        ("  Tesla  T4 ", "Tesla-T4"),
    ],
)
def test_product_label_is_the_device_plugins_spelling(name: str, label: str) -> None:
    assert product_label(name) == label


def test_nvidia_smi_output_is_parsed_into_indexed_gpus(tmp_path: Path) -> None:
    binary = _fake_nvidia_smi(
        tmp_path, "0, NVIDIA H100 80GB HBM3, GPU-aaa\n1, NVIDIA H100 80GB HBM3, GPU-bbb\n\n"
    )
    assert gpus_from_nvidia_smi(binary) == [
        Gpu(0, "NVIDIA H100 80GB HBM3", "GPU-aaa"),
        Gpu(1, "NVIDIA H100 80GB HBM3", "GPU-bbb"),
    ]


def test_a_failing_or_missing_nvidia_smi_means_no_gpus(tmp_path: Path) -> None:
    assert gpus_from_nvidia_smi(_fake_nvidia_smi(tmp_path, "NVIDIA-SMI has failed", code=9)) == []
    assert gpus_from_nvidia_smi(str(tmp_path / "absent")) == []


def test_cuda_visible_devices_of_the_server_limits_the_gpus(tmp_path: Path) -> None:
    gpus = [Gpu(i, "X", f"GPU-{i}") for i in range(4)]
    assert [g.index for g in visible_subset(gpus, "1,GPU-3")] == [1, 3]
    assert visible_subset(gpus, "") == []
    assert visible_subset(gpus, None) == gpus
    binary = _fake_nvidia_smi(tmp_path, "0, A, GPU-0\n1, A, GPU-1")
    found = detect_gpus(nvml=False, nvidia_smi=binary, environ={"CUDA_VISIBLE_DEVICES": "1"})
    assert [g.index for g in found] == [1]


def test_the_node_has_affinity_cpus_memory_and_the_gpu_label(tmp_path: Path) -> None:
    binary = _fake_nvidia_smi(
        tmp_path, "0, NVIDIA H100 80GB HBM3, GPU-a\n1, NVIDIA H100 80GB HBM3, GPU-b"
    )
    node = Machine.detect(name="box", nvml=False, nvidia_smi=binary).node()
    assert node.name == "box" and node.gpus == 2
    assert node.labels[GPU_PRODUCT_LABEL] == "NVIDIA-H100-80GB-HBM3"
    assert node.cpu_millicores == len(os.sched_getaffinity(0)) * 1000
    assert node.memory_bytes == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_settings_override_what_is_detected(tmp_path: Path) -> None:
    binary = _fake_nvidia_smi(tmp_path, "0, NVIDIA L4, GPU-a")
    machine = Machine.detect(
        cpu_millicores=64000, memory_bytes=2**30, gpu_count=3, nvml=False, nvidia_smi=binary
    )
    assert (machine.cpu_millicores, machine.memory_bytes) == (64000, 2**30)
    assert machine.gpu_indices == (0, 1, 2)
    assert Machine.detect(gpu_count=0, nvml=False, nvidia_smi=binary).node().labels == {}
