"""Write the Philly quota files: each virtual cluster a tenant, nominal quota
proportional to its demand (GPU-seconds in the trace), on one shared cluster.

    python bench/scheduler/philly_quotas.py ../shared/traces/philly/philly-2017-sep-dec.csv \
        --nodes 40 --out bench/scheduler/quotas

Quotas are whole 8-GPU nodes (so that "alone on its own partition" is a real cluster),
by largest remainder, at least one node each. Four files, one per scenario:

- philly-strict: no cohort: every tenant is held to its partition;
- philly-borrow: one cohort; idle quota is lent, and reclaimed by preemption (`any`);
- philly-fair: the same with fair sharing (weighted dominant resource share);
- philly-fair-decay: fair sharing ordered by usage decayed with a 24 h half-life.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import yaml

from trainyard.scheduler.simulator.loaders import PHILLY_GPUS_PER_NODE, load_philly


def node_shares(demand: Counter, nodes: int) -> dict[str, int]:
    total = sum(demand.values())
    exact = {q: nodes * d / total for q, d in demand.items()}
    share = {q: max(int(v), 1) for q, v in exact.items()}
    by_remainder = sorted(exact, key=lambda q: (-(exact[q] - int(exact[q])), q))
    i = 0
    while sum(share.values()) < nodes:
        share[by_remainder[i % len(by_remainder)]] += 1
        i += 1
    while sum(share.values()) > nodes:
        biggest = max(share, key=lambda q: (share[q], q))
        share[biggest] -= 1
    return dict(sorted(share.items(), key=lambda kv: (-kv[1], kv[0])))


def quota_file(shares: dict[str, int], scenario: str) -> dict:
    doc: dict = {
        "flavors": {"gpu": {"node_labels": {"nvidia.com/gpu.product": "GPU"}}},
        "queues": {},
    }
    shared = scenario != "strict"
    if shared:
        doc["cohorts"] = {"philly": {}}
    if scenario.startswith("fair"):
        doc["fair_sharing"] = {"enabled": True}
        if scenario == "fair-decay":
            doc["fair_sharing"]["usage_half_life"] = "24h"
    for queue, count in shares.items():
        spec: dict = {"quotas": {"gpu": {"gpu": count * PHILLY_GPUS_PER_NODE}}}
        if shared:
            spec["cohort"] = "philly"
            spec["preemption"] = {"reclaim_within_cohort": "any"}
        doc["queues"][queue] = spec
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", type=Path)
    parser.add_argument("--nodes", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("bench/scheduler/quotas"))
    args = parser.parse_args()
    demand: Counter = Counter()
    for job in load_philly(args.trace):
        demand[job.queue] += job.request.gpus * job.workers * job.duration
    shares = node_shares(demand, args.nodes)
    args.out.mkdir(parents=True, exist_ok=True)
    for scenario in ("strict", "borrow", "fair", "fair-decay"):
        path = args.out / f"philly-{scenario}.yaml"
        header = f"# Philly tenants on {args.nodes} x 8 GPUs, {scenario}: see philly_quotas.py\n"
        path.write_text(header + yaml.safe_dump(quota_file(shares, scenario), sort_keys=False))
        print(path)
    print(", ".join(f"{q}: {n}" for q, n in shares.items()))


if __name__ == "__main__":
    main()
