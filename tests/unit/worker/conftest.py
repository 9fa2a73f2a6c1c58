"""Worker unit tests run on CPU with one thread each: the machine is small and shared."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the worker tests need the `worker` extra (torch)")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
