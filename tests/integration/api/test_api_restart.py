"""Jobs and the admin token survive a restart; the admin token file is private."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx

from tests.support.servers import running_server

JOB = {"name": "durable", "workload": {"builtin": "gpt"}}


def test_jobs_and_token_survive_a_restart(database_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    with running_server(home=home, database_url=database_url) as first:
        token = first.admin_token
        with first.client() as client:
            job = client.post("/v1/jobs", json=JOB).json()
    mode = stat.S_IMODE((home / "admin-token").stat().st_mode)
    assert mode == 0o600
    with running_server(home=home, database_url=database_url) as second:
        assert second.admin_token == token
        with second.client() as client:
            again = client.get(f"/v1/jobs/{job['id']}")
    assert again.status_code == 200 and again.json()["name"] == "durable"


def test_configured_admin_token_is_used_and_no_file_is_written(
    database_url: str, tmp_path: Path
) -> None:
    from trainyard.api.app import create_app
    from trainyard.config import Settings

    home = tmp_path / "home"
    app = create_app(
        Settings(home=home, database_url=database_url, admin_token="s3cret-admin-token")
    )
    app.state.engine.dispose()
    assert not (home / "admin-token").exists()
    assert app.state.admin_token_file is None
    # The same token works over HTTP on a server sharing that database.
    headers = {"Authorization": "Bearer s3cret-admin-token"}
    with (
        running_server(home=tmp_path / "other", database_url=database_url) as server,
        httpx.Client(base_url=server.url, headers=headers) as client,
    ):
        assert client.get("/v1/jobs").status_code == 200
