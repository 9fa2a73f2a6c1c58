"""The launch contract carries an inference job's runtime to the worker's argv."""

from __future__ import annotations

from typing import Any

from trainyard.operator.launch import build_workers


def _argv(**spec: Any) -> list[str]:
    document = {
        "kind": "inference",
        "mode": "service",
        "workers": 1,
        "workload": {"builtin": "gpt", "args": {"quantize": True}},
        **spec,
    }
    (worker,) = build_workers(
        job_id="j1",
        name="svc",
        kind="inference",
        spec=document,
        attempt=1,
        placement={0: "local"},
        rendezvous=("127.0.0.1", 29500),
        output_dir="/out/j1",
        checkpoint_dir="/out/train",
    )
    return list(worker.argv)


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_onnx_runtime_exports_into_the_jobs_own_output() -> None:
    argv = _argv(runtime="onnx")
    assert _value(argv, "--runtime") == "onnx"
    assert _value(argv, "--onnx-dir") == "/out/j1/onnx"  # not the training job's directory
    assert _value(argv, "--checkpoint-dir") == "/out/train"
    assert "--quantize" in argv


def test_a_document_without_runtime_runs_torch() -> None:
    argv = _argv()
    assert _value(argv, "--runtime") == "torch"
    assert "--onnx-dir" not in argv
