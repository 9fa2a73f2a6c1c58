"""torchrun with 2 CPU processes (gloo): the DDP, mixed-precision and checkpoint guarantees."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import httpx
import torch
from worker_procs import find_free_ports, run_torchrun, torchrun_cmd, wait_for, worker_env

from trainyard.worker.checkpoint import list_checkpoints, load_valid
from trainyard.worker.models.gpt import GPT, GPTConfig, lm_loss
from trainyard.worker.precision import autocast

CPU = torch.device("cpu")


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-4000:]


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def test_ddp_bf16_learns_keeps_ranks_identical_and_matches_single_process_grads(
    tmp_path: Path,
) -> None:
    result = run_torchrun(
        "--workload",
        "gpt",
        "--precision",
        "bf16",
        "--steps",
        "30",
        "--grad-accum",
        "2",
        "--batch-size",
        "8",
        "--output-dir",
        str(tmp_path),
        "--metrics-port",
        "0",
        "--debug-param-checksums",
        "--debug-dump-grads-step",
        "0",
    )
    _ok(result)
    summary = _summary(tmp_path)
    assert summary["world_size"] == 2 and summary["backend"] == "gloo"
    assert summary["precision"] == "bf16" and summary["steps"] == 30
    assert summary["last_loss"] < 0.9 * summary["first_loss"]
    assert summary["tokens_per_s"] > 0

    # Both ranks hold bit-identical parameters after every step.
    rank_sums = [
        [
            json.loads(line)
            for line in (tmp_path / "debug" / f"param-checksums-rank{r}.jsonl")
            .read_text()
            .splitlines()
        ]
        for r in (0, 1)
    ]
    assert [c["step"] for c in rank_sums[0]] == list(range(1, 31))
    assert rank_sums[0] == rank_sums[1]
    assert len({c["sha256"] for c in rank_sums[0]}) == 30, "parameters must change every step"

    # DDP gradients (after all-reduce, both micro-steps) == one process on the global batch.
    dumps = [torch.load(tmp_path / "debug" / f"grads-rank{r}.pt") for r in (0, 1)]
    for name, grad in dumps[0]["grads"].items():
        assert torch.equal(grad, dumps[1]["grads"][name]), f"ranks disagree on grad of {name}"
    model = GPT(GPTConfig())
    model.load_state_dict(dumps[0]["params"])
    batches = [b for d in dumps for b in d["batches"]]
    inputs = torch.cat([x for x, _ in batches])
    targets = torch.cat([y for _, y in batches])
    assert inputs.shape[0] == 2 * 2 * 8  # ranks x micro-steps x batch
    with autocast(CPU, "bf16"):
        loss = lm_loss(model(inputs), targets)
    loss.backward()
    for name, p in model.named_parameters():
        ddp_grad = dumps[0]["grads"][name]
        # bf16 rounds each rank's partial gradient once more than the single pass does.
        assert _relative_error(ddp_grad, p.grad) < 2e-2, name


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    common = [
        "--workload",
        "gpt",
        "--precision",
        "fp32",
        "--deterministic",
        "--dropout",
        "0.1",
        "--grad-accum",
        "2",
        "--batch-size",
        "4",
        "--steps",
        "12",
        "--checkpoint-every",
        "4",
        "--keep-checkpoints",
        "10",
        "--metrics-port",
        "0",
    ]
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    _ok(run_torchrun(*common, "--output-dir", str(straight)))

    # Rank 0 SIGKILLs itself in the middle of step 10 (after checkpoint-8).
    result = run_torchrun(*common, "--output-dir", str(crashed), "--debug-crash-at-step", "9")
    assert result.returncode != 0
    assert [s for s, _ in list_checkpoints(crashed)] == [8, 4]
    # A truncated "newest" checkpoint must be skipped, not trusted.
    good = (crashed / "checkpoint-8.pt").read_bytes()
    (crashed / "checkpoint-10.pt").write_bytes(good[: len(good) // 3])

    resumed = run_torchrun(*common, "--output-dir", str(crashed))
    _ok(resumed)
    assert "skipping checkpoint: checkpoint-10.pt is unreadable" in resumed.stderr
    assert _summary(crashed)["resumed_from_step"] == 8

    a = load_valid(straight / "checkpoint-12.pt", 12)
    b = load_valid(crashed / "checkpoint-12.pt", 12)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), f"weights differ after resume: {name}"
    for pid, slot in a["optimizer"]["state"].items():
        for key, value in slot.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][key]), (pid, key)
    assert a["data"] == b["data"]
    assert _summary(straight)["last_loss"] == _summary(crashed)["last_loss"]


def test_sigterm_checkpoints_and_metrics_are_served(tmp_path: Path) -> None:
    port = find_free_ports(2)
    proc = subprocess.Popen(
        torchrun_cmd(
            "--workload",
            "gpt",
            "--steps",
            "100000",
            "--checkpoint-every",
            "100000",
            "--batch-size",
            "4",
            "--output-dir",
            str(tmp_path),
            "--job",
            "sigterm-test",
            "--metrics-port",
            str(port),
            "--metrics-addr",
            "127.0.0.1",
            "--peak-flops",
            "1e11",
        ),
        env=worker_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        scraped: dict[int, str] = {}

        def both_ranks_past_step_3() -> bool:
            for rank in (0, 1):
                try:
                    scraped[rank] = httpx.get(f"http://127.0.0.1:{port + rank}/metrics").text
                except httpx.HTTPError:
                    return False
            return all(_metric(scraped[r], "trainyard_worker_step", r) >= 3 for r in (0, 1))

        wait_for(both_ranks_past_step_3, 180, "both ranks to report step >= 3")
        for rank in (0, 1):
            text = scraped[rank]
            for family in (
                "trainyard_worker_loss", "trainyard_worker_samples_per_second",
                "trainyard_worker_tokens_per_second", "trainyard_worker_peak_memory_bytes",
                "trainyard_worker_mfu_ratio", "trainyard_worker_step_duration_seconds_count",
                "trainyard_worker_data_wait_seconds_count",
            ):  # fmt: skip
                assert _metric(text, family, rank) > 0, (family, rank)
            assert "trainyard_worker_gpu_utilization_ratio" not in text  # no GPU: absent
            assert "trainyard_worker_checkpoint_duration_seconds_count" in text
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "stopping at step" in stderr
    checkpoints = list_checkpoints(tmp_path)
    assert len(checkpoints) == 1
    step, path = checkpoints[0]
    assert 3 <= step < 100000
    assert load_valid(path, step)["step"] == step
    summary = _summary(tmp_path)
    assert summary["preempted"] is True and summary["steps"] == step


def _metric(text: str, family: str, rank: int) -> float:
    prefix = f'{family}{{job="sigterm-test",queue="",rank="{rank}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return -1.0
