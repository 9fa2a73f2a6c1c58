"""The Kubernetes backend: gangs of worker pods that Trainyard binds to nodes itself.

The view (`nodes()`, `workers()`) is served from two watch caches (Nodes, and Pods of
the whole cluster, since other workloads' pods take capacity too), so a cycle costs no
API call. `launch()` is idempotent on the apiserver's names: it creates the job's
headless Service, then every missing worker pod unbound, then binds each to the node
the core chose; a pod of the same attempt that already exists is left alone (bound if
a crash left it unbound), one of an older attempt is a conflict the loop resolves with
`stop()`. Nothing of a gang runs until every pod of it exists: if any create or bind
fails, the gang's pods are deleted and LaunchError says why (permanent when the
apiserver refused the object as invalid).

Worker failures the pods do not report themselves are derived here: a worker whose
node has been NotReady past `node_lost_grace`, or whose node was deleted, is FAILED
with a message naming the node and condition; a pod of ours deleted by someone else
stays visible as FAILED until the loop stops the job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from trainyard.operator.backend import (
    GangLaunch,
    LaunchError,
    WorkerLaunch,
    WorkerPhase,
    WorkerStatus,
)
from trainyard.operator.kubernetes.config import KubernetesConfig
from trainyard.operator.kubernetes.connection import discard
from trainyard.operator.kubernetes.events import EventRecorder, PodEvent
from trainyard.operator.kubernetes.informer import WatchCache
from trainyard.operator.kubernetes.manifests import (
    binding,
    is_model_service,
    job_labels,
    needs_service,
    pod_manifest,
    service_manifest,
    service_port,
)
from trainyard.operator.kubernetes.names import (
    ATTEMPT_LABEL,
    OUR_SELECTOR,
    RENDEZVOUS_PORT,
    pod_name,
    service_name,
    worker_hostname,
)
from trainyard.operator.kubernetes.observe import (
    STUCK_WAITING,
    Checkpoints,
    NodeRecord,
    PodRecord,
    Usage,
    foreign_usage,
    node_loss,
    node_record,
    parse_time,
    pod_record,
    scheduler_node,
    worker_status,
)
from trainyard.operator.kubernetes.storage import (
    checkpoint_claim_name,
    checkpoint_plan,
    claim_manifest,
    claim_names,
    job_of_claim,
    keeps_node_checkpoints,
    local_storage_note,
    model_claim,
    model_dir,
)
from trainyard.operator.launch import Runtime
from trainyard.scheduler.types import Node

log = logging.getLogger(__name__)

RUNTIME = Runtime(python=("python",), torchrun=("torchrun",))
"""How pods start programs: the worker image's python and torchrun."""

_TRANSIENT_ERRORS = (urllib3.exceptions.HTTPError, OSError)
# How long the answer "does claim X exist" is reused by admission checks.
CLAIM_CHECK_SECONDS = 2.0
FAULT_KILL_BEFORE_BIND = "TRAINYARD_FAULT_KILL_BEFORE_BIND"


class CacheNotSynced(RuntimeError):
    """The watches have not listed the cluster yet (the apiserver is unreachable)."""


