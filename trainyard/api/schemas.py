"""Request and response documents of the /v1 API, named by role (JobCreate, JobPublic, ...).

Every request model forbids unknown fields, so a typo is a 422 naming the field instead of
a silently ignored setting. Cross-field rules are checked in field validators of the later
field, so the error names the field that breaks the rule (e.g. `resources.gpu_models`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic.functional_validators import PlainValidator
from pydantic_core import PydanticCustomError

from trainyard.durations import DURATION as _DURATION
from trainyard.durations import duration_seconds
from trainyard.scheduler.quantity import QuantityError, parse_quantity
from trainyard.secrets import SECRET_KEY, SECRET_NAME
from trainyard.store import JobState


def _mantissa(digits: int) -> str:
    return rf"(?:[0-9]{{1,{digits}}}(?:\.[0-9]*)?|\.[0-9]+)"


# Kubernetes quantities whose value fits Kubernetes' 64-bit milli-units (at most about
# 9.2e15 units), spelt per suffix as a digit limit so that the published pattern is the
# whole rule: every string it matches is accepted, and no other string is.
_QUANTITY_PATTERN = (
    "^(?:"
    + "|".join(
        [
            _mantissa(15),
            _mantissa(18) + "(?:m|u|n)",
            _mantissa(12) + "(?:k|Ki)",
            _mantissa(9) + "(?:M|Mi)",
            _mantissa(6) + "(?:G|Gi)",
            _mantissa(3) + "(?:T|Ti)",
            r"(?:[0-8](?:\.[0-9]*)?|\.[0-9]+)P",
            r"(?:[0-7](?:\.[0-9]*)?|\.[0-9]+)Pi",
            _mantissa(6) + "[eE][+-]?[0-9]",
        ]
    )
    + ")$"
)
_QUANTITY_TEXT = re.compile(_QUANTITY_PATTERN)
_MAX_INTEGER_QUANTITY = 2**53
_MAX_MILLI = 2**63 - 1
DURATION_PATTERN = (
    r"^([0-9]{1,6}h([0-9]{1,6}m)?([0-9]{1,8}s)?|[0-9]{1,6}m([0-9]{1,8}s)?|[0-9]{1,8}s)$"
)
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


def _quantity(value: Any) -> str:
    """Accept a Kubernetes quantity as a string or a non-negative integer; keep it as text.

    Exactly what the published schema says: a string matching `_QUANTITY_PATTERN`, or an
    integer from 0 to 2^53 (a JSON number with no fraction).
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PydanticCustomError("quantity", "must be a quantity such as '8', '500m' or '64Gi'")
    if isinstance(value, float):
        if not value.is_integer():
            raise PydanticCustomError("quantity", "a number must be a whole number; use '1.5'")
        value = int(value)
    if isinstance(value, int):
        if not 0 <= value <= _MAX_INTEGER_QUANTITY:
            raise PydanticCustomError("quantity", "a number must be from 0 to 2^53")
        return str(value)
    if len(value) > 64:
        raise PydanticCustomError("quantity", "must be at most 64 characters")
    if _QUANTITY_TEXT.match(value) is None:
        try:
            amount = parse_quantity(value)
        except QuantityError as exc:
            raise PydanticCustomError("quantity", str(exc)) from exc
        if value.strip() == value and amount * 1000 > _MAX_MILLI:
            raise PydanticCustomError("quantity", "is too large (at most 2^63 milli-units)")
        raise PydanticCustomError(
            "quantity",
            "must be written as the schema's pattern says: no spaces, at most 15 digits "
            "before the point (fewer with a larger suffix: 12 with k/Ki, 9 with M/Mi, ...)",
        )
    try:
        amount = parse_quantity(value)
    except QuantityError as exc:  # pragma: no cover - the pattern admits only quantities
        raise PydanticCustomError("quantity", str(exc)) from exc
    if amount * 1000 > _MAX_MILLI:  # pragma: no cover - the pattern's digit limits
        raise PydanticCustomError("quantity", "is too large (at most 2^63 milli-units)")
    return value


