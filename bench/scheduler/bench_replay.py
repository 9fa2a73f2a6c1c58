"""Replay speed: the Philly trace repeated N times in a row, one replay per policy.

    .venv/bin/python bench/scheduler/bench_replay.py --repeat 8 --policy fifo,las

Prints, per policy, the jobs replayed, wall seconds and CPU seconds of the replay alone
(trace loading excluded). CPU time is the figure to quote on a shared machine: wall time
there mostly measures the neighbours.

`--digest` also prints a fingerprint of everything the replay decided (every job's
start, end, preemptions, service and estimates, and the run's totals), so that a speed
change can be checked to change no decision: run the same command with
`PYTHONPATH=<old checkout>` and compare the digests.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from trainyard.scheduler.policies import policy_names
from trainyard.scheduler.simulator.cli import repeat_trace
from trainyard.scheduler.simulator.engine import SimConfig, replay
from trainyard.scheduler.simulator.loaders import load_philly, synthetic_nodes

# ../shared/traces from a checkout, or where TRAINYARD_TRACES points (as the tests).
TRACES = Path(
    os.environ.get("TRAINYARD_TRACES")
    or Path(__file__).resolve().parents[2].parent / "shared" / "traces"
)
PHILLY = TRACES / "philly" / "philly-2017-sep-dec.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=PHILLY)
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=40)
    parser.add_argument("--policy", default=",".join(policy_names()))
    parser.add_argument("--digest", action="store_true", help="print a fingerprint of decisions")
    args = parser.parse_args()
    jobs = repeat_trace(load_philly(args.trace), args.repeat)
    print(f"{len(jobs)} jobs on {args.nodes} x 8 GPUs")
    for name in args.policy.split(","):
        wall, cpu = time.perf_counter(), time.process_time()
        result = replay(synthetic_nodes(args.nodes, 8), jobs, SimConfig(name))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        done = sum(1 for r in result.records if r.end is not None)
        extra = f"  digest {result.fingerprint()}" if args.digest else ""
        print(f"{name:16s} {done:7d} jobs  wall {wall:6.1f} s  cpu {cpu:6.1f} s{extra}", flush=True)


if __name__ == "__main__":
    main()
