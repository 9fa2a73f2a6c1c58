"""The submit writer thread: results reach each request, and it leaves when idle."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from tests.support.servers import wait_for
from trainyard.api.submissions import GroupCommitter
from trainyard.store import IdempotencyConflict, Submission, make_engine, migrate


def writer_threads() -> int:
    return sum(t.name == "trainyard-submit" for t in threading.enumerate())


def test_concurrent_submits_each_get_their_own_result_and_the_thread_exits(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    before = writer_threads()
    committer = GroupCommitter(engine, idle_exit_seconds=0.2)
    spec = {"name": "x", "kind": "training", "queue": "default", "priority": "normal"}

    async def many() -> list[object]:
        submissions = [
            Submission(owner="u", spec={**spec, "name": f"j{i}"}, priority_value=1)
            for i in range(50)
        ]
        keyed = Submission(
            owner="u", spec=spec, priority_value=1, idempotency_key="k", request_hash="a"
        )
        clash = Submission(
            owner="u", spec=spec, priority_value=1, idempotency_key="k", request_hash="b"
        )
        tasks = [committer.submit(s) for s in [*submissions, keyed, keyed, clash]]
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(many())
    plain, (first, again, clash) = results[:50], results[50:]
    assert [job.name for job, created in plain] == [f"j{i}" for i in range(50)]  # type: ignore[misc]
    assert all(created for _, created in plain)  # type: ignore[misc]
    assert again[0].id == first[0].id and (first[1], again[1]) == (True, False)  # type: ignore[index]
    assert isinstance(clash, IdempotencyConflict)
    wait_for(lambda: writer_threads() == before, timeout=30, what="the writer thread to exit")
    # And it comes back for the next submit.
    job, created = asyncio.run(committer.submit(Submission(owner="u", spec=spec, priority_value=1)))
    assert created and job.name == "x"
    engine.dispose()


def test_a_request_whose_event_loop_closed_does_not_stall_later_submits(tmp_path: Path) -> None:
    """The writer answers on each request's own event loop; if that loop has closed (the
    app was shut down, or an embedding client finished), answering it fails. That must
    not kill the writer and leave every later submit waiting forever."""
    from trainyard.store.engine import _writer_lock

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    committer = GroupCommitter(engine, idle_exit_seconds=30)
    spec = {"name": "x", "kind": "training", "queue": "default", "priority": "normal"}

    async def give_up_at_once() -> None:
        task = asyncio.ensure_future(
            committer.submit(Submission(owner="u", spec=spec, priority_value=1))
        )
        await asyncio.sleep(0)  # the submission is queued
        task.cancel()

    # Hold the database's write lock so the writer is still storing the first job when
    # its loop closes, then let it go.
    with _writer_lock(engine):
        asyncio.run(give_up_at_once())

    async def submit_with_deadline() -> tuple[object, bool]:
        return await asyncio.wait_for(
            committer.submit(Submission(owner="u", spec={**spec, "name": "y"}, priority_value=1)),
            timeout=60,
        )

    job, created = asyncio.run(submit_with_deadline())
    assert created and job.name == "y"  # type: ignore[attr-defined]
    engine.dispose()
