"""The Kubernetes backend: worker pods bound by Trainyard, and Lease-based leadership.

`backend_from_settings` / `leadership_from_settings` build both from Settings
(`--backend kubernetes [--kubeconfig PATH] [--namespace NS]`); in a pod without a
kubeconfig the in-cluster service account is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainyard.operator.kubernetes.backend import RUNTIME, CacheNotSynced, KubernetesBackend
from trainyard.operator.kubernetes.config import KubernetesConfig
from trainyard.operator.kubernetes.connection import api_client
from trainyard.operator.kubernetes.leadership import LeaseLeadership

if TYPE_CHECKING:
    from trainyard.config import Settings

__all__ = [
    "RUNTIME",
    "CacheNotSynced",
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
    )


def backend_from_settings(settings: Settings) -> KubernetesBackend:
    config = config_from_settings(settings)
    return KubernetesBackend(
        api_client(settings.kubeconfig, pool_size=config.launch_concurrency + 8), config
    )


def leadership_from_settings(settings: Settings, identity: str | None = None) -> LeaseLeadership:
    return LeaseLeadership(
        api_client(settings.kubeconfig, pool_size=4),
        namespace=settings.namespace,
        identity=identity,
    )
