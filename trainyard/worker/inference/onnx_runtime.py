"""`--runtime onnx`: the checkpoint exported to ONNX once, then run with onnxruntime.

Export uses torch.onnx's torch.export-based ("dynamo") exporter, the default since torch
2.9 (it needs `onnxscript`). The legacy TorchScript exporter (`dynamo=False`) is faster to
export and needs no extra package, but it is deprecated and it *traces*: Python control flow
that depends on tensor values is silently frozen into the graph for the example input.
torch.export refuses such a model with an error naming the line instead, which is the
behaviour a service wants (the replica fails with that error as the job's reason).

The exported graph is cached in a directory keyed by checkpoint step plus a digest of the
checkpoint file (path, size, mtime), so a newer or rewritten checkpoint is exported anew and
a restarted replica reuses the file. Two replicas starting together take an exclusive file
lock: the first exports, the second waits and loads the result. The export is written into
a temporary directory and renamed into place, so a replica killed mid-export leaves no
half-written model behind (the next exporter removes the temporary directory).

`quantize` applies onnxruntime's dynamic int8 quantization (MatMul weights int8, activations
quantized on the fly: the ONNX counterpart of torch's `quantize_dynamic`), cached beside the
fp32 graph.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
INPUT_NAME = "input"
OUTPUT_NAME = "output"
EXPORT_VERSION = 1  # part of the cache key: bump when the export itself changes
_EXTERNAL_DATA_BYTES = 1 << 30  # ONNX protobufs stop at 2 GiB; larger weights go beside


class ExportError(ValueError):
    """The model cannot be exported to ONNX; the message carries the exporter's words."""


def cache_key(checkpoint: Path, step: int, quantize: bool) -> str:
    """The cache directory's name for one checkpoint file (and quantization)."""
    stat = checkpoint.stat()
    source = f"{checkpoint.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{EXPORT_VERSION}"
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    return f"model-step{step}-{digest}" + ("-int8" if quantize else "")


def example_input(spec: str, model: nn.Module) -> tuple[torch.Tensor, dict[int, Any]]:
    """An input to trace the model with, and its dynamic dimensions (always the batch).

    gpt: byte ids (batch, sequence up to the context); cnn: C x H x W images; a user
    workload: its dataset's first sample (only the batch varies then).
    """
    batch = torch.export.Dim("batch", min=1, max=4096)
    if spec == "gpt":
        block = int(model.config.block_size)  # type: ignore[union-attr]
        sequence = torch.export.Dim("sequence", min=1, max=block)
        return torch.zeros((2, min(16, block)), dtype=torch.long), {0: batch, 1: sequence}
    if spec == "cnn":
        cfg = model.config  # type: ignore[union-attr]
        shape = (2, cfg.channels, cfg.image_size, cfg.image_size)
        return torch.zeros(shape, dtype=torch.float32), {0: batch}
    from trainyard.worker.workloads import load_user_workload

    sample = load_user_workload(spec).dataset[0]
    first = sample[0] if isinstance(sample, tuple | list) else sample
    if not isinstance(first, torch.Tensor):
        raise ExportError(f"--runtime onnx: {spec}'s dataset sample is not a tensor")
    return torch.stack([first, first]).float(), {0: batch}


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """An flock on `directory/.export.lock`: one exporter at a time per cache directory."""
    with (directory / ".export.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _publish(build: Any, cache_dir: Path, name: str) -> Path:
    """`cache_dir/name/model.onnx`, made by `build(tmp_dir)` unless it exists already."""
    final = cache_dir / name
    if (final / MODEL_FILE).is_file():
        return final / MODEL_FILE
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(cache_dir):
        if (final / MODEL_FILE).is_file():  # another replica made it while we waited
            return final / MODEL_FILE
        for stale in cache_dir.glob(".export-*"):  # left by an exporter that was killed
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=cache_dir))
        try:
            build(tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        descriptor = os.open(cache_dir, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    return final / MODEL_FILE


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def exporter_words(exc: BaseException, lines: int = 3) -> str:
    """The exporter's error in a line: its exception summary when it has one (torch.onnx
    wraps torch.export's failure in advice paragraphs), else the first lines."""
    text = _ANSI.sub("", f"{type(exc).__name__}: {exc}")
    summary = text.partition("## Exception summary")[2]
    kept = [line.strip() for line in (summary or text).splitlines() if line.strip()][:lines]
    return " | ".join(kept)[:1500]


def export(model: nn.Module, spec: str, target_dir: Path) -> None:
    """Export `model` (eval mode, fp32, CPU) into `target_dir/model.onnx`."""
    import warnings

    example, dynamic = example_input(spec, model)
    external = sum(p.numel() * p.element_size() for p in model.parameters()) > (
        _EXTERNAL_DATA_BYTES
    )
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(target_dir / MODEL_FILE),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=(dynamic,),
                external_data=external,
                verbose=False,
            )
    except Exception as exc:
        raise ExportError(
            f"--runtime onnx: the model cannot be exported to ONNX: {exporter_words(exc)}"
        ) from exc
    log.info("exported %s to ONNX in %.1fs", spec, time.perf_counter() - started)


def quantize_onnx(source: Path, target_dir: Path) -> None:
    """onnxruntime's dynamic int8 quantization of `source` into `target_dir/model.onnx`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    external = any(p.suffix == ".data" for p in source.parent.iterdir())
    quantize_dynamic(
        source,
        target_dir / MODEL_FILE,
        weight_type=QuantType.QInt8,
        use_external_data_format=external,
    )


def exported_model(
    model: nn.Module, spec: str, checkpoint: Path, step: int, cache_dir: Path, quantize: bool
) -> Path:
    """The cached ONNX file for this checkpoint, exporting (and quantizing) it if needed."""
    fp32 = _publish(
        lambda tmp: export(model, spec, tmp), cache_dir, cache_key(checkpoint, step, False)
    )
    if not quantize:
        return fp32
    return _publish(
        lambda tmp: quantize_onnx(fp32, tmp), cache_dir, cache_key(checkpoint, step, True)
    )


def providers() -> list[str]:
    """CUDA where the installed onnxruntime has it and a GPU is visible, else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    chosen = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available and torch.cuda.is_available():
        chosen.insert(0, "CUDAExecutionProvider")
    return chosen


class OnnxModule(nn.Module):
    """An onnxruntime session behind the `nn.Module` call the predictors make.

    Takes and returns CPU tensors (onnxruntime copies to the GPU itself under the CUDA
    provider); `config` is the original model's, which the predictors read for shapes.
    It has no parameters: nothing here is trainable or movable.
    """

    def __init__(self, path: Path, config: Any, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        # As many threads as torch would use, so runtimes compare like for like.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=providers())
        self.config = config
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (output,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x.cpu().numpy()})
        return torch.from_numpy(output)

    def extra_repr(self) -> str:
        return f"path={self.path}, providers={self.session.get_providers()}"
