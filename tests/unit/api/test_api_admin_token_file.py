"""The admin-token file: whoever controls its contents is admin, so it is trusted only
when it is a private regular file of ours, and it is never seen half-written."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine

from trainyard.api.auth import AdminTokenFileError, TokenVerifier, ensure_admin_token
from trainyard.store import make_engine, migrate


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    yield engine  # type: ignore[misc]
    engine.dispose()


def test_a_symbolic_link_is_refused_and_its_target_not_registered(
    tmp_path: Path, engine: Engine
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    planted = tmp_path / "planted"
    planted.write_text("attacker-chosen-token\n")
    (home / "admin-token").symlink_to(planted)
    with pytest.raises(AdminTokenFileError, match="link"):
        ensure_admin_token(engine, home=home, configured=None)
    assert isinstance(TokenVerifier(engine).lookup("attacker-chosen-token"), str)


def test_an_empty_file_is_refused_not_registered_as_the_empty_token(
    tmp_path: Path, engine: Engine
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "admin-token").write_text("")
    with pytest.raises(AdminTokenFileError, match="empty"):
        ensure_admin_token(engine, home=home, configured=None)
    assert isinstance(TokenVerifier(engine).lookup(""), str)


def test_a_readable_file_is_made_private(tmp_path: Path, engine: Engine) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    path = home / "admin-token"
    path.write_text("an-existing-admin-token\n")
    path.chmod(0o644)
    assert ensure_admin_token(engine, home=home, configured=None) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    principal = TokenVerifier(engine).lookup("an-existing-admin-token")
    assert principal is not None and principal.is_admin


def test_servers_starting_together_agree_on_one_complete_token(
    tmp_path: Path, engine: Engine
) -> None:
    home = tmp_path / "home"
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def start_server() -> None:
        start.wait()
        try:
            ensure_admin_token(engine, home=home, configured=None)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start_server) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    token = (home / "admin-token").read_text().strip()
    assert len(token) == 43
    assert isinstance(TokenVerifier(engine).lookup(""), str)
    assert sorted(p.name for p in home.iterdir()) == ["admin-token"]  # no temporary left
