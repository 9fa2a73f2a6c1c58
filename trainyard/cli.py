"""The `trainyard` command: run the server, and talk to it.

Client commands read TRAINYARD_URL (default http://127.0.0.1:8080) and TRAINYARD_TOKEN
(default: the admin token file in $TRAINYARD_HOME, when readable). Output is a table by
default, or `-o json` / `-o yaml`. Any error prints one line on stderr and exits 1.

Heavy imports (FastAPI, uvicorn, SQLAlchemy) happen inside the commands that need them,
so client commands start quickly.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from trainyard.api.client import ApiError, TrainyardClient
from trainyard.scheduler.simulator.cli import simulate

app = typer.Typer(
    help="Trainyard: a Kubernetes-native job scheduler for ML work.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
token_app = typer.Typer(help="Manage API tokens (an admin operation on the store).")
app.add_typer(token_app, name="token")
app.command("simulate")(simulate)

DEFAULT_URL = "http://127.0.0.1:8080"


class Output(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


class Backend(StrEnum):
    local = "local"
    kubernetes = "kubernetes"


OutputOption = Annotated[Output, typer.Option("--output", "-o", help="table, json or yaml.")]


def fail(message: str) -> typer.Exit:
    """Print one error line and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _home() -> Path:
    return Path(os.environ.get("TRAINYARD_HOME") or Path.home() / ".trainyard")


def _token() -> str | None:
    token = os.environ.get("TRAINYARD_TOKEN")
    if token:
        return token
    try:
        return (_home() / "admin-token").read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


@contextmanager
def _client() -> Iterator[TrainyardClient]:
    url = os.environ.get("TRAINYARD_URL") or DEFAULT_URL
    client = TrainyardClient(url, _token())
    try:
        yield client
    except ApiError as exc:
        raise fail(str(exc)) from None
    finally:
        client.close()


def _emit(data: Any, output: Output, table: Callable[[Any], None]) -> None:
    if output is Output.json:
        typer.echo(json.dumps(data, indent=2))
    elif output is Output.yaml:
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
    else:
        table(data)


def _table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    # Piped output is not cut to 80 columns: ids must stay whole to be copied.
    Console(width=None if sys.stdout.isatty() else 240).print(table)


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return ""
    seconds = (datetime.now().astimezone() - datetime.fromisoformat(timestamp)).total_seconds()
    return _duration(seconds)


def _starts_in(timestamp: str | None) -> str:
    """A pending job's forecast start as "~12m" from now ("~now" when due)."""
    if not timestamp:
        return ""
    seconds = (datetime.fromisoformat(timestamp) - datetime.now().astimezone()).total_seconds()
    return "~now" if seconds < 1 else f"~{_duration(seconds)}"


