"""The job document's cross-field rules, written into the OpenAPI schema as JSON Schema.

Pydantic publishes each field's own constraints; the rules that relate fields (and the
document-wide ones in `document_rules`) are checked in validators it cannot describe. A
schema that leaves them out is dishonest: a client generating documents from it (and
schemathesis' positive-data check) gets 422s for documents the schema calls valid. Every
rule JSON Schema can state is added here, next to the validator that enforces it:

- `resources`: `gpu_models` needs `gpu` > 0; not both `gpu` and `tpu`; `tpu_type` and
  `tpu_topology` need `tpu` > 0 (if/then, not).
- `workload`: exactly one of `builtin` and `command` (oneOf); `args` only with `builtin`;
  `command[0]` names a program (prefixItems).
- `max_runtime` longer than 0s (not: an all-zero duration).
- No NUL character in any free-form string (`image`, `serve_checkpoint`, `checkpoint_job`,
  `command`, map values), key or `args` value (`check_document`).
- `args` values: any JSON without NUL (a recursive schema); the nesting limit is stated in
  `x-max-depth` and the description (see `args_value_schema` for why not as keywords).

- `volumes`: exactly one source per volume; `mounts[].path` absolute, without `.` or `..`
  segments, not a path Trainyard mounts itself.
- Inference: `mode` only for kind inference; `replicas`, `min_replicas`, `max_replicas` and
  `checkpoint_job` only for mode service, which needs exactly one of `serve_checkpoint` and
  `checkpoint_job`; `runtime` only for kind inference with a built-in workload, and
  `runtime: onnx` only with precision fp32 or auto.
- The deployment's own rules (`express_deployment_rules`): on the local backend no volumes,
  no mounts and no `checkpoint.storage: pvc`; `host_path` only where the deployment allows it.

What stays out, because it depends on more than the document: the configured queue and
priority names are published as enums by the app; the stored size limit and the byte
limit of the body (413) depend on the encoding. Relations between values (`max_replicas` >=
`min_replicas`, a mount naming a listed volume, unique names and paths) and facts of the
store (`checkpoint_job` names a training job with a checkpoint) have no JSON Schema
keyword: RELATIONAL_RULES names the 422 rules they answer with.
"""

from __future__ import annotations

from typing import Any

from trainyard.api.document_rules import MAX_DEPTH

NO_NUL = "^[^\\u0000]*$"
ZERO_DURATION = "^(0+h)?(0+m)?(0+s)?$"
ARGS_DEPTH = MAX_DEPTH - 3
"""Levels `args` values may nest: the document, `workload` and `args` take three."""


RELATIONAL_RULES = frozenset(
    {
        "min_max",  # replicas within [min_replicas, max_replicas]
        "replicas",  # a service's workers equal its replicas
        "unknown_volume",  # a mount names a volume of the same document
        "unique_mount_path",
        "unique_volume",
        "job_not_found",  # checkpoint_job: a job in the store...
        "training_job",  # ...that is a training job...
        "no_checkpoint",  # ...and has written a checkpoint
        "admin_only",  # host_path: the caller's role, not the document
    }
)
"""422 rules for relations between values and facts of the store or the caller, which no
JSON Schema keyword states (the schema test makes them hold in the data it sends, so every
check still runs on every response)."""

VOLUME_SOURCES = ("pvc", "empty_dir", "config_map", "secret", "host_path")
TRAINYARD_PATHS = ("/output", "/dev/shm")
DOT_SEGMENT = "(^|/)[.][.]?(/|$)"


def _positive(name: str) -> dict[str, Any]:
    return {"required": [name], "properties": {name: {"minimum": 1}}}


def _present(name: str, kind: str) -> dict[str, Any]:
    return {"required": [name], "properties": {name: {"type": kind}}}


def _no_nul_strings(schema: dict[str, Any]) -> None:
    """Add the no-NUL pattern to a string schema (or the string branch of an anyOf)."""
    branches = schema.get("anyOf", [schema])
    for branch in branches:
        if branch.get("type") == "string" and "pattern" not in branch:
            branch["pattern"] = NO_NUL


def args_value_schema() -> dict[str, Any]:
    """Any JSON value without a NUL in its strings and keys: the values of `args`.

    Recursive (it refers to itself). The nesting limit is stated in `x-max-depth` and the
    description, not as keywords: spelling it out as a chain of ARGS_DEPTH schemas, each
    one level shallower, is valid JSON Schema, but schema-driven tools explore every
    level of every branch (schemathesis' coverage phase never finished with it).
    """
    inner = {"$ref": "#/components/schemas/ArgsValue"}
    return {
        "description": "Any JSON value; strings and keys without NUL. Arrays and objects "
        f"nest at most {ARGS_DEPTH} levels here ({MAX_DEPTH} in the whole document).",
        "x-max-depth": ARGS_DEPTH,
        "anyOf": [
            {"type": "string", "pattern": NO_NUL},
            {"type": "number"},
            {"type": "boolean"},
            {"type": "null"},
            {"type": "array", "items": inner},
            {"type": "object", "additionalProperties": inner, "propertyNames": {"pattern": NO_NUL}},
        ],
    }


