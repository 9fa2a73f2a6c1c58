"""`trainyard simulate`: replay a trace under one or more policies and write a report."""

from __future__ import annotations

import dataclasses
import enum
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from trainyard.scheduler.las import DEFAULT_STARVATION_SECONDS, DEFAULT_THRESHOLDS, LasSettings
from trainyard.scheduler.policies import PolicySettings, policy_names
from trainyard.scheduler.quota import QuotaConfig
from trainyard.scheduler.simulator.engine import ReplayResult, SimConfig, SimJob, replay
from trainyard.scheduler.simulator.loaders import (
    StoreTrace,
    TraceError,
    load_alibaba,
    load_native,
    load_nodes_file,
    load_philly,
    load_queue_nodes,
    load_quota_file,
    load_store,
    synthetic_nodes,
)
from trainyard.scheduler.simulator.metrics import summarize, tenant_summary
from trainyard.scheduler.simulator.partition import partition_nodes
from trainyard.scheduler.simulator.report import (
    REFERENCE_POLICY,
    oracle_ratio,
    write_markdown,
    write_metrics,
    write_plot,
    write_tenants,
)
from trainyard.scheduler.types import Node

ALIBABA_NODE_LIST = "openb_node_list_gpu_node.csv"


class TraceFormat(enum.StrEnum):
    philly = "philly"
    alibaba = "alibaba"
    native = "native"


def _stdout() -> Console:
    """Standard output; wide when it is not a terminal, so a piped or logged comparison
    table keeps its columns instead of folding them to 80 characters (as `trainyard list`)."""
    return Console(width=None if sys.stdout.isatty() else 240)


def repeat_trace(jobs: list[SimJob], copies: int) -> list[SimJob]:
    """The trace `copies` times in a row, each copy shifted by the trace's span plus a
    day and with ids suffixed, for replay-speed measurements at a realistic load."""
    if copies <= 1 or not jobs:
        return jobs
    first = min(j.submit_time for j in jobs)
    span = max(j.submit_time for j in jobs) - first + 86_400.0
    return [
        dataclasses.replace(j, id=f"{j.id}~{k}", submit_time=j.submit_time + k * span)
        for k in range(copies)
        for j in jobs
    ]


def _las_settings(thresholds: str, starvation_hours: float) -> LasSettings:
    try:
        values = tuple(float(x) * 3600.0 for x in thresholds.split(",") if x.strip())
        return LasSettings(values, starvation_hours * 3600.0 if starvation_hours > 0 else None)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{exc} (GPU-hours, comma-separated, ascending, e.g. 1,10,100)",
            param_hint="--las-thresholds",
        ) from exc


