"""Generate (or, with --check, verify) the chart's dashboards from the builders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainyard.observability.dashboards import render_all

DEFAULT_OUT = Path(__file__).resolve().parents[3] / "helm" / "trainyard" / "dashboards"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainyard.observability.dashboards")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--check", action="store_true", help="fail if files are out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render_all().items():
        path = args.out / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(path))
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print("out of date (run python -m trainyard.observability.dashboards):", *stale)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