def _duration(seconds: float | None) -> str:
    """Seconds as a short human duration: 45s, 12m, 3h20m, 2d4h."""
    if seconds is None:
        return ""
    total = int(max(0, seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _accelerator(job: dict[str, Any]) -> str:
    resources = job.get("resources") or {}
    if resources.get("gpu"):
        models = resources.get("gpu_models")
        return f"{resources['gpu']} gpu" + (f" ({','.join(models)})" if models else "")
    if resources.get("tpu"):
        return f"{resources['tpu']} tpu {resources.get('tpu_type') or ''}".rstrip()
    return "-"


def _jobs_table(jobs: list[dict[str, Any]]) -> None:
    _table(
        None,
        [
            "ID",
            "NAME",
            "OWNER",
            "QUEUE",
            "PRIORITY",
            "STATE",
            "WORKERS",
            "ACCEL",
            "AGE",
            "STARTS IN",
            "REASON",
        ],
        [
            [
                j["id"],
                j["name"],
                j["owner"],
                j["queue"],
                j["priority"],
                j["state"],
                j["workers"],
                _accelerator(j),
                _age(j.get("created_at")),
                _starts_in(j.get("estimated_start")),
                j.get("reason") or "",
            ]
            for j in jobs
        ],
    )


# --------------------------------------------------------------------------- server


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on [default: 127.0.0.1].")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8080].")] = None,
    backend: Annotated[
        Backend | None, typer.Option(help="Where jobs run [default: local].")
    ] = None,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="Kubeconfig for the kubernetes backend.")
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(help="Namespace of the kubernetes backend's pods [default: default]."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Server processes.")] = 1,
) -> None:
    """Run the control plane (API on http://HOST:PORT, OpenAPI docs at /docs).

    Options override the TRAINYARD_* environment, which overrides the defaults.
    """
    from trainyard.api.app import create_app
    from trainyard.api.server import serve as run_server
    from trainyard.config import Settings
    from trainyard.operator.config import scheduler_config_source

    given = {
        "host": host,
        "port": port,
        "backend": backend,
        "kubeconfig": kubeconfig,
        "namespace": namespace,
    }
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    try:
        settings = Settings(**overrides)
        # An unknown policy name or an invalid quota file fails here, naming what is wrong.
        scheduler_config_source(settings)
        app_instance = create_app(settings)
    except Exception as exc:  # a bad database URL or kubeconfig: one line, exit 1
        raise fail(f"cannot start: {type(exc).__name__}: {exc}") from None
    host, port = settings.host, settings.port
    token_file = app_instance.state.admin_token_file
    where = str(token_file) if token_file else "TRAINYARD_ADMIN_TOKEN (set in the environment)"
    typer.echo(f"Trainyard API: http://{host}:{port}  (docs: http://{host}:{port}/docs)")
    typer.echo(f"Admin token: {where}")
    typer.echo(f"Store: {_redact(settings.resolved_database_url())}; backend: {settings.backend}")
    if settings.loop:
        typer.echo("Scheduling loop: on (its own process; one loop acts per store)")
    sys.stdout.flush()
    # Everything allocated so far (modules, the app, the schema) lives as long as the
    # process: moving it out of the collector's reach keeps full collections short, and
    # a larger first-generation threshold makes collections rare. Requests allocate
    # mostly acyclic garbage that reference counting frees at once; measured in
    # bench/api, this halves the submit p99 under load (collections were the tail).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    # Settings travel to the loop process (and to API worker processes) in the environment.
    os.environ.update(
        {"TRAINYARD_HOST": host, "TRAINYARD_PORT": str(port), "TRAINYARD_BACKEND": settings.backend}
    )
    if settings.kubeconfig is not None:
        os.environ["TRAINYARD_KUBECONFIG"] = str(settings.kubeconfig)
    os.environ["TRAINYARD_NAMESPACE"] = settings.namespace
    loop = None
    if settings.loop:
        from trainyard.operator.child import LoopProcess, loop_environment

        loop = LoopProcess(loop_environment({}))
        loop.start()
    quiet: dict[str, Any] = {"log_level": "warning", "access_log": False}
    try:
        if workers == 1:
            if not run_server(app_instance, settings, **quiet):
                raise typer.Exit(3)
            return
        from trainyard.api.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

        # One /metrics for N processes behind one port: request counters summed over all.
        os.environ[MULTIPROC_ENV] = str(prepare_multiprocess_dir(settings.home))
        run_server("trainyard.api.app:app_from_environment", settings, workers=workers, **quiet)
    finally:
        if loop is not None:
            loop.stop()


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _store_engine() -> Any:
    """The local store (TRAINYARD_HOME or TRAINYARD_DATABASE_URL), migrated."""
    from trainyard.config import Settings
    from trainyard.store import make_engine, migrate

    settings = Settings()
    engine = make_engine(settings.resolved_database_url(), timeouts=settings.database_timeouts())
    migrate(engine)
    return engine


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _expiry_seconds(text: str) -> int:
    """'90s', '30m', '12h', '30d' -> seconds; typer.Exit with one line otherwise."""
    text = text.strip().lower()
    if len(text) < 2 or text[-1] not in _UNITS or not text[:-1].isdigit() or int(text[:-1]) < 1:
        raise fail("--expires-in must be a duration such as 90s, 30m, 12h or 30d")
    return int(text[:-1]) * _UNITS[text[-1]]


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option(help="User the token belongs to.")],
    admin: Annotated[bool, typer.Option("--admin", help="Grant the admin role.")] = False,
    description: Annotated[str | None, typer.Option(help="What the token is for.")] = None,
    expires_in: Annotated[
        str | None, typer.Option(help="Refuse the token after this long: 90s, 30m, 12h, 30d.")
    ] = None,
) -> None:
    """Create a token in the local store (TRAINYARD_HOME or TRAINYARD_DATABASE_URL).

    The token is printed once; only its hash is stored.
    """
    from trainyard.api.auth import create_token

    user = user.strip()
    if not user or len(user) > 128 or not user.isprintable():
        raise fail("--user must be 1-128 printable characters")
    seconds = _expiry_seconds(expires_in) if expires_in is not None else None
    try:
        token = create_token(
            _store_engine(),
            user=user,
            admin=admin,
            description=description,
            expires_in_seconds=seconds,
        )
    except Exception as exc:
        raise fail(f"cannot create the token: {type(exc).__name__}: {exc}") from None
    typer.echo(token)


