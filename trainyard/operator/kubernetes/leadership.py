"""Leadership among control-plane replicas through a coordination.k8s.io Lease.

Built on the official client's `kubernetes.leaderelection` (its LeaderElection loop and
LeaseLock), with three things that library leaves to the caller:

- `is_leader()` is strict: true only while our last successful renewal is younger
  than the renew deadline. The library notices a lost lease only when its renew loop
  gives up; the loop checks `is_leader()` before every action batch, so a replica cut
  off from the apiserver stops launching before anyone else can take over (the lease
  duration is longer than the renew deadline).
- The lock talks through our ApiClient (LeaseLock builds one from the process-wide
  default configuration), and `stop()` ends the election thread and releases the
  lease (holder cleared), so a replica shut down cleanly hands over at once instead
  of after the lease duration.
- After losing the lease the replica becomes a candidate again instead of exiting.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

log = logging.getLogger(__name__)
# The library logs every renewal at INFO ("has successfully acquired lease" every retry
# period); our own log says when leadership changes.
logging.getLogger("leaderelection").setLevel(logging.WARNING)

DEFAULT_LEASE_NAME = "trainyard-scheduler"


class _Stopped(Exception):
    """Raised inside the election thread to unwind it when stop() was called."""


class _OurLeaseLock(LeaseLock):
    """LeaseLock on a given ApiClient, which refuses to act once stopping."""

    def __init__(self, name: str, namespace: str, identity: str, api: client.ApiClient) -> None:
        super().__init__(name, namespace, identity)
        self.api_instance = client.CoordinationV1Api(api)
        self.stopping = threading.Event()

    def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        if self.stopping.is_set():
            raise _Stopped
        return super().get(name, namespace)

    def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        if self.stopping.is_set():
            raise _Stopped
        return super().update(name, namespace, updated_record)


class LeaseLeadership:
    """The Leadership protocol on a Lease `name` in `namespace`."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        name: str = DEFAULT_LEASE_NAME,
        identity: str | None = None,
        lease_duration: int = 15,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
    ) -> None:
        if (
            lease_duration != int(lease_duration)
            or not lease_duration > renew_deadline > 1.2 * retry_period
            or retry_period < 1
        ):
            # The library calls sys.exit on these; say it as an error instead.
            raise ValueError(
                "need a whole-second lease_duration > renew_deadline > 1.2 * retry_period "
                "and retry_period >= 1"
            )
        # host-pid-random: unique, and says which process holds the Lease.
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.namespace = namespace
        self.name = name
        # Whole seconds: the Lease stores leaseDurationSeconds as an integer (the library
        # writes str(duration) and parses it back with int()).
        self.lease_duration = int(lease_duration)
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._api = api
        self._lock = _OurLeaseLock(name, namespace, self.identity, api)
        self._leading = threading.Event()
        self._election: leaderelection.LeaderElection | None = None
        self._thread: threading.Thread | None = None
        self.terms = 0
        """How many times this replica became leader."""

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"leader-election-{self.name}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        failures = 0
        while not self._lock.stopping.is_set():
            config = electionconfig.Config(
                self._lock,
                lease_duration=self.lease_duration,
                renew_deadline=self.renew_deadline,
                retry_period=self.retry_period,
                onstarted_leading=self._started,
                onstopped_leading=self._stopped,
            )
            self._election = leaderelection.LeaderElection(config)
            try:
                self._election.run()
                failures = 0
            except _Stopped:
                break
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                # The apiserver is unreachable: whoever led has lost the lease (is_leader
                # went false at the renew deadline already). Stand again with a backoff
                # capped at the lease duration, so a returning apiserver is noticed within
                # one lease of its return.
                failures += 1
                self._lost(f"apiserver unreachable: {exc}", failures)
            except Exception:  # an unexpected reply must not kill the election for good
                failures += 1
                log.exception("leader election failed; standing again")
                self._lost("leader election failed", failures)
            finally:
                self._leading.clear()

    def _lost(self, why: str, failures: int) -> None:
        if self._leading.is_set():
            self._leading.clear()
            log.info("%s lost the lease %s/%s (%s)", self.identity, self.namespace, self.name, why)
        elif failures == 1:
            log.warning("leader election: %s; standing again with backoff", why)
        delay = min(self.retry_period * 2 ** (failures - 1), float(self.lease_duration))
        self._lock.stopping.wait(delay)

    def _started(self) -> None:
        self.terms += 1
        self._leading.set()
        log.info("%s leads %s/%s", self.identity, self.namespace, self.name)

    def _stopped(self) -> None:
        self._leading.clear()
        log.info("%s lost the lease %s/%s", self.identity, self.namespace, self.name)

    def is_leader(self) -> bool:
        election = self._election
        if not self._leading.is_set() or election is None:
            return False
        record = election.observed_record
        if record is None or record.holder_identity != self.identity:
            return False
        renewed_ms = election.observed_time_milliseconds
        return time.time() * 1000 - renewed_ms < self.renew_deadline * 1000

    def holder(self) -> str | None:
        """Who holds the lease now, as the apiserver says (None when nobody)."""
        try:
            lease = client.CoordinationV1Api(self._api).read_namespaced_lease(
                self.name, self.namespace
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return lease.spec.holder_identity if lease.spec else None

    def stop(self) -> None:
        was_leading = self.is_leader()
        self._leading.clear()
        self._lock.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.retry_period + 5)
            self._thread = None
        if was_leading:
            self._release()

    def _release(self) -> None:
        """Clear the holder so a standby takes over at its next retry."""
        coordination = client.CoordinationV1Api(self._api)
        try:
            lease = coordination.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            coordination.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            log.info("could not release the lease %s/%s: %s", self.namespace, self.name, exc)


class ClusterFirstLeadership:
    """The cluster's Lease decides who leads; the store's lease row follows it.

    Replicas of the control plane on one cluster elect through the coordination.k8s.io
    Lease. The store's `leases` row is still taken by the leader (only once it holds
    the Lease, so the two can never be split between two replicas), because the API
    finds the loop's wake-up address there, and because a second Trainyard on the same
    database but another cluster must not act on the same jobs.
    """

    def __init__(self, cluster: LeaseLeadership, store: Any) -> None:
        self.cluster = cluster
        self.store = store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.cluster.start()
        self._thread = threading.Thread(target=self._follow, name="store-lease", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        period = min(self.cluster.retry_period, self.store.ttl_seconds / 4)
        while not self._stop.is_set():
            if self.cluster.is_leader():
                self.store.try_acquire()
            elif self.store.is_leader():
                self.store.release()
            self._stop.wait(period)

    def is_leader(self) -> bool:
        return self.cluster.is_leader() and self.store.is_leader()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.store.stop()
        self.cluster.stop()
