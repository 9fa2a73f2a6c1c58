"""Rolling updates and autoscaling of a model service on the real test cluster.

Real apiserver, controller-manager (its EndpointSlice controller decides what the
Service routes to), real loop and backend, real store (SQLite in tmp). kwok runs no
containers, so two things are simulated, and each test says which:

- readiness: kwok's pod-ready stage sets a pod's Ready condition (standing in for the
  kubelet's readiness probe on /healthz) a fixed delay after the pod starts;
- in the autoscaling test, the replicas' HTTP: each pod's replica is the worker's own
  service app (trainyard.worker.inference.service.create_app: real /predict, /healthz
  and /metrics with the real in-flight gauge, a one-layer model) run by this test on a
  loopback address, and the test writes that address into the pod's status.podIP as
  a kubelet's network plugin would. The loop then scrapes it by pod IP like any pod.

The order of a rollout is asserted from the pod watch's event order (one stream,
resourceVersion order), never from sleeps.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import urllib3
from kubernetes import client, watch

from tests.integration.cluster.simcluster import KWOK_IMMEDIATE, MERGE_PATCH, Cluster
from tests.integration.operator.k8s_support import running_backend
from tests.support.servers import wait_for
from trainyard.api.routes.updates import merged_document
from trainyard.api.schemas import JobCreate
from trainyard.operator.kubernetes.names import JOB_ID_LABEL, REVISION_LABEL, service_name
from trainyard.operator.kubernetes.observe import WORKER_METRICS_PORT
from trainyard.operator.loop import SchedulingLoop
from trainyard.store import (
    Submission,
    get_job,
    make_engine,
    migrate,
    read_transaction,
    write_transaction,
)
from trainyard.store.repository import list_events, submit_jobs
from trainyard.store.revisions import replace_spec
from trainyard.store.states import JobState
from trainyard.store.telemetry import usage_rows

pytestmark = pytest.mark.cluster

READY_DELAY = {  # created and started at once; Ready (the simulated probe) 2 s later
    "pod-create.stage.kwok.x-k8s.io/delay": "0s",
    "pod-create.stage.kwok.x-k8s.io/jitter-delay": "0s",
    "pod-ready.stage.kwok.x-k8s.io/delay": "2s",
    # kwok's jitter is the upper bound of the random delay: equal, so exactly 2 s.
    "pod-ready.stage.kwok.x-k8s.io/jitter-delay": "2s",
    "pod-delete.stage.kwok.x-k8s.io/delay": "0s",
}


@dataclass(frozen=True)
class PodSeen:
    """One pod watch event, reduced."""

    kind: str  # ADDED / MODIFIED / DELETED
    name: str
    uid: str
    revision: str
    ready: bool
    deleting: bool
    ip: str
    node: str


class Recorder:
    """Watches one object kind in a namespace from a thread; keeps every event in order."""

    def __init__(self, list_call: Callable[..., Any], namespace: str, selector: str) -> None:
        self.events: list[Any] = []
        self._watch = watch.Watch()
        self._list_call, self._namespace, self._selector = list_call, namespace, selector
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()

    def _run(self) -> None:
        # The first events of a watch without resourceVersion are the current objects.
        self._started.set()
        with contextlib.suppress(urllib3.exceptions.HTTPError):  # closed by __exit__
            for event in self._watch.stream(
                self._list_call,
                self._namespace,
                label_selector=self._selector,
                timeout_seconds=600,
            ):
                self.events.append((event["type"], event["object"]))

    def __enter__(self) -> Recorder:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._watch.stop()


def _pod_seen(kind: str, pod: client.V1Pod) -> PodSeen:
    conditions = pod.status.conditions or [] if pod.status else []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    return PodSeen(
        kind=kind,
        name=pod.metadata.name,
        uid=pod.metadata.uid,
        revision=(pod.metadata.labels or {}).get(REVISION_LABEL, ""),
        ready=ready,
        deleting=pod.metadata.deletion_timestamp is not None,
        ip=(pod.status.pod_ip or "") if pod.status else "",
        node=pod.spec.node_name or "",
    )


def _live(recorder: Recorder) -> dict[str, PodSeen]:
    """The pods as of the last event seen: name -> latest state."""
    current: dict[str, PodSeen] = {}
    for kind, pod in list(recorder.events):
        seen = _pod_seen(kind, pod)
        current[seen.name] = seen
        if kind == "DELETED":
            del current[seen.name]
    return current


def _submit(engine: Any, **fields: Any) -> str:
    document = JobCreate(
        name="svc",
        kind="inference",
        mode="service",
        serve_checkpoint="/output/model-a",
        resources={"cpu": "1", "memory": "1Gi"},
        workload={"builtin": "gpt"},
        **fields,
    ).model_dump(mode="json")
    [(job, _)] = submit_jobs(  # type: ignore[misc]
        engine, submissions=[Submission(owner="alice", spec=document, priority_value=0)]
    )
    return str(job.id)


def _stored(engine: Any, job_id: str) -> Any:
    with read_transaction(engine) as conn:
        job = get_job(conn, job_id=job_id)
    assert job is not None
    assert job.state not in (JobState.FAILED, JobState.CANCELLED), job.reason
    return job


def _notes(engine: Any, job_id: str) -> list[str]:
    with read_transaction(engine) as conn:
        return [e.reason or "" for e in list_events(conn, job_id=job_id)]


def _drive(loop: SchedulingLoop, done: Callable[[], bool], what: str, timeout: float = 120) -> None:
    """Run loop cycles until `done()` holds (each check follows a cycle)."""

    def step() -> bool:
        loop.cycle()
        return done()

    wait_for(step, timeout=timeout, interval=0.1, what=what)


def _replica_counts(engine: Any, job_id: str) -> list[int]:
    """The replica counts usage accounting sees for the job's attempt, in time order."""
    with read_transaction(engine) as conn:
        [row] = [r for r in usage_rows(conn, since_us=0) if r.job_id == job_id]
    return [count for _, count in row.replica_changes]


