"""Revisions of a model service's document, shared by the API (PATCH) and the loop.

A service's document starts at revision 1 (no `revision` key). An update that changes
what a replica runs (any launch input: checkpoint, image, runtime, precision, env,
workload; whatever field a later change adds, since the rule names only the fields that
do NOT count) is one more revision, which the loop rolls out replica by replica. An
update of only the sizing fields resizes the service and keeps the revision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SIZING_FIELDS = frozenset(
    {"replicas", "workers", "min_replicas", "max_replicas", "autoscale", "revision"}
)


def revision_of(spec: Mapping[str, Any]) -> int:
    return int(spec.get("revision", 1))


def launch_fields(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a document that decides what a replica runs (everything but sizing)."""
    return {key: value for key, value in spec.items() if key not in SIZING_FIELDS}


def is_new_revision(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether `new` launches replicas differently from `old`."""
    return launch_fields(old) != launch_fields(new)
