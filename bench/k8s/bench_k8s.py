"""Pods bound per second: Trainyard's Kubernetes backend beside kube-scheduler, same run.

Needs the test cluster up (hack/cluster/up.sh; the `bench` node profile for the issue's
figures) and KUBECONFIG pointing at it. Each phase runs in a namespace of its own and
deletes it afterwards:

- `trainyard`: N single-worker 1-GPU gangs (then M four-worker 8-GPU gangs) handed to
  `KubernetesBackend.launch_many` at once, as the loop does with the jobs it admits in
  one cycle: Service, unbound pods, Bindings, Events. Placement is first-fit on the free
  GPUs `nodes()` reports (the scheduling core's cost is measured in bench/scheduler).
- `kube-scheduler-default` / `kube-scheduler-fast`: the same N pods (same documents,
  `schedulerName: default-scheduler`, no Service) created with the same client
  concurrency, scheduled and bound by a kube-scheduler built by hack/cluster (started
  here on port 26261, stopped afterwards), once with its default client QPS (50, burst
  100) and once with QPS 2000 / burst 4000, i.e. no client-side limit, like ours.

For each phase: pods bound/s (from the first create to the last pod seen bound by a
watch), create -> Running p50/p99 (kwok starts a bound pod after its own 1-6 s delay
and 0-5 s jitter per stage, so Running includes those), the API calls our client made
per pod, and the CPU seconds kube-apiserver, etcd and this process used.

    KUBECONFIG=.cluster/kubeconfig .venv/bin/python bench/k8s/bench_k8s.py \
        --singles 40 --gangs 1            # default profile (48 GPUs)
    KUBECONFIG=.cluster/kubeconfig .venv/bin/python bench/k8s/bench_k8s.py \
        --singles 1000 --gangs 8          # bench profile (1,024 GPUs)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from trainyard.operator.backend import GangLaunch  # noqa: E402
from trainyard.operator.kubernetes import (  # noqa: E402
    RUNTIME,
    KubernetesBackend,
    KubernetesConfig,
    api_client,
)
from trainyard.operator.kubernetes.informer import WatchCache  # noqa: E402
from trainyard.operator.kubernetes.manifests import pod_manifest  # noqa: E402
from trainyard.operator.launch import build_workers  # noqa: E402

# The cluster's state directory (pid files, component kubeconfigs): next to $KUBECONFIG.
STATE = Path(os.environ["KUBECONFIG"]).parent if "KUBECONFIG" in os.environ else REPO / ".cluster"
SCHEDULER_PORT = 26261
DURATION = "3600"  # pods keep running until the phase deletes them
# kwok's simulated kubelet starts a bound pod after two stages of 1 s + 0-5 s jitter each
# (hack/cluster/kwok/stages.yaml). `--kubelet-delay none` sets both to zero through the
# stages' per-pod annotations, so "Running" measures the schedulers and the apiserver,
# not a made-up container start; `kwok` (the default) keeps the simulated delays.
NO_KUBELET_DELAY = {
    f"{stage}.stage.kwok.x-k8s.io/{knob}": "0s"
    for stage in (
        "pod-create",
        "pod-init-container-running",
        "pod-init-container-completed",
        "pod-ready",
    )
    for knob in ("delay", "jitter-delay")
}
EXTRA_ANNOTATIONS: dict[str, str] = {}


# --------------------------------------------------------------------------- measuring
def process_cpu(name: str) -> float:
    """CPU seconds (user + system) of cluster component `name`, from its pid file."""
    try:
        pid = (STATE / "pids" / f"{name}.pid").read_text().strip()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_cpu(pid: int) -> float:
    """CPU seconds of `pid` and, recursively, its live children (serve and its loop)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(pid_cpu(int(child)) for child in children)


SERVE_PIDS: list[int] = []  # the `trainyard serve` of the rest phases, while it runs


def cpu_snapshot() -> dict[str, float]:
    snapshot = {
        "kube-apiserver": process_cpu("kube-apiserver"),
        "etcd": process_cpu("etcd"),
        "kwok": process_cpu("kwok"),
        "bench+backend": time.process_time(),
    }
    if SERVE_PIDS:
        snapshot["serve+loop"] = sum(pid_cpu(pid) for pid in SERVE_PIDS)
    return snapshot


