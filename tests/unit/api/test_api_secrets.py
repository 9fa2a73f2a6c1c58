"""Secrets by reference (issue 14, item 4): `env_from_secret` in the job document, and the
local backend's resolution from files only the service user can read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from trainyard.api.schemas import JobCreate
from trainyard.layout import secrets_dir
from trainyard.secrets import SecretError, resolve_local_secret_env

JOB = {"name": "j", "workload": {"builtin": "gpt"}}


def _secret(home: Path, name: str, key: str, value: bytes, mode: int = 0o600) -> Path:
    directory = secrets_dir(home) / name
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / key
    path.write_bytes(value)
    os.chmod(path, mode)
    return path


def test_env_from_secret_is_part_of_the_job_document() -> None:
    job = JobCreate.model_validate(
        {**JOB, "env_from_secret": {"WANDB_API_KEY": {"secret": "wandb.team", "key": "api-key"}}}
    )
    assert job.model_dump(mode="json")["env_from_secret"] == {
        "WANDB_API_KEY": {"secret": "wandb.team", "key": "api-key"}
    }


@pytest.mark.parametrize(
    ("reference", "field"),
    [
        ({"secret": "Upper", "key": "k"}, "env_from_secret.A.secret"),
        ({"secret": "a_b", "key": "k"}, "env_from_secret.A.secret"),
        ({"secret": "ok", "key": ".."}, "env_from_secret.A.key"),
        ({"secret": "ok", "key": "../etc/passwd"}, "env_from_secret.A.key"),
        ({"secret": "ok", "key": "a/b"}, "env_from_secret.A.key"),
        ({"secret": "ok"}, "env_from_secret.A.key"),
        ({"secret": "ok", "key": "k", "value": "x"}, "env_from_secret.A.value"),
    ],
)
def test_bad_references_name_the_field(reference: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        JobCreate.model_validate({**JOB, "env_from_secret": {"A": reference}})
    assert [".".join(map(str, e["loc"])) for e in raised.value.errors()] == [field]


def test_a_private_secret_file_is_resolved(tmp_path: Path) -> None:
    _secret(tmp_path, "wandb", "api-key", b"s3cr3t\n")
    _secret(tmp_path, "hf", ".token", b"hf_abc")
    spec = {
        "env_from_secret": {
            "WANDB_API_KEY": {"secret": "wandb", "key": "api-key"},
            "HF_TOKEN": {"secret": "hf", "key": ".token"},
        }
    }
    assert resolve_local_secret_env(tmp_path, spec) == {
        "WANDB_API_KEY": "s3cr3t",
        "HF_TOKEN": "hf_abc",
    }
    assert resolve_local_secret_env(tmp_path, {"name": "no-references"}) == {}


def test_a_missing_secret_names_the_secret_and_key(tmp_path: Path) -> None:
    spec = {"env_from_secret": {"A": {"secret": "absent", "key": "token"}}}
    with pytest.raises(SecretError, match="secret 'absent' key 'token'"):
        resolve_local_secret_env(tmp_path, spec)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_secret_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    _secret(tmp_path, "s", "k", b"value", mode=mode)
    with pytest.raises(SecretError, match=r"secret 's' key 'k'.*readable by others"):
        resolve_local_secret_env(tmp_path, {"env_from_secret": {"A": {"secret": "s", "key": "k"}}})


def test_a_link_is_refused(tmp_path: Path) -> None:
    target = _secret(tmp_path, "real", "k", b"value")
    (secrets_dir(tmp_path) / "s").mkdir(mode=0o700)
    (secrets_dir(tmp_path) / "s" / "k").symlink_to(target)
    with pytest.raises(SecretError, match="secret 's' key 'k'"):
        resolve_local_secret_env(tmp_path, {"env_from_secret": {"A": {"secret": "s", "key": "k"}}})


def test_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    """Needs root to give the file away (chown); skipped otherwise."""
    if os.getuid() != 0:
        pytest.skip("only root can create a file owned by another user")
    path = _secret(tmp_path, "s", "k", b"value")
    os.chown(path, 65534, 65534)
    with pytest.raises(SecretError, match="belongs to uid 65534"):
        resolve_local_secret_env(tmp_path, {"env_from_secret": {"A": {"secret": "s", "key": "k"}}})


def test_path_tricks_in_a_stored_reference_are_refused(tmp_path: Path) -> None:
    """The API validates references; the resolver does not trust that it did."""
    _secret(tmp_path, "s", "k", b"value")
    for reference in ({"secret": "..", "key": "k"}, {"secret": "s", "key": "../s/k"}):
        with pytest.raises(SecretError, match="not a valid secret name and key"):
            resolve_local_secret_env(tmp_path, {"env_from_secret": {"A": reference}})
