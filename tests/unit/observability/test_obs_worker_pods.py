"""Worker pods on Kubernetes are scrapeable: every local rank's metrics port is declared
under a name the chart's PodMonitor keeps, and the prometheus.io annotations name rank
0's port, for annotation-based scrape configs (issue 10, item 2)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from trainyard.operator.backend import GangLaunch, WorkerLaunch
from trainyard.operator.kubernetes.config import KubernetesConfig
from trainyard.operator.kubernetes.manifests import pod_manifest
from trainyard.operator.kubernetes.names import METRICS_PORT
from trainyard.worker.config import InferConfig, TrainConfig

VALUES = Path(__file__).resolve().parents[3] / "helm" / "trainyard" / "values.yaml"
JOB = "0123456789abcdef0123456789abcdef"


def _pod(spec: dict[str, Any], gpus: int = 0, env: dict[str, str] | None = None) -> dict:
    worker = WorkerLaunch(
        index=0,
        node="node-0",
        argv=("python", "-m", "trainyard.worker"),
        env=env or {},
        gpus=gpus,
        tpu_chips=0,
        cpu_millicores=1000,
        memory_bytes=2**30,
    )
    gang = GangLaunch(
        job_id=JOB,
        attempt=1,
        name="llm",
        queue="research",
        owner="alice",
        workers=(worker,),
        spec=spec,
    )
    return pod_manifest(gang, worker, config=KubernetesConfig(), service_uid=None, node_labels={})


def _ports(pod: dict) -> dict[str, int]:
    (container,) = pod["spec"]["containers"]
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def _env(pod: dict) -> dict[str, str]:
    (container,) = pod["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def _kept_by_the_pod_monitor(name: str) -> bool:
    """Prometheus's `keep` relabeling: the regex must match the whole port name."""
    pattern = yaml.safe_load(VALUES.read_text(encoding="utf-8"))["metrics"]["podMonitor"][
        "portNamePattern"
    ]
    return re.fullmatch(pattern, name) is not None


def test_the_port_is_the_worker_runtime_s_default() -> None:
    assert METRICS_PORT == TrainConfig.metrics_port == InferConfig.metrics_port


def test_a_training_worker_declares_one_metrics_port_per_local_rank() -> None:
    spec = {"kind": "training", "workload": {"builtin": "gpt"}}
    # a job's own env cannot move the runtime off the declared ports
    pod = _pod(spec, gpus=4, env={"TRAINYARD_METRICS_PORT": "1234"})
    ports = _ports(pod)
    metrics = {name: port for name, port in ports.items() if _kept_by_the_pod_monitor(name)}
    assert metrics == {f"metrics-{r}": METRICS_PORT + r for r in range(4)}
    assert set(ports) - set(metrics) == {"rendezvous"}  # never scraped
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    env = _env(pod)
    assert env["TRAINYARD_METRICS_PORT"] == str(METRICS_PORT)
    assert env["TRAINYARD_METRICS_ADDR"] == "0.0.0.0"  # reachable from outside the pod


def test_a_cpu_worker_has_one_rank() -> None:
    pod = _pod({"kind": "training", "workload": {"builtin": "cnn"}})
    assert {n for n in _ports(pod) if _kept_by_the_pod_monitor(n)} == {"metrics-0"}


def test_a_command_workload_declares_no_metrics_port() -> None:
    """The worker runtime is not there to serve them: a declared port would be a target
    that is always down."""
    pod = _pod({"kind": "training", "workload": {"command": ["sleep", "60"]}}, gpus=2)
    assert not any(_kept_by_the_pod_monitor(n) for n in _ports(pod))
    assert "prometheus.io/scrape" not in pod["metadata"]["annotations"]


def test_model_services_serve_metrics_beside_or_on_their_port() -> None:
    beside = _pod({"kind": "inference", "mode": "service", "port": 8000,
                   "workload": {"builtin": "gpt"}}, gpus=2)  # fmt: skip
    assert _ports(beside) == {"http": 8000, "metrics-0": METRICS_PORT}  # one process
    same = _pod({"kind": "inference", "mode": "service", "port": METRICS_PORT,
                 "workload": {"builtin": "gpt"}})  # fmt: skip
    assert _ports(same) == {"http": METRICS_PORT}  # /metrics is served on it
    assert same["metadata"]["annotations"]["prometheus.io/port"] == str(METRICS_PORT)
