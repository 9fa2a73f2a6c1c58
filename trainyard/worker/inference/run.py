"""Entry point of `python -m trainyard.worker infer`: batch mode or `--serve`."""

from __future__ import annotations

import json
import logging
import time

import torch

from trainyard.worker.config import InferConfig
from trainyard.worker.inference.batch import run_batch_files
from trainyard.worker.inference.loading import load_predictor
from trainyard.worker.metrics import WorkerMetrics

log = logging.getLogger("trainyard.worker.infer")


def infer(cfg: InferConfig) -> int:
    """Run inference as configured; returns the exit code (0 even when some lines were bad)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if cfg.batch_size < 1:
        raise ValueError("--batch-size: must be at least 1")
    if cfg.max_wait_ms < 0:
        raise ValueError("--max-wait-ms: must not be negative")
    if not cfg.serve and (cfg.input is None or cfg.output is None):
        raise ValueError("--input and --output: both required unless --serve")
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    predictor, info = load_predictor(
        cfg.checkpoint_dir, device, cfg.precision, cfg.quantize, cfg.runtime, cfg.onnx_dir
    )
    metrics = WorkerMetrics(cfg.job, 0, inference=True)
    # A service given its metrics port as its own port (the local backend does: one
    # loopback port per replica) serves /metrics itself.
    shared_port = cfg.serve and cfg.port == cfg.metrics_port
    if cfg.metrics_port > 0 and not shared_port:
        metrics.serve(cfg.metrics_port, cfg.metrics_addr)
    try:
        if cfg.serve:
            import uvicorn

            from trainyard.worker.inference.service import create_app

            app = create_app(
                predictor,
                info,
                metrics,
                cfg.batch_size,
                cfg.max_wait_ms / 1e3,
                serve_metrics=shared_port,
            )
            uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")
            return 0
        assert cfg.input is not None and cfg.output is not None
        started = time.perf_counter()
        report = run_batch_files(
            predictor, cfg.input, cfg.output, cfg.batch_size, metrics.inference_batch_size.observe
        )
        seconds = time.perf_counter() - started
        log.info(
            "%d records predicted, %d errors, %.1f records/s -> %s",
            report.predicted,
            report.errors,
            report.predicted / max(seconds, 1e-9),
            cfg.output,
        )
        if cfg.summary is not None:
            # Read by the control plane for the job's reason ("2 lines failed").
            summary = {"predicted": report.predicted, "errors": report.errors}
            tmp = cfg.summary.with_name(f".{cfg.summary.name}.tmp")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(summary) + "\n")
            tmp.replace(cfg.summary)
        return 0
    finally:
        metrics.close()
