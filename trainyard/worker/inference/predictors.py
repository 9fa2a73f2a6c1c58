"""What inference means for each workload, as parse-then-predict pairs.

`parse` validates one JSON record and turns it into model input, raising `RecordError` naming
the field and the rule, so a bad record is reported on its own and never reaches a batch.
`predict` runs one batch of parsed records under autocast and `torch.inference_mode`.

Record formats (one JSON object per line / per request):

* gpt: `{"text": "...", "max_new_tokens": 0}` -> `{"nll": mean next-byte negative
  log-likelihood of the text, "tokens": bytes scored, "completion": greedy continuation of
  max_new_tokens bytes (omitted when 0)}`. Text longer than the context keeps its last bytes.
* cnn: `{"image": C x H x W nested list (or flat list) of floats}` -> `{"label", "probs"}`.
* user workloads: `{"input": nested list}` -> `{"output": nested list}` (raw model output).
An optional `"id"` is echoed back.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainyard.worker.precision import Precision, autocast

log = logging.getLogger(__name__)
MAX_NEW_TOKENS = 256


class RecordError(ValueError):
    """A record that cannot be predicted; the message names the field and the rule."""


class Predictor(ABC):
    """A model in eval mode plus how to parse records and run batches for it."""

    def __init__(self, model: nn.Module, device: torch.device, precision: Precision) -> None:
        self.model = model.eval()
        self.device = device
        self.precision = precision

    def _context(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(autocast(self.device, self.precision))
        return stack

    @abstractmethod
    def parse(self, record: Any) -> Any:
        """Validate one decoded JSON record and return the model input it describes."""

    @abstractmethod
    def predict(self, items: list[Any]) -> list[dict[str, Any]]:
        """One result object per parsed item, in order, computed as a single batch."""

    def warm_up(self, max_batch: int) -> None:
        """Pay one-off costs (kernel selection per shape) before serving.

        The generic predictor cannot guess input shapes, so it only says so; GPT overrides it.
        """
        log.debug("%s: no warm-up for up to %d records", type(self).__name__, max_batch)


def _require_object(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise RecordError(f"record: must be a JSON object, got {type(record).__name__}")
    return record


class GPTPredictor(Predictor):
    """Scores text (mean next-byte NLL) and optionally continues it greedily."""

    def __init__(self, model: nn.Module, device: torch.device, precision: Precision) -> None:
        super().__init__(model, device, precision)
        self.block_size = int(model.config.block_size)  # type: ignore[union-attr]

    def parse(self, record: Any) -> tuple[bytes, int]:
        record = _require_object(record)
        text = record.get("text")
        if not isinstance(text, str) or not text:
            raise RecordError("text: required, a non-empty string")
        new = record.get("max_new_tokens", 0)
        if not isinstance(new, int) or isinstance(new, bool) or not 0 <= new <= MAX_NEW_TOKENS:
            raise RecordError(f"max_new_tokens: must be an integer from 0 to {MAX_NEW_TOKENS}")
        if new >= self.block_size:
            raise RecordError(f"max_new_tokens: must be below the context of {self.block_size}")
        return text.encode("utf-8"), new

    def _bucket_width(self, width: int) -> int:
        """Round the sequence length up to a multiple of 16 (at most the context).

        Every new input shape costs kernel selection (oneDNN primitives on CPU, cuBLAS
        heuristics, recompiles under torch.compile); a service that sees arbitrary lengths keeps
        paying it. Padding positions are masked out, so results are unchanged. Rows are not
        padded: on CPU an extra row costs as much as a real one.
        """
        return min(self.block_size, -(-width // 16) * 16)

    def warm_up(self, max_batch: int) -> None:
        """Run the common shapes once so the first real requests do not pay for them."""
        rows = 1
        while rows <= max(1, max_batch):
            for width in range(16, self.block_size + 16, 16):
                text = b"x" * (min(width, self.block_size) + 1)
                self.predict([(text, 0)] * rows)
            rows *= 2

    def _score(self, texts: list[bytes]) -> list[tuple[float | None, int]]:
        seqs = [t[-(self.block_size + 1) :] for t in texts]
        longest = max(len(s) for s in seqs) - 1
        if longest < 1:
            return [(None, 0) for _ in seqs]
        rows, width = len(seqs), self._bucket_width(longest)
        ids = torch.zeros((rows, width + 1), dtype=torch.long)
        mask = torch.zeros((rows, width), dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(list(s))
            mask[i, : len(s) - 1] = True
        ids, mask = ids.to(self.device), mask.to(self.device)
        logits = self.model(ids[:, :-1]).float()
        nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        counts = mask.sum(dim=1)
        means = (nll * mask).sum(dim=1) / counts.clamp(min=1)
        return [
            (float(m) if int(c) else None, int(c))
            for m, c in zip(means.tolist(), counts.tolist(), strict=True)
        ]

    def _generate(self, prompts: list[bytes], news: list[int]) -> list[bytes]:
        """Greedy decoding of a right-padded batch: causal attention ignores the padding."""
        rows = [p[-(self.block_size - n) :] for p, n in zip(prompts, news, strict=True)]
        lengths = [len(r) for r in rows]
        buf = torch.zeros((len(rows), self.block_size), dtype=torch.long, device=self.device)
        for i, r in enumerate(rows):
            buf[i, : len(r)] = torch.tensor(list(r))
        for _ in range(max(news)):
            active = [i for i in range(len(rows)) if lengths[i] - len(rows[i]) < news[i]]
            if not active:
                break
            logits = self.model(buf[:, : max(lengths)])
            for i in active:
                buf[i, lengths[i]] = int(logits[i, lengths[i] - 1].argmax())
                lengths[i] += 1
        return [bytes(buf[i, len(rows[i]) : lengths[i]].tolist()) for i in range(len(rows))]

    def predict(self, items: list[tuple[bytes, int]]) -> list[dict[str, Any]]:
        with self._context():
            scores = self._score([t for t, _ in items])
            results = [{"nll": s, "tokens": c} for s, c in scores]
            gen = [i for i, (_, n) in enumerate(items) if n > 0]
            if gen:
                outs = self._generate([items[i][0] for i in gen], [items[i][1] for i in gen])
                for i, out in zip(gen, outs, strict=True):
                    results[i]["completion"] = out.decode("utf-8", errors="replace")
        return results


class CNNPredictor(Predictor):
    """Class prediction for C x H x W images."""

    def __init__(self, model: nn.Module, device: torch.device, precision: Precision) -> None:
        super().__init__(model, device, precision)
        cfg = model.config  # type: ignore[union-attr]
        self.shape = (cfg.channels, cfg.image_size, cfg.image_size)

    def parse(self, record: Any) -> torch.Tensor:
        record = _require_object(record)
        image = record.get("image")
        if not isinstance(image, list):
            raise RecordError(f"image: required, a nested list of shape {list(self.shape)}")
        try:
            tensor = torch.tensor(image, dtype=torch.float32)
        except (TypeError, ValueError) as exc:
            raise RecordError(f"image: must contain only numbers ({exc})") from exc
        if tensor.numel() != self.shape[0] * self.shape[1] * self.shape[2]:
            raise RecordError(
                f"image: must have shape {list(self.shape)}, got {list(tensor.shape)}"
            )
        if not torch.isfinite(tensor).all():
            raise RecordError("image: must contain only finite numbers")
        return tensor.reshape(self.shape)

    def predict(self, items: list[torch.Tensor]) -> list[dict[str, Any]]:
        with self._context():
            probs = self.model(torch.stack(items).to(self.device)).float().softmax(dim=-1)
        return [{"label": int(p.argmax()), "probs": p.tolist()} for p in probs.cpu()]


class TensorPredictor(Predictor):
    """User workloads: a tensor in, the model's raw output out."""

    def parse(self, record: Any) -> torch.Tensor:
        record = _require_object(record)
        value = record.get("input")
        try:
            return torch.tensor(value, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise RecordError(f"input: must be a (nested) list of numbers ({exc})") from exc

    def predict(self, items: list[torch.Tensor]) -> list[dict[str, Any]]:
        shapes = {tuple(t.shape) for t in items}
        with self._context():
            if len(shapes) == 1:
                outputs = list(self.model(torch.stack(items).to(self.device)).float().cpu())
            else:  # ragged inputs cannot share a batch
                outputs = [self.model(t[None].to(self.device)).float().cpu()[0] for t in items]
        return [{"output": o.tolist()} for o in outputs]
