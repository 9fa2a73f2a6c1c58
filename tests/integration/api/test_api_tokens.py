"""Tokens (issue 14, item 10): optional expiry, admin REST endpoints, `trainyard token
list|revoke`, and a revocation that every process sees at once (there was a 30 s cache)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tests.support.servers import ApiServer, running_server
from trainyard.api.auth import hash_token
from trainyard.cli import app as cli_app
from trainyard.store import insert_token, now_us, write_transaction

JOB = {"name": "job", "workload": {"builtin": "gpt"}}


def test_a_revoked_token_is_refused_at_once_by_every_server(
    server: ApiServer, database_url: str, tmp_path: Path
) -> None:
    """Two servers on one store (two replicas); each has just used the token."""
    with running_server(home=tmp_path / "replica", database_url=database_url) as replica:
        with server.client() as admin:
            created = admin.post("/v1/tokens", json={"user": "erin"})
        assert created.status_code == 201, created.text
        token = created.json()["token"]
        with server.client(token) as here, replica.client(token) as there:
            assert here.get("/v1/jobs").status_code == 200
            assert there.get("/v1/jobs").status_code == 200
            with replica.client() as admin:
                revoked = admin.post(f"/v1/tokens/{created.json()['id']}/revoke")
            assert revoked.status_code == 200 and revoked.json()["revoked_at"]
            for client in (here, there):
                refused = client.get("/v1/jobs")
                assert refused.status_code == 401
                assert refused.json()["detail"] == "token revoked"
                assert client.post("/v1/jobs", json=JOB).status_code == 401


def test_an_expired_token_is_refused(server: ApiServer) -> None:
    with write_transaction(server.engine) as conn:
        insert_token(
            conn, token_hash=hash_token("old-token"), user="u", role="user", expires_at=now_us()
        )
        insert_token(
            conn,
            token_hash=hash_token("fresh-token"),
            user="u",
            role="user",
            expires_at=now_us() + 3600 * 10**6,
        )
    with server.client("old-token") as old, server.client("fresh-token") as fresh:
        refused = old.get("/v1/jobs")
        accepted = fresh.get("/v1/jobs")
    assert refused.status_code == 401 and refused.json()["detail"] == "token expired"
    assert accepted.status_code == 200


def test_admins_create_list_and_revoke_tokens_users_cannot(server: ApiServer) -> None:
    with server.client() as admin:
        created = admin.post(
            "/v1/tokens",
            json={"user": "frank", "description": "ci", "expires_in_seconds": 3600},
        )
        listed = admin.get("/v1/tokens").json()
        missing = admin.post("/v1/tokens/999999/revoke")
        bad = admin.post("/v1/tokens", json={"user": "", "admin": "yes"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["user"] == "frank" and body["admin"] is False and body["expires_at"]
    assert "token_hash" not in json.dumps(listed) and body["token"] not in json.dumps(listed)
    assert [t["user"] for t in listed["data"]] == ["admin", "frank"]
    assert missing.status_code == 404
    assert bad.status_code == 422
    with server.client(body["token"]) as frank:
        assert frank.get("/v1/jobs").status_code == 200
        for response in (
            frank.get("/v1/tokens"),
            frank.post("/v1/tokens", json={"user": "frank", "admin": True}),
            frank.post(f"/v1/tokens/{body['id']}/revoke"),
        ):
            assert response.status_code == 403, response.text
            assert "admin" in response.json()["detail"]


def test_cli_token_create_list_and_revoke(server: ApiServer) -> None:
    runner = CliRunner()
    env = {
        "TRAINYARD_HOME": str(server.home),
        "TRAINYARD_DATABASE_URL": server.engine.url.render_as_string(hide_password=False),
    }
    created = runner.invoke(
        cli_app, ["token", "create", "--user", "gina", "--expires-in", "12h"], env=env
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    listed = runner.invoke(cli_app, ["token", "list", "-o", "json"], env=env)
    assert listed.exit_code == 0, listed.output
    (gina,) = [t for t in json.loads(listed.stdout) if t["user"] == "gina"]
    assert gina["expires_at"] and gina["revoked_at"] is None and token not in listed.stdout
    with server.client(token) as client:
        assert client.get("/v1/jobs").status_code == 200
        revoked = runner.invoke(cli_app, ["token", "revoke", str(gina["id"])], env=env)
        assert revoked.exit_code == 0, revoked.output
        assert client.get("/v1/jobs").status_code == 401
    table = runner.invoke(cli_app, ["token", "list"], env=env)
    assert "gina" in table.stdout
    unknown = runner.invoke(cli_app, ["token", "revoke", "424242"], env=env)
    assert unknown.exit_code == 1 and "no token with id 424242" in unknown.stderr
    bad = runner.invoke(
        cli_app, ["token", "create", "--user", "h", "--expires-in", "soon"], env=env
    )
    assert bad.exit_code == 1 and "--expires-in" in bad.stderr


def test_a_token_id_beyond_any_row_id_is_refused_not_a_server_error(server: ApiServer) -> None:
    """An id past 64 bits was a 500 on SQLite (OverflowError) and a 503 'retry later' on
    PostgreSQL (bigint out of range); the CLI printed the raw SQL error."""
    with server.client() as admin:
        huge = admin.post(f"/v1/tokens/{2**63}/revoke")
        huger = admin.post("/v1/tokens/99999999999999999999/revoke")
        zero = admin.post("/v1/tokens/0/revoke")
    for response in (huge, huger, zero):
        assert response.status_code == 422, response.text
        (error,) = response.json()["errors"]
        assert error["field"] == "token_id"
    env = {
        "TRAINYARD_HOME": str(server.home),
        "TRAINYARD_DATABASE_URL": server.engine.url.render_as_string(hide_password=False),
    }
    cli = CliRunner().invoke(cli_app, ["token", "revoke", str(2**63)], env=env)
    assert cli.exit_code == 1 and f"no token with id {2**63}" in cli.stderr, cli.output
