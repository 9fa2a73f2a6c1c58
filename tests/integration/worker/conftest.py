"""Worker integration tests start real processes: torchrun jobs and the HTTP service."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the worker tests need the `worker` extra (torch)")
