"""The launch contract both backends share: a job + its placement -> each worker's argv and env.

Built-in workloads run `python -m trainyard.worker train|infer` under torchrun with a
static rendezvous (`--nnodes` = workers, `--node_rank` = the worker's index, worker 0's
address and port as master), so every attempt of a gang meets at a known place without
an external rendezvous service. A `command` workload runs the user's argument list as
it is, with the same environment torchrun would give a single process per worker
(MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK), so user code that calls
`torch.distributed.init_process_group("env://")` just works. Never a shell string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trainyard.job_resources import worker_resources
from trainyard.operator.backend import LaunchError, WorkerLaunch
from trainyard.scheduler.quantity import QuantityError

# Flags the contract owns: a job's args may not override where its output goes.
_RESERVED_ARGS = frozenset({"output_dir", "job"})
_FLAG_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


@dataclass(frozen=True, slots=True)
class Runtime:
    """How this backend starts programs: the python and torchrun argument prefixes.

    Locally these are the server's own interpreter (`sys.executable -m
    torch.distributed.run`), in a pod the image's `python` and `torchrun`.
    """

    python: tuple[str, ...] = ("python",)
    torchrun: tuple[str, ...] = ("torchrun",)


def worker_args(builtin: str, args: Mapping[str, Any]) -> list[str]:
    """A built-in workload's `args` as worker flags: {"steps": 30} -> ["--steps", "30"].

    True is a bare flag, False and None are left out, anything else is its string (JSON
    for lists and objects). Raises LaunchError (permanent) for a key that is no flag.
    """
    flags: list[str] = []
    for key, value in args.items():
        if not _FLAG_NAME.match(key):
            raise LaunchError(
                f"workload.args: {key!r} is not a flag name ([a-z][a-z0-9_-]*)", permanent=True
            )
        name = key.replace("-", "_")
        if name in _RESERVED_ARGS:
            raise LaunchError(f"workload.args: {key!r} is set by Trainyard", permanent=True)
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list | dict):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags


def per_worker_resources(spec: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """(millicores, bytes, GPUs, TPU chips) one worker of `spec` asks for."""
    try:
        return worker_resources(spec)
    except QuantityError as exc:  # validated at submit; a stored document cannot be wrong
        raise LaunchError(f"resources: {exc}", permanent=True) from exc


def build_workers(
    *,
    job_id: str,
    name: str,
    kind: str,
    spec: Mapping[str, Any],
    attempt: int,
    placement: Mapping[int, str],
    rendezvous: tuple[str, int],
    output_dir: str,
    runtime: Runtime = Runtime(),
    extra_env: Mapping[str, str] | None = None,
    checkpoint_dir: str | None = None,
) -> tuple[WorkerLaunch, ...]:
    """Every worker of one attempt: argv and environment for worker 0..workers-1.

    `placement` maps worker index -> node (the core's decision); `rendezvous` is worker
    0's (address, port); `output_dir` is where checkpoints go (the same for every
    attempt, so a retry or a preempted job resumes). `extra_env` is the backend's own
    additions (device visibility, metrics port) and wins over the job's `env`.
    """
    workers = len(placement)
    service = kind == "inference" and spec.get("mode") == "service"
    # A service's replicas are independent: any set of indexes (a rolling update and
    # autoscaling add and remove replicas); a gang is exactly 0..workers-1.
    indexes = sorted(placement) if service else list(range(workers))
    if not service and workers != int(spec.get("workers", 1)):
        raise LaunchError(
            f"placement has {workers} workers, the job asks for {spec.get('workers', 1)}"
        )
    cpu, memory, gpus, tpus = per_worker_resources(spec)
    nproc = gpus if gpus > 0 else 1
    workload = spec.get("workload") or {}
    master_addr, master_port = rendezvous
    precision = str(spec.get("precision", "auto"))
    ddp = bool(spec.get("ddp", True))
    base_env = {
        **{str(k): str(v) for k, v in (spec.get("env") or {}).items()},
        "PYTHONUNBUFFERED": "1",
        "TRAINYARD_JOB_ID": job_id,
        "TRAINYARD_JOB_NAME": name,
        "TRAINYARD_ATTEMPT": str(attempt),
        "TRAINYARD_OUTPUT_DIR": output_dir,
        "TRAINYARD_PRECISION": precision,
        "TRAINYARD_NPROC_PER_NODE": str(nproc),
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
        **dict(extra_env or {}),
    }
    if service:
        # `infer --serve` on the job's port on every interface (in a pod); the local
        # backend moves each replica to a loopback port of its own.
        base_env.update(
            TRAINYARD_SERVE="1",
            TRAINYARD_SERVE_HOST="0.0.0.0",
            TRAINYARD_SERVE_PORT=str(spec.get("port", 8000)),
            TRAINYARD_SERVICE_REVISION=str(spec.get("revision", 1)),
        )
    launches = []
    for index in indexes:
        if index not in placement:
            raise LaunchError(f"placement has no node for worker {index}")
        env = dict(base_env)
        env["TRAINYARD_WORKER_INDEX"] = str(index)
        command = workload.get("command")
        if command:
            env.update(
                WORLD_SIZE=str(workers), RANK=str(index), LOCAL_RANK="0", NODE_RANK=str(index)
            )
            argv = tuple(str(part) for part in command)
        else:
            argv = _builtin_argv(
                kind=kind,
                builtin=str(workload.get("builtin")),
                args=workload.get("args") or {},
                name=name,
                precision=precision,
                output_dir=output_dir,
                ddp=ddp,
                workers=workers,
                index=index,
                nproc=nproc,
                rendezvous=rendezvous,
                runtime=runtime,
                checkpoint_dir=checkpoint_dir,
                service=service,
                model_runtime=str(spec.get("runtime") or "torch"),
            )
        launches.append(
            WorkerLaunch(
                index=index,
                node=placement[index],
                argv=argv,
                env=env,
                gpus=gpus,
                tpu_chips=tpus,
                cpu_millicores=cpu,
                memory_bytes=memory,
            )
        )
    return tuple(launches)


def _builtin_argv(
    *,
    kind: str,
    builtin: str,
    args: Mapping[str, Any],
    name: str,
    precision: str,
    output_dir: str,
    ddp: bool,
    workers: int,
    index: int,
    nproc: int,
    rendezvous: tuple[str, int],
    runtime: Runtime,
    checkpoint_dir: str | None = None,
    service: bool = False,
    model_runtime: str = "torch",
) -> tuple[str, ...]:
    flags = worker_args(builtin, args)
    if kind == "inference":
        program = ["-m", "trainyard.worker", "infer", "--job", name, *flags]
        if "--precision" not in flags:
            program += ["--precision", precision]
        if "--checkpoint-dir" not in flags:
            program += ["--checkpoint-dir", checkpoint_dir or output_dir]
        if "--runtime" not in flags:
            program += ["--runtime", model_runtime]
        if model_runtime == "onnx" and "--onnx-dir" not in flags:
            # The job's own output: writable, kept across restarts, so replicas share
            # one export (the served checkpoint's directory may be another job's).
            program += ["--onnx-dir", f"{output_dir}/onnx"]
        if not service:
            # Batch: results and the counts the loop reports land in the job's output.
            if "--output" not in flags:
                program += ["--output", f"{output_dir}/predictions-{index}.jsonl"]
            program += ["--summary", f"{output_dir}/inference-summary-{index}.json"]
        return (*runtime.python, *program)
    program = [
        "-m",
        "trainyard.worker",
        "train",
        "--workload",
        builtin,
        "--output-dir",
        output_dir,
        "--job",
        name,
        "--precision",
        precision,
        *flags,
    ]
    if not ddp:
        return (*runtime.python, *program)
    master_addr, master_port = rendezvous
    return (
        *runtime.torchrun,
        "--nnodes",
        str(workers),
        "--node_rank",
        str(index),
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        master_addr,
        "--master_port",
        str(master_port),
        "--max_restarts",
        "0",
        *program,
    )


def describe(argv: Sequence[str]) -> str:
    """An argv as one line for events and logs (display only; never executed)."""
    return " ".join(json.dumps(part) if (" " in part or not part) else part for part in argv)
