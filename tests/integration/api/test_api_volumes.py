"""Volumes, mounts and checkpoint storage in the job document: 422s naming the field.

Over real HTTP on both databases. The kubernetes-backend server points at a kubeconfig
whose cluster is down: submits never need the cluster (the loop does), so these rules
are the API's alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.api.test_api_backend_choice import KUBECONFIG
from tests.support.servers import ApiServer, free_port, running_server

JOB: dict[str, Any] = {"name": "ok", "workload": {"builtin": "gpt"}}
DATA = {"name": "data", "pvc": "imagenet"}


def errors_of(response: httpx.Response) -> list[tuple[str, str]]:
    return [(e["field"], e["rule"]) for e in response.json()["errors"]]


@pytest.fixture
def cluster_server(database_url: str, tmp_path: Path) -> Iterator[ApiServer]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(port=free_port()))
    with running_server(
        home=tmp_path / "home",
        database_url=database_url,
        backend="kubernetes",
        kubeconfig=kubeconfig,
        allow_host_path=True,
    ) as running:
        yield running


@pytest.mark.parametrize(
    ("extra", "field", "rule"),
    [
        (
            {"volumes": [DATA], "mounts": [{"volume": "nope", "path": "/data"}]},
            "mounts",
            "unknown_volume",
        ),
        (
            {
                "volumes": [DATA, {"name": "more", "config_map": "cfg"}],
                "mounts": [
                    {"volume": "data", "path": "/data"},
                    {"volume": "more", "path": "/data/"},
                ],
            },
            "mounts",
            "unique_mount_path",
        ),
        (
            {"volumes": [DATA], "mounts": [{"volume": "data", "path": "data"}]},
            "mounts.0.path",
            "absolute_path",
        ),
        (
            {"volumes": [DATA], "mounts": [{"volume": "data", "path": "/a/../etc"}]},
            "mounts.0.path",
            "absolute_path",
        ),
        (
            {"volumes": [DATA], "mounts": [{"volume": "data", "path": "/output"}]},
            "mounts.0.path",
            "reserved_path",
        ),
        ({"volumes": [{"name": "x"}]}, "volumes.0", "one_source"),
        ({"volumes": [{"name": "x", "pvc": "a", "secret": "b"}]}, "volumes.0", "one_source"),
        ({"volumes": [DATA, DATA]}, "volumes", "unique_volume"),
        (
            {"volumes": [{"name": "x", "empty_dir": {"size": "lots"}}]},
            "volumes.0.empty_dir.size",
            "quantity",
        ),
        ({"checkpoint": {"storage": "disk"}}, "checkpoint.storage", "literal_error"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_volumes_are_422_naming_the_field(
    cluster_server: ApiServer, extra: dict[str, Any], field: str, rule: str
) -> None:
    with cluster_server.client() as client:
        response = client.post("/v1/jobs", json={**JOB, **extra})
        assert client.get("/v1/jobs").json()["count"] == 0
    assert response.status_code == 422, response.text
    assert (field.replace(".0", "[0]"), rule) in errors_of(response), response.text


def test_host_path_is_for_admins_only(cluster_server: ApiServer) -> None:
    document = {
        **JOB,
        "volumes": [{"name": "scratch", "host_path": "/mnt/scratch"}],
        "mounts": [{"volume": "scratch", "path": "/scratch"}],
    }
    with cluster_server.client(cluster_server.token("bob")) as bob:
        refused = bob.post("/v1/jobs", json=document)
    assert refused.status_code == 422
    assert errors_of(refused) == [("volumes[0].host_path", "admin_only")]
    with cluster_server.client() as admin:
        accepted = admin.post("/v1/jobs", json=document)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["volumes"][0]["host_path"] == "/mnt/scratch"


def test_host_path_needs_the_deployment_to_allow_it(database_url: str, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(port=free_port()))
    with (
        running_server(
            home=tmp_path / "home",
            database_url=database_url,
            backend="kubernetes",
            kubeconfig=kubeconfig,
        ) as server,
        server.client() as admin,
    ):
        response = admin.post(
            "/v1/jobs", json={**JOB, "volumes": [{"name": "h", "host_path": "/srv"}]}
        )
    assert response.status_code == 422
    assert errors_of(response) == [("volumes[0].host_path", "host_path_disabled")]


def test_a_dataset_mount_and_checkpoint_storage_are_stored_as_given(
    cluster_server: ApiServer,
) -> None:
    document = {
        **JOB,
        "volumes": [DATA, {"name": "tmp", "empty_dir": {"size": "20Gi"}}],
        "mounts": [
            {"volume": "data", "path": "/data", "read_only": True},
            {"volume": "tmp", "path": "/tmp/work"},
        ],
        "checkpoint": {"storage": "pvc", "size": "50Gi", "storage_class": "nfs"},
    }
    with cluster_server.client(cluster_server.token("carol")) as carol:
        created = carol.post("/v1/jobs", json=document)
        assert created.status_code == 201, created.text
        stored = carol.get(f"/v1/jobs/{created.json()['id']}").json()
    assert stored["mounts"][0] == {"volume": "data", "path": "/data", "read_only": True}
    assert stored["checkpoint"] == {"storage": "pvc", "size": "50Gi", "storage_class": "nfs"}


def test_the_local_backend_refuses_volumes_with_the_reason(server: ApiServer) -> None:
    with server.client() as client:
        volume = client.post("/v1/jobs", json={**JOB, "volumes": [DATA]})
        claim = client.post("/v1/jobs", json={**JOB, "checkpoint": {"storage": "pvc"}})
        auto = client.post("/v1/jobs", json={**JOB, "checkpoint": {"storage": "auto"}})
    assert volume.status_code == 422
    assert errors_of(volume) == [("volumes[0].pvc", "needs_kubernetes")]
    assert "plain process" in volume.json()["errors"][0]["message"]
    assert errors_of(claim) == [("checkpoint.storage", "needs_kubernetes")]
    assert auto.status_code == 201, auto.text
