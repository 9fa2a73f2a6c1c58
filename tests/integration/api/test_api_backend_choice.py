"""The kubernetes backend is recorded and its inventory used; an unreachable cluster is a 503."""

from __future__ import annotations

from pathlib import Path

from tests.support.servers import free_port, running_server
from trainyard.api.inventory import PublishedInventory

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: gone
  cluster: {{server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true}}
users:
- name: someone
  user: {{token: not-a-real-token}}
contexts:
- name: gone
  context: {{cluster: gone, user: someone}}
current-context: gone
"""


def test_unreachable_cluster_is_503_not_500(database_url: str, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    # Nothing listens on this port: the cluster is down.
    kubeconfig.write_text(KUBECONFIG.format(port=free_port()))
    with running_server(
        home=tmp_path / "home",
        database_url=database_url,
        backend="kubernetes",
        kubeconfig=kubeconfig,
    ) as server:
        assert server.app.state.settings.backend == "kubernetes"
        # Before the loop publishes its view, the cluster itself is asked (and is down).
        assert isinstance(server.app.state.inventory, PublishedInventory)
        with server.client() as client:
            response = client.get("/v1/cluster")
            jobs = client.get("/v1/jobs")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("cannot read the cluster's nodes")
    assert jobs.status_code == 200