def count_calls(api: client.ApiClient) -> Counter[str]:
    """Count every request `api` makes, by method and resource."""
    calls: Counter[str] = Counter()
    original = api.call_api

    def counting(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        path = url.split("?", 1)[0]
        parts = path.split("/")
        if "binding" in parts:
            kind = "pods/binding"
        elif "pods" in parts:
            kind = "pods" if parts[-1] == "pods" else "pod"
        elif "services" in parts:
            kind = "services" if parts[-1] == "services" else "service"
        elif "events" in parts:
            kind = "events"
        else:
            kind = parts[-1]
        calls[f"{method} {kind}"] += 1
        return original(method, url, *args, **kwargs)

    api.call_api = counting  # type: ignore[method-assign]
    return calls


class Timeline:
    """When each pod of a namespace was first seen bound and first seen Running."""

    def __init__(self, core: client.CoreV1Api, namespace: str) -> None:
        self.bound: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self.ignore: set[str] = set()
        self._cache: WatchCache[dict[str, Any]] = WatchCache(
            name=f"timeline-{namespace}",
            list_call=lambda **kw: core.list_namespaced_pod(namespace, **kw),
            convert=lambda obj: {
                "node": (obj.get("spec") or {}).get("nodeName"),
                "phase": (obj.get("status") or {}).get("phase"),
            },
            on_change=self._changed,
        )

    def _changed(self, key: str, old: Any, new: Mapping[str, Any] | None) -> None:
        now = time.monotonic()
        if new is None or key in self.ignore:
            return
        if new["node"]:
            self.bound.setdefault(key, now)
        if new["phase"] == "Running":
            self.running.setdefault(key, now)

    def start(self) -> None:
        self._cache.start()
        self._cache.wait_synced(60)

    def stop(self) -> None:
        self._cache.stop()


def wait_for(what: str, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summarize(
    phase: str,
    started: float,
    timeline: Timeline,
    pods: int,
    calls: Counter[str],
    cpu_before: Mapping[str, float],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    last_bound = max(timeline.bound.values())
    running = [t - started for t in timeline.running.values()]
    bound = [t - started for t in timeline.bound.values()]
    cpu_after = cpu_snapshot()
    return {
        "phase": phase,
        "pods": pods,
        "bound_per_s": round(pods / (last_bound - started), 1),
        "all_bound_s": round(last_bound - started, 2),
        "create_to_bound_p50_s": round(percentile(bound, 50), 2),
        "create_to_bound_p99_s": round(percentile(bound, 99), 2),
        "create_to_running_p50_s": round(percentile(running, 50), 2),
        "create_to_running_p99_s": round(percentile(running, 99), 2),
        "client_calls_per_pod": {k: round(v / pods, 2) for k, v in sorted(calls.items())},
        "cpu_s": {k: round(cpu_after[k] - cpu_before.get(k, 0.0), 2) for k in cpu_after},
        **(extra or {}),
    }


# --------------------------------------------------------------------------- namespaces
@contextmanager
def fresh_namespace(core: client.CoreV1Api, prefix: str) -> Iterator[str]:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})

    def has_default_sa() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
        except client.ApiException:
            return False
        return True

    wait_for("the namespace's default ServiceAccount", has_default_sa, 60)
    try:
        yield name
    finally:
        core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
        core.delete_namespace(name, grace_period_seconds=0)

        def gone() -> bool:
            try:
                core.read_namespace(name)
            except client.ApiException as exc:
                return exc.status == 404
            return False

        wait_for(f"namespace {name} to be deleted", gone, 300)


# --------------------------------------------------------------------------- placement
def free_gpus(backend: KubernetesBackend) -> dict[str, int]:
    return {
        n.name: n.gpus - n.used_gpus for n in backend.nodes() if n.ready and n.gpus and not n.taints
    }


def first_fit(free: dict[str, int], workers: int, gpus: int) -> list[str] | None:
    """Nodes for a gang of `workers` x `gpus`, taking them out of `free`; None if none."""
    chosen: list[str] = []
    trial = dict(free)
    for _ in range(workers):
        node = next((n for n, f in sorted(trial.items()) if f >= gpus), None)
        if node is None:
            return None
        trial[node] -= gpus
        chosen.append(node)
    free.update(trial)
    return chosen


def planned_gangs(
    backend: KubernetesBackend, count: int, workers: int, gpus: int
) -> list[GangLaunch]:
    """Up to `count` gangs of `workers` x `gpus`, first fit on the free GPUs (fewer when full).

    Every phase places the same way, so the phases differ only in who binds the pods.
    """
    free = free_gpus(backend)
    gangs = []
    for _ in range(count):
        nodes = first_fit(free, workers, gpus)
        if nodes is None:
            break
        gangs.append(gang_for(backend, nodes, gpus))
    return gangs


def gang_for(backend: KubernetesBackend, nodes: Sequence[str], gpus: int) -> GangLaunch:
    job_id = uuid.uuid4().hex
    spec = {
        "workers": len(nodes),
        "resources": {"cpu": "1", "memory": "4Gi", "gpu": gpus},
        "workload": {"builtin": "gpt", "args": {"steps": 10}},
    }
    workers = build_workers(
        job_id=job_id,
        name="bench",
        kind="training",
        spec=spec,
        attempt=1,
        placement=dict(enumerate(nodes)),
        rendezvous=backend.rendezvous(job_id, 1),
        output_dir=backend.output_dir(job_id),
        runtime=RUNTIME,
    )
    return GangLaunch(
        job_id=job_id,
        attempt=1,
        name="bench",
        queue="default",
        owner="bench",
        workers=workers,
        annotations={"sim.trainyard.io/duration": DURATION, **EXTRA_ANNOTATIONS},
        spec=spec,
    )


# --------------------------------------------------------------------------- phases
def trainyard_phase(
    kubeconfig: Path,
    core: client.CoreV1Api,
    label: str,
    count: int,
    workers: int,
    gpus: int,
    concurrency: int,
) -> dict[str, Any]:
    with fresh_namespace(core, "bench-ty") as namespace:
        api = api_client(kubeconfig, pool_size=concurrency + 8)
        backend = KubernetesBackend(
            api, KubernetesConfig(namespace=namespace, launch_concurrency=concurrency)
        )
        backend.start(lambda: None)
        timeline = Timeline(core, namespace)
        try:
            backend.wait_synced(60)
            timeline.start()
            gangs = planned_gangs(backend, count, workers, gpus)
            pods = sum(len(g.workers) for g in gangs)
            if len(gangs) < count:
                print(f"{label}: only {len(gangs)} of {count} gangs fit", file=sys.stderr)
            calls = count_calls(api)
            cpu = cpu_snapshot()
            started = time.monotonic()
            errors = [e for e in backend.launch_many(gangs) if e is not None]
            launched = time.monotonic() - started
            if errors:
                raise RuntimeError(f"{len(errors)} launches failed, e.g. {errors[0].reason}")
            wait_for("every pod bound", lambda: len(timeline.bound) >= pods, 600)
            wait_for("every pod Running", lambda: len(timeline.running) >= pods, 600)
            backend.events.flush(120)
            return summarize(
                label,
                started,
                timeline,
                pods,
                calls,
                cpu,
                {
                    "gangs": len(gangs),
                    "launch_many_s": round(launched, 2),
                    "events_posted": backend.events.posted,
                    "events_dropped": backend.events.dropped,
                },
            )
        finally:
            timeline.stop()
            backend.close()


@contextmanager
def kube_scheduler(qps: int, burst: int) -> Iterator[subprocess.Popen[bytes]]:
    """A kube-scheduler of hack/cluster's build with this client QPS; stopped after."""
    versions = (REPO / "hack" / "cluster" / "versions.env").read_text()
    version = next(
        line.split("=", 1)[1] for line in versions.splitlines() if line.startswith("K8S_VERSION=")
    )
    cache = Path(os.environ.get("TRAINYARD_CACHE_DIR", Path.home() / ".cache" / "trainyard"))
    binary = cache / "k8s" / version / "bin" / "kube-scheduler"
    kubeconfig = STATE / "kubeconfigs" / "kube-scheduler"
    with tempfile.TemporaryDirectory(prefix="bench-kube-scheduler-") as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(
            "apiVersion: kubescheduler.config.k8s.io/v1\n"
            "kind: KubeSchedulerConfiguration\n"
            f"clientConnection: {{kubeconfig: {kubeconfig}, qps: {qps}, burst: {burst}}}\n"
            "leaderElection: {leaderElect: false}\n"
        )
        process = subprocess.Popen(
            [
                str(binary),
                f"--config={config}",
                "--bind-address=127.0.0.1",
                f"--secure-port={SCHEDULER_PORT}",
                f"--cert-dir={tmp}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(Path(tmp) / "log", "wb"),  # noqa: SIM115
        )
        http = urllib3.PoolManager(cert_reqs="CERT_NONE")
        urllib3.disable_warnings()

        def healthy() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"kube-scheduler exited: {(Path(tmp) / 'log').read_text()}")
            try:
                reply = http.request(
                    "GET", f"https://127.0.0.1:{SCHEDULER_PORT}/healthz", timeout=2
                )
            except urllib3.exceptions.HTTPError:
                return False
            return reply.status == 200

        try:
            wait_for("kube-scheduler /healthz", healthy, 120)
            yield process
        finally:
            process.terminate()
            process.wait(30)


def kube_scheduler_phase(
    kubeconfig: Path,
    core: client.CoreV1Api,
    label: str,
    count: int,
    concurrency: int,
    qps: int,
    burst: int,
) -> dict[str, Any]:
    with fresh_namespace(core, "bench-ks") as namespace, kube_scheduler(qps, burst):
        api = api_client(kubeconfig, pool_size=concurrency + 8)
        creator = client.CoreV1Api(api)
        backend = KubernetesBackend(api, KubernetesConfig(namespace=namespace))
        backend.start(lambda: None)
        timeline = Timeline(core, namespace)
        try:
            backend.wait_synced(60)
            timeline.start()
            bodies = []
            for gang in planned_gangs(backend, count, 1, 1):
                body = pod_manifest(
                    gang, gang.workers[0], config=backend.config, service_uid="-", node_labels={}
                )
                del body["metadata"]["ownerReferences"]
                body["spec"]["schedulerName"] = "default-scheduler"
                bodies.append(body)
            calls = count_calls(api)
            cpu = cpu_snapshot()
            started = time.monotonic()
            with ThreadPoolExecutor(concurrency) as pool:
                list(
                    pool.map(
                        lambda body: creator.create_namespaced_pod(
                            namespace, body, _preload_content=False
                        ),
                        bodies,
                    )
                )
            created = time.monotonic() - started
            wait_for("every pod bound", lambda: len(timeline.bound) >= len(bodies), 600)
            wait_for("every pod Running", lambda: len(timeline.running) >= len(bodies), 600)
            return summarize(
                label,
                started,
                timeline,
                len(bodies),
                calls,
                cpu,
                {"qps": qps, "burst": burst, "create_all_s": round(created, 2)},
            )
        finally:
            timeline.stop()
            backend.close()


@contextmanager
def trainyard_serve(kubeconfig: Path, namespace: str, home: Path) -> Iterator[tuple[str, str]]:
    """`trainyard serve --backend kubernetes` as a user runs it; yields (url, token)."""
    import socket

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env.update(TRAINYARD_HOME=str(home), PYTHONPATH=str(REPO))
    log = open(home.parent / "serve.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "trainyard"),
            "serve",
            "--port",
            str(port),
            "--backend",
            "kubernetes",
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            namespace,
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError((home.parent / "serve.log").read_text()[-3000:])
        try:
            healthy = httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False
        return healthy and (home / "admin-token").exists()

    try:
        wait_for("trainyard serve", up, 120)
        SERVE_PIDS.append(process.pid)
        yield url, (home / "admin-token").read_text().strip()
    finally:
        SERVE_PIDS.clear()
        process.terminate()
        process.wait(60)
        log.close()
        keep = os.environ.get("BENCH_KEEP_SERVE_LOG")
        if keep:
            Path(keep).write_bytes((home.parent / "serve.log").read_bytes())


def rest_phase(
    kubeconfig: Path,
    core: client.CoreV1Api,
    label: str,
    count: int,
    workers: int,
    gpus: int,
    concurrency: int,
    duration: str,
) -> dict[str, Any]:
    """Jobs submitted over REST to `trainyard serve --backend kubernetes` (the whole
    product: API, store, loop, core, backend), all at once from `concurrency` clients."""
    import httpx

    with fresh_namespace(core, "bench-rest") as namespace, tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        timeline = Timeline(core, namespace)
        timeline.start()
        cpu = cpu_snapshot()
        try:
            with trainyard_serve(kubeconfig, namespace, home) as (url, token):
                job = {
                    "name": "bench",
                    "workers": workers,
                    "resources": {"cpu": "1", "memory": "4Gi", "gpu": gpus},
                    "workload": {"builtin": "gpt", "args": {"steps": 10}},
                    "annotations": {"sim.trainyard.io/duration": duration, **EXTRA_ANNOTATIONS},
                }
                submitted: dict[str, float] = {}
                headers = {"Authorization": f"Bearer {token}"}
                with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
                    # Warm up: the loop process has started, leads and has synced its
                    # caches once a first job's pod is bound (not part of the figures).
                    warm = http.post(
                        "/v1/jobs",
                        json={
                            **job,
                            "workers": 1,
                            "resources": {"cpu": "1", "memory": "1Gi", "gpu": 1},
                            "annotations": {"sim.trainyard.io/duration": "1"},
                        },
                    )
                    warm.raise_for_status()
                    warm_pod = f"{namespace}/{warm.json()['id']}-worker-0"
                    wait_for("the warm-up job's pod", lambda: warm_pod in timeline.bound, 180)
                    timeline.bound.clear()
                    timeline.running.clear()
                    timeline.ignore.add(warm_pod)
                    cpu = cpu_snapshot()  # from here on: the measured jobs only

                    def submit(_: int) -> None:
                        at = time.monotonic()
                        reply = http.post("/v1/jobs", json=job)
                        reply.raise_for_status()
                        submitted[reply.json()["id"]] = at

                    started = time.monotonic()
                    with ThreadPoolExecutor(concurrency) as pool:
                        list(pool.map(submit, range(count)))
                    submit_s = time.monotonic() - started
                pods = count * workers
                wait_for("every pod bound", lambda: len(timeline.bound) >= pods, 900)
                wait_for("every pod Running", lambda: len(timeline.running) >= pods, 900)
                per_job: dict[str, list[float]] = {}
                for key, at in timeline.running.items():
                    job_id = key.split("/", 1)[1].split("-worker-", 1)[0]
                    per_job.setdefault(job_id, []).append(at)
                all_running = [max(per_job[j]) - submitted[j] for j in submitted]
                result = summarize(label, started, timeline, pods, Counter(), cpu)
                result.pop("client_calls_per_pod")
                result.update(
                    jobs=count,
                    submit_all_s=round(submit_s, 2),
                    submit_to_all_running_p50_s=round(percentile(all_running, 50), 2),
                    submit_to_all_running_p99_s=round(percentile(all_running, 99), 2),
                )
                return result
        finally:
            timeline.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kubeconfig", type=Path, default=Path(os.environ.get("KUBECONFIG", STATE / "kubeconfig"))
    )
    parser.add_argument("--singles", type=int, default=1000)
    parser.add_argument("--gangs", type=int, default=8, help="four-worker 8-GPU gangs")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--phases", default="trainyard,kube-scheduler-default,kube-scheduler-fast,trainyard-gangs"
    )
    parser.add_argument(
        "--kubelet-delay",
        choices=("kwok", "none"),
        default="kwok",
        help="kwok: its simulated 2-12 s container start; none: zero (see NO_KUBELET_DELAY)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.kubelet_delay == "none":
        EXTRA_ANNOTATIONS.update(NO_KUBELET_DELAY)
    core = client.CoreV1Api(api_client(args.kubeconfig))
    profile = (STATE / "profile").read_text().strip() if (STATE / "profile").exists() else "?"
    results = []
    for phase in args.phases.split(","):
        if phase == "trainyard":
            result = trainyard_phase(
                args.kubeconfig, core, phase, args.singles, 1, 1, args.concurrency
            )
        elif phase == "trainyard-gangs":
            result = trainyard_phase(
                args.kubeconfig, core, phase, args.gangs, 4, 8, args.concurrency
            )
        elif phase == "rest":
            result = rest_phase(
                args.kubeconfig, core, phase, args.singles, 1, 1, args.concurrency, "3600"
            )
        elif phase == "rest-gangs":
            result = rest_phase(
                args.kubeconfig, core, phase, args.gangs, 4, 8, args.concurrency, "3600"
            )
        elif phase == "kube-scheduler-default":
            result = kube_scheduler_phase(
                args.kubeconfig, core, phase, args.singles, args.concurrency, 50, 100
            )
        elif phase == "kube-scheduler-fast":
            result = kube_scheduler_phase(
                args.kubeconfig, core, phase, args.singles, args.concurrency, 2000, 4000
            )
        else:
            raise SystemExit(f"unknown phase {phase}")
        result["profile"] = profile
        result["kubelet_delay"] = args.kubelet_delay
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(
        "\n".join(
            f"{r['phase']:24} {r['pods']:5} pods  {r['bound_per_s']:7.1f} bound/s  "
            f"running p50 {r['create_to_running_p50_s']:.2f}s "
            f"p99 {r['create_to_running_p99_s']:.2f}s"
            f"  apiserver CPU {r['cpu_s']['kube-apiserver']:.1f}s"
            for r in results
        )
    )


if __name__ == "__main__":
    main()
