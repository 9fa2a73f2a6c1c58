"""Leader election on a coordination.k8s.io Lease of the real test apiserver.

Short lease timings (4 s lease, 3 s renew deadline, 1 s retry) keep the hand-overs
quick; the assertions allow the election's own steps (a candidate retries once per
retry period) on top of the lease duration, never a fixed sleep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes import client

from tests.integration.cluster.simcluster import Cluster, wait_until
from trainyard.operator.kubernetes import LeaseLeadership, api_client

pytestmark = pytest.mark.cluster

TIMINGS = {"lease_duration": 4, "renew_deadline": 3.0, "retry_period": 1.0}
REPO = Path(__file__).resolve().parents[3]


@contextmanager
def elector(kubeconfig: Path, namespace: str, identity: str) -> Iterator[LeaseLeadership]:
    leadership = LeaseLeadership(
        api_client(kubeconfig), namespace=namespace, identity=identity, **TIMINGS
    )
    leadership.start()
    try:
        yield leadership
    finally:
        leadership.stop()


def test_two_electors_one_leader_and_a_clean_stop_hands_over_at_once(
    kube_cluster: Cluster, namespace: str
) -> None:
    with (
        elector(kube_cluster.kubeconfig, namespace, "a") as a,
        elector(kube_cluster.kubeconfig, namespace, "b") as b,
    ):
        leader = wait_until("one leader", lambda: [e for e in (a, b) if e.is_leader()])
        assert len(leader) == 1
        (first,) = leader
        other = b if first is a else a
        assert first.holder() == first.identity
        # Over several renewals, never two leaders.
        deadline = time.monotonic() + 3 * TIMINGS["retry_period"]
        while time.monotonic() < deadline:
            assert [a.is_leader(), b.is_leader()].count(True) == 1
            time.sleep(0.1)
        released_at = time.monotonic()
        first.stop()
        assert not first.is_leader()
        wait_until("the other to lead", other.is_leader, 20, 0.05)
        # Released, not expired: the standby needs one retry, not a lease duration.
        assert time.monotonic() - released_at < TIMINGS["lease_duration"]


ELECTOR = """
import sys, time
from trainyard.operator.kubernetes import LeaseLeadership, api_client
leadership = LeaseLeadership(api_client(sys.argv[1]), namespace=sys.argv[2], identity="child",
                             lease_duration=4, renew_deadline=3.0, retry_period=1.0)
leadership.start()
while True:
    print("LEADER" if leadership.is_leader() else "FOLLOWER", flush=True)
    time.sleep(0.2)
"""


def test_killing_the_leader_hands_over_within_the_lease_duration(
    kube_cluster: Cluster, namespace: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", ELECTOR, str(kube_cluster.kubeconfig), namespace],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == "LEADER":
                break
        else:
            pytest.fail(f"the child elector never led (exit {child.wait()})")
        with elector(kube_cluster.kubeconfig, namespace, "survivor") as survivor:
            wait_until(
                "the survivor to see the child's lease", lambda: survivor.holder() == "child"
            )
            assert not survivor.is_leader()
            os.kill(child.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            child.wait()
            wait_until("the survivor to lead", survivor.is_leader, 30, 0.05)
            took = time.monotonic() - killed_at
            # The child's last renewal was at most one retry period before the kill; the
            # survivor waits a lease duration from when it saw that renewal, then acquires
            # at its next retry.
            assert took <= TIMINGS["lease_duration"] + 2 * TIMINGS["retry_period"] + 1.0, took
            assert survivor.holder() == "survivor"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_leader_whose_lease_is_taken_stops_leading_at_its_next_renewal(
    kube_cluster: Cluster, namespace: str
) -> None:
    """As when a partitioned leader's lease was taken over: it must not go on acting."""
    with elector(kube_cluster.kubeconfig, namespace, "a") as a:
        wait_until("a to lead", a.is_leader)
        coordination = client.CoordinationV1Api(kube_cluster.api)
        lease = coordination.read_namespaced_lease(a.name, namespace)
        lease.spec.holder_identity = "usurper"
        lease.spec.lease_duration_seconds = 3600
        coordination.replace_namespaced_lease(a.name, namespace, lease)
        wait_until("a to stop leading", lambda: not a.is_leader(), 2 * TIMINGS["retry_period"] + 1)
        assert a.holder() == "usurper"


def test_impossible_timings_are_an_error_not_an_exit(kube_cluster: Cluster) -> None:
    with pytest.raises(ValueError, match="lease_duration > renew_deadline"):
        LeaseLeadership(kube_cluster.api, namespace="default", lease_duration=2, renew_deadline=3)
