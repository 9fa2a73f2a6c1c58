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
- No NUL character in any free-form string, key or `args` value (`check_document`).
- `args` values: any JSON without NUL (a recursive schema); the nesting limit is stated in
  `x-max-depth` and the description (see `args_value_schema` for why not as keywords).

What stays out, because it depends on more than the document: the configured queue and
priority names are published as enums by the app; the stored size limit and the byte
limit of the body (413) depend on the encoding.
"""

from __future__ import annotations

from typing import Any

from trainyard.api.document_rules import MAX_DEPTH

NO_NUL = "^[^\\u0000]*$"
ZERO_DURATION = "^(0+h)?(0+m)?(0+s)?$"
ARGS_DEPTH = MAX_DEPTH - 3
"""Levels `args` values may nest: the document, `workload` and `args` take three."""


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