Quantity = Annotated[
    str,
    PlainValidator(_quantity),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _QUANTITY_PATTERN, "maxLength": 64},
                {"type": "integer", "minimum": 0, "maximum": _MAX_INTEGER_QUANTITY},
            ],
            "description": "A Kubernetes quantity: '8', '500m', '64Gi', '1.5G'.",
        }
    ),
]


def _whole_number(value: Any) -> Any:
    """JSON has one number type: 2.0 is the integer 2 (JSON Schema says so too). Strict
    integer fields still refuse booleans, strings and fractions."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
"""An integer field (declared strict=True) that also takes a JSON number like 2.0."""
# Inside the type, not on the field: pydantic publishes a nullable field's bounds as
# "ge"/"le" (no JSON Schema keywords) when the type has a before-validator.
ReplicaCount = Annotated[
    int,
    BeforeValidator(_whole_number),
    Field(ge=1, le=64),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 64}),
]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=253)]
LabelValue = Annotated[str, StringConstraints(max_length=63)]
AnnotationValue = Annotated[str, StringConstraints(max_length=4096)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Strict):
    """What each worker needs. Use `gpu` (with optional `gpu_models`) or `tpu`, not both."""

    cpu: Quantity = Field(default="1", description="CPU per worker, a Kubernetes quantity.")
    memory: Quantity = Field(default="1Gi", description="Memory per worker, a quantity.")
    gpu: WholeNumber = Field(default=0, ge=0, le=1024, strict=True, description="GPUs per worker.")
    gpu_models: list[ShortText] | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description="Acceptable GPU models (e.g. H100, A100); any model when omitted.",
    )
    tpu: WholeNumber = Field(
        default=0, ge=0, le=4096, strict=True, description="TPU chips per worker."
    )
    tpu_type: ShortText | None = Field(default=None, description="TPU accelerator type.")
    tpu_topology: (
        Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,3}(x[1-9][0-9]{0,3}){1,2}$")]
        | None
    ) = Field(default=None, description="TPU slice topology such as 2x2 or 4x4x4.")

    @field_validator("gpu_models")
    @classmethod
    def _models_need_gpus(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is not None and info.data.get("gpu", 0) == 0:
            raise PydanticCustomError("requires_gpu", "gpu_models needs gpu > 0")
        return value

    @field_validator("tpu")
    @classmethod
    def _one_accelerator(cls, value: int, info: ValidationInfo) -> int:
        if value > 0 and info.data.get("gpu", 0) > 0:
            raise PydanticCustomError("one_accelerator", "ask for gpu or tpu, not both")
        return value

    @field_validator("tpu_type", "tpu_topology")
    @classmethod
    def _tpu_fields_need_tpu(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("tpu", 0) == 0:
            raise PydanticCustomError(
                "requires_tpu", "{field} needs tpu > 0", {"field": info.field_name}
            )
        return value


class Workload(_Strict):
    """What each worker runs: a built-in workload with args, or a command (argument list)."""

    builtin: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,62}$")] | None = Field(
        default=None, description="Name of a built-in workload, e.g. `gpt`."
    )
    args: dict[Annotated[str, StringConstraints(min_length=1, max_length=253)], Any] = Field(
        default_factory=dict, description="Arguments of the built-in workload."
    )
    command: list[Annotated[str, StringConstraints(max_length=4096)]] | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Program and arguments, run without a shell.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Workload:
        if (self.builtin is None) == (self.command is None):
            raise PydanticCustomError(
                "one_of", "set exactly one of workload.builtin or workload.command"
            )
        if self.command is not None and self.args:
            raise PydanticCustomError("args_need_builtin", "args apply only to a builtin workload")
        if self.command is not None and self.command[0] == "":
            raise PydanticCustomError("empty_program", "workload.command[0] must name a program")
        return self


class SecretKeyRef(_Strict):
    """One key of a secret: a Kubernetes Secret, or on the local backend the file
    $TRAINYARD_HOME/secrets/<secret>/<key> (mode 0600, owned by the service user)."""

    secret: Annotated[str, StringConstraints(max_length=253, pattern=SECRET_NAME)] = Field(
        description="The secret's name (a DNS-1123 subdomain)."
    )
    key: Annotated[str, StringConstraints(pattern=SECRET_KEY)] = Field(
        description="The key within the secret ([-._a-zA-Z0-9], not starting with '..')."
    )


VOLUME_NAME = r"^[a-z0-9]([-a-z0-9]{0,48}[a-z0-9])?$"
OBJECT_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"


class EmptyDirSource(_Strict):
    """Scratch space that lives as long as the worker's pod."""

    size: Quantity | None = Field(default=None, description="Size limit, e.g. 100Gi.")
    medium: Literal["", "Memory"] = Field(default="", description="'Memory' for a tmpfs.")


