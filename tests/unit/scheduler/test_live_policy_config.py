"""The live configuration refuses oracle policies and unknown names at start."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from trainyard.config import QueueConfig, Settings


def test_an_oracle_policy_in_the_live_configuration_is_refused_with_why() -> None:
    with pytest.raises(ValidationError, match=r"'srtf-oracle' is an oracle.*only in the simulator"):
        QueueConfig(name="q", policy="srtf-oracle")


def test_an_unknown_policy_lists_the_valid_live_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINYARD_QUEUES", '[{"name": "q", "policy": "sjf"}]')
    with pytest.raises(ValidationError, match=r"unknown policy 'sjf'.*las, predicted") as info:
        Settings()
    assert "sjf-oracle" not in str(info.value)


def test_learned_policies_are_accepted_live() -> None:
    assert [QueueConfig(name="q", policy=p).policy for p in ("las", "predicted")] == [
        "las",
        "predicted",
    ]
