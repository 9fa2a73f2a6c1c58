"""How many workers per second the local backend launches and reaps (workload: `true`).

    nice /work/main/.venv/bin/python bench/loop/bench_local_spawn.py --workers 200 --repeats 3

Each repeat launches `--workers` one-worker jobs of `true` back to back on a fresh
$TRAINYARD_HOME (supervisor spawn + record + 'go' each), waits until the backend's watcher
has seen every one exit SUCCEEDED, then stops (forgets) them all. Reported per repeat and
as the median: launch calls/s (the loop's cost), and end-to-end workers/s from the first
launch to the last exit observed (supervisor and worker start-up included: that is what
bounds jobs/s through the whole lifecycle). `--batch` launches that many jobs, then waits
for them, the way a scheduling cycle admits a batch.
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


def one_repeat(workers: int, batch: int, program: str) -> tuple[float, float]:
    home = Path(tempfile.mkdtemp(prefix="bench-local-spawn-"))
    changed = threading.Event()
    backend = LocalBackend(home, nvml=False, gpus=0, port_range=range(28000, 29000))
    backend.start(changed.set)
    node = backend.nodes()[0].name
    launch_seconds = 0.0
    try:
        started = time.perf_counter()
        for first in range(0, workers, batch):
            t0 = time.perf_counter()
            for n in range(first, min(first + batch, workers)):
                job = f"bench-{n}"
                worker = WorkerLaunch(index=0, node=node, argv=(program,), env={})
                backend.launch(GangLaunch(job, 1, job, "q", "u", (worker,)))
            launch_seconds += time.perf_counter() - t0
        while True:
            done = sum(1 for w in backend.workers() if w.phase.exited)
            if done == workers:
                break
            changed.wait(1.0)
            changed.clear()
        elapsed = time.perf_counter() - started
        failed = [w for w in backend.workers() if w.phase.value != "SUCCEEDED"]
        if failed:
            raise SystemExit(f"{len(failed)} workers did not succeed: {failed[:3]}")
        for n in range(workers):
            backend.stop(f"bench-{n}", grace_seconds=0, reason="bench")
        return workers / launch_seconds, workers / elapsed
    finally:
        backend.close()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--program", default=shutil.which("true") or "/bin/true")
    args = parser.parse_args()
    launches, ends = [], []
    for repeat in range(args.repeats):
        launch_rate, end_rate = one_repeat(args.workers, args.batch, args.program)
        launches.append(launch_rate)
        ends.append(end_rate)
        print(
            f"repeat {repeat + 1}: launch {launch_rate:7.1f} calls/s, "
            f"launch->exit observed {end_rate:6.1f} workers/s"
        )
    print(
        f"median of {args.repeats}: launch {statistics.median(launches):.1f} calls/s, "
        f"end to end {statistics.median(ends):.1f} workers/s "
        f"({args.workers} workers of {args.program}, batches of {args.batch})"
    )


if __name__ == "__main__":
    main()