class Volume(_Strict):
    """A named volume the job's workers may mount: exactly one source.

    `pvc`, `config_map` and `secret` name existing Kubernetes objects (a missing claim
    keeps the job PENDING until it appears); `host_path` is for admins, and only where
    the deployment allows it (TRAINYARD_ALLOW_HOST_PATH).
    """

    name: Annotated[str, StringConstraints(pattern=VOLUME_NAME)] = Field(
        description="Lowercase DNS label, up to 50 characters; `mounts[].volume` names it."
    )
    pvc: Annotated[str, StringConstraints(pattern=OBJECT_NAME)] | None = Field(
        default=None, description="A PersistentVolumeClaim of the job namespace, by name."
    )
    empty_dir: EmptyDirSource | None = None
    config_map: Annotated[str, StringConstraints(pattern=OBJECT_NAME)] | None = None
    secret: Annotated[str, StringConstraints(pattern=OBJECT_NAME)] | None = None
    host_path: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Volume:
        sources = [s for s in VOLUME_SOURCES if getattr(self, s) is not None]
        if len(sources) != 1:
            raise PydanticCustomError(
                "one_source",
                "set exactly one of {sources} (got {count})",
                {"sources": ", ".join(VOLUME_SOURCES), "count": len(sources)},
            )
        if self.host_path is not None and not self.host_path.startswith("/"):
            raise PydanticCustomError("absolute_path", "host_path must be an absolute path")
        return self

    @property
    def source(self) -> str:
        return next(s for s in VOLUME_SOURCES if getattr(self, s) is not None)


VOLUME_SOURCES = ("pvc", "empty_dir", "config_map", "secret", "host_path")


class Mount(_Strict):
    """One volume at one absolute path in every worker (read-only for datasets)."""

    volume: Annotated[str, StringConstraints(pattern=VOLUME_NAME)]
    path: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(
        description="An absolute path inside the worker, e.g. /data."
    )
    read_only: bool = False

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise PydanticCustomError("absolute_path", "must be an absolute path (start with /)")
        if value == "/" or any(part in ("..", ".") for part in value.split("/")):
            raise PydanticCustomError(
                "absolute_path", "must be a normalized path below / (no '.', '..' or '/')"
            )
        value = value.rstrip("/") or value
        if value in RESERVED_MOUNT_PATHS:
            raise PydanticCustomError(
                "reserved_path", "{path} is Trainyard's own mount", {"path": value}
            )
        return value


RESERVED_MOUNT_PATHS = frozenset({"/dev/shm", "/output"})


class CheckpointStorage(_Strict):
    """Where the job's checkpoints (its output directory) live.

    `auto`: a claim of its own per job when the deployment names a ReadWriteMany storage
    class, else the worker's local storage; `pvc`: a claim of its own per job, always;
    `none`: the worker's local storage (lost with the pod on Kubernetes).
    """

    storage: Literal["auto", "pvc", "none"] = "auto"
    size: Quantity = Field(default="10Gi", description="Size of the job's claim.")
    storage_class: Annotated[str, StringConstraints(pattern=OBJECT_NAME)] | None = Field(
        default=None, description="Storage class of the claim (default: the deployment's)."
    )