def _patch(engine: Any, job_id: str, changes: dict[str, Any]) -> None:
    """What PATCH /v1/jobs/{id} stores (its own merge and validation)."""
    with write_transaction(engine) as conn:
        job = get_job(conn, job_id=job_id)
        assert job is not None
        replace_spec(
            conn,
            job=job,
            spec=merged_document(job.spec, changes),
            expected_version=job.version,
            note="updated by alice (test)",
        )


def test_a_rolling_update_replaces_pods_one_at_a_time_each_new_one_ready_first(
    kube_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """Simulated: readiness (kwok sets Ready 2 s after a pod starts; no container runs)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    job_id = _submit(engine, replicas=2, port=8080, annotations=READY_DELAY)
    core = kube_cluster.core
    discovery = client.DiscoveryV1Api(core.api_client)
    selector = f"{JOB_ID_LABEL}={job_id}"
    with (
        running_backend(kube_cluster.kubeconfig, namespace) as backend,
        Recorder(core.list_namespaced_pod, namespace, selector) as pods,
        Recorder(
            discovery.list_namespaced_endpoint_slice,
            namespace,
            f"kubernetes.io/service-name={service_name(job_id)}",
        ) as slices,
    ):
        loop = SchedulingLoop(engine, backend, stop_grace_seconds=1)

        def ready_pods(revision: str) -> set[str]:
            return {
                s.name
                for s in _live(pods).values()
                if s.revision == revision and s.ready and not s.deleting
            }

        _drive(
            loop,
            lambda: (
                _stored(engine, job_id).state is JobState.RUNNING
                and len(ready_pods("1")) == 2
                and len(_stored(engine, job_id).placement or {}) == 2
            ),
            "two ready replicas of revision 1",
        )
        old = ready_pods("1")
        start = len(pods.events)
        _patch(engine, job_id, {"serve_checkpoint": "/output/model-b"})

        def rolled_out() -> bool:
            live = _live(pods)
            return (
                len(ready_pods("2")) == 2
                and set(live) == ready_pods("2")  # the old pods are gone
                and any("rolled out revision 2" in n for n in _notes(engine, job_id))
            )

        _drive(loop, rolled_out, "revision 2 rolled out, the old pods gone", timeout=180)
        loop.cycle()

        events = [_pod_seen(k, p) for k, p in pods.events[start:]]
        new = sorted({e.name for e in events if e.revision == "2"})
        assert len(new) == 2 and not set(new) & old
        # Order, from the one watch stream: for the k-th old pod whose deletion starts,
        # at least k new pods were Ready before; the k-th new pod is created only once
        # k-1 old ones are going (a surge of one at a time).
        ready_new: set[str] = set()
        going_old: set[str] = set()
        created_new: list[str] = []
        for event in events:
            if event.revision == "2" and event.ready and not event.deleting:
                ready_new.add(event.name)
            if event.name in old and event.deleting and event.name not in going_old:
                going_old.add(event.name)
                assert len(ready_new) >= len(going_old), (event, ready_new, going_old)
            if event.revision == "2" and event.kind == "ADDED":
                created_new.append(event.name)
                assert len(going_old) >= len(created_new) - 1, (event, going_old)
        assert going_old == old and sorted(created_new) == new

        # The Service selects the job's pods of any revision; what it routes to is only
        # the Ready ones (its EndpointSlice): each new pod was listed not-ready first.
        service = core.read_namespaced_service(service_name(job_id), namespace)
        assert service.spec.selector == {
            "app.kubernetes.io/managed-by": "trainyard",
            JOB_ID_LABEL: job_id,
        }
        new_ips = {e.ip for e in events if e.name in new and e.ip}
        first_state: dict[str, bool] = {}
        for _, endpoint_slice in slices.events:
            for endpoint in endpoint_slice.endpoints or ():
                for address in endpoint.addresses:
                    ready = bool(endpoint.conditions and endpoint.conditions.ready)
                    first_state.setdefault(address, ready)
        for ip in new_ips:
            assert first_state.get(ip) is False, (ip, first_state)
        wait_for(
            lambda: (
                {
                    address
                    for s in discovery.list_namespaced_endpoint_slice(
                        namespace,
                        label_selector=f"kubernetes.io/service-name={service_name(job_id)}",
                    ).items
                    for endpoint in s.endpoints or ()
                    if endpoint.conditions and endpoint.conditions.ready
                    for address in endpoint.addresses
                }
                == new_ips
            ),
            timeout=60,
            interval=0.2,
            what="the Service routing to the two new pods only",
        )

        job = _stored(engine, job_id)
        assert job.state is JobState.RUNNING and job.failures == 0
        assert sorted(job.placement) == sorted(int(n.rsplit("-", 1)[1]) for n in new)
        notes = _notes(engine, job_id)
        assert sum("(revision 2) added on" in n for n in notes) == 2, notes
        assert sum("retired: replaced by revision 2" in n for n in notes) == 2, notes
        assert "not available" not in (job.reason or "")
        # Usage counts the surge replica while it held room: 2 -> 3 -> 2, twice.
        assert _replica_counts(engine, job_id) == [3, 2, 3, 2]
        backend.stop(job_id, grace_seconds=0, reason="test over")
    engine.dispose()


def test_a_new_revision_whose_pod_cannot_start_is_rolled_back_and_the_old_pods_stay(
    kube_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """Simulated: readiness (kwok), and the failure: the test writes into the new pod's
    status what the kubelet reports for a container that exited 2 with the loader's
    last line (the worker's exit status for a checkpoint that does not load)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    # Ready 6 s after start: the failure below is written long before (it cannot start).
    slow_ready = READY_DELAY | {
        "pod-ready.stage.kwok.x-k8s.io/delay": "6s",
        "pod-ready.stage.kwok.x-k8s.io/jitter-delay": "6s",
    }
    job_id = _submit(engine, replicas=2, port=8080, annotations=slow_ready)
    core = kube_cluster.core
    with (
        running_backend(kube_cluster.kubeconfig, namespace) as backend,
        Recorder(core.list_namespaced_pod, namespace, f"{JOB_ID_LABEL}={job_id}") as pods,
    ):
        loop = SchedulingLoop(engine, backend, stop_grace_seconds=1)
        _drive(
            loop,
            lambda: (
                len([p for p in _live(pods).values() if p.ready]) == 2
                and _stored(engine, job_id).state is JobState.RUNNING
            ),
            "two ready replicas of revision 1",
        )
        old = set(_live(pods))
        _patch(engine, job_id, {"serve_checkpoint": "/output/model-broken"})
        _drive(
            loop,
            lambda: any(p.revision == "2" and p.node for p in _live(pods).values()),
            "a revision 2 pod bound",
        )
        [bad] = [p for p in _live(pods).values() if p.revision == "2"]
        words = "--checkpoint-dir: no valid checkpoint-<step>.pt in /output/model-broken"
        terminated = {"exitCode": 2, "reason": "Error", "message": f"loading\n{words}"}
        core.patch_namespaced_pod_status(
            bad.name,
            namespace,
            {
                "status": {
                    "phase": "Failed",
                    "containerStatuses": [
                        {
                            "name": "worker",
                            "image": "trainyard-worker",
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {"terminated": terminated},
                        }
                    ],
                }
            },
            _content_type=MERGE_PATCH,
        )

        def rolled_back() -> bool:
            job = _stored(engine, job_id)
            return (
                job.spec.get("revision", 1) == 1
                and bad.name not in _live(pods)
                and "revision 2 failed" in (job.reason or "")
            )

        _drive(loop, rolled_back, "revision 2 rolled back, its pod deleted")
        assert not any(_pod_seen(k, p).ready for k, p in pods.events if p.metadata.name == bad.name)
        for _ in range(5):  # a few more cycles: nothing of revision 2 comes back
            loop.cycle()
        job = _stored(engine, job_id)
        assert job.state is JobState.RUNNING
        assert job.spec["serve_checkpoint"] == "/output/model-a"
        assert words in (job.reason or ""), job.reason
        assert set(_live(pods)) == old  # the old pods served throughout, none replaced
        assert not any(_pod_seen(k, p).deleting for k, p in pods.events if p.metadata.name in old)
        assert [n for n in {_pod_seen(k, p).name for k, p in pods.events} if n not in old] == [
            bad.name
        ]
        notes = _notes(engine, job_id)
        assert any(
            "revision 2 failed: replica" in n and "rolled back to revision 1" in n for n in notes
        ), notes
        backend.stop(job_id, grace_seconds=0, reason="test over")
    engine.dispose()


# ---------------------------------------------------------------------- autoscaling


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Replica:
    """The worker's service app for one pod, on a loopback address of its own."""

    def __init__(self, host: str, port: int, job_id: str) -> None:
        import torch
        import uvicorn

        from trainyard.worker.inference.predictors import TensorPredictor
        from trainyard.worker.inference.service import create_app
        from trainyard.worker.metrics import WorkerMetrics

        predictor = TensorPredictor(torch.nn.Linear(2, 1), torch.device("cpu"), "fp32")
        metrics = WorkerMetrics(job_id, 0, inference=True)
        # Requests wait up to 300 ms for a batch to fill: a few clients keep several
        # requests in flight (what the autoscaler reads) at almost no CPU. /metrics on
        # the runtime's own port, as in a pod.
        app = create_app(predictor, {"step": 0}, metrics, 64, 0.3)
        metrics.serve(WORKER_METRICS_PORT, host)
        self.metrics = metrics
        config = uvicorn.Config(app, host=host, port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.address = f"{host}:{port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(self._healthy, timeout=30, interval=0.1, what=f"replica on {self.address}")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"http://{self.address}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.metrics.close()


class Load:
    """Client threads sending /predict to one replica until stopped."""

    def __init__(self, address: str, clients: int) -> None:
        self.address = address
        self.outcomes: list[int] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self._stop.is_set():
                try:
                    reply = http.post(f"http://{self.address}/predict", json={"input": [1, 2]})
                    self.outcomes.append(reply.status_code)
                except httpx.HTTPError:
                    self.outcomes.append(-1)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


class PodNetwork:
    """Plays the pods' network: a Replica for every running pod of the job, on
    127.0.0.<10 + index>, written into the pod's status.podIP."""

    def __init__(self, core: client.CoreV1Api, namespace: str, job_id: str, port: int) -> None:
        self.core, self.namespace, self.job_id, self.port = core, namespace, job_id, port
        self.replicas: dict[str, Replica] = {}  # pod name -> its replica

    def attach(self) -> None:
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"{JOB_ID_LABEL}={self.job_id}"
        ).items
        for pod in pods:
            name = pod.metadata.name
            if name in self.replicas or pod.metadata.deletion_timestamp:
                continue
            if not pod.status or pod.status.phase != "Running":
                continue
            host = f"127.0.0.{10 + int(pod.metadata.labels['trainyard.io/worker-index'])}"
            self.replicas[name] = Replica(host, self.port, self.job_id)
            self.core.patch_namespaced_pod_status(
                name,
                self.namespace,
                {"status": {"podIP": host, "podIPs": [{"ip": host}]}},
                _content_type=MERGE_PATCH,
            )

    def __enter__(self) -> PodNetwork:
        return self

    def __exit__(self, *_exc: object) -> None:
        for replica in self.replicas.values():
            replica.close()


def test_autoscaling_adds_a_pod_placed_by_the_core_under_load_and_deletes_it_after(
    kube_cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """Simulated: readiness (kwok's Ready condition) and the pods' network: each pod's
    replica is the worker's service app run here on a loopback address that the test
    writes into the pod's status.podIP (see the module docstring)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    port = _free_port()
    job_id = _submit(
        engine,
        replicas=1,
        min_replicas=1,
        max_replicas=2,
        port=port,
        autoscale={"metric": "inflight", "target": 1, "cooldown": "2s"},
        annotations=KWOK_IMMEDIATE,
    )
    core = kube_cluster.core
    selector = f"{JOB_ID_LABEL}={job_id}"
    with (
        running_backend(kube_cluster.kubeconfig, namespace) as backend,
        Recorder(core.list_namespaced_pod, namespace, selector) as pods,
        PodNetwork(core, namespace, job_id, port) as network,
    ):
        loop = SchedulingLoop(engine, backend, stop_grace_seconds=1)

        def live_pods() -> dict[str, PodSeen]:
            return _live(pods)

        def serving(count: int) -> bool:
            network.attach()
            live = live_pods()
            return (
                len(live) == count
                and all(p.ready and p.ip.startswith("127.0.0.") for p in live.values())
                and len(_stored(engine, job_id).placement or {}) == count
            )

        _drive(loop, lambda: serving(1), "one replica serving")
        first = next(iter(live_pods().values()))
        with Load(network.replicas[first.name].address, clients=4) as load:
            _drive(loop, lambda: serving(2), "a second replica under load", timeout=180)
        assert load.outcomes and set(load.outcomes) == {200}
        grown = live_pods()
        [added] = [p for name, p in grown.items() if name != first.name]
        assert added.node and added.node != first.node  # bound by us, on another node
        notes = _notes(engine, job_id)
        assert any("autoscaling: inflight" in n and "above target" in n for n in notes), notes
        assert any(f"added on {added.node}" in n for n in notes), notes
        bound = core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={added.name}"
        ).items
        assert any(e.reason == "Scheduled" and added.node in (e.message or "") for e in bound)

        # No load: after the cooldown the added pod is deleted again.
        _drive(loop, lambda: serving(1) and added.name not in live_pods(), "back to one pod")
        assert first.name in live_pods()
        deleted = [_pod_seen(k, p) for k, p in pods.events if k == "DELETED"]
        assert [p.name for p in deleted] == [added.name]
        notes = _notes(engine, job_id)
        assert any("well below target" in n for n in notes), notes
        assert any("retired: scaled down" in n for n in notes), notes
        job = _stored(engine, job_id)
        assert job.state is JobState.RUNNING and len(job.placement) == 1
        assert _replica_counts(engine, job_id) == [2, 1]  # what usage accounting integrates
        backend.stop(job_id, grace_seconds=0, reason="test over")
    engine.dispose()
