"""`trainyard simulate --from-store`: a real SQLite store, migrated, with finished jobs."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from trainyard.scheduler.simulator.cli import simulate
from trainyard.scheduler.simulator.loaders import load_store
from trainyard.store.engine import make_engine, migrate, write_transaction
from trainyard.store.tables import job_attempts, jobs

S = 1_000_000  # store times are microseconds
T0 = 1_700_000_000 * S


def _store(path: Path) -> str:
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    migrate(engine)
    spec = {"name": "x", "workload": {"builtin": "gpt"}, "resources": {"gpu": 4}}
    rows = [  # id, state, submitted (s), [(started, ended) per attempt], gpus, workers
        ("a", "SUCCEEDED", 0, [(0, 3600)], 4, 1),
        ("b", "SUCCEEDED", 60, [(3600, 4000), (5000, 6000)], 8, 2),  # preempted once
        ("c", "FAILED", 120, [(120, 180)], 1, 1),
        ("d", "PENDING", 130, [], 1, 1),  # not finished: left out
        ("e", "CANCELLED", 140, [], 1, 1),  # never ran: left out
    ]
    with write_transaction(engine) as conn:
        for job_id, state, submitted, runs, gpus, workers in rows:
            conn.execute(
                jobs.insert().values(
                    id=job_id,
                    owner="ann",
                    name=f"train-{job_id}",
                    kind="training",
                    queue="research",
                    priority="normal",
                    priority_value=500,
                    state=state,
                    spec=json.dumps({**spec, "resources": {"gpu": gpus}}),
                    version=1,
                    created_at=T0 + submitted * S,
                    updated_at=T0 + submitted * S,
                )
            )
            for attempt, (start, end) in enumerate(runs, start=1):
                conn.execute(
                    job_attempts.insert().values(
                        job_id=job_id,
                        attempt=attempt,
                        queue="research",
                        owner="ann",
                        placement="{}",
                        workers=workers,
                        cpu_millicores=4000,
                        memory_bytes=2**34,
                        gpus=gpus,
                        tpu_chips=0,
                        admitted_at=T0 + start * S,
                        started_at=T0 + start * S,
                        ended_at=T0 + end * S,
                        outcome="succeeded",
                    )
                )
    engine.dispose()
    return url


def test_store_history_becomes_a_trace_of_finished_jobs(tmp_path: Path) -> None:
    history = load_store(_store(tmp_path / "store.db"))
    got = {j.id: (j.submit_time, j.duration, j.request.gpus, j.workers) for j in history.jobs}
    assert got == {"a": (0.0, 3600.0, 4, 1), "b": (60.0, 1400.0, 8, 2), "c": (120.0, 60.0, 1, 1)}
    assert (history.skipped_unfinished, history.skipped_never_ran) == (1, 1)
    a = next(j for j in history.jobs if j.id == "a")
    assert (a.owner, a.name, a.workload, a.request.cpu_millicores) == (
        "ann",
        "train-a",
        "gpt",
        4000,
    )


def test_simulate_from_store_prints_the_comparison(tmp_path: Path) -> None:
    url = _store(tmp_path / "store.db")
    app = typer.Typer()
    app.command("simulate")(simulate)
    app.callback()(lambda: None)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["simulate", "--from-store", "--database-url", url, "--policy", "fifo,las",
         "--nodes", "2", "--out", str(out), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["fifo", "las", "srtf-oracle"]
    assert all(m["jobs"] == 3 for m in metrics.values())
    assert "1 unfinished and 1 never-run jobs left out" in (out / "report.md").read_text()


def test_simulate_needs_exactly_one_source(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("simulate")(simulate)
    app.callback()(lambda: None)
    result = CliRunner().invoke(app, ["simulate", "--nodes", "1", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "exactly one of --trace FILE or --from-store" in result.output