PathText = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class Autoscale(_Strict):
    """A service's replica count follows what its replicas report (between
    `min_replicas` and `max_replicas`): more above `target`, one fewer after `cooldown`
    well below it (under half)."""

    metric: Literal["p95_latency_ms", "inflight"] = Field(
        description="`p95_latency_ms`: the 95th percentile of request latency over the "
        "replicas; `inflight`: requests being answered per replica."
    )
    target: float = Field(gt=0, le=1_000_000, allow_inf_nan=False)
    cooldown: Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=32)] = Field(
        default="60s", description="How long the metric stays low before a replica goes."
    )


class JobBase(_Strict):
    """The job document a user submits (JSON over REST, the same fields as YAML)."""

    name: Annotated[str, StringConstraints(pattern=DNS_LABEL)] = Field(
        description="Lowercase DNS label, up to 63 characters."
    )
    kind: Literal["training", "inference"] = "training"
    queue: Annotated[str, StringConstraints(min_length=1, max_length=63)] = "default"
    priority: Annotated[str, StringConstraints(min_length=1, max_length=63)] = "normal"
    workers: WholeNumber = Field(default=1, ge=1, le=1024, strict=True)
    resources: Resources = Field(default_factory=Resources)
    workload: Workload
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    ddp: bool = Field(default=True, strict=True)  # strict: 0 and "yes" are not booleans
    max_runtime: Annotated[str, StringConstraints(max_length=32)] | None = Field(
        default=None,
        description="Wall-clock limit such as 4h, 90m or 1h30m.",
        # Documented for clients; checked by `_duration` for a friendlier message.
        json_schema_extra={"pattern": DURATION_PATTERN},
    )
    retries: WholeNumber = Field(default=0, ge=0, le=100, strict=True)
    preemptible: bool = Field(
        default=True,
        strict=True,
        description="Whether higher-priority work may stop this job (it resumes from its "
        "checkpoint later, keeping its place in the queue).",
    )
    image: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None
    env: dict[
        Annotated[str, StringConstraints(pattern=ENV_NAME)],
        Annotated[str, StringConstraints(max_length=32768)],
    ] = Field(default_factory=dict, max_length=256)
    env_from_secret: dict[Annotated[str, StringConstraints(pattern=ENV_NAME)], SecretKeyRef] = (
        Field(
            default_factory=dict,
            max_length=256,
            description="Environment variables set from secrets, by reference: the value is "
            "never stored or shown. Takes precedence over `env` for the same name.",
        )
    )
    labels: dict[Annotated[str, StringConstraints(pattern=LABEL_KEY)], LabelValue] = Field(
        default_factory=dict, max_length=64
    )
    annotations: dict[Annotated[str, StringConstraints(pattern=LABEL_KEY)], AnnotationValue] = (
        Field(default_factory=dict, max_length=64, description="Copied onto the job's pods.")
    )

    volumes: list[Volume] = Field(default_factory=list, max_length=64)
    mounts: list[Mount] = Field(default_factory=list, max_length=64)
    checkpoint: CheckpointStorage | None = Field(
        default=None, description="Checkpoint storage; omitted means storage: auto."
    )

    @field_validator("volumes")
    @classmethod
    def _unique_volumes(cls, value: list[Volume]) -> list[Volume]:
        seen: set[str] = set()
        for volume in value:
            if volume.name in seen:
                raise PydanticCustomError(
                    "unique_volume", "two volumes are named {name!r}", {"name": volume.name}
                )
            seen.add(volume.name)
        return value

    @field_validator("mounts")
    @classmethod
    def _mounts_name_volumes(cls, value: list[Mount], info: ValidationInfo) -> list[Mount]:
        names = {v.name for v in info.data.get("volumes") or ()}
        paths: set[str] = set()
        for index, mount in enumerate(value):
            if mount.volume not in names:
                raise PydanticCustomError(
                    "unknown_volume",
                    "mounts[{index}].volume: no volume is named {name!r}",
                    {"index": index, "name": mount.volume},
                )
            if mount.path in paths:
                raise PydanticCustomError(
                    "unique_mount_path",
                    "mounts[{index}].path: two mounts on {path!r}",
                    {"index": index, "path": mount.path},
                )
            paths.add(mount.path)
        return value

    mode: Literal["batch", "service"] | None = Field(
        default=None,
        description="Inference only: `batch` (an input file -> an output file; ends) or "
        "`service` (a long-running model service with an endpoint; runs until cancelled). "
        "Defaults to batch for kind inference.",
    )
    replicas: ReplicaCount | None = Field(
        default=None,
        strict=True,
        description="Service only: replicas to run (each one a worker; defaults to "
        "min_replicas, else 1). Sets `workers`.",
    )
    min_replicas: ReplicaCount | None = Field(default=None, strict=True)
    max_replicas: ReplicaCount | None = Field(default=None, strict=True)
    autoscale: Autoscale | None = Field(
        default=None,
        description="Service only: scale between min_replicas and max_replicas on an "
        "observed metric.",
    )
    port: WholeNumber = Field(
        default=8000,
        ge=1024,
        le=65535,
        strict=True,
        description="Service only: the port the service listens on (in a pod; the local "
        "backend gives each replica its own loopback port).",
    )
    serve_checkpoint: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = (
        Field(
            default=None,
            description="Service only: a directory with checkpoint-<step>.pt files (the newest "
            "valid one is served).",
        )
    )
    checkpoint_job: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = Field(
        default=None,
        description="Service only: the id of a training job whose newest checkpoint "
        "to serve (instead of `serve_checkpoint`).",
    )
    runtime: Literal["torch", "onnx"] | None = Field(
        default=None,
        description="Inference only: `torch` (eager; dynamic int8 with workload.args.quantize) "
        "or `onnx` (the checkpoint exported to ONNX once, run with onnxruntime in fp32, int8 "
        "with quantize). Defaults to torch for kind inference.",
    )

    @field_validator("max_runtime")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            match = _DURATION.match(value)
            if match is None or not any(match.groupdict().values()):
                raise PydanticCustomError(
                    "duration", "must be a duration such as 4h, 90m, 30s or 1h30m"
                )
            if duration_seconds(value) == 0:
                raise PydanticCustomError("duration", "must be longer than 0s")
        return value

    @model_validator(mode="after")
    def _inference_modes(self) -> JobBase:
        """Service rules; each error names the field that breaks it."""
        if self.mode is not None and self.kind != "inference":
            raise _field_error("mode", "inference_only", "mode applies to kind inference only")
        self._check_runtime()
        service = self.kind == "inference" and self.mode == "service"
        if not service:
            for name in SERVICE_ONLY:
                if getattr(self, name) is not None:
                    raise _field_error(name, "service_only", f"{name} applies to mode service only")
            if self.kind == "inference" and self.mode is None:
                self.mode = "batch"
            return self
        if (self.serve_checkpoint is None) == (self.checkpoint_job is None):
            raise _field_error(
                "serve_checkpoint",
                "checkpoint_required",
                "mode service needs exactly one of serve_checkpoint or checkpoint_job",
            )
        low = self.min_replicas
        high = self.max_replicas
        if low is not None and high is not None and high < low:
            raise _field_error(
                "max_replicas", "min_max", f"max_replicas {high} is below min_replicas {low}"
            )
        replicas = self.replicas or low or 1
        if low is not None and replicas < low:
            raise _field_error("replicas", "min_max", f"replicas {replicas} < min_replicas {low}")
        if high is not None and replicas > high:
            raise _field_error("replicas", "min_max", f"replicas {replicas} > max_replicas {high}")
        if "workers" in self.model_fields_set and self.workers != replicas:
            raise _field_error(
                "workers", "replicas", "a service's workers are its replicas: set replicas"
            )
        self.replicas = replicas
        self.workers = replicas
        if "preemptible" not in self.model_fields_set:
            self.preemptible = False  # a service stopping drops its users' requests
        return self

    def _check_runtime(self) -> None:
        """`runtime` picks how a built-in workload's model runs; it defaults to torch."""
        if self.kind != "inference":
            if self.runtime is not None:
                raise _field_error(
                    "runtime", "inference_only", "runtime applies to kind inference only"
                )
            return
        if self.runtime is not None and self.workload.command is not None:
            raise _field_error(
                "runtime",
                "builtin_only",
                "runtime applies to built-in workloads (a command runs its own program)",
            )
        if self.workload.command is None and self.runtime is None:
            self.runtime = "torch"
        if self.runtime == "onnx" and self.precision in ("bf16", "fp16"):
            raise _field_error(
                "precision",
                "onnx_fp32",
                f"runtime onnx runs the exported fp32 graph, not {self.precision} "
                "(use fp32 or auto; workload.args.quantize for int8)",
            )


