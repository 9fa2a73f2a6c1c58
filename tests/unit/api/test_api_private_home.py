"""A home Trainyard creates is private: another local user once read a job's `env` secret
straight from a world-readable SQLite file (issue 14, item 4)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainyard.api.app import create_app
from trainyard.config import Settings
from trainyard.layout import ensure_private_dir, job_output_dir, logs_dir
from trainyard.store import make_engine, submit_job


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The umask most accounts have (files 0644, directories 0755 unless asked)."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _write_a_job(home: Path) -> None:
    app = create_app(Settings(home=home, database_url=None, admin_token=None))
    submit_job(
        app.state.engine,
        owner="admin",
        spec={
            "name": "j",
            "kind": "training",
            "queue": "default",
            "priority": "normal",
            "env": {"WANDB_API_KEY": "secret-value"},
        },
        priority_value=500,
    )
    # While the engine is open the WAL and shared-memory files exist.
    files = [home / name for name in ("trainyard.db", "trainyard.db-wal", "trainyard.db-shm")]
    assert all(path.exists() for path in files)
    for path in files:
        assert mode(path) == 0o600, (path, oct(mode(path)))
    app.state.engine.dispose()


def test_a_new_home_is_0700_with_0600_files(tmp_path: Path) -> None:
    home = tmp_path / "new" / "home"
    _write_a_job(home)
    assert mode(home) == 0o700
    assert mode(home / "admin-token") == 0o600
    assert mode(home / "trainyard.db") == 0o600


def test_an_existing_open_home_is_tightened_at_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _write_a_job(home)
    os.chmod(home, 0o755)
    for name in ("trainyard.db", "trainyard.db-wal", "trainyard.db-shm"):
        if (home / name).exists():
            os.chmod(home / name, 0o644)
    _write_a_job(home)
    assert mode(home) == 0o700
    assert mode(home / "trainyard.db") == 0o600


def test_every_directory_trainyard_creates_is_0700(tmp_path: Path) -> None:
    """`logs/`, `jobs/<id>/` and the parents of a new home came out 0755 (only the last
    directory of a path got 0700), so other users could list every job's id."""
    home = tmp_path / "new" / "home"
    _write_a_job(home)
    for path in (logs_dir(home, "j1"), job_output_dir(home, "j1")):
        ensure_private_dir(path)
    created = [tmp_path / "new", home, home / "logs", home / "logs" / "j1", home / "jobs"]
    created += [home / "jobs" / "j1", home / "jobs" / "j1" / "output"]
    modes = {str(path.relative_to(tmp_path)): oct(mode(path)) for path in created}
    assert modes == {name: oct(0o700) for name in modes}


def test_an_existing_parent_is_left_as_it_is(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    ensure_private_dir(shared / "a" / "b")
    make_engine(f"sqlite:///{shared / 'db' / 'trainyard.db'}").dispose()
    assert mode(shared) == 0o755
    assert [oct(mode(p)) for p in (shared / "a", shared / "a" / "b", shared / "db")] == [
        oct(0o700)
    ] * 3
