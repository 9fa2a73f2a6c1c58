"""Training throughput and MFU of the `gpt` workload: bf16 vs fp32, side by side, medians.

CPU (what BENCHMARKS.md quotes; 2 gloo ranks, one thread each, default tiny GPT):

    nice .venv/bin/python bench/worker/bench_train.py --repeats 3

GPU (the H100 target: ~124M-parameter GPT, sequence 1024, bf16, torch.compile, SDPA flash
attention; fp32 means TF32 matmuls), with and without compile:

    python bench/worker/bench_train.py --gpu --nproc 1 --repeats 3

MFU on CPU is relative to a *measured* single-thread matmul peak of the same dtype (no vendor
figure exists for a shared vCPU); on known GPUs it is relative to the datasheet dense peak.
Each configuration runs `--repeats` times, interleaved, and the median is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CPU_WIDE = ["--n-layer", "4", "--n-head", "4", "--n-embd", "256", "--block-size", "128"]
GPU_124M = [
    "--n-layer", "12", "--n-head", "12", "--n-embd", "768", "--block-size", "1024",
    "--vocab-size", "50304", "--batch-size", "16", "--grad-accum", "4",
]  # fmt: skip


def measured_matmul_peak(dtype_name: str, size: int = 512, seconds: float = 1.0) -> float:
    """Best FLOP/s of one thread doing square matmuls in `dtype_name` (the CPU 'peak')."""
    import torch

    torch.set_num_threads(1)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - t0))
    return best


def run_once(out: Path, nproc: int, steps: int, extra: list[str]) -> dict:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc_per_node", str(nproc), "-m", "trainyard.worker", "train",
        "--workload", "gpt", "--steps", str(steps), "--output-dir", str(out),
        "--metrics-port", "0", "--checkpoint-every", str(steps), "--log-every", str(steps),
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        sys.exit(f"run failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr[-6000:]}")
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gpu", action="store_true", help="124M GPT on CUDA, with/without compile")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--model", choices=("default", "wide"), default="default",
        help="CPU model: the tiny default GPT, or a wider one (4 layers, d=256, context 128)",
    )  # fmt: skip
    args = parser.parse_args()

    if args.gpu:
        configs = {
            f"{prec}{' +compile' if comp else ''}": [
                *GPU_124M, "--precision", prec, *(["--compile"] if comp else [])
            ]
            for prec in ("bf16", "fp32")
            for comp in (True, False)
        }  # fmt: skip
    else:
        peaks = {p: measured_matmul_peak(p) for p in ("bf16", "fp32")}
        print({p: f"{v / 1e9:.1f} GFLOP/s" for p, v in peaks.items()}, "measured 1-thread peak")
        configs = {
            p: [
                "--precision",
                p,
                "--peak-flops",
                str(peaks[p]),
                "--batch-size",
                "16",
                *(CPU_WIDE if args.model == "wide" else []),
            ]
            for p in ("bf16", "fp32")
        }
    results: dict[str, list[dict]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name, extra in configs.items():  # interleaved: drift hits both alike
                out = Path(tmp) / f"{name.replace(' ', '_')}-{r}"
                results[name].append(run_once(out, args.nproc, args.steps, extra))
    print(f"| config | ranks | tokens/s (median of {args.repeats}) | MFU | last loss |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        tps = statistics.median(r["tokens_per_s"] for r in runs)
        mfus = [r["mfu"] for r in runs if r["mfu"] is not None]
        mfu = f"{statistics.median(mfus):.1%}" if mfus else "n/a"
        loss = statistics.median(r["last_loss"] for r in runs)
        print(f"| {name} | {args.nproc} | {tps:,.0f} | {mfu} | {loss:.3f} |")


if __name__ == "__main__":
    main()