def _field_error(field: str, rule: str, message: str) -> Exception:
    """A validation error located at `field` (pydantic reports model-level errors at the
    model's root; the API's 422 formatter reads the location from this)."""
    from pydantic_core import InitErrorDetails, ValidationError

    return ValidationError.from_exception_data(
        "JobBase",
        [
            InitErrorDetails(
                type=PydanticCustomError(rule, message),
                loc=(field,),
                input=None,
            )
        ],
    )


class JobCreate(JobBase):
    """A job as submitted with POST /v1/jobs."""


SERVICE_ONLY = ("replicas", "min_replicas", "max_replicas", "checkpoint_job", "autoscale")
UPDATABLE_FIELDS = (
    "serve_checkpoint",
    "checkpoint_job",
    "image",
    "runtime",
    "precision",
    "env",
    "workload",
    "replicas",
    "min_replicas",
    "max_replicas",
    "autoscale",
)
"""What PATCH /v1/jobs/{id} may change on a model service (the fields of the job
document of these names; one the document lacks is left out): what its replicas run, and
how many. The rest (resources, queue, name, ...) decides placement and quota: a new job."""


def _update_model() -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name in UPDATABLE_FIELDS:
        info = JobBase.model_fields.get(name)
        if info is None:
            continue
        annotation = info.annotation
        copy = FieldInfo.merge_field_infos(info, default=None, default_factory=None)
        fields[name] = (annotation | None, copy)
    return create_model(
        "JobUpdate",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1}),
        __doc__="Changes to a model service (PATCH /v1/jobs/{id}): each field named replaces "
        "the document's (null: back to its default). A change of what replicas run (the "
        "checkpoint, image, runtime, precision, env, workload) is a new revision, rolled out "
        "one replica at a time; a change of only the counts resizes the service.",
        **fields,
    )