def express_document_rules(schema: dict[str, Any]) -> None:
    """Add the cross-field rules to an OpenAPI document built by FastAPI (in place)."""
    components = schema["components"]["schemas"]

    resources = components["Resources"]
    resources["allOf"] = [
        {"if": _present("gpu_models", "array"), "then": _positive("gpu")},
        {"not": {"allOf": [_positive("gpu"), _positive("tpu")]}},
        {"if": _present("tpu_type", "string"), "then": _positive("tpu")},
        {"if": _present("tpu_topology", "string"), "then": _positive("tpu")},
    ]
    gpu_models = resources["properties"]["gpu_models"]["anyOf"][0]
    _no_nul_strings(gpu_models["items"])
    _no_nul_strings(resources["properties"]["tpu_type"])

    workload = components["Workload"]
    workload["oneOf"] = [_present("builtin", "string"), _present("command", "array")]
    workload["allOf"] = [
        {
            "if": _present("command", "array"),
            "then": {"properties": {"args": {"maxProperties": 0}}},
        }
    ]
    command = workload["properties"]["command"]["anyOf"][0]
    _no_nul_strings(command["items"])
    command["prefixItems"] = [{**command["items"], "minLength": 1}]
    args = workload["properties"]["args"]
    args["additionalProperties"] = {"$ref": "#/components/schemas/ArgsValue"}
    args["propertyNames"]["pattern"] = NO_NUL
    components["ArgsValue"] = args_value_schema()

    if "Volume" in components:
        components["Volume"]["oneOf"] = [_only_source(source) for source in VOLUME_SOURCES]
    if "Mount" in components:
        path = components["Mount"]["properties"]["path"]
        path["pattern"] = "^/[^\\u0000]*$"
        path["not"] = {"anyOf": [{"enum": list(TRAINYARD_PATHS)}, {"pattern": DOT_SEGMENT}]}

    for name in ("JobCreate", "JobPublic"):
        if "mode" in components[name]["properties"]:
            components[name].setdefault("allOf", []).extend(_inference_rules())
    if "JobUpdate" in components:  # PATCH: the same string rules on the fields it has
        properties = components["JobUpdate"]["properties"]
        if "image" in properties:
            _no_nul_strings(properties["image"])
        env = properties.get("env", {})
        env = env.get("anyOf", [env])[0]  # nullable in a PATCH: the object branch
        for value in env.get("patternProperties", {}).values():
            _no_nul_strings(value)
        if env.get("patternProperties"):
            env["additionalProperties"] = False
    for name in ("JobCreate", "JobPublic", "JobUpdate"):
        # The service-only strings (free text, like `image`): no NUL, as `check_document`
        # refuses it in every string of a stored document.
        properties = components.get(name, {}).get("properties", {})
        for field in ("serve_checkpoint", "checkpoint_job"):
            if field in properties:
                _no_nul_strings(properties[field])
    for name in ("JobCreate", "JobPublic"):
        properties = components[name]["properties"]
        properties["max_runtime"]["not"] = {"type": "string", "pattern": ZERO_DURATION}
        _no_nul_strings(properties["image"])
        for mapping in ("env", "env_from_secret", "labels", "annotations"):
            patterns = properties[mapping].get("patternProperties", {})
            for value in patterns.values():
                _no_nul_strings(value)
            if patterns:
                # The key pattern is the rule (pydantic leaves other keys unconstrained).
                properties[mapping]["additionalProperties"] = False


def _null(name: str) -> dict[str, Any]:
    return {"properties": {name: {"type": "null"}}}


def _set(name: str) -> dict[str, Any]:
    return {"required": [name], "properties": {name: {"not": {"type": "null"}}}}


def _only_source(source: str) -> dict[str, Any]:
    """This source set, every other one null or absent."""
    others = {other: {"type": "null"} for other in VOLUME_SOURCES if other != source}
    return {"required": [source], "properties": {source: {"not": {"type": "null"}}, **others}}


def _inference_rules() -> list[dict[str, Any]]:
    service = {
        "required": ["kind", "mode"],
        "properties": {"kind": {"const": "inference"}, "mode": {"const": "service"}},
    }
    service_only = ("replicas", "min_replicas", "max_replicas", "checkpoint_job", "autoscale")
    return [
        # kind defaults to training: mode is then null or absent.
        {"if": {"properties": {"kind": {"const": "training"}}}, "then": _null("mode")},
        {
            "if": service,
            "then": {"oneOf": [_set("serve_checkpoint"), _set("checkpoint_job")]},
            "else": {"allOf": [_null(name) for name in service_only]},
        },
        *_runtime_rules(),
    ]


def _runtime_rules() -> list[dict[str, Any]]:
    """`runtime`: inference only, built-in workloads only, onnx in fp32 (or auto)."""
    onnx = {"required": ["runtime"], "properties": {"runtime": {"const": "onnx"}}}
    no_command = {"properties": {"command": {"type": "null"}}}
    return [
        {"if": {"properties": {"kind": {"const": "training"}}}, "then": _null("runtime")},
        {"if": _set("runtime"), "then": {"properties": {"workload": no_command}}},
        {"if": onnx, "then": {"properties": {"precision": {"enum": ["auto", "fp32"]}}}},
    ]


def express_deployment_rules(
    schema: dict[str, Any], *, backend: str, allow_host_path: bool
) -> None:
    """The rules of this deployment, as the queue names are: what the local backend cannot
    run (volumes, mounts, a checkpoint claim) and whether host_path volumes are allowed."""
    components = schema["components"]["schemas"]
    if "Volume" in components and not allow_host_path:
        components["Volume"]["properties"]["host_path"] = {"type": "null"}
        components["Volume"]["oneOf"] = [
            _only_source(source) for source in VOLUME_SOURCES if source != "host_path"
        ]
    if backend != "local":
        return
    for name in ("JobCreate",):
        properties = components[name]["properties"]
        for field in ("volumes", "mounts"):
            if field in properties:
                properties[field]["maxItems"] = 0
    storage = components.get("CheckpointStorage", {}).get("properties", {}).get("storage")
    if storage is not None and "enum" in storage:
        storage["enum"] = [value for value in storage["enum"] if value != "pvc"]
