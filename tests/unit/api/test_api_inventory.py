"""Node inventories: this machine, and Kubernetes nodes' allocatable."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from trainyard.api.inventory import LocalInventory, node_capacity_from_k8s
from trainyard.machine import Machine


def test_local_inventory_describes_this_machine_as_the_local_backend_does() -> None:
    (node,) = LocalInventory().nodes()
    assert node.cpu_millicores == len(os.sched_getaffinity(0)) * 1000
    assert node.memory_bytes == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    backends_node = Machine.detect().node()
    assert (node.name, node.gpu) == (backends_node.name, backends_node.gpus)


def test_local_inventory_gpus_come_from_nvidia_smi_with_the_device_plugins_label(
    tmp_path: Path,
) -> None:
    """There is no GPU here, so a stand-in nvidia-smi prints what the real one would
    (NVML is skipped); the model is spelled as on a cluster node, for `gpu_models`."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        '[ "$1" = "--query-gpu=index,name,uuid" ] && [ "$2" = "--format=csv,noheader" ] || exit 2\n'
        "echo '0, NVIDIA H100 80GB HBM3, GPU-a'\necho '1, NVIDIA H100 80GB HBM3, GPU-b'\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    (node,) = LocalInventory(nvml=False, nvidia_smi=str(fake)).nodes()
    assert (node.gpu, node.gpu_model) == (2, "NVIDIA-H100-80GB-HBM3")


def test_local_inventory_without_a_working_nvidia_smi_has_no_gpus(tmp_path: Path) -> None:
    failing = tmp_path / "nvidia-smi"
    failing.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    failing.chmod(failing.stat().st_mode | stat.S_IEXEC)
    for binary in (failing, tmp_path / "absent"):
        (node,) = LocalInventory(nvml=False, nvidia_smi=str(binary)).nodes()
        assert (node.gpu, node.gpu_model) == (0, None)


def test_kubernetes_node_allocatable_and_accelerator_labels() -> None:
    gpu_node = node_capacity_from_k8s(
        "gpu-1",
        {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        {"cpu": "95500m", "memory": "1000Gi", "nvidia.com/gpu": "8", "pods": "110"},
    )
    assert (gpu_node.cpu_millicores, gpu_node.memory_bytes) == (95500, 1000 * 2**30)
    assert (gpu_node.gpu, gpu_node.gpu_model, gpu_node.tpu) == (8, "NVIDIA-H100-80GB-HBM3", 0)
    tpu_node = node_capacity_from_k8s(
        "tpu-1",
        {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice"},
        {"cpu": "24", "memory": "48Gi", "google.com/tpu": "4"},
    )
    assert (tpu_node.tpu, tpu_node.tpu_type, tpu_node.gpu_model) == (
        4,
        "tpu-v5-lite-podslice",
        None,
    )
    unlabelled = node_capacity_from_k8s("x", {}, {"cpu": "1", "nvidia.com/gpu": "2"})
    assert unlabelled.gpu_model == "unknown" and unlabelled.memory_bytes == 0
