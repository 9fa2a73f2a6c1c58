"""`--runtime onnx` on a real (tiny) gpt checkpoint: the same predictions as eager torch.

Stated tolerances, on the mean next-byte NLL of each text:
- onnx fp32 vs torch fp32: 1e-4 (the same fp32 arithmetic in another kernel order; measured
  differences are ~1e-6), and identical greedy completions;
- int8 (onnxruntime dynamic quantization) vs fp32: 0.1, as for torch's dynamic int8.
"""

from __future__ import annotations

import io
import json
import sys
import threading
from pathlib import Path

import onnx
import pytest
import torch

from trainyard.worker.__main__ import main
from trainyard.worker.inference import onnx_runtime
from trainyard.worker.inference.batch import run_batch
from trainyard.worker.inference.loading import load_predictor
from trainyard.worker.inference.onnx_runtime import MODEL_FILE, _publish, cache_key

pytestmark = pytest.mark.slow  # one export: ~20 s on this machine

CPU = torch.device("cpu")
FP32_TOLERANCE = 1e-4
INT8_TOLERANCE = 0.1
TEXTS = [
    "The driver counted the wagons of coal bound for Ashford.",
    "Fog",
    "A much longer line of text that runs past the sixty-four byte context of the default "
    "model, so only its last bytes are scored by the model.",
    "Timetable: Jarrow 07:15, Penrith 09:40.",
]


def _train(out: Path, *args: str) -> Path:
    code = main(["train", "--output-dir", str(out), "--metrics-port", "0", "--steps", "2",
                 "--batch-size", "4", *args])  # fmt: skip
    assert code == 0
    return out


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A trained checkpoint directory and the ONNX cache its export lands in."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("onnx")
    return _train(root / "gpt"), root / "cache"


def _predict(predictor, lines: list[str], batch_size: int = 4) -> list[dict]:
    sink = io.StringIO()
    run_batch(predictor, io.StringIO("\n".join(lines) + "\n"), sink, batch_size)
    return [json.loads(line) for line in sink.getvalue().splitlines()]


def _records(new_tokens: int = 0) -> list[str]:
    return [json.dumps({"text": t, "max_new_tokens": new_tokens}) for t in TEXTS]


def test_onnx_fp32_predicts_what_torch_fp32_does(gpt: tuple[Path, Path]) -> None:
    checkpoints, cache = gpt
    onnx_predictor, info = load_predictor(checkpoints, CPU, runtime="onnx", onnx_dir=cache)
    assert info["runtime"] == "onnx" and info["precision"] == "fp32"
    assert info["providers"] == ["CPUExecutionProvider"]
    torch_predictor, _ = load_predictor(checkpoints, CPU, precision="fp32")
    ours = _predict(onnx_predictor, _records(new_tokens=8))
    theirs = _predict(torch_predictor, _records(new_tokens=8))
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine["nll"] == pytest.approx(reference["nll"], abs=FP32_TOLERANCE)
        assert mine["tokens"] == reference["tokens"]
        assert mine["completion"] == reference["completion"]
    assert ours[2]["tokens"] == 64  # long text: the context's last bytes, as in torch


def test_onnx_int8_stays_close_to_fp32(gpt: tuple[Path, Path]) -> None:
    checkpoints, cache = gpt
    int8, info = load_predictor(checkpoints, CPU, runtime="onnx", quantize=True, onnx_dir=cache)
    assert info["quantized"]
    graph = onnx.load(str(int8.model.path)).graph
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for node in graph.node)
    fp32, _ = load_predictor(checkpoints, CPU, precision="fp32")
    for mine, reference in zip(_predict(int8, _records()), _predict(fp32, _records()), strict=True):
        assert mine["nll"] == pytest.approx(reference["nll"], abs=INT8_TOLERANCE)


def test_a_second_load_reuses_the_export(gpt: tuple[Path, Path], monkeypatch) -> None:
    checkpoints, cache = gpt
    load_predictor(checkpoints, CPU, runtime="onnx", onnx_dir=cache)

    def no_export(*args: object) -> None:
        raise AssertionError("exported again although the cache has this checkpoint")

    monkeypatch.setattr(onnx_runtime, "export", no_export)
    predictor, _ = load_predictor(checkpoints, CPU, runtime="onnx", onnx_dir=cache)
    assert predictor.model.path.parent.parent == cache