@token_app.command("list")
def token_list(
    user: Annotated[str | None, typer.Option(help="Only this user's tokens.")] = None,
    output: OutputOption = Output.table,
) -> None:
    """List the tokens in the local store (never the tokens themselves)."""
    from trainyard.api.routes.tokens import token_public
    from trainyard.store import list_tokens, read_transaction

    try:
        with read_transaction(_store_engine()) as conn:
            records = list_tokens(conn, user=user)
    except Exception as exc:
        raise fail(f"cannot list tokens: {type(exc).__name__}: {exc}") from None
    data = [token_public(record) for record in records]

    def table(rows: list[dict[str, Any]]) -> None:
        _table(
            None,
            ["ID", "USER", "ROLE", "CREATED", "EXPIRES", "REVOKED", "DESCRIPTION"],
            [
                [
                    t["id"],
                    t["user"],
                    "admin" if t["admin"] else "user",
                    t["created_at"],
                    t["expires_at"] or "never",
                    t["revoked_at"] or "",
                    t["description"] or "",
                ]
                for t in rows
            ],
        )

    _emit(data, output, table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="The token's ID (from `token list`).")],
) -> None:
    """Revoke a token: every server refuses it from its next request on."""
    from trainyard.store import revoke_token, write_transaction

    try:
        with write_transaction(_store_engine()) as conn:
            record = revoke_token(conn, token_id=token_id)
    except Exception as exc:
        raise fail(f"cannot revoke the token: {type(exc).__name__}: {exc}") from None
    if record is None:
        raise fail(f"no token with id {token_id}")
    typer.echo(f"revoked token {record.id} of {record.user}")


# --------------------------------------------------------------------------- client


@app.command()
def submit(
    file: Annotated[str, typer.Argument(help="Job document (YAML or JSON); - for stdin.")],
    output: OutputOption = Output.table,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Retrying with the same key never creates a second job.")
    ] = None,
) -> None:
    """Submit a job."""
    try:
        document = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror or exc}") from None
    with _client() as client:
        job = client.submit(
            document, content_type="application/yaml", idempotency_key=idempotency_key
        )
    _emit(job, output, lambda j: _jobs_table([j]))


@app.command("list")
def list_jobs(
    state: Annotated[list[str] | None, typer.Option(help="Filter on state (repeatable).")] = None,
    queue: Annotated[str | None, typer.Option(help="Filter on queue.")] = None,
    owner: Annotated[str | None, typer.Option(help="Filter on owner (admins).")] = None,
    kind: Annotated[str | None, typer.Option(help="training or inference.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Jobs per page.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page.")] = None,
    output: OutputOption = Output.table,
) -> None:
    """List jobs, newest first."""
    states = [s.upper() for s in state or []]
    with _client() as client:
        page = client.list_jobs(
            state=states, queue=queue, owner=owner, kind=kind, limit=limit, cursor=cursor
        )

    def table(data: dict[str, Any]) -> None:
        _jobs_table(data["data"])
        if data.get("next_cursor"):
            typer.echo(f"more: --cursor {data['next_cursor']}")

    _emit(page, output, table)


@app.command()
def get(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    output: OutputOption = Output.table,
) -> None:
    """Show one job and its events."""
    with _client() as client:
        job = client.get_job(job_id)
        events = client.events(job_id)["data"] if output is Output.table else []

    def table(j: dict[str, Any]) -> None:
        _jobs_table([j])
        if j.get("placement"):
            typer.echo("placement: " + ", ".join(f"{k}->{v}" for k, v in j["placement"].items()))
        _table(
            "events",
            ["AT", "FROM", "TO", "REASON"],
            [[e["at"], e["from_state"] or "", e["to_state"], e["reason"] or ""] for e in events],
        )

    _emit(job, output, table)


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return str(size)


@app.command()
def checkpoints(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    output: OutputOption = Output.table,
) -> None:
    """List a job's checkpoints: step, time, size and the attempt that wrote each.

    Locally read from the job's directory; on Kubernetes what the job's worker 0 last
    reported when its container ended (the control plane does not mount the claim)."""
    with _client() as client:
        listed = client.checkpoints(job_id)

    def table(d: dict[str, Any]) -> None:
        rows = [
            [c["step"], c["written_at"], _size(c["size_bytes"]), c["attempt"] or "?"]
            for c in d["data"]
        ]
        _table("checkpoints", ["STEP", "WRITTEN", "SIZE", "ATTEMPT"], rows)
        if d["source"] == "reported":
            typer.echo(
                "(on the job's cluster storage: as its worker 0 last reported them, when its "
                "container ended)"
            )

    _emit(listed, output, table)


