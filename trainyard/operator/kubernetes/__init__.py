"""The Kubernetes backend: worker pods bound by Trainyard, and Lease-based leadership.

`backend_from_settings` / `leadership_from_settings` build both from Settings
(`--backend kubernetes [--kubeconfig PATH] [--namespace NS]`); in a pod without a
kubeconfig the in-cluster service account is used.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from trainyard.operator.kubernetes.backend import RUNTIME, CacheNotSynced, KubernetesBackend
from trainyard.operator.kubernetes.config import KubernetesConfig
from trainyard.operator.kubernetes.connection import api_client
from trainyard.operator.kubernetes.leadership import ClusterFirstLeadership, LeaseLeadership

if TYPE_CHECKING:
    from trainyard.config import Settings

__all__ = [
    "RUNTIME",
    "CacheNotSynced",
    "ClusterFirstLeadership",
    "KubernetesBackend",
    "KubernetesConfig",
    "LeaseLeadership",
    "api_client",
    "backend_from_settings",
    "leadership_from_settings",
]


def config_from_settings(settings: Settings) -> KubernetesConfig:
    return KubernetesConfig(
        namespace=settings.namespace,
        default_image=settings.worker_image,
        node_lost_grace=settings.node_lost_grace,
        checkpoint_storage_class=settings.checkpoint_storage_class,
        checkpoint_node_path=settings.checkpoint_node_path,
    )


def backend_from_settings(settings: Settings) -> KubernetesBackend:
    config = config_from_settings(settings)
    return KubernetesBackend(
        api_client(settings.kubeconfig, pool_size=config.launch_concurrency + 8), config
    )


def lease_timings(ttl_seconds: float) -> dict[str, float]:
    """Lease duration, renew deadline and retry period from the one `lease_ttl_seconds`
    setting, within what the election accepts (whole seconds, retry >= 1 s)."""
    duration = max(3, math.ceil(ttl_seconds))
    retry = max(1.0, duration / 5)
    return {"lease_duration": duration, "renew_deadline": duration * 0.7, "retry_period": retry}


def leadership_from_settings(
    settings: Settings, store_lease: Any, identity: str | None = None
) -> ClusterFirstLeadership:
    """The Lease `trainyard-scheduler` in the namespace, followed by the store's lease."""
    cluster = LeaseLeadership(
        api_client(settings.kubeconfig, pool_size=4),
        namespace=settings.namespace,
        identity=identity,
        **lease_timings(settings.lease_ttl_seconds),  # type: ignore[arg-type]
    )
    return ClusterFirstLeadership(cluster, store_lease)