def apiserver_message(exc: ApiException) -> str:
    """The apiserver's own words for a refusal (its Status message), else the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
        message = body.get("message")
        if message:
            return str(message)
    except (ValueError, AttributeError):
        pass
    return f"{exc.status} {exc.reason}".strip()


def _is_permanent(exc: ApiException) -> bool:
    # 400: undecodable (a malformed quantity); 422: refused by validation. Everything
    # else (403 quota or RBAC, 404 namespace, 409, 5xx) may change without the job
    # changing, so the job waits and is tried again.
    return exc.status in (400, 422)


class _Conflict(Exception):
    pass


class KubernetesBackend:
    """Workers as pods on a Kubernetes cluster (see the module docstring)."""

    name = "kubernetes"

    def __init__(
        self,
        api: client.ApiClient,
        config: KubernetesConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or KubernetesConfig()
        self._api = api
        self._core = client.CoreV1Api(api)
        self._clock = clock
        self._namespace = self.config.namespace
        self._lock = threading.RLock()
        self._wake: Callable[[], None] = lambda: None
        self._tombstones: dict[str, WorkerStatus] = {}
        # uids of exited replica pods deleted by forget_worker: their going is no failure.
        self._forgetting: set[str] = set()
        # uids of live replica pods stop_worker deleted (a rollout or a scale-down retired
        # them): shown as stopping at once, and their going is no failure either.
        self._retiring: set[str] = set()
        self._by_job: dict[str, set[str]] = {}
        self._stopped: dict[str, set[int]] = {}
        self._deletes: dict[str, tuple[float, float]] = {}  # pod uid -> (issued at, grace)
        self._waiting_since: dict[str, float] = {}
        self._services: dict[str, str] = {}  # job id -> Service uid
        self._claims: dict[str, str] = {}  # job id -> its checkpoint claim's uid
        self._claim_seen: dict[str, tuple[float, bool]] = {}  # claim -> (checked at, exists)
        self._launching: set[str] = set()
        # job id -> (attempt, checkpoints) its pods reported, until the loop stores them.
        self._reports: dict[str, tuple[int, Checkpoints]] = {}
        self._unbound_since: dict[str, float] = {}
        self._foreign: dict[str, Usage] | None = None
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(
            max_workers=self.config.launch_concurrency, thread_name_prefix="k8s-launch"
        )
        # Gangs launched together (launch_many) wait on the pod-level pool above: a pool
        # of their own, so a gang never waits for a thread held by another gang.
        self._gang_pool = ThreadPoolExecutor(
            max_workers=self.config.launch_concurrency, thread_name_prefix="k8s-gang"
        )
        self.events = EventRecorder(self._core)
        self.node_cache: WatchCache[NodeRecord] = WatchCache(
            name="nodes",
            list_call=self._core.list_node,
            convert=node_record,
            on_change=self._node_changed,
            resync_seconds=self.config.resync_seconds,
            watch_timeout_seconds=self.config.watch_timeout_seconds,
            request_timeout=self.config.request_timeout,
        )
        self.pod_cache: WatchCache[PodRecord] = WatchCache(
            name="pods",
            list_call=self._core.list_pod_for_all_namespaces,
            convert=lambda obj: pod_record(obj, self._namespace),
            on_change=self._pod_changed,
            resync_seconds=self.config.resync_seconds,
            watch_timeout_seconds=self.config.watch_timeout_seconds,
            request_timeout=self.config.request_timeout,
        )
        self._janitor: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> KubernetesBackend:
        """The backend `trainyard serve --backend kubernetes` runs (kubeconfig, namespace,
        worker image and node grace from Settings; in a pod, the in-cluster account)."""
        from trainyard.operator.kubernetes import backend_from_settings

        return backend_from_settings(settings)

    # ------------------------------------------------------------------ lifecycle
    def start(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self.events.start()
        self.node_cache.start()
        self.pod_cache.start()
        if self._janitor is None:
            self._janitor = threading.Thread(
                target=self._janitor_loop, name="k8s-janitor", daemon=True
            )
            self._janitor.start()

    def wait_synced(self, timeout: float | None = None) -> None:
        """Block until both caches have listed the cluster once."""
        limit = self.config.request_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        for cache in (self.node_cache, self.pod_cache):
            if not cache.wait_synced(max(0.0, deadline - time.monotonic())):
                raise CacheNotSynced(f"kubernetes: the {cache.name} watch has not listed yet")

    def close(self) -> None:
        self._closed.set()
        self.node_cache.stop()
        self.pod_cache.stop()
        self.events.close()
        self._gang_pool.shutdown(wait=True, cancel_futures=True)
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ cache hooks
    def _node_changed(self, key: str, old: NodeRecord | None, new: NodeRecord | None) -> None:
        if old is None or new is None or old.ready != new.ready or old != new:
            self._wake()

    def _pod_changed(self, key: str, old: PodRecord | None, new: PodRecord | None) -> None:
        changed_capacity = False
        with self._lock:
            for record in (old, new):
                if record is not None and record.worker is None:
                    changed_capacity = True
            if changed_capacity:
                self._foreign = None
            if new is not None and new.worker is not None:
                self._by_job.setdefault(new.worker.job_id, set()).add(key)
                if new.checkpoints is not None and (
                    old is None or old.checkpoints != new.checkpoints
                ):
                    self._reports[new.worker.job_id] = (new.worker.attempt, new.checkpoints)
                if new.waiting_reason in STUCK_WAITING:
                    self._waiting_since.setdefault(key, self._clock())
                else:
                    self._waiting_since.pop(key, None)
            if new is None and old is not None and old.worker is not None:
                self._pod_gone(key, old)
        if (old is not None and old.worker is not None) or (new is not None and new.worker):
            self._wake()

    def _pod_gone(self, key: str, old: PodRecord) -> None:
        """One of our pods left the apiserver (called with the lock held)."""
        assert old.worker is not None
        job_id = old.worker.job_id
        self._waiting_since.pop(key, None)
        self._unbound_since.pop(key, None)
        self._deletes.pop(old.uid, None)
        keys = self._by_job.get(job_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_job[job_id]
        if old.uid in self._forgetting:  # an exited replica deleted to be restarted
            self._forgetting.discard(old.uid)
            return
        if old.uid in self._retiring:  # a replica retired on purpose (stop_worker)
            self._retiring.discard(old.uid)
            return
        if old.worker.attempt in self._stopped.get(job_id, ()):
            if job_id not in self._by_job:
                # The last pod of a stopped job is gone: so can its Service go.
                self._stopped.pop(job_id, None)
                self._submit(self._forget_service, job_id)
            return
        # Deleted by someone else (a user, the pod GC after its node left): the loop must
        # see a failure, not a worker that silently vanished.
        status = self._status_of(old, self.node_cache.items(), self._clock())
        if not status.phase.exited:
            lost = node_loss(old, self.node_cache.items(), now=self._clock(), grace=0.0)
            why = lost or "its pod was deleted outside Trainyard"
            status = replace(status, phase=WorkerPhase.FAILED, message=f"{old.name}: {why}")
        self._tombstones[key] = status

    def _submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if not self._closed.is_set():
            with contextlib.suppress(RuntimeError):  # shut down meanwhile
                self._pool.submit(fn, *args)

    # ------------------------------------------------------------------ the view
    def nodes(self) -> Sequence[Node]:
        self.wait_synced()
        with self._lock:
            if self._foreign is None:
                self._foreign = foreign_usage(self.pod_cache.values())
            foreign = self._foreign
        return [
            scheduler_node(node, foreign.get(node.name, Usage()))
            for node in self.node_cache.values()
        ]

    def _status_of(
        self, pod: PodRecord, nodes: Mapping[str, NodeRecord], now: float
    ) -> WorkerStatus:
        key = f"{pod.namespace}/{pod.name}"
        assert pod.worker is not None
        return worker_status(
            pod,
            nodes,
            now=now,
            node_lost_grace=self.config.node_lost_grace,
            waiting_since=self._waiting_since.get(key),
            start_grace=self.config.start_grace,
            stopping=pod.worker.attempt in self._stopped.get(pod.worker.job_id, ())
            or pod.uid in self._retiring,
        )

    def workers(self) -> Sequence[WorkerStatus]:
        self.wait_synced()
        nodes = self.node_cache.items()
        now = self._clock()
        with self._lock:
            keys = [key for job in self._by_job.values() for key in job]
            tombstones = list(self._tombstones.values())
            result = []
            for key in keys:
                pod = self.pod_cache.get(key)
                # An unbound pod is a launch that did not finish (launch() binds before it
                # returns, so none is in flight now): the worker does not exist yet, and
                # the loop's next launch() binds the pod instead of creating another.
                if pod is not None and pod.worker is not None and pod.node:
                    result.append(self._status_of(pod, nodes, now))
        return result + tombstones

    def _job_pods(self, job_id: str) -> list[PodRecord]:
        with self._lock:
            keys = list(self._by_job.get(job_id, ()))
        pods = [self.pod_cache.get(key) for key in keys]
        return [pod for pod in pods if pod is not None and pod.worker is not None]

    def log_tail(self, job_id: str, index: int, *, lines: int = 20) -> str:
        """The worker's termination message: the kubelet's copy of its last log lines
        when it failed (terminationMessagePolicy FallbackToLogsOnError)."""
        candidates = [p for p in self._job_pods(job_id) if p.worker and p.worker.index == index]
        if not candidates:
            return ""
        pod = max(candidates, key=lambda p: p.worker.attempt if p.worker else 0)
        return "\n".join(pod.log_tail.splitlines()[-lines:])

    def runtime(self) -> Runtime:
        """How the loop builds argv for pods: the worker image's python and torchrun."""
        return RUNTIME

    def output_dir(self, job_id: str) -> str:
        """The job's output directory inside its pods (the same for every attempt)."""
        return f"{self.config.output_root.rstrip('/')}/{job_id}"

    def model_dir(self, training_job_id: str) -> str:
        """Where a model service's pods find the checkpoints of the training job they
        serve: its claim, mounted read-only (storage.model_volume)."""
        return model_dir(training_job_id)

    def rendezvous(self, job_id: str, attempt: int) -> tuple[str, int]:
        host = worker_hostname(job_id, 0, self._namespace, self.config.cluster_domain)
        return host, RENDEZVOUS_PORT

    # ------------------------------------------------------------------ launching
    def launch_many(self, gangs: Sequence[GangLaunch]) -> list[LaunchError | None]:
        """Launch several gangs at once (up to `launch_concurrency` in flight); for each,
        None or the LaunchError `launch` would have raised. A loop admitting many jobs in
        one cycle uses this instead of launching them one after the other."""

        def one(gang: GangLaunch) -> LaunchError | None:
            try:
                self.launch(gang)
            except LaunchError as exc:
                return exc
            return None

        return list(self._gang_pool.map(one, gangs))

    def launch(self, gang: GangLaunch) -> None:
        self.wait_synced()
        with self._lock:
            self._launching.add(gang.job_id)
        try:
            self._launch(gang)
        finally:
            with self._lock:
                self._launching.discard(gang.job_id)

    def _launch(self, gang: GangLaunch) -> None:
        with self._lock:
            self._stopped.pop(gang.job_id, None)
            for key in [k for k, s in self._tombstones.items() if s.job_id == gang.job_id]:
                del self._tombstones[key]
        nodes = self.node_cache.items()
        missing = sorted({w.node for w in gang.workers if w.node not in nodes})
        if missing:
            raise LaunchError(f"node {', '.join(missing)} is not in the cluster (any more)")
        try:
            service_uid = self._ensure_service(gang) if needs_service(gang) else None
        except ApiException as exc:
            raise LaunchError(
                f"service {service_name(gang.job_id)}: {apiserver_message(exc)}",
                permanent=_is_permanent(exc),
            ) from exc
        except _TRANSIENT_ERRORS as exc:
            raise LaunchError(f"apiserver unreachable: {exc}") from exc
        try:
            claim_uid = self._ensure_claim(gang)
        except ApiException as exc:
            raise LaunchError(
                f"claim {checkpoint_claim_name(gang.job_id)}: {apiserver_message(exc)}",
                permanent=_is_permanent(exc),
            ) from exc
        except _TRANSIENT_ERRORS as exc:
            raise LaunchError(f"apiserver unreachable: {exc}") from exc
        workers = self._missing_workers(gang)
        bodies = [
            pod_manifest(
                gang,
                worker,
                config=self.config,
                service_uid=service_uid,
                node_labels=nodes[worker.node].labels,
                claim_uid=claim_uid,
            )
            for worker in workers
        ]
        ensured = list(self._pool.map(lambda body: self._ensure_pod(body, gang.attempt), bodies))
        failure = next((outcome for outcome in ensured if isinstance(outcome, LaunchError)), None)
        if failure is not None:
            self._abandon(gang, workers)
            raise failure
        pods: list[Mapping[str, Any]] = [outcome for outcome in ensured]  # type: ignore[misc]
        if os.environ.get(FAULT_KILL_BEFORE_BIND) == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        to_bind = [
            (pod, worker)
            for pod, worker in zip(pods, workers, strict=True)
            if (pod.get("spec") or {}).get("nodeName") != worker.node
        ]
        bound = list(self._pool.map(lambda item: self._bind(*item), to_bind))
        failure = next((outcome for outcome in bound if isinstance(outcome, LaunchError)), None)
        if failure is not None:
            self._abandon(gang, workers)
            raise failure
        for pod, worker in to_bind:
            meta = pod.get("metadata") or {}
            self.events.record(
                PodEvent(
                    namespace=self._namespace,
                    pod=meta.get("name", ""),
                    uid=meta.get("uid", ""),
                    reason="Scheduled",
                    message=(
                        f"Successfully assigned {self._namespace}/{meta.get('name')} to "
                        f"{worker.node} (job {gang.job_id} attempt {gang.attempt}, "
                        f"worker {worker.index} of {len(gang.workers)})"
                    ),
                )
            )

    # ------------------------------------------------------------------ storage
    def _ensure_claim(self, gang: GangLaunch) -> str | None:
        """The job's checkpoint claim's uid (created on its first launch, reused by every
        later attempt), or None when the job keeps checkpoints pod-local."""
        plan = checkpoint_plan(gang.spec, self.config.checkpoint_storage_class)
        if plan is None:
            return None
        known = self._claims.get(gang.job_id)
        if known:
            return known
        name = checkpoint_claim_name(gang.job_id)
        try:
            response = self._core.create_namespaced_persistent_volume_claim(
                self._namespace,
                claim_manifest(gang.job_id, job_labels(gang), plan),
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
            response = self._core.read_namespaced_persistent_volume_claim(
                name, self._namespace, _preload_content=False
            )
        claim = json.loads(response.data)
        if (claim.get("metadata") or {}).get("deletionTimestamp"):
            raise LaunchError(f"claim {name} is being deleted")
        uid = str(claim["metadata"]["uid"])
        self._claims[gang.job_id] = uid
        return uid

    def admission_blockers(self, spec: Mapping[str, Any]) -> str | None:
        """Why the job cannot start yet: a PersistentVolumeClaim its volumes name does
        not exist (its pods would sit in ContainerCreating). Each claim is asked about
        at most once per CLAIM_CHECK_SECONDS."""
        now = time.monotonic()
        for claim in claim_names(spec):
            checked = self._claim_seen.get(claim)
            if checked is None or now - checked[0] > CLAIM_CHECK_SECONDS:
                try:
                    discard(
                        self._core.read_namespaced_persistent_volume_claim(
                            claim, self._namespace, _preload_content=False
                        )
                    )
                    exists = True
                except ApiException as exc:
                    if exc.status != 404:
                        return f"pending: cannot check claim {claim!r}: {apiserver_message(exc)}"
                    exists = False
                except _TRANSIENT_ERRORS as exc:
                    return f"pending: cannot check claim {claim!r}: apiserver unreachable: {exc}"
                checked = self._claim_seen[claim] = (now, exists)
            if not checked[1]:
                if claim == model_claim(spec):
                    return (
                        f"pending: waiting for the checkpoints of training job "
                        f"{spec.get('checkpoint_job')}: its claim {claim!r} does not exist in "
                        f"namespace {self._namespace} (the job kept its checkpoints on its "
                        "node, or the retention deleted them)"
                    )
                return (
                    f"pending: waiting for PersistentVolumeClaim {claim!r} in namespace "
                    f"{self._namespace} (it does not exist)"
                )
        return None

    def checkpoint_reports(self) -> dict[str, tuple[int, Checkpoints]]:
        """The checkpoints each job's pods reported in their termination messages since
        the last call (job id -> (attempt, newest first)), for the store: the control
        plane cannot read a claim itself. A caller that fails to store them gives them
        back with `return_reports`."""
        with self._lock:
            reports, self._reports = self._reports, {}
        return reports

    def return_reports(self, reports: Mapping[str, tuple[int, Checkpoints]]) -> None:
        with self._lock:
            for job_id, report in reports.items():
                self._reports.setdefault(job_id, report)

    def admission_notes(self, spec: Mapping[str, Any]) -> list[str]:
        """Job events to write when the job is admitted (checkpoints left pod-local)."""
        config = self.config
        node_path = None if config.output_claim else config.checkpoint_node_path
        note = local_storage_note(spec, config.checkpoint_storage_class, node_path)
        return [note] if note else []

    def checkpoint_node_local(self, spec: Mapping[str, Any]) -> bool:
        """Whether the job's checkpoints stay on worker 0's node (see storage), so that
        its restarts should put worker 0 back there (trainyard.operator.pinning)."""
        config = self.config
        return keeps_node_checkpoints(
            spec, config.checkpoint_storage_class, config.checkpoint_node_path, config.output_claim
        )

    def storage_jobs(self) -> set[str]:
        """Jobs whose checkpoint claim exists (for the retention sweep)."""
        response = self._core.list_namespaced_persistent_volume_claim(
            self._namespace, label_selector=OUR_SELECTOR, _preload_content=False
        )
        items = json.loads(response.data).get("items") or ()
        names = ((item.get("metadata") or {}).get("name", "") for item in items)
        return {job for job in map(job_of_claim, names) if job}

    def delete_storage(self, job_id: str) -> None:
        """Delete the job's checkpoint claim (its pods, if any are left, go with it)."""
        self._claims.pop(job_id, None)
        try:
            discard(
                self._core.delete_namespaced_persistent_volume_claim(
                    checkpoint_claim_name(job_id),
                    self._namespace,
                    body=client.V1DeleteOptions(propagation_policy="Background"),
                    _preload_content=False,
                )
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _ensure_service(self, gang: GangLaunch) -> str:
        known = self._services.get(gang.job_id)
        if known:
            return known
        try:
            response = self._core.create_namespaced_service(
                self._namespace, service_manifest(gang), _preload_content=False
            )
            uid = json.loads(response.data)["metadata"]["uid"]
        except ApiException as exc:
            if exc.status != 409:
                raise
            response = self._core.read_namespaced_service(
                service_name(gang.job_id), self._namespace, _preload_content=False
            )
            uid = json.loads(response.data)["metadata"]["uid"]
        self._services[gang.job_id] = uid
        return uid

    def _ensure_pod(self, body: Mapping[str, Any], attempt: int) -> Mapping[str, Any] | LaunchError:
        """Create the pod, or find ours of the same attempt; a LaunchError when neither."""
        name = body["metadata"]["name"]
        try:
            try:
                response = self._core.create_namespaced_pod(
                    self._namespace, body, _preload_content=False
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
                response = self._core.read_namespaced_pod(
                    name, self._namespace, _preload_content=False
                )
                existing = json.loads(response.data)
                labels = existing["metadata"].get("labels") or {}
                if labels.get(ATTEMPT_LABEL) != str(attempt):
                    return LaunchError(
                        f"pod {name} of attempt {labels.get(ATTEMPT_LABEL)} still exists "
                        f"(this is attempt {attempt}); stop it first"
                    )
                if existing["metadata"].get("deletionTimestamp"):
                    return LaunchError(f"pod {name} is being deleted")
                self.pod_cache.upsert(existing)
                return existing
            created = json.loads(response.data)
            self.pod_cache.upsert(created)
            return created
        except ApiException as exc:
            return LaunchError(
                f"pod {name}: {apiserver_message(exc)}", permanent=_is_permanent(exc)
            )
        except _TRANSIENT_ERRORS as exc:
            return LaunchError(f"pod {name}: apiserver unreachable: {exc}")

    def _bind(self, pod: Mapping[str, Any], worker: WorkerLaunch) -> LaunchError | None:
        """POST the Binding; the reply is read raw (kubernetes-client/python #547: the
        apiserver answers a Status that the generated client cannot read as V1Binding)."""
        name = pod["metadata"]["name"]
        try:
            discard(
                self._core.create_namespaced_pod_binding(
                    name, self._namespace, binding(name, worker.node), _preload_content=False
                )
            )
        except ApiException as exc:
            if exc.status == 409:  # already bound: fine if to the same node
                try:
                    response = self._core.read_namespaced_pod(
                        name, self._namespace, _preload_content=False
                    )
                    node = (json.loads(response.data).get("spec") or {}).get("nodeName")
                except (ApiException, *_TRANSIENT_ERRORS):
                    node = None
                if node == worker.node:
                    return None
                return LaunchError(f"pod {name} is bound to {node}, not {worker.node}")
            return LaunchError(
                f"binding {name} to {worker.node}: {apiserver_message(exc)}",
                permanent=_is_permanent(exc),
            )
        except _TRANSIENT_ERRORS as exc:
            return LaunchError(f"binding {name}: apiserver unreachable: {exc}")
        return None

    def _missing_workers(self, gang: GangLaunch) -> list[WorkerLaunch]:
        """The gang's workers whose pod is not there yet, bound where the core put it.

        A model service's launch names every replica but usually adds one (a rolling
        update's surge, an autoscaled replica, a restart): its running replicas' pods
        are in the cache, and are left alone without an API call."""
        with self._lock:
            missing = []
            for worker in gang.workers:
                pod = self.pod_cache.get(f"{self._namespace}/{pod_name(gang.job_id, worker.index)}")
                if (
                    pod is None
                    or pod.worker is None
                    or pod.worker.attempt != gang.attempt
                    or pod.node != worker.node
                    or pod.deleting
                ):
                    missing.append(worker)
            return missing

    def _abandon(self, gang: GangLaunch, workers: Sequence[WorkerLaunch]) -> None:
        """Delete the pods this launch was making: a gang's, every pod of this attempt
        (they never ran as a gang); a model service's, only the replicas it was adding
        (the others serve on, each replica stands alone)."""
        if not is_model_service(gang):
            with self._lock:
                self._stopped.setdefault(gang.job_id, set()).add(gang.attempt)
            workers = gang.workers
        names = [pod_name(gang.job_id, w.index) for w in workers]
        list(self._pool.map(lambda name: self._delete_pod(name, 0, attempt=gang.attempt), names))

    def _delete_pod(self, name: str, grace: int, *, attempt: int | None = None) -> None:
        options: dict[str, Any] = {
            "grace_period_seconds": grace,
            "propagation_policy": "Background",
        }
        try:
            body = client.V1DeleteOptions(**options)
            if attempt is not None:
                # Never delete another attempt's pod that took the name meanwhile.
                existing = self.pod_cache.get(f"{self._namespace}/{name}")
                if existing is not None and existing.worker is not None:
                    if existing.worker.attempt != attempt:
                        return
                    body.preconditions = client.V1Preconditions(uid=existing.uid)
            discard(
                self._core.delete_namespaced_pod(
                    name, self._namespace, body=body, _preload_content=False
                )
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("deleting pod %s: %s", name, apiserver_message(exc))
        except _TRANSIENT_ERRORS as exc:
            log.warning("deleting pod %s: apiserver unreachable: %s", name, exc)

    # ------------------------------------------------------------------ stopping
    def forget_worker(self, job_id: str, attempt: int, index: int) -> bool:
        """Delete one EXITED worker's pod so the next launch recreates it (a model
        service's replica restarted on its own). True once nothing of it is left; a
        live pod is left alone (False)."""
        key = f"{self._namespace}/{pod_name(job_id, index)}"
        with self._lock:
            self._tombstones.pop(key, None)
            pod = self.pod_cache.get(key)
            if pod is None or pod.worker is None:
                return True
            if pod.worker.attempt != attempt or not pod.terminated:
                return False
            self._forgetting.add(pod.uid)
        self._delete_pod(pod.name, 0, attempt=attempt)
        return False

    def stop_worker(
        self, job_id: str, attempt: int, index: int, *, grace_seconds: float, reason: str
    ) -> bool:
        """Stop ONE worker: delete its pod with `grace_seconds` (the kubelet's SIGTERM,
        then SIGKILL), for a model service replica a rolling update or a scale-down
        retires. Level-triggered like `stop`: called again every cycle until it answers
        True (nothing of the worker left); the delete is issued once, and once more
        without grace whenever the pod outlived its grace by 5 s (a dead kubelet never
        confirms; a delete call that failed).
        A pod of another attempt that took the name is never touched."""
        key = f"{self._namespace}/{pod_name(job_id, index)}"
        now = time.monotonic()
        with self._lock:
            tombstone = self._tombstones.get(key)
            if tombstone is not None and tombstone.attempt == attempt:
                del self._tombstones[key]
            pod = self.pod_cache.get(key)
            if pod is None or pod.worker is None or pod.worker.attempt != attempt:
                return True
            self._retiring.add(pod.uid)
            issued = self._deletes.get(pod.uid)
            if issued is None:
                grace = max(0, int(grace_seconds))
                self._deletes[pod.uid] = (now, float(grace))
            elif now - issued[0] > issued[1] + 5:  # again, at once (also after a failed call)
                grace = 0
                self._deletes[pod.uid] = (now, 0.0)
            else:
                return False
        if grace and not pod.terminated:
            self.events.record(PodEvent(self._namespace, pod.name, pod.uid, "Stopping", reason))
        self._delete_pod(pod.name, grace, attempt=attempt)
        self._wake()
        return False

    def service_endpoint(self, job_id: str, name: str, spec: Mapping[str, Any]) -> str:
        """A model service's address inside the cluster: its Service's DNS name:port."""
        host = f"{service_name(job_id)}.{self._namespace}.svc.{self.config.cluster_domain}"
        return f"{host}:{service_port(spec)}"

    def stop(self, job_id: str, *, grace_seconds: float, reason: str) -> None:
        now = time.monotonic()
        pods = self._job_pods(job_id)
        with self._lock:
            attempts = self._stopped.setdefault(job_id, set())
            attempts.update(p.worker.attempt for p in pods if p.worker)
            for key in [k for k, s in self._tombstones.items() if s.job_id == job_id]:
                del self._tombstones[key]
            if not pods:
                self._stopped.pop(job_id, None)
            todo: list[tuple[PodRecord, int]] = []
            for pod in pods:
                issued = self._deletes.get(pod.uid)
                if issued is None:
                    todo.append((pod, max(0, int(grace_seconds))))
                    self._deletes[pod.uid] = (now, grace_seconds)
                elif now - issued[0] > issued[1] + 5 and issued[1] > 0:
                    # Past its grace and still there (a dead kubelet never confirms): force.
                    todo.append((pod, 0))
                    self._deletes[pod.uid] = (now, 0.0)
        if not pods:
            self._forget_service(job_id)
            return
        event_reason = "Preempted" if "preempt" in reason.lower() else "Stopping"
        for pod, grace in todo:
            if grace and not pod.terminated:
                self.events.record(
                    PodEvent(self._namespace, pod.name, pod.uid, event_reason, reason)
                )
        list(self._pool.map(lambda item: self._delete_pod(item[0].name, item[1]), todo))

    def _delete_service(self, job_id: str) -> None:
        """Delete the job's Service unless the job has pods or is being launched.

        Held under the lock across the call: a launch reading the Service's uid for its
        pods' owner reference must never race its deletion (the garbage collector would
        delete pods whose owner is gone)."""
        with self._lock:
            if job_id in self._launching or job_id in self._by_job:
                return
            self._services.pop(job_id, None)
            self._delete_service_now(job_id)

    def _forget_service(self, job_id: str) -> None:
        """Delete the job's Service if this process made or found one (a single-worker job
        has none; one left by an earlier process is found by the sweep)."""
        if job_id in self._services:
            self._delete_service(job_id)

    def _delete_service_now(self, job_id: str) -> None:
        try:
            discard(
                self._core.delete_namespaced_service(
                    service_name(job_id), self._namespace, _preload_content=False
                )
            )
        except ApiException as exc:
            if exc.status != 404:
                log.warning("deleting service of %s: %s", job_id, apiserver_message(exc))
        except _TRANSIENT_ERRORS as exc:
            log.warning("deleting service of %s: apiserver unreachable: %s", job_id, exc)

    def _janitor_loop(self) -> None:
        """Delete Services whose job has no pods left (a crash between stop and cleanup)
        and pods a crashed launch left unbound that no launch has claimed since."""
        while not self._closed.wait(min(60.0, self.config.resync_seconds)):
            try:
                self.sweep_unbound()
                self.sweep_services()
            except (ApiException, *_TRANSIENT_ERRORS) as exc:
                log.info("sweep failed: %s", exc)

    def sweep_unbound(self, *, min_age: float = 60.0) -> list[str]:
        """Delete our pods unbound for more than `min_age` s (seen by this process), which
        the loop does not see as workers and so would never stop."""
        now = time.monotonic()
        doomed = []
        with self._lock:
            for job_id, keys in list(self._by_job.items()):
                if job_id in self._launching:
                    continue
                for key in keys:
                    pod = self.pod_cache.get(key)
                    if pod is None or pod.node or pod.deleting:
                        self._unbound_since.pop(key, None)
                        continue
                    since = self._unbound_since.setdefault(key, now)
                    if now - since >= min_age:
                        doomed.append(pod.name)
        for name in doomed:
            self._delete_pod(name, 0)
        return doomed

    def sweep_services(self, *, min_age: float = 60.0) -> list[str]:
        """Delete our Services with no pods whose creation is older than `min_age` s."""
        response = self._core.list_namespaced_service(
            self._namespace, label_selector=OUR_SELECTOR, _preload_content=False
        )
        swept = []
        now = self._clock()
        for item in json.loads(response.data).get("items") or ():
            meta = item.get("metadata") or {}
            job_id = (meta.get("labels") or {}).get("trainyard.io/job-id")
            created = parse_time(meta.get("creationTimestamp")) or now
            if not job_id or now - created < min_age:
                continue
            with self._lock:
                busy = job_id in self._by_job or job_id in self._launching
                if not busy:
                    self._delete_service(job_id)
            if not busy:
                swept.append(job_id)
        return swept
