"""The chart's ServiceMonitor and PodMonitor give Prometheus the labels the dashboards
and alert rules select on, whatever the release is called: the control plane as job
"trainyard", the workers with their own `job` label (the Trainyard job's name).

Without them the Prometheus Operator names the control plane's job after the Service
(`<release>-trainyard`: TrainyardControlPlaneDown would fire forever and the "Control
plane up" panel stay empty) and moves the workers' `job` to `exported_job`.
"""

from __future__ import annotations

from tests.integration.helm.charttool import one, render

MONITORS = ("metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true")


def test_the_control_plane_is_job_trainyard_under_any_release_name() -> None:
    objects = render(sets=MONITORS, release="prod")
    (endpoint,) = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert {"targetLabel": "job", "replacement": "trainyard"} in endpoint["relabelings"]


def test_workers_keep_their_own_job_label() -> None:
    objects = render(sets=MONITORS, release="prod")
    (endpoint,) = one(objects, "PodMonitor")["spec"]["podMetricsEndpoints"]
    assert endpoint["honorLabels"] is True
