"""An ApiClient for the configured cluster: a kubeconfig file, else in-cluster, else ~/.kube."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

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


def discard(response: Any) -> None:
    """Read a raw reply we do not need, so its connection goes back to the pool.

    With `_preload_content=False` urllib3 keeps the connection checked out until the body
    is read; an unread reply leaves it to the garbage collector, and the next request on
    that thread opens a new connection: a TLS handshake with the client certificate on
    both sides, per request. Before this, two of a launched pod's three calls (the
    Binding and the Event) paid one each."""
    response.data  # noqa: B018 - reading the body is the point
    response.release_conn()