JobUpdate = _update_model()


class JobPublic(JobBase):
    """A job as the API returns it: the document plus identity and lifecycle."""

    model_config = ConfigDict(extra="forbid")

    id: str
    state: JobState
    reason: str | None = Field(
        description="Why the job is in its state, e.g. 'unschedulable: ...' (set by the scheduler)."
    )
    owner: str
    placement: dict[str, str] | None = Field(
        description="Worker index -> node name, once the scheduler has placed the job."
    )
    version: int
    revision: int | None = Field(
        default=None,
        description="A service's document revision: absent as submitted (1), one more "
        "per PATCH that changes what its replicas run.",
    )
    attempt: int = Field(description="Admissions so far (1 = first run).")
    failures: int = Field(description="Failed attempts so far (retried while <= retries).")
    stopping: JobState | None = Field(
        description="Set while the job's workers are being stopped: the state it then takes."
    )
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    estimated_start: datetime | None = Field(
        default=None,
        description=(
            "While PENDING: when the scheduler's forward simulation of the queue expects the "
            "job to start (learned runtimes; refreshed every few seconds). Null when unknown."
        ),
    )


class CheckpointPublic(BaseModel):
    """One checkpoint of a job: its step, when and by which attempt it was written."""

    step: int
    written_at: datetime
    size_bytes: int
    attempt: int | None = Field(description="The attempt that wrote it (None: not recorded).")


