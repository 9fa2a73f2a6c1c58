"""The quota file as `serve` holds it (trainyard/quotas.py): reloaded on change, a new
version that breaks a rule refused with the old one kept, including rules that only a
live control plane has (an oracle policy needs the future)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainyard.quotas import QuotaFile
from trainyard.scheduler.quota_file import QuotaFileError

GOOD = "flavors: {local: {}}\nqueues: {a: {quotas: {local: {cpu: 2}}}}\n"


def replace(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_an_oracle_policy_fails_the_start_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "q.yaml"
    path.write_text("queues: {a: {policy: srtf-oracle}}\n")
    with pytest.raises(QuotaFileError) as caught:
        QuotaFile(path)
    assert caught.value.path == "queues.a.policy"
    assert "oracle" in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "queues: {a: {policy: srtf-oracle}}\n",  # live control planes cannot run oracles
        "queues: {a: {policy: fastest}}\n",
        "queues: {a: {weight: .nan}}\n",
    ],
    ids=["oracle policy", "unknown policy", "weight nan"],
)
def test_a_new_version_that_breaks_a_rule_is_refused_and_the_old_one_kept(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "q.yaml"
    path.write_text(GOOD)
    source = QuotaFile(path)
    first = source.current()
    replace(path, text)
    assert source.current() is first
    assert source.failures == 1 and source.last_error is not None
    replace(path, GOOD.replace("cpu: 2", "cpu: 1"))
    reloaded = source.current()
    assert reloaded is not first and source.reloads == 1 and source.last_error is None
    assert reloaded.queues[0].quotas["local"]["cpu"].nominal == 1000


def test_the_files_priority_classes_are_accepted_by_submits(tmp_path: Path) -> None:
    """`priority_classes` in the quota file add to (and override) the settings' classes:
    a submit naming one gets its value; an unknown one is a 422 naming `priority`."""
    from trainyard.api.errors import FieldRuleError
    from trainyard.api.routes.jobs import _check_queue_and_priority
    from trainyard.api.schemas import JobCreate
    from trainyard.config import Settings
    from trainyard.quotas import effective_priority_classes

    path = tmp_path / "q.yaml"
    path.write_text("priority_classes: {urgent: 5000, high: 2000}\nqueues: {team: {}}\n")
    settings = Settings(home=tmp_path / "home", quota_file=path)
    classes = effective_priority_classes(settings)
    assert classes["urgent"] == 5000 and classes["high"] == 2000 and "low" in classes

    def submit(priority: str) -> int:
        job = JobCreate.model_validate(
            {"name": "x", "queue": "team", "priority": priority, "workload": {"builtin": "gpt"}}
        )
        return _check_queue_and_priority(job, settings)

    assert submit("urgent") == 5000
    assert submit("high") == 2000
    with pytest.raises(FieldRuleError) as caught:
        submit("whenever")
    assert caught.value.field == "priority" and "urgent" in caught.value.message


def test_env_var_queues_keep_working_beside_the_files(tmp_path: Path) -> None:
    from trainyard.config import QueueConfig, Settings
    from trainyard.quotas import effective_queues

    path = tmp_path / "q.yaml"
    path.write_text("queues: {team: {policy: fifo}, batch: {}}\n")
    settings = Settings(
        home=tmp_path / "home",
        quota_file=path,
        queues=[QueueConfig(name="default", policy="backfill"), QueueConfig(name="batch")],
    )
    queues = {q.name: q.policy for q in effective_queues(settings)}
    assert list(queues) == ["default", "batch", "team"]  # the settings' first, then the file's
    assert queues["team"] == "fifo" and queues["default"] == "backfill"