@app.command()
def update(
    job_id: Annotated[str, typer.Argument(help="Job id of a model service.")],
    file: Annotated[
        str | None,
        typer.Option("--file", "-f", help="Fields to change (YAML or JSON); - for stdin."),
    ] = None,
    serve_checkpoint: Annotated[
        str | None, typer.Option(help="Serve this checkpoint directory (a new revision).")
    ] = None,
    checkpoint_job: Annotated[
        str | None,
        typer.Option(help="Serve this training job's newest checkpoint (a new revision)."),
    ] = None,
    image: Annotated[str | None, typer.Option(help="Container image (a new revision).")] = None,
    replicas: Annotated[int | None, typer.Option(help="Replicas to run.")] = None,
    min_replicas: Annotated[int | None, typer.Option(help="Autoscaling's lower bound.")] = None,
    max_replicas: Annotated[int | None, typer.Option(help="Autoscaling's upper bound.")] = None,
    output: OutputOption = Output.table,
) -> None:
    """Update a model service: a new checkpoint, image or runtime is rolled out one
    replica at a time (each new one ready before an old one stops); new counts resize it."""
    changes: dict[str, Any] = {}
    if file is not None:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text()
        except OSError as exc:
            raise fail(f"cannot read {file}: {exc.strerror or exc}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise fail(f"{file} is not YAML or JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise fail(f"{file} must hold a mapping of fields to change")
        changes.update(loaded)
    options = {
        "serve_checkpoint": serve_checkpoint,
        "checkpoint_job": checkpoint_job,
        "image": image,
        "replicas": replicas,
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
    }
    changes.update({name: value for name, value in options.items() if value is not None})
    if not changes:
        raise fail("nothing to change: name a field (see --help) or pass --file")
    with _client() as client:
        job = client.update(job_id, changes)
    _emit(job, output, lambda j: _jobs_table([j]))


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    output: OutputOption = Output.table,
) -> None:
    """Cancel a job."""
    with _client() as client:
        job = client.cancel(job_id)
    _emit(job, output, lambda j: _jobs_table([j]))


@app.command()
def logs(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream until the job ends.")
    ] = False,
) -> None:
    """Print a job's output."""
    out = sys.stdout.buffer
    with _client() as client:
        if follow:
            for chunk in client.follow_logs(job_id):
                out.write(chunk)
                out.flush()
        else:
            out.write(client.logs(job_id))
            out.flush()


@app.command()
def queues(output: OutputOption = Output.table) -> None:
    """Show queues: pending/running counts, oldest wait and pending order."""
    with _client() as client:
        data = client.queues()

    def table(d: dict[str, Any]) -> None:
        _table(
            "queues",
            ["QUEUE", "POLICY", "PENDING", "ADMITTED", "RUNNING", "OLDEST WAIT", "EXPECTED WAIT"],
            [
                [
                    q["name"],
                    q["policy"],
                    q["pending"],
                    q["admitted"],
                    q["running"],
                    _duration(q["oldest_wait_seconds"]),
                    _duration(q.get("expected_wait_seconds")),
                ]
                for q in d["data"]
            ],
        )
        rows = [
            [
                q["name"],
                p["position"],
                p["id"],
                p["name"],
                p["owner"],
                p["priority"],
                _duration(p["wait_seconds"]),
            ]
            for q in d["data"]
            for p in q["positions"]
        ]
        if rows:
            _table("pending", ["QUEUE", "POS", "ID", "NAME", "OWNER", "PRIORITY", "WAIT"], rows)
        quota_rows = [
            [
                q["name"],
                q["quota"]["cohort"] or "-",
                r["flavor"],
                r["resource"],
                f"{r['nominal']:g}",
                f"{r['used']:g}",
                f"{r['borrowed']:g}",
                f"{r['lent']:g}",
                f"{r.get('pending', 0):g}",
                f"{q['quota']['weighted_share']:.3f}",
            ]
            for q in d["data"]
            if q.get("quota")
            for r in q["quota"]["resources"]
        ]
        if quota_rows:
            _table(
                "quotas",
                [
                    "QUEUE",
                    "COHORT",
                    "FLAVOR",
                    "RESOURCE",
                    "NOMINAL",
                    "USED",
                    "BORROWED",
                    "LENT",
                    "PENDING",
                    "SHARE",
                ],
                quota_rows,
            )

    _emit(data, output, table)


