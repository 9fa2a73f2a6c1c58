"""`python -m trainyard.worker train|infer`: the command every worker pod runs (under torchrun).

    torchrun --standalone --nproc_per_node 2 -m trainyard.worker train --workload gpt --steps 40
    python -m trainyard.worker infer --checkpoint-dir out --input in.jsonl --output out.jsonl

torch is imported only once a subcommand runs, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from trainyard.worker.config import (
    InferConfig,
    TrainConfig,
    add_infer_arguments,
    add_train_arguments,
    to_config,
)
from trainyard.worker.termination import record_failure


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainyard.worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_arguments(sub.add_parser("train", help="train a workload (DDP, mixed precision)"))
    add_infer_arguments(sub.add_parser("infer", help="batch JSONL inference or an HTTP service"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            from trainyard.worker.train import train

            return train(to_config(TrainConfig, args))
        from trainyard.worker.inference.run import infer

        return infer(to_config(InferConfig, args))
    except ValueError as exc:  # bad options or inputs: a clear message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        record_failure(f"error: {exc}")
        return 2
    except Exception as exc:
        # The traceback goes to the log as usual; its last line is the failure's reason.
        record_failure("".join(traceback.format_exception_only(exc)))
        raise


if __name__ == "__main__":
    sys.exit(main())
