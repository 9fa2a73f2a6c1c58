"""The inference `runtime` field: its default, where it applies, and onnx's fp32 rule."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from trainyard.api.schemas import JobCreate


def _inference(**extra: Any) -> dict[str, Any]:
    return {"name": "x", "kind": "inference", "workload": {"builtin": "gpt"}, **extra}


def _rejected_field(document: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ValidationError) as info:
        JobCreate.model_validate(document)
    error = info.value.errors()[0]
    return error["loc"][-1], error["msg"]


def test_inference_defaults_to_torch_and_training_has_no_runtime() -> None:
    assert JobCreate.model_validate(_inference()).runtime == "torch"
    assert JobCreate.model_validate({"name": "x", "workload": {"builtin": "gpt"}}).runtime is None
    onnx = JobCreate.model_validate(
        _inference(runtime="onnx", workload={"builtin": "gpt", "args": {"quantize": True}})
    )
    assert onnx.runtime == "onnx"  # int8 under onnxruntime is supported


def test_runtime_on_a_training_job_is_422_naming_runtime() -> None:
    field, message = _rejected_field(
        {"name": "x", "workload": {"builtin": "gpt"}, "runtime": "onnx"}
    )
    assert field == "runtime" and "kind inference" in message


def test_runtime_with_a_command_workload_is_422_naming_runtime() -> None:
    document = _inference(runtime="onnx", workload={"command": ["python", "serve.py"]})
    field, message = _rejected_field(document)
    assert field == "runtime" and "built-in" in message


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_onnx_in_half_precision_is_422_naming_precision(precision: str) -> None:
    field, message = _rejected_field(_inference(runtime="onnx", precision=precision))
    assert field == "precision" and "fp32" in message


def test_unknown_runtime_is_422() -> None:
    field, _ = _rejected_field(_inference(runtime="tensorrt"))
    assert field == "runtime"
