"""A tenant's own partition: the nodes its nominal quota would buy if it ran alone.

Finish-time fairness (Themis) compares a tenant's JCT on the shared cluster with its
JCT on a private cluster of its fair size; here that size is its nominal GPU quota,
per flavor, rounded up to whole nodes shaped like the shared cluster's nodes of that
flavor. Pure: nodes in, nodes out.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from trainyard.scheduler.quota import QuotaConfig
from trainyard.scheduler.types import Node


def partition_nodes(config: QuotaConfig, queue: str, cluster: Sequence[Node]) -> list[Node]:
    """Copies of the cluster's nodes, per flavor, holding the queue's nominal GPUs."""
    q = config.queue(queue)
    if q is None:
        return []
    out: list[Node] = []
    for flavor, per in q.quotas.items():
        gpu = per.get("gpu")
        if gpu is None or gpu.nominal <= 0:
            continue
        template = next(
            (n for n in cluster if n.ready and n.gpus and config.flavor_of(n.labels) == flavor),
            None,
        )
        if template is None:
            continue
        count = math.ceil(gpu.nominal / 1000 / template.gpus)
        out.extend(
            dataclasses.replace(template, name=f"{queue}-{flavor}-{i:04d}") for i in range(count)
        )
    return out