class CheckpointsPublic(BaseModel):
    """A job's checkpoints, newest step first. `source` says where they were read:
    `local` (the job's output directory under the server's home, now) or `reported`
    (cluster storage the control plane does not mount: what the job's worker 0 last
    reported, when its container ended)."""

    data: list[CheckpointPublic]
    count: int
    source: Literal["local", "reported"]
    endpoint: str | None = Field(
        default=None,
        description="A running service's address: locally the control plane's "
        "/v1/jobs/{id}/predict, on Kubernetes the Service's DNS name and port. Shown by "
        "GET /v1/jobs/{id} (not in list pages).",
    )
    ready_replicas: int | None = Field(
        default=None, description="A service's replicas that answer their health route."
    )


class JobsPublic(BaseModel):
    """A page of jobs, newest first; pass `next_cursor` as `cursor` for the next page."""

    data: list[JobPublic]
    count: int = Field(description="Number of jobs in this page.")
    next_cursor: str | None


class EventPublic(BaseModel):
    """One state transition."""

    at: datetime
    from_state: JobState | None
    to_state: JobState
    reason: str | None


class EventsPublic(BaseModel):
    data: list[EventPublic]
    count: int


class QueuedJob(BaseModel):
    """A pending job's place in its queue (1 = next)."""

    id: str
    name: str
    owner: str
    priority: str
    position: int
    wait_seconds: float


class QuotaResourcePublic(BaseModel):
    """One flavor-resource of a queue's quota (GPUs, TPU chips, CPU cores, memory bytes)."""

    flavor: str
    resource: str
    nominal: float
    used: float
    borrowed: float = Field(description="Used above the nominal quota (from the cohort).")
    lent: float = Field(description="Unused nominal quota other queues of the cohort use now.")
    borrowing_limit: float | None = None
    lending_limit: float | None = None
    pending: float = Field(
        default=0.0,
        description="What the queue's waiting jobs ask for, each counted in the first of "
        "its flavors whose nodes can hold it.",
    )


class QueueQuotaPublic(BaseModel):
    """A queue's place under quota (present only for queues in the quota file)."""

    cohort: str | None
    weight: float
    weighted_share: float = Field(description="Weighted dominant resource share (0: within quota).")
    resources: list[QuotaResourcePublic]


class QueuePublic(BaseModel):
    name: str
    policy: str
    pending: int
    admitted: int
    running: int
    oldest_wait_seconds: float | None = Field(description="Age of the oldest pending job.")
    expected_wait_seconds: float | None = Field(
        default=None,
        description="Median forecast wait of the queue's pending jobs (null: no forecast).",
    )
    positions: list[QueuedJob] = Field(
        description="Pending jobs in queue order (your own only, unless admin), first `limit`."
    )
    quota: QueueQuotaPublic | None = None


class QueuesPublic(BaseModel):
    data: list[QueuePublic]
    priority_classes: dict[str, int]


class ResourceUsage(BaseModel):
    """Capacity, allocated and free amounts of one resource (integers in `unit`)."""

    resource: str
    unit: str
    capacity: int
    allocated: int
    free: int


class AcceleratorUsage(BaseModel):
    """Capacity, allocated and free accelerators of one kind and model."""

    kind: Literal["gpu", "tpu"]
    model: str
    capacity: int
    allocated: int
    free: int


class NodePublic(BaseModel):
    name: str
    resources: list[ResourceUsage]
    accelerator: AcceleratorUsage | None


class ClusterPublic(BaseModel):
    backend: str
    resources: list[ResourceUsage]
    accelerators: list[AcceleratorUsage]
    nodes: list[NodePublic]


class FieldError(BaseModel):
    """One broken rule: which field (dotted path), which rule, and a readable message."""

    field: str
    rule: str
    message: str


class ErrorBody(BaseModel):
    """Every error response: one readable line, plus per-field details for 422s."""

    detail: str
    errors: list[FieldError] = Field(default_factory=list)
