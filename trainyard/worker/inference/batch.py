"""Batch inference: JSONL in, JSONL out, one output line per input line, in order.

A line that is not JSON or fails validation becomes an error record carrying its line number
(and a log warning); the lines around it are predicted as usual. Blank lines are skipped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from trainyard.worker.inference.predictors import Predictor, RecordError

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    """Counts for the log and for callers."""

    predicted: int = 0
    errors: int = 0


def _parsed_lines(
    source: IO[str], predictor: Predictor
) -> Iterator[tuple[int, Any, Any, str | None]]:
    """(line number, record id, parsed item or None, error or None) per non-blank line."""
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        record_id = None
        try:
            record = json.loads(line)
            if isinstance(record, dict):
                record_id = record.get("id")
            yield number, record_id, predictor.parse(record), None
        except json.JSONDecodeError as exc:
            yield number, None, None, f"invalid JSON: {exc.msg} at column {exc.colno}"
        except RecordError as exc:
            yield number, record_id, None, str(exc)


def run_batch(
    predictor: Predictor,
    source: IO[str],
    sink: IO[str],
    batch_size: int,
    on_batch: Any = None,
) -> BatchReport:
    """Predict every record of `source` in batches of `batch_size`, writing results to `sink`."""
    report = BatchReport()
    pending: list[tuple[int, Any, Any]] = []

    def flush() -> None:
        if not pending:
            return
        results = predictor.predict([item for _, _, item in pending])
        if on_batch is not None:
            on_batch(len(pending))
        for (number, record_id, _), result in zip(pending, results, strict=True):
            sink.write(json.dumps({"line": number, "id": record_id, **result}) + "\n")
        report.predicted += len(pending)
        pending.clear()

    for number, record_id, item, error in _parsed_lines(source, predictor):
        if error is not None:
            flush()  # keep output in input order
            log.warning("line %d: %s", number, error)
            sink.write(json.dumps({"line": number, "id": record_id, "error": error}) + "\n")
            report.errors += 1
            continue
        pending.append((number, record_id, item))
        if len(pending) >= batch_size:
            flush()
    flush()
    return report


def run_batch_files(
    predictor: Predictor, input_path: Path, output_path: Path, batch_size: int, on_batch: Any = None
) -> BatchReport:
    """`run_batch` over files; the output is written to a temp name and renamed when complete."""
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(f".{output_path.name}.tmp")
    with input_path.open(encoding="utf-8", errors="replace") as src, tmp.open("w") as dst:
        report = run_batch(predictor, src, dst, batch_size, on_batch)
    tmp.replace(output_path)
    return report
