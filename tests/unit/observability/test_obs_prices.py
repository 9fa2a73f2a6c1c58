"""Prices per accelerator-hour are finite and never negative: a bad one stops the server
at start with the field named, instead of turning usage into a negative or NaN cost."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from trainyard.config import Settings


@pytest.mark.parametrize("price", [-1.0, float("inf"), float("nan")])
def test_a_bad_price_is_refused_naming_the_model(price: float) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(accelerator_prices={"NVIDIA-H100": price})
    (error,) = raised.value.errors()
    assert error["loc"] == ("accelerator_prices", "NVIDIA-H100")


def test_prices_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINYARD_ACCELERATOR_PRICES", '{"NVIDIA-H100": 2.5, "tpu-v5e": 0}')
    assert Settings().accelerator_prices == {"NVIDIA-H100": 2.5, "tpu-v5e": 0.0}
