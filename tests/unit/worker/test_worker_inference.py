"""Batch inference against eager fp32, malformed input, quantization, and the cnn head."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trainyard.worker.__main__ import main
from trainyard.worker.checkpoint import CheckpointManager
from trainyard.worker.inference.batch import run_batch
from trainyard.worker.inference.loading import load_predictor
from trainyard.worker.models.gpt import GPT, GPTConfig

CPU = torch.device("cpu")
TEXTS = [
    "The driver counted the wagons of coal bound for Ashford.",
    "Fog",
    "A much longer line of text that runs past the sixty-four byte context of the default "
    "model, so only its last bytes are scored by the model.",
    "Timetable: Jarrow 07:15, Penrith 09:40.",
    "ab",
]


def _train_checkpoint(out: Path, *args: str) -> Path:
    code = main(["train", "--output-dir", str(out), "--metrics-port", "0", "--steps", "2",
                 "--batch-size", "4", *args])  # fmt: skip
    assert code == 0
    return out


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return _train_checkpoint(tmp_path_factory.mktemp("gpt"))


def _eager_fp32_nll(model: GPT, text: str) -> float:
    ids = torch.tensor(list(text.encode()[-(model.config.block_size + 1) :]))
    with torch.no_grad():
        logits = model(ids[None, :-1])[0]
    return F.cross_entropy(logits, ids[1:]).item()


def _eager_model(directory: Path) -> GPT:
    state = CheckpointManager(directory).load_latest()
    assert state is not None
    model = GPT(GPTConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval()


def _run(predictor, lines: list[str], batch_size: int = 2) -> list[dict]:
    sink = io.StringIO()
    run_batch(predictor, io.StringIO("\n".join(lines) + "\n"), sink, batch_size)
    return [json.loads(line) for line in sink.getvalue().splitlines()]


def test_batched_bf16_scores_match_eager_fp32(gpt_dir: Path) -> None:
    predictor, info = load_predictor(gpt_dir, CPU)
    assert info["precision"] == "bf16"
    results = _run(predictor, [json.dumps({"id": i, "text": t}) for i, t in enumerate(TEXTS)])
    model = _eager_model(gpt_dir)
    assert [r["id"] for r in results] == list(range(len(TEXTS)))
    for text, result in zip(TEXTS, results, strict=True):
        assert result["nll"] == pytest.approx(_eager_fp32_nll(model, text), abs=0.05)
    assert results[2]["tokens"] == model.config.block_size  # long text: last bytes only


def test_batched_generation_equals_one_at_a_time(gpt_dir: Path) -> None:
    """Right padding must not leak into any row: batched greedy == unbatched greedy (fp32)."""
    predictor, _ = load_predictor(gpt_dir, CPU, precision="fp32")
    lines = [json.dumps({"text": t, "max_new_tokens": 8}) for t in TEXTS]
    batched = _run(predictor, lines, batch_size=len(lines))
    single = _run(predictor, lines, batch_size=1)
    assert [r["completion"] for r in batched] == [r["completion"] for r in single]
    assert all(len(r["completion"].encode()) >= 1 for r in batched)


def test_malformed_lines_are_reported_with_their_number_and_the_rest_runs(
    gpt_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    predictor, _ = load_predictor(gpt_dir, CPU)
    lines = [
        json.dumps({"text": "first"}),
        '{"text": "unterminated',
        "",
        json.dumps({"id": "x", "text": 42}),
        json.dumps({"text": "fifth", "max_new_tokens": -1}),
        json.dumps({"text": "last"}),
    ]
    with caplog.at_level(logging.WARNING):
        results = _run(predictor, lines)
    assert [r["line"] for r in results] == [1, 2, 4, 5, 6]
    assert results[1]["error"].startswith("invalid JSON")
    assert results[2] == {"line": 4, "id": "x", "error": "text: required, a non-empty string"}
    assert "max_new_tokens" in results[3]["error"]
    assert "nll" in results[0] and "nll" in results[4]
    assert "line 2: invalid JSON" in caplog.text


def test_cli_batch_mode_writes_jsonl(gpt_dir: Path, tmp_path: Path) -> None:
    src, dst = tmp_path / "in.jsonl", tmp_path / "out" / "results.jsonl"
    src.write_text(json.dumps({"text": "hello"}) + "\nnot json\n")
    code = main(["infer", "--checkpoint-dir", str(gpt_dir), "--input", str(src),
                 "--output", str(dst), "--metrics-port", "0"])  # fmt: skip
    assert code == 0
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert out[0]["line"] == 1 and out[0]["nll"] > 0
    assert out[1]["line"] == 2 and "error" in out[1]


def test_dynamic_int8_quantization_stays_close_to_fp32(gpt_dir: Path) -> None:
    predictor, info = load_predictor(gpt_dir, CPU, quantize=True)
    assert info["quantized"] and info["precision"] == "fp32"
    assert "DynamicQuantizedLinear" in repr(predictor.model)
    model = _eager_model(gpt_dir)
    results = _run(predictor, [json.dumps({"text": t}) for t in TEXTS])
    for text, result in zip(TEXTS, results, strict=True):
        assert result["nll"] == pytest.approx(_eager_fp32_nll(model, text), abs=0.1)


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path, capsys) -> None:
    code = main(["infer", "--checkpoint-dir", str(tmp_path), "--input", "x", "--output", "y"])
    assert code == 2
    assert "no valid checkpoint" in capsys.readouterr().err


def test_cnn_predictions_match_eager_argmax(tmp_path: Path) -> None:
    directory = _train_checkpoint(tmp_path / "cnn", "--workload", "cnn")
    predictor, _ = load_predictor(directory, CPU)
    images = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    lines = [json.dumps({"image": img.tolist()}) for img in images]
    lines.append(json.dumps({"image": [[1.0, 2.0]]}))
    results = _run(predictor, lines, batch_size=4)
    with torch.no_grad():
        expected = predictor.model(images).float().softmax(-1)
    for i in range(5):
        assert results[i]["probs"] == pytest.approx(expected[i].tolist(), abs=0.02)
    assert "image: must have shape [3, 16, 16]" in results[5]["error"]


def test_user_workload_inference_returns_raw_outputs(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    directory = _train_checkpoint(tmp_path / "user", "--workload", "user_workload:regression")
    predictor, info = load_predictor(directory, CPU, precision="fp32")
    assert info["workload"] == "user_workload:regression"
    x = [0.5] * 8
    results = _run(predictor, [json.dumps({"input": x}), json.dumps({"input": "nope"})])
    with torch.no_grad():
        expected = predictor.model(torch.tensor([x])).tolist()[0]
    assert results[0]["output"] == pytest.approx(expected)
    assert results[1]["error"].startswith("input:")
