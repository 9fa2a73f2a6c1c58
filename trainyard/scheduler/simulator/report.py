"""Write a simulation's results: metrics.json, report.md and report.png (I/O edge)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from trainyard.scheduler.simulator.engine import ReplayResult
from trainyard.scheduler.simulator.metrics import METRIC_KEYS, merged_timeline

Metrics = Mapping[str, Mapping[str, float | int]]


def write_metrics(out: Path, metrics: Metrics) -> Path:
    path = out / "metrics.json"
    path.write_text(
        json.dumps({p: {k: m[k] for k in METRIC_KEYS} for p, m in metrics.items()}, indent=2) + "\n"
    )
    return path


REFERENCE_POLICY = "srtf-oracle"
_SHARES = (
    "gpu_utilization",
    "fragmentation",
    "preemptions_per_job",
    "estimate_within_10",
    "estimate_within_50",
    "estimate_within_100",
    "start_within_tolerance",
)


def _fmt(key: str, value: float | int) -> str:
    if key in _SHARES:
        return f"{value:.3f}"
    if key in ("jobs", "preemptions", "start_estimates"):
        return str(int(value))
    if key in ("replay_seconds", "gpu_hours_lost"):
        return f"{value:.1f}"
    return f"{value / 3600:.2f} h"


def oracle_ratio(metrics: Metrics, policy: str, key: str = "jct_mean") -> float | None:
    """`policy`'s figure over the SRTF oracle's ("mean JCT x1.18 of the SRTF oracle")."""
    reference = metrics.get(REFERENCE_POLICY)
    if reference is None or not reference[key]:
        return None
    return float(metrics[policy][key]) / float(reference[key])


def write_markdown(out: Path, metrics: Metrics, context: Mapping[str, str]) -> Path:
    """Policies side by side, one column each."""
    policies = list(metrics)
    lines = ["# Trace replay", ""]
    lines += [f"- {k}: {v}" for k, v in context.items()]
    lines += ["", "| metric | " + " | ".join(policies) + " |", "|---" * (len(policies) + 1) + "|"]
    for key in METRIC_KEYS:
        lines.append(
            f"| {key} | " + " | ".join(_fmt(key, metrics[p][key]) for p in policies) + " |"
        )
    for key in ("jct_mean", "jct_p99"):
        ratios = [oracle_ratio(metrics, p, key) for p in policies]
        if any(r is not None for r in ratios):
            cells = " | ".join(f"x{r:.2f}" if r is not None else "-" for r in ratios)
            lines.append(f"| {key} / {REFERENCE_POLICY} | {cells} |")
    lines += [
        "",
        "Times in hours (replay_seconds in wall seconds); jct = completion - submit, "
        "wait = first start - submit; ratios 0-1; x = multiple of the SRTF oracle's figure "
        "(true remaining times, preemptive: the reference no real policy can beat by much).",
        "",
        "![JCT CDF, queue length and GPU utilisation](report.png)",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def write_plot(out: Path, results: Mapping[str, Sequence[ReplayResult]]) -> Path:
    """JCT CDF per policy, queue length over time, GPU utilisation over time."""
    # Imported here so that every other `trainyard` command starts without matplotlib.
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt  # after use(): pyplot binds its backend on import

    fig, (ax_cdf, ax_queue, ax_util) = plt.subplots(3, 1, figsize=(9, 11))
    for policy, parts in results.items():
        jct = sorted(
            (r.end - r.submit_time) / 3600
            for res in parts
            for r in res.records
            if r.end is not None
        )
        if jct:
            ax_cdf.plot(jct, [(i + 1) / len(jct) for i in range(len(jct))], label=policy)
        timeline = merged_timeline(parts)
        gpus = sum(res.total_gpus for res in parts) or 1
        days = [t / 86400 for t, _q, _b in timeline]
        ax_queue.step(
            days, [q for _t, q, _b in timeline], where="post", label=policy, linewidth=0.8
        )
        ax_util.step(
            days, [b / gpus for _t, _q, b in timeline], where="post", label=policy, linewidth=0.8
        )
    ax_cdf.set_xscale("symlog", linthresh=1)
    ax_cdf.set(xlabel="job completion time (hours)", ylabel="fraction of jobs", title="JCT CDF")
    ax_queue.set(xlabel="time (days)", ylabel="jobs queued", title="Queue length")
    ax_util.set(
        xlabel="time (days)", ylabel="GPUs busy (fraction)", title="GPU utilisation", ylim=(0, 1.05)
    )
    for ax in (ax_cdf, ax_queue, ax_util):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "report.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_tenants(
    out: Path, tenants: Mapping[str, Mapping[str, Mapping[str, float | int | None]]]
) -> Path:
    """Per-tenant figures of each run: tenants.json, and a section appended to report.md.

    A tenant whose finish-time-fairness ratio is above 1.0 is listed with what made it
    worse off (its wait and preemptions beside the same jobs alone)."""
    (out / "tenants.json").write_text(json.dumps(tenants, indent=2) + "\n")
    lines = ["", "## Per tenant", ""]
    for run, rows in tenants.items():
        lines += [
            f"### {run}",
            "",
            "| tenant | jobs | unfinished | jct_mean | jct_p95 | wait_mean | GPU-hours "
            "| preemptions | alone jct_mean | FTF ratio |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        worse: list[str] = []
        for tenant, m in rows.items():
            ratio = m["ftf_ratio"]
            alone = m["alone_jct_mean"]
            lines.append(
                f"| {tenant} | {m['jobs']} | {m['unfinished']} | {_hours(m['jct_mean'])} "
                f"| {_hours(m['jct_p95'])} | {_hours(m['wait_mean'])} "
                f"| {float(m['gpu_hours'] or 0):,.0f} | {m['preemptions']} "
                f"| {_hours(alone) if alone is not None else 'n/a'} "
                f"| {f'{ratio:.2f}' if ratio is not None else 'n/a'} |"
            )
            if ratio is not None and ratio > 1.0:
                worse.append(
                    f"- {tenant}: FTF {ratio:.2f}: mean JCT {_hours(m['jct_mean'])} shared vs "
                    f"{_hours(alone)} alone on its partition; mean wait {_hours(m['wait_mean'])}, "
                    f"{m['preemptions']} preemptions"
                )
        lines += ["", *(worse or ["No tenant is worse off than alone on its partition."]), ""]
    path = out / "report.md"
    with path.open("a") as fh:
        fh.write("\n".join(lines))
    return path


def _hours(seconds: float | int | None) -> str:
    return f"{float(seconds or 0) / 3600:.2f} h"
