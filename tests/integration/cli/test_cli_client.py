"""`trainyard submit/list/get/cancel/logs/queues/cluster/token` against a live server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.support.servers import ApiServer
from trainyard.cli import app
from trainyard.layout import worker_log_path
from trainyard.store import JobState, transition_job, write_transaction

JOB_YAML = """\
name: gpt-small
workers: 2
resources: {cpu: "8", memory: 64Gi, gpu: 8, gpu_models: [H100, A100]}
workload: {builtin: gpt, args: {steps: 2000}}
"""


@pytest.fixture
def cli(server: ApiServer, tmp_path: Path):
    runner = CliRunner()
    env = {
        "TRAINYARD_URL": server.url,
        "TRAINYARD_TOKEN": server.admin_token,
        "TRAINYARD_HOME": str(tmp_path / "cli-home"),
    }

    def invoke(*args: str, token: str | None = None, **kwargs):
        run_env = dict(env)
        if token is not None:
            run_env["TRAINYARD_TOKEN"] = token
        return runner.invoke(app, list(args), env=run_env, **kwargs)

    return invoke


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(JOB_YAML)
    return path


def test_submit_list_get_cancel_round_trip(cli, job_file: Path) -> None:
    submitted = cli("submit", str(job_file), "-o", "json")
    assert submitted.exit_code == 0, submitted.output
    job = json.loads(submitted.stdout)
    assert job["state"] == "PENDING" and job["resources"]["gpu"] == 8

    listed = cli("list")
    assert listed.exit_code == 0 and job["id"] in listed.stdout and "gpt-small" in listed.stdout

    as_yaml = yaml.safe_load(cli("list", "-o", "yaml", "--state", "pending").stdout)
    assert [j["id"] for j in as_yaml["data"]] == [job["id"]]

    shown = cli("get", job["id"])
    assert shown.exit_code == 0 and "submitted" in shown.stdout and "PENDING" in shown.stdout

    cancelled = cli("cancel", job["id"], "-o", "json")
    assert cancelled.exit_code == 0 and json.loads(cancelled.stdout)["state"] == "CANCELLED"

    again = cli("cancel", job["id"])
    assert again.exit_code == 1
    assert again.stderr.startswith("error: 409") and again.stderr.count("\n") == 1


def test_submit_from_stdin_with_idempotency_key(cli) -> None:
    first = cli("submit", "-", "-o", "json", "--idempotency-key", "k1", input=JOB_YAML)
    second = cli("submit", "-", "-o", "json", "--idempotency-key", "k1", input=JOB_YAML)
    assert first.exit_code == second.exit_code == 0
    assert json.loads(first.stdout)["id"] == json.loads(second.stdout)["id"]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("name: bad\nworkload: {builtin: gpt}\nresources: {gpu: -1}\n", "resources.gpu"),
        ("name: bad\nworkload: {builtin: gpt}\nqueue: nope\n", "unknown queue"),
        ("name: [", "not valid YAML"),
    ],
)
def test_bad_documents_print_one_line_and_exit_1(
    cli, tmp_path: Path, document: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(document)
    result = cli("submit", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: 422") and expected in result.stderr
    assert result.stderr.count("\n") == 1


def test_missing_file_bad_token_and_unreachable_server(cli, server: ApiServer) -> None:
    missing = cli("submit", "/nonexistent/job.yaml")
    assert missing.exit_code == 1 and "cannot read /nonexistent/job.yaml" in missing.stderr
    bad_token = cli("list", token="nope")
    assert bad_token.exit_code == 1 and "401" in bad_token.stderr
    unreachable = CliRunner().invoke(
        app, ["list"], env={"TRAINYARD_URL": "http://127.0.0.1:18099", "TRAINYARD_TOKEN": "x"}
    )
    assert unreachable.exit_code == 1 and "cannot reach Trainyard" in unreachable.stderr


def test_logs_and_follow(cli, server: ApiServer, job_file: Path) -> None:
    job = json.loads(cli("submit", str(job_file), "-o", "json").stdout)
    path = worker_log_path(server.home, job["id"], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("step 1\nstep 2\n")
    assert cli("logs", job["id"]).stdout == "step 1\nstep 2\n"
    with write_transaction(server.engine) as conn:
        for state in (JobState.ADMITTED, JobState.RUNNING, JobState.FAILED):
            transition_job(conn, job_id=job["id"], to_state=state)
    followed = cli("logs", "-f", job["id"])
    assert followed.exit_code == 0 and followed.stdout == "step 1\nstep 2\n"
    assert cli("logs", "0" * 32).exit_code == 1


def test_queues_and_cluster(cli, job_file: Path) -> None:
    cli("submit", str(job_file))
    queues = cli("queues")
    assert queues.exit_code == 0 and "default" in queues.stdout and "gpt-small" in queues.stdout
    as_json = json.loads(cli("queues", "-o", "json").stdout)
    assert as_json["data"][0]["pending"] == 1
    cluster = cli("cluster")
    assert cluster.exit_code == 0 and "cpu" in cluster.stdout and "memory" in cluster.stdout
    assert json.loads(cli("cluster", "-o", "json").stdout)["backend"] == "local"


def test_token_create_makes_a_user_who_sees_only_their_jobs(
    cli, server: ApiServer, job_file: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    db_env = {
        "TRAINYARD_HOME": str(server.home),
        "TRAINYARD_DATABASE_URL": str(server.engine.url.render_as_string(hide_password=False)),
    }
    created = runner.invoke(app, ["token", "create", "--user", "carol"], env=db_env)
    assert created.exit_code == 0, created.output
    carol = created.stdout.strip()
    assert len(carol) >= 40
    admin_job = json.loads(cli("submit", str(job_file), "-o", "json").stdout)
    own = json.loads(cli("submit", str(job_file), "-o", "json", token=carol).stdout)
    assert own["owner"] == "carol"
    listed = json.loads(cli("list", "-o", "json", token=carol).stdout)
    assert [j["id"] for j in listed["data"]] == [own["id"]]
    hidden = cli("get", admin_job["id"], token=carol)
    assert hidden.exit_code == 1 and "404" in hidden.stderr
    admin = runner.invoke(app, ["token", "create", "--user", "dave", "--admin"], env=db_env)
    dave = admin.stdout.strip()
    assert len(json.loads(cli("list", "-o", "json", token=dave).stdout)["data"]) == 2


SERVICE_YAML = """\
name: svc
kind: inference
mode: service
replicas: 2
serve_checkpoint: /models/a
resources: {cpu: 500m, memory: 512Mi}
workload: {builtin: gpt}
"""


def test_update_changes_a_service_and_names_what_is_wrong(cli, tmp_path: Path) -> None:
    job = json.loads(cli("submit", "-", "-o", "json", input=SERVICE_YAML).stdout)
    updated = cli("update", job["id"], "--serve-checkpoint", "/models/b", "-o", "json")
    assert updated.exit_code == 0, updated.output
    body = json.loads(updated.stdout)
    assert body["serve_checkpoint"] == "/models/b" and body["revision"] == 2

    changes = tmp_path / "changes.yaml"
    changes.write_text("max_replicas: 4\nautoscale: {metric: inflight, target: 2}\n")
    resized = cli("update", job["id"], "-f", str(changes), "--replicas", "3", "-o", "json")
    assert resized.exit_code == 0, resized.output
    body = json.loads(resized.stdout)
    assert body["replicas"] == 3 and body["autoscale"]["target"] == 2 and body["revision"] == 2

    bad = cli("update", job["id"], "--replicas", "9")
    assert bad.exit_code == 1 and bad.stderr.startswith("error: 422") and "replicas" in bad.stderr
    nothing = cli("update", job["id"])
    assert nothing.exit_code == 1 and "nothing to change" in nothing.stderr
    training = json.loads(cli("submit", "-", "-o", "json", input=JOB_YAML).stdout)
    refused = cli("update", training["id"], "--image", "x:1")
    assert refused.exit_code == 1 and refused.stderr.startswith("error: 409")