def test_cli_batch_mode_with_onnx_writes_the_torch_results(
    gpt: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoints, cache = gpt
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join([*_records(), "{not json"]) + "\n")
    outputs = {}
    for runtime in ("torch", "onnx"):
        target = tmp_path / f"{runtime}.jsonl"
        code = main(["infer", "--checkpoint-dir", str(checkpoints), "--input", str(source),
                     "--output", str(target), "--precision", "fp32", "--runtime", runtime,
                     "--onnx-dir", str(cache), "--metrics-port", "0"])  # fmt: skip
        assert code == 0
        outputs[runtime] = [json.loads(line) for line in target.read_text().splitlines()]
    assert "error" in outputs["onnx"][-1]
    for mine, reference in zip(outputs["onnx"][:-1], outputs["torch"][:-1], strict=True):
        assert mine["nll"] == pytest.approx(reference["nll"], abs=FP32_TOLERANCE)


def test_onnx_refuses_half_precision(gpt: tuple[Path, Path]) -> None:
    checkpoints, cache = gpt
    with pytest.raises(ValueError, match="--precision: runtime onnx runs the exported fp32"):
        load_predictor(checkpoints, CPU, precision="bf16", runtime="onnx", onnx_dir=cache)


def test_the_cache_key_follows_the_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint-5.pt"
    checkpoint.write_bytes(b"weights")
    first = cache_key(checkpoint, 5, False)
    assert first.startswith("model-step5-") and cache_key(checkpoint, 5, False) == first
    assert cache_key(checkpoint, 5, True) == first + "-int8"
    checkpoint.write_bytes(b"other weights")  # rewritten: exported anew
    assert cache_key(checkpoint, 5, False) != first


def test_replicas_starting_together_export_once(tmp_path: Path) -> None:
    """Two exporters at once (threads here; each opens the lock file itself, so flock
    excludes them as it does two replica processes): one builds, both get its file."""
    builds: list[int] = []
    entered = threading.Event()
    release = threading.Event()

    def build(directory: Path) -> None:
        builds.append(1)
        entered.set()
        assert release.wait(timeout=30)
        (directory / MODEL_FILE).write_bytes(b"graph")

    results: list[Path] = []
    first = threading.Thread(target=lambda: results.append(_publish(build, tmp_path, "m")))
    first.start()
    assert entered.wait(timeout=30)
    second = threading.Thread(target=lambda: results.append(_publish(build, tmp_path, "m")))
    second.start()
    release.set()
    first.join(timeout=30)
    second.join(timeout=30)
    assert len(builds) == 1
    assert results == [tmp_path / "m" / MODEL_FILE] * 2
    assert (tmp_path / "m" / MODEL_FILE).read_bytes() == b"graph"


def test_a_failed_export_leaves_no_model_and_stale_ones_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / ".export-killed"
    stale.mkdir()
    (stale / MODEL_FILE).write_bytes(b"half")

    def failing(directory: Path) -> None:
        (directory / MODEL_FILE).write_bytes(b"half")
        raise onnx_runtime.ExportError("--runtime onnx: nope")

    with pytest.raises(onnx_runtime.ExportError):
        _publish(failing, tmp_path, "m")
    assert not (tmp_path / "m").exists()
    assert list(tmp_path.glob(".export-*")) == []


def test_a_model_that_cannot_export_exits_2_with_the_exporters_words(
    tmp_path: Path, capsys
) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    checkpoints = _train(tmp_path / "dd", "--workload", "user_workload:data_dependent")
    code = main(["infer", "--checkpoint-dir", str(checkpoints), "--runtime", "onnx",
                 "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                 "--metrics-port", "0"])  # fmt: skip
    assert code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: --runtime onnx: the model cannot be exported to ONNX:")
    assert "data-dependent" in last
    assert list((checkpoints / "onnx").glob("model-*")) == []
