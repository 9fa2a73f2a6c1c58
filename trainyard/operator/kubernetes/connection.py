"""An ApiClient for the configured cluster: a kubeconfig file, else in-cluster, else ~/.kube."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from kubernetes import client, config

# urllib3 logs a WARNING for each of its three connect retries of every request: while the
# apiserver is unreachable that is a flood hiding the one line per failed call that the
# watches and the leader election write themselves (with their own backoff).
logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


def api_client(kubeconfig: Path | str | None = None, *, pool_size: int = 32) -> client.ApiClient:
    """A client of its own (never the process-wide default configuration).

    `pool_size` bounds the connections kept to the apiserver; launches run up to
    `launch_concurrency` requests at once, plus the two watches and the events thread.
    """
    if kubeconfig is not None:
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
    else:
        configuration = client.Configuration()
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)
