"""The job document model on its own: defaults, quantities, durations, YAML conversion."""

from __future__ import annotations

import json

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from trainyard.api.body import yaml_to_json
from trainyard.api.schemas import JobCreate, duration_seconds


def test_defaults_fill_a_minimal_document() -> None:
    job = JobCreate.model_validate({"name": "x", "workload": {"builtin": "gpt"}})
    assert (job.kind, job.queue, job.priority, job.workers) == ("training", "default", "normal", 1)
    assert (job.resources.cpu, job.resources.memory, job.resources.gpu) == ("1", "1Gi", 0)


@pytest.mark.parametrize("cpu", ["8", "500m", "0.5", 2, "1e3"])
def test_quantities_are_kept_as_written(cpu: object) -> None:
    job = JobCreate.model_validate(
        {"name": "x", "workload": {"builtin": "g"}, "resources": {"cpu": cpu}}
    )
    assert job.resources.cpu == str(cpu)


@pytest.mark.parametrize("cpu", [True, "8 cores", "-1", "", None, [1]])
def test_bad_quantities_name_the_field(cpu: object) -> None:
    with pytest.raises(ValidationError) as info:
        JobCreate.model_validate(
            {"name": "x", "workload": {"builtin": "g"}, "resources": {"cpu": cpu}}
        )
    assert info.value.errors()[0]["loc"] == ("resources", "cpu")


@pytest.mark.parametrize(
    ("text", "seconds"), [("4h", 14400), ("90m", 5400), ("1h30m", 5400), ("45s", 45)]
)
def test_durations(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds
    JobCreate.model_validate({"name": "x", "workload": {"builtin": "g"}, "max_runtime": text})


@pytest.mark.parametrize("text", ["0s", "h", "4d", "1m1h", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValidationError):
        JobCreate.model_validate({"name": "x", "workload": {"builtin": "g"}, "max_runtime": text})


def test_yaml_becomes_the_same_json() -> None:
    document = b"name: x\nworkers: 2\nworkload:\n  command: [echo, hi]\nenv: {A: '1'}\n"
    assert json.loads(yaml_to_json(document)) == {
        "name": "x",
        "workers": 2,
        "workload": {"command": ["echo", "hi"]},
        "env": {"A": "1"},
    }


@pytest.mark.parametrize(
    "document",
    [b"a: &x [1]\nb: *x\n", b"!!python/object:os.system {}\n", b"when: 2024-01-01\n", b"x: .nan\n"],
    ids=["alias", "python-tag", "date", "nan"],
)
def test_unsafe_or_non_json_yaml_is_refused(document: bytes) -> None:
    with pytest.raises(RequestValidationError):
        yaml_to_json(document)
