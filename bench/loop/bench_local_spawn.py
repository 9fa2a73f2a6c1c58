"""How many workers per second the local backend launches and reaps (workload: `true`).

    PYTHONPATH=. nice .venv/bin/python bench/loop/bench_local_spawn.py --repeats 3 --compare
    PYTHONPATH=. .venv/bin/python bench/loop/bench_local_spawn.py --batch 64 --compare-together

Each repeat launches `--workers` one-worker jobs of `true` back to back on a fresh
$TRAINYARD_HOME (supervisor spawn + record + 'go' each), waits until the backend's watcher
has seen every one exit SUCCEEDED, then stops (forgets) them all. Reported per repeat and
as the median: launch calls/s (the loop's cost), and end-to-end workers/s from the first
launch to the last exit observed (supervisor and worker start-up included: that is what
bounds jobs/s through the whole lifecycle), and the CPU the server process itself spent
per worker (launch, watch, reap, stop: what the loop's process pays). `--batch` launches
that many jobs, then waits for them, the way a scheduling cycle admits a batch.
`--compare` interleaves runs with the fork server and with a fresh interpreter per
supervisor (the fallback).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from trainyard.operator.backend import GangLaunch, WorkerLaunch
from trainyard.operator.local import LocalBackend


def one_repeat(
    workers: int, batch: int, program: str, fork_server: bool, together: bool = False
) -> tuple[float, float, float]:
    home = Path(tempfile.mkdtemp(prefix="bench-local-spawn-"))
    changed = threading.Event()
    backend = LocalBackend(
        home, nvml=False, gpus=0, port_range=range(28000, 29000), fork_server=fork_server
    )
    backend.start(changed.set)
    node = backend.nodes()[0].name
    launch_seconds = 0.0
    try:
        started = time.perf_counter()
        cpu_started = time.process_time()
        for first in range(0, workers, batch):
            t0 = time.perf_counter()
            gangs = []
            for n in range(first, min(first + batch, workers)):
                job = f"bench-{n}"
                worker = WorkerLaunch(index=0, node=node, argv=(program,), env={})
                gangs.append(GangLaunch(job, 1, job, "q", "u", (worker,)))
            if together:  # one launch_many per batch, as the loop hands a cycle's gangs over
                assert all(outcome is None for outcome in backend.launch_many(gangs))
            else:
                for gang in gangs:
                    backend.launch(gang)
            launch_seconds += time.perf_counter() - t0
        while True:
            done = sum(1 for w in backend.workers() if w.phase.exited)
            if done == workers:
                break
            changed.wait(1.0)
            changed.clear()
        elapsed = time.perf_counter() - started
        cpu_ms = (time.process_time() - cpu_started) * 1000 / workers
        failed = [w for w in backend.workers() if w.phase.value != "SUCCEEDED"]
        if failed:
            raise SystemExit(f"{len(failed)} workers did not succeed: {failed[:3]}")
        for n in range(workers):
            backend.stop(f"bench-{n}", grace_seconds=0, reason="bench")
        return workers / launch_seconds, workers / elapsed, cpu_ms
    finally:
        backend.close()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--program", default=shutil.which("true") or "/bin/true")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also run with fork_server=False (a fresh interpreter per supervisor), interleaved",
    )
    parser.add_argument(
        "--compare-together",
        action="store_true",
        help="fork server, launch() per gang vs one launch_many() per batch, interleaved",
    )
    args = parser.parse_args()
    modes: list[tuple[bool, bool]] = [(True, False)]
    if args.compare:
        modes.append((False, False))
    if args.compare_together:
        modes.append((True, True))
    results: dict[tuple[bool, bool], list[tuple[float, float, float]]] = {m: [] for m in modes}
    for repeat in range(args.repeats):
        for mode in modes:
            launch_rate, end_rate, cpu_ms = one_repeat(
                args.workers, args.batch, args.program, *mode
            )
            results[mode].append((launch_rate, end_rate, cpu_ms))
            print(
                f"repeat {repeat + 1} {_name(mode)}: launch {launch_rate:7.1f} calls/s, "
                f"launch->exit observed {end_rate:6.1f} workers/s, "
                f"server CPU {cpu_ms:.2f} ms/worker"
            )
    for mode, rows in results.items():
        launches, ends, cpus = zip(*rows, strict=True)
        print(
            f"median of {args.repeats}, {_name(mode)}: launch {statistics.median(launches):.1f} "
            f"calls/s, end to end {statistics.median(ends):.1f} workers/s, server CPU "
            f"{statistics.median(cpus):.2f} ms/worker "
            f"({args.workers} workers of {args.program}, batches of {args.batch})"
        )


def _name(mode: tuple[bool, bool]) -> str:
    fork_server, together = mode
    name = "fork server" if fork_server else "fresh interpreter"
    return name + (", launch_many per batch" if together else "")


if __name__ == "__main__":
    main()