def _amount(resource: str, value: int) -> str:
    if resource == "cpu":
        return f"{value / 1000:g}"
    if resource == "memory":
        return f"{value / 2**30:.1f}Gi"
    return str(value)


@app.command()
def cluster(output: OutputOption = Output.table) -> None:
    """Show capacity, allocated and free resources."""
    with _client() as client:
        data = client.cluster()

    def table(d: dict[str, Any]) -> None:
        rows = [
            [
                r["resource"],
                _amount(r["resource"], r["capacity"]),
                _amount(r["resource"], r["allocated"]),
                _amount(r["resource"], r["free"]),
            ]
            for r in d["resources"]
        ]
        rows += [
            [f"{a['kind']} {a['model']}", a["capacity"], a["allocated"], a["free"]]
            for a in d["accelerators"]
        ]
        _table(
            f"cluster ({d['backend']}, {len(d['nodes'])} nodes)",
            ["RESOURCE", "CAPACITY", "ALLOCATED", "FREE"],
            rows,
        )

    _emit(data, output, table)


class UsageOutput(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class UsageGroup(StrEnum):
    queue = "queue"
    owner = "owner"
    model = "model"
    job = "job"
    attempt = "attempt"


USAGE_COLUMNS = (
    "key",
    "jobs",
    "attempts",
    "gpu_hours",
    "tpu_chip_hours",
    "cpu_core_hours",
    "wall_hours",
    "wait_seconds_avg",
    "energy_joules",
    "cost",
)


def _hours(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


@app.command()
def usage(
    group_by: Annotated[
        UsageGroup, typer.Option("--group-by", "-g", help="queue, owner, model, job or attempt.")
    ] = UsageGroup.queue,
    since: Annotated[
        str, typer.Option(help="Window start: ISO 8601 time or a span back (24h, 7d, 2w).")
    ] = "30d",
    output: Annotated[
        UsageOutput, typer.Option("--output", "-o", help="table, json or csv.")
    ] = UsageOutput.table,
) -> None:
    """Usage report (like sreport): GPU/TPU/CPU hours, wait, energy and cost per group.

    Users see their own usage, admins everyone's.
    """
    with _client() as client:
        data = client.usage(group_by=group_by.value, since=since)
    if output is UsageOutput.json:
        typer.echo(json.dumps(data, indent=2))
        return
    if output is UsageOutput.csv:
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([group_by.value, *USAGE_COLUMNS[1:]])
        for row in data["data"]:
            writer.writerow(["" if row[c] is None else row[c] for c in USAGE_COLUMNS])
        typer.echo(buffer.getvalue(), nl=False)
        return
    currency = data.get("currency", "")
    _table(
        f"usage by {group_by.value} since {data['since']}",
        [
            group_by.value.upper(),
            "JOBS",
            "ATTEMPTS",
            "GPU-HOURS",
            "TPU-CHIP-HOURS",
            "CPU-CORE-HOURS",
            "WALL-HOURS",
            "AVG WAIT",
            "ENERGY (kWh)",
            f"COST ({currency})",
        ],
        [
            [
                row["key"],
                row["jobs"],
                row["attempts"],
                _hours(row["gpu_hours"]),
                _hours(row["tpu_chip_hours"]),
                _hours(row["cpu_core_hours"]),
                _hours(row["wall_hours"]),
                _duration(row["wait_seconds_avg"]),
                "" if row["energy_joules"] is None else f"{row['energy_joules'] / 3.6e6:.3f}",
                "" if row["cost"] is None else f"{row['cost']:.2f}",
            ]
            for row in data["data"]
        ],
    )


@app.command()
def top(
    interval: Annotated[
        float, typer.Option(min=0.5, max=3600, help="Seconds between refreshes.")
    ] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
) -> None:
    """A live terminal view: queues, running jobs (GPUs, samples/s, progress), allocation."""
    from trainyard.observability.top import run_top

    url = os.environ.get("TRAINYARD_URL") or DEFAULT_URL
    client = TrainyardClient(url, _token())
    try:
        run_top(client, interval=interval, once=once)
    except ApiError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass
    finally:
        client.close()


def main() -> None:
    """Console-script entry point."""
    app()
