"""Cycle-time benchmark for the scheduling core (not a test: prints figures).

Run from the repository root:

    nice .venv/bin/python bench/scheduler/bench_cycle.py            # all tables
    nice .venv/bin/python bench/scheduler/bench_cycle.py --quick    # headline only
    nice .venv/bin/python bench/scheduler/bench_cycle.py --quotas   # quotas on vs off

Each figure is the median CPU time (time.process_time: the machine is shared, and wall
time there measures the neighbours) of --repeat runs of `schedule()` on a synthetic cluster of
8-GPU nodes (4 zones, racks of 16) with a Philly-like job mix: mostly 1-GPU jobs, some
2/4/8-GPU jobs and multi-node gangs, 10 queues, 3 priority classes. The cluster's
GPUs are held by the running jobs except a few 1-GPU holes (a busy cluster, the steady
state), so a little of the queue fits and the rest does not.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from trainyard.scheduler import (
    ClusterSnapshot,
    Node,
    PendingJob,
    RunningJob,
    SchedulerConfig,
    schedule,
)
from trainyard.scheduler.quota import (
    Cohort,
    FairSharing,
    Flavor,
    QueuePreemption,
    QueueQuota,
    QuotaConfig,
    ReclaimWithinCohort,
    ResourceQuota,
)
from trainyard.scheduler.types import (
    DEFAULT_RACK_LABEL,
    GPU_PRODUCT_LABEL,
    ZONE_LABEL,
    WorkerRequest,
)

GI = 2**30
SHAPES = (
    [(1, 1)] * 80 + [(2, 1)] * 6 + [(4, 1)] * 5 + [(8, 1)] * 5 + [(8, 2)] * 2 + [(8, 4)] + [(8, 8)]
)


def cluster(nodes: int) -> tuple[Node, ...]:
    return tuple(
        Node(
            f"node-{i:05d}",
            128_000,
            1024 * GI,
            gpus=8,
            labels={
                GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3",
                ZONE_LABEL: f"zone-{i % 4}",
                DEFAULT_RACK_LABEL: f"rack-{i // 64}",
            },
        )
        for i in range(nodes)
    )


def running_jobs(
    nodes: tuple[Node, ...], count: int, rnd: random.Random, queues: int = 10
) -> tuple[RunningJob, ...]:
    """`count` gangs spread over all nodes, filling them except a few 1-GPU holes.

    A busy cluster is the steady state of a scheduler: each cycle admits what came free
    since the last one, and most of the queue does not fit.
    """
    out = []
    per_job = max(len(nodes) // count, 1)
    for i in range(count):
        members = nodes[i * per_job : (i + 1) * per_job]
        gpus = 7 if i % 10 == 0 else 8
        out.append(
            RunningJob(
                f"run-{i:06d}",
                WorkerRequest(cpu_millicores=4000, memory_bytes=32 * GI, gpus=gpus),
                tuple(n.name for n in members),
                0.0,
                queue=f"q{i % queues}",
                priority=rnd.choice([0, 100, 1000]),
                expected_end=float(rnd.randint(60, 86_400)),
                preemptible=i % 3 == 0,
            )
        )
    return tuple(out)


def pending_jobs(count: int, rnd: random.Random, queues: int = 10) -> tuple[PendingJob, ...]:
    out = []
    for i in range(count):
        gpus, workers = rnd.choice(SHAPES)
        out.append(
            PendingJob(
                f"job-{i:06d}",
                WorkerRequest(cpu_millicores=4000 * gpus, memory_bytes=32 * GI * gpus, gpus=gpus),
                workers=workers,
                queue=f"q{i % queues}",
                priority=rnd.choice([0, 0, 100, 1000]),
                submit_time=float(rnd.randint(0, 10_000)),
                runtime_limit=float(rnd.randint(60, 86_400)),
            )
        )
    return tuple(out)


def measure(
    nodes: int, running: int, pending: int, policy: str, repeat: int, explain: bool
) -> tuple[float, int]:
    rnd = random.Random(42)
    cl = cluster(nodes)
    snapshot = ClusterSnapshot(cl, running_jobs(cl, running, rnd), pending_jobs(pending, rnd))
    config = SchedulerConfig(policy)
    times = []
    admitted = 0
    for _ in range(repeat):
        start = time.process_time()
        result = schedule(snapshot, 20_000.0, config, explain=explain)
        times.append(time.process_time() - start)
        admitted = len(result.admissions)
    return statistics.median(times), admitted


def quota_config(queues: int, cohorts: int, gpus: int) -> QuotaConfig:
    """`queues` queues in `cohorts` cohorts sharing `gpus` H100s: equal nominal quotas,
    every other queue reclaims (`any`), a borrowing limit on every third, fair sharing."""
    per_queue = gpus * 1000 // queues
    members = []
    for i in range(queues):
        preemption = QueuePreemption(
            reclaim_within_cohort=ReclaimWithinCohort.ANY if i % 2 else ReclaimWithinCohort.NEVER
        )
        limit = per_queue // 2 if i % 3 == 0 else None
        members.append(
            QueueQuota(
                f"q{i}",
                cohort=f"cohort-{i % cohorts}",
                quotas={"h100": {"gpu": ResourceQuota(per_queue, borrowing_limit=limit)}},
                preemption=preemption,
            )
        )
    return QuotaConfig(
        flavors=(Flavor("h100", {GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"}),),
        cohorts=tuple(Cohort(f"cohort-{c}") for c in range(cohorts)),
        queues=tuple(members),
        fair_sharing=FairSharing(enabled=True),
    )


def measure_quotas(
    policy: str, repeat: int, quotas_on: bool, holders: int = 50
) -> tuple[float, int, int]:
    """The headline scenario with 50 queues in 3 cohorts, with and without quotas.

    The running jobs belong to the first `holders` queues: with 50 every queue sits at
    its nominal quota; with 25 half the queues hold the whole cluster (each borrowing
    its nominal again) while the other half wait, so reclaim and fair sharing evict."""
    rnd = random.Random(42)
    cl = cluster(2000)
    snapshot = ClusterSnapshot(
        cl, running_jobs(cl, 1000, rnd, queues=holders), pending_jobs(10_000, rnd, queues=50)
    )
    config = SchedulerConfig(policy, quotas=quota_config(50, 3, 2000 * 8) if quotas_on else None)
    times = []
    result = None
    for _ in range(repeat):
        start = time.process_time()
        result = schedule(snapshot, 20_000.0, config, explain=True)
        times.append(time.process_time() - start)
    assert result is not None
    return statistics.median(times), len(result.admissions), len(result.preempted)


def decisions_per_second(repeat: int) -> tuple[float, int]:
    """Placements per second when every job fits: 2,000 empty nodes, 12,000 jobs."""
    rnd = random.Random(7)
    cl = cluster(2000)
    jobs = tuple(
        PendingJob(f"j{i}", WorkerRequest(gpus=g), workers=1, submit_time=float(i))
        for i, g in enumerate(rnd.choice([1, 1, 1, 2, 4]) for _ in range(12_000))
    )
    snapshot = ClusterSnapshot(cl, (), jobs)
    times = []
    placed = 0
    for _ in range(repeat):
        start = time.process_time()
        result = schedule(snapshot, 0.0, SchedulerConfig("fifo"), explain=False)
        times.append(time.process_time() - start)
        placed = len(result.admissions)
    return placed / statistics.median(times), placed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="only the headline figures")
    parser.add_argument("--quotas", action="store_true", help="only quotas on vs off")
    args = parser.parse_args()
    if args.quotas:
        print(
            "## Quotas: 2,000 nodes, 1,000 running, 10,000 pending, 50 queues in 3 cohorts "
            "(median ms per cycle, decide + reasons)\n"
        )
        print(
            "| running held by | policy | no quotas | quotas + fair sharing | ratio "
            "| admitted (off / on) | evicted (off / on) |"
        )
        print("|---|---|---|---|---|---|---|")
        for holders in (50, 25):
            for policy in ["fifo", "fifo-besteffort", "backfill", "priority"]:
                off, adm_off, ev_off = measure_quotas(policy, args.repeat, False, holders)
                on, adm_on, ev_on = measure_quotas(policy, args.repeat, True, holders)
                print(
                    f"| {holders} queues | {policy} | {off * 1000:.1f} | {on * 1000:.1f} "
                    f"| {on / off:.2f}x | {adm_off} / {adm_on} | {ev_off} / {ev_on} |"
                )
        return

    print(
        "## Headline: 2,000 nodes x 8 GPUs, 1,000 running, 10,000 pending (median ms per cycle)\n"
    )
    print("| policy | decide only | decide + reason for every pending job | admitted |")
    print("|---|---|---|---|")
    for policy in ["fifo", "fifo-besteffort", "priority", "backfill", "multifactor"]:
        fast, admitted = measure(2000, 1000, 10_000, policy, args.repeat, explain=False)
        full, _ = measure(2000, 1000, 10_000, policy, args.repeat, explain=True)
        print(f"| {policy} | {fast * 1000:.1f} | {full * 1000:.1f} | {admitted} |")
    rate, placed = decisions_per_second(args.repeat)
    print(
        f"\nPlacement decisions per second (all fit, {placed} placed in one cycle): {rate:,.0f}\n"
    )
    if args.quick:
        return
    print("## Scaling: backfill, decide + reasons, running = nodes / 2 (median ms per cycle)\n")
    sizes = [1_000, 10_000, 100_000]
    print("| nodes \\ pending | " + " | ".join(f"{p:,}" for p in sizes) + " |")
    print("|---" * (len(sizes) + 1) + "|")
    for nodes in [500, 2_000, 8_000]:
        cells = []
        for pending in sizes:
            reps = args.repeat if pending < 100_000 else max(args.repeat // 2, 1)
            t, _ = measure(nodes, nodes // 2, pending, "backfill", reps, explain=True)
            cells.append(f"{t * 1000:.0f}")
        print(f"| {nodes:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