def _store_history(database_url: str | None) -> StoreTrace:
    """The store's finished jobs; an unreachable store is a clear error, not a traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    from trainyard.config import Settings

    url = database_url or Settings().resolved_database_url()
    try:
        return load_store(url)
    except SQLAlchemyError as exc:
        raise typer.BadParameter(
            f"cannot read the store: {type(exc).__name__}: {str(exc).splitlines()[0]}",
            param_hint="--database-url",
        ) from exc


def _load_jobs(trace: Path, fmt: TraceFormat) -> list[SimJob]:
    if fmt == TraceFormat.philly:
        return load_philly(trace)
    if fmt == TraceFormat.alibaba:
        return load_alibaba(trace)
    return load_native(trace)


def _clusters(
    fmt: TraceFormat,
    trace: Path,
    jobs: list[SimJob],
    nodes: int | None,
    gpus_per_node: int,
    nodes_file: Path | None,
    queue_nodes: Path | None,
) -> tuple[list[tuple[str, list[Node], list[SimJob]]], int]:
    """(name, nodes, jobs) per separately scheduled cluster, and the dropped job count."""
    if queue_nodes is not None:
        if nodes_file is not None:
            raise typer.BadParameter(
                "--queue-nodes builds clusters of --gpus-per-node nodes; drop --nodes-file"
            )
        sizes = load_queue_nodes(queue_nodes)
        clusters = [
            (
                queue,
                synthetic_nodes(size, gpus_per_node, prefix=f"{queue}-node"),
                [j for j in jobs if j.queue == queue],
            )
            for queue, size in sizes.items()
        ]
        return clusters, sum(1 for j in jobs if j.queue not in sizes)
    if nodes_file is not None:
        cluster = load_nodes_file(nodes_file)
    elif nodes is not None:
        cluster = synthetic_nodes(nodes, gpus_per_node)
    elif fmt == TraceFormat.alibaba and (trace.parent / ALIBABA_NODE_LIST).exists():
        cluster = load_nodes_file(trace.parent / ALIBABA_NODE_LIST)
    else:
        raise typer.BadParameter(
            "give the cluster: --nodes N [--gpus-per-node G], --nodes-file or --queue-nodes"
        )
    return [("cluster", cluster, jobs)], 0


def simulate(
    out: Annotated[
        Path,
        typer.Option(file_okay=False, help="directory for metrics.json, report.md, report.png"),
    ],
    trace: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="trace file to replay")
    ] = None,
    from_store: Annotated[
        bool,
        typer.Option(
            "--from-store",
            help="replay the finished jobs of this installation's store (what-if on history)",
        ),
    ] = False,
    database_url: Annotated[
        str | None,
        typer.Option(help="store to read with --from-store (default: TRAINYARD_DATABASE_URL)"),
    ] = None,
    fmt: Annotated[TraceFormat, typer.Option("--format", help="trace format")] = TraceFormat.native,
    policy: Annotated[
        str, typer.Option(help="comma-separated policies: " + ", ".join(policy_names()))
    ] = "fifo,backfill",
    nodes: Annotated[
        int | None, typer.Option(min=1, help="cluster of N identical GPU nodes")
    ] = None,
    gpus_per_node: Annotated[
        int, typer.Option(min=0, help="GPUs per node for --nodes / --queue-nodes")
    ] = 8,
    nodes_file: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="nodes: openb CSV or JSON lines"),
    ] = None,
    queue_nodes: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="CSV queue,nodes: one cluster per queue"),
    ] = None,
    checkpoint_interval: Annotated[
        float, typer.Option(help="seconds between checkpoints; 0 = none")
    ] = 1800.0,
    runtime_limit_factor: Annotated[
        float, typer.Option(min=1.0, help="runtime limit = duration x this")
    ] = 1.0,
    aging_per_hour: Annotated[
        float, typer.Option(min=0.0, help="priority points gained per hour waited")
    ] = 1.0,
    backfill_depth: Annotated[
        int, typer.Option(min=1, help="jobs tried behind a reserved head per cycle")
    ] = 500,
    limit: Annotated[int, typer.Option(min=0, help="replay only the first N jobs (0 = all)")] = 0,
    arrival_scale: Annotated[
        float,
        typer.Option(
            min=0.0, help="multiply submit times by this (< 1 compresses arrivals: more load)"
        ),
    ] = 1.0,
    quota_file: Annotated[
        list[Path] | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="quota file (repeatable): each policy is replayed under each file, "
            "with a per-tenant report",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    restart_cost: Annotated[
        float, typer.Option(min=0.0, help="seconds a preempted job needs to resume")
    ] = 60.0,
    forecast_interval: Annotated[
        float,
        typer.Option(
            min=0.0, help="virtual seconds between start-time forecasts for new jobs; 0 = none"
        ),
    ] = 0.0,
    las_thresholds: Annotated[
        str, typer.Option(help="las queue thresholds, attained GPU-hours, ascending")
    ] = ",".join(f"{t / 3600:g}" for t in DEFAULT_THRESHOLDS),
    las_starvation_hours: Annotated[
        float, typer.Option(min=0.0, help="las promotes a job waiting this long; 0 = never")
    ] = DEFAULT_STARVATION_SECONDS / 3600.0,
    predicted_aging: Annotated[
        float, typer.Option(min=0.0, help="predicted: GPU-seconds forgiven per second waited")
    ] = PolicySettings().predicted_aging,
    backfill_estimates: Annotated[
        bool, typer.Option(help="backfill plans with learned estimates, not runtime limits")
    ] = False,
    reference: Annotated[
        bool, typer.Option(help=f"also replay {REFERENCE_POLICY} for the x-oracle ratios")
    ] = True,
    repeat: Annotated[
        int, typer.Option(min=1, help="replay the trace N times in a row (speed tests)")
    ] = 1,
) -> None:
    """Replay a cluster trace through the scheduling core under each policy."""
    console = Console(stderr=True)
    policies = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in policies if p not in policy_names()]
    if not policies or unknown:
        raise typer.BadParameter(
            f"unknown policy {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(policy_names())}",
            param_hint="--policy",
        )
    if reference and REFERENCE_POLICY not in policies:
        policies.append(REFERENCE_POLICY)
    las = _las_settings(las_thresholds, las_starvation_hours)
    if (trace is None) == (not from_store):
        raise typer.BadParameter("give exactly one of --trace FILE or --from-store")
    source = f"`{trace}` ({fmt.value}"
    try:
        if from_store:
            history = _store_history(database_url)
            loaded = history.jobs
            source = (
                f"store ({history.skipped_unfinished} unfinished and "
                f"{history.skipped_never_ran} never-run jobs left out"
            )
        else:
            assert trace is not None
            loaded = _load_jobs(trace, fmt)
        jobs = repeat_trace(loaded, repeat)
        if arrival_scale != 1.0:
            jobs = [dataclasses.replace(j, submit_time=j.submit_time * arrival_scale) for j in jobs]
        clusters, dropped = _clusters(
            fmt, trace or Path("store"), jobs, nodes, gpus_per_node, nodes_file, queue_nodes
        )
    except TraceError as exc:
        raise typer.BadParameter(str(exc), param_hint="--trace") from exc
    quota_runs: list[tuple[str, QuotaConfig | None]] = [("", None)]
    if quota_file:
        if queue_nodes is not None:
            raise typer.BadParameter(
                "quotas share one cluster; drop --queue-nodes", param_hint="--quota-file"
            )
        try:
            quota_runs = [(p.stem, load_quota_file(p)) for p in quota_file]
        except TraceError as exc:
            raise typer.BadParameter(str(exc), param_hint="--quota-file") from exc
    if limit:
        keep = {j.id for j in sorted(jobs, key=lambda j: (j.submit_time, j.id))[:limit]}
        clusters = [(name, ns, [j for j in js if j.id in keep]) for name, ns, js in clusters]
    out.mkdir(parents=True, exist_ok=True)
    settings = PolicySettings(
        aging_per_hour=aging_per_hour,
        backfill_depth=backfill_depth,
        las=las,
        predicted_aging=predicted_aging,
        backfill_estimates=backfill_estimates,
    )
    total_jobs = sum(len(js) for _n, _ns, js in clusters)
    metrics: dict[str, dict[str, float | int]] = {}
    results: dict[str, list[ReplayResult]] = {}
    tenants: dict[str, dict] = {}
    alone_cache: dict[tuple, list[ReplayResult]] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
    ) as bar:
        for name, quota_name, quotas in [(p, qn, q) for p in policies for qn, q in quota_runs]:
            run_name = f"{name}@{quota_name}" if quota_name else name
            task = bar.add_task(f"{run_name:>16}", total=total_jobs)
            parts: list[ReplayResult] = []
            started = time.perf_counter()
            offset = 0
            for _cluster, cluster_nodes, cluster_jobs in clusters:
                config = SimConfig(
                    name,
                    settings=settings,
                    checkpoint_interval=checkpoint_interval,
                    runtime_limit_factor=runtime_limit_factor,
                    quotas=quotas,
                    restart_cost=restart_cost,
                    forecast_interval=forecast_interval or None,
                )

                def report(done: int, _total: int, base: int = offset, task_id: int = task) -> None:
                    bar.update(task_id, completed=base + done)

                parts.append(replay(cluster_nodes, cluster_jobs, config, report))
                offset += len(cluster_jobs)
            elapsed = time.perf_counter() - started
            results[run_name] = parts
            metrics[run_name] = summarize(parts, elapsed)
            if quotas is not None:
                alone = _alone(
                    name,
                    quotas,
                    clusters,
                    alone_cache,
                    settings,
                    checkpoint_interval,
                    runtime_limit_factor,
                )
                tenants[run_name] = tenant_summary(parts, alone)
    unschedulable = sum(r.unschedulable for r in next(iter(results.values())))
    context = {
        "trace": f"{source}, {len(jobs)} jobs)",
        "clusters": ", ".join(
            f"{n}: {len(ns)} nodes / {sum(x.gpus for x in ns)} GPUs" for n, ns, _j in clusters
        ),
        "dropped (queue without a cluster)": str(dropped),
        "unschedulable (never fit the cluster)": str(unschedulable),
        "checkpoint interval": f"{checkpoint_interval:g} s",
        "runtime limit factor": f"{runtime_limit_factor:g}",
        "arrival scale": f"{arrival_scale:g}",
        "restart cost": f"{restart_cost:g} s",
        "las thresholds": f"{las_thresholds} GPU-hours, starvation {las_starvation_hours:g} h",
        "start forecasts": f"every {forecast_interval:g} s" if forecast_interval else "off",
    }
    if repeat > 1:
        context["repeated"] = f"{repeat} times in a row"
    write_metrics(out, metrics)
    write_markdown(out, metrics, context)
    write_plot(out, results)
    if tenants:
        write_tenants(out, tenants)
        _print_tenants(tenants)
    title = trace.name if trace is not None else "store"
    table = Table(
        title=f"{title}: {total_jobs} jobs, dropped {dropped}, unschedulable {unschedulable}"
    )
    table.add_column("policy")
    for col in (
        "jobs",
        "jct_mean h",
        "x oracle",
        "jct_p99 h",
        "wait_mean h",
        "util",
        "preempt/job",
        "GPU-h lost",
        "est<=50%",
        "start ok",
        "replay s",
    ):
        table.add_column(col, justify="right")
    for name, m in metrics.items():
        ratio = oracle_ratio(metrics, name)
        table.add_row(
            name,
            str(m["jobs"]),
            f"{m['jct_mean'] / 3600:.2f}",
            f"x{ratio:.2f}" if ratio is not None else "-",
            f"{m['jct_p99'] / 3600:.2f}",
            f"{m['wait_mean'] / 3600:.2f}",
            f"{m['gpu_utilization']:.3f}",
            f"{m['preemptions_per_job']:.3f}",
            f"{m['gpu_hours_lost']:.1f}",
            f"{m['estimate_within_50']:.3f}",
            f"{m['start_within_tolerance']:.3f}" if m["start_estimates"] else "-",
            f"{m['replay_seconds']:.1f}",
        )
    _stdout().print(table)
    _stdout().print(f"wrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'report.png'}")


def _alone(
    policy: str,
    quotas: QuotaConfig,
    clusters: list[tuple[str, list[Node], list[SimJob]]],
    cache: dict[tuple, list[ReplayResult]],
    settings: PolicySettings,
    checkpoint_interval: float,
    runtime_limit_factor: float,
) -> dict[str, list[ReplayResult]]:
    """Each tenant's jobs replayed alone on its own partition (its nominal quota),
    under the same policy without quotas; cached across quota files that give a
    tenant the same partition."""
    _name, cluster_nodes, jobs = clusters[0]
    out: dict[str, list[ReplayResult]] = {}
    for q in quotas.queues:
        nodes = partition_nodes(quotas, q.name, cluster_nodes)
        if not nodes:
            continue
        key = (policy, q.name, len(nodes), tuple(sorted({n.gpu_product for n in nodes})))
        if key not in cache:
            mine = [j for j in jobs if j.queue == q.name]
            config = SimConfig(
                policy,
                settings=settings,
                checkpoint_interval=checkpoint_interval,
                runtime_limit_factor=runtime_limit_factor,
            )
            cache[key] = [replay(nodes, mine, config)]
        out[q.name] = cache[key]
    return out


def _print_tenants(tenants: dict[str, dict]) -> None:
    for run, rows in tenants.items():
        table = Table(title=f"{run}: per tenant")
        for col in (
            "tenant",
            "jobs",
            "unfinished",
            "jct_mean h",
            "jct_p95 h",
            "wait_mean h",
            "GPU-h",
            "alone jct h",
            "FTF",
        ):
            table.add_column(col, justify="right")
        for tenant, m in rows.items():
            ratio, alone = m["ftf_ratio"], m["alone_jct_mean"]
            table.add_row(
                tenant,
                str(m["jobs"]),
                str(m["unfinished"]),
                f"{m['jct_mean'] / 3600:.2f}",
                f"{m['jct_p95'] / 3600:.2f}",
                f"{m['wait_mean'] / 3600:.2f}",
                f"{m['gpu_hours']:,.0f}",
                f"{alone / 3600:.2f}" if alone is not None else "n/a",
                f"{ratio:.2f}" if ratio is not None else "n/a",
            )
        _stdout().print(table)
