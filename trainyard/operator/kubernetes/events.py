"""Kubernetes Events on our pods ("Scheduled", "Preempted"), posted off the launch path.

kube-scheduler records an Event for every binding and preemption, which is what
`kubectl describe pod` shows; we do the same. Events are best effort, as in client-go's
broadcaster: a bounded queue drained by one thread, dropped (and counted) when full
or refused, so a slow apiserver never delays a launch because of them.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from trainyard.operator.kubernetes.connection import discard

log = logging.getLogger(__name__)

COMPONENT = "trainyard"


@dataclass(frozen=True, slots=True)
class PodEvent:
    namespace: str
    pod: str
    uid: str
    reason: str
    message: str
    type: str = "Normal"


def event_body(event: PodEvent) -> dict:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{event.pod}.{uuid.uuid4().hex[:16]}", "namespace": event.namespace},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": event.pod,
            "namespace": event.namespace,
            "uid": event.uid,
        },
        "reason": event.reason,
        "message": event.message[:1024],
        "type": event.type,
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
    }


class EventRecorder:
    """Posts PodEvents from a background thread."""

    def __init__(self, core: client.CoreV1Api, *, capacity: int = 10_000) -> None:
        self._core = core
        self._queue: queue.Queue[PodEvent | None] = queue.Queue(maxsize=capacity)
        self._thread: threading.Thread | None = None
        self.posted = 0
        self.dropped = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pod-events", daemon=True)
            self._thread.start()

    def record(self, event: PodEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far was posted or dropped (tests, shutdown)."""
        done = threading.Event()
        worker = threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True)
        worker.start()
        done.wait(timeout)

    def close(self) -> None:
        if self._thread is not None:
            self.flush(5.0)
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is None:
                    return
                discard(
                    self._core.create_namespaced_event(
                        event.namespace, event_body(event), _preload_content=False
                    )
                )
                self.posted += 1
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                self.dropped += 1
                log.debug("event %s on %s dropped: %s", event and event.reason, event, exc)
            finally:
                self._queue.task_done()
