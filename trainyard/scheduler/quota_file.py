"""The quota file: YAML text in, a validated `QuotaConfig` out, errors that name the key.

Pure (it parses text; reading the file is the caller's step). The format, with every
key optional except what a queue needs to be useful:

```yaml
flavors:                      # tried in this order when a node matches several
  h100: {node_labels: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}}
  a100: {node_labels: {nvidia.com/gpu.product: NVIDIA-A100-SXM4-40GB}}
cohorts:
  org: {}                     # a root; may hold quota of its own:
  research-org: {parent: org, quotas: {h100: {gpu: 8}}}
fair_sharing: {enabled: true, usage_half_life: 7d}
priority_classes: {low: 100, normal: 500, high: 1000}
queues:
  research:
    cohort: research-org
    weight: 2                 # fair-sharing weight (default 1)
    policy: backfill          # the queue's scheduling policy (default: the server's)
    quotas:                   # flavor -> resource -> quota; flavors tried in this order
      h100:
        gpu: 64               # shorthand for {nominal: 64}
        cpu: {nominal: 256, borrowing_limit: 64, lending_limit: 128}
        memory: 2Ti
    preemption:
      within_queue: lower_priority        # never | lower_priority | lower_or_newer_equal_priority
      reclaim_within_cohort: any          # never | lower_priority | any
      borrow_within_cohort: {policy: lower_priority, max_priority_threshold: 100}
    user_limits: {max_running_jobs: 4, max_gpus: 16}
    order_users_by_usage: true  # users by decayed usage (needs usage_half_life)
```

Resources: `gpu` (whole GPUs, fractions allowed: `0.5`), `tpu` (chips), `cpu`
(Kubernetes quantity: `64`, `500m`), `memory` (`512Gi`). A resource a queue does not list
in a flavor is not limited there; a flavor it does not list cannot be used by it.
Durations: seconds as a number, or `30s`, `15m`, `12h`, `7d`.

`order_users_by_usage`: within the queue, jobs of the user with the least decayed usage
(the same half-life as the queues') go first, then the queue's policy orders each
user's jobs. The usage is the history at the start of the cycle, so within one cycle a
user's order does not change.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import yaml

from trainyard.scheduler.policies import policy_names
from trainyard.scheduler.quantity import QuantityError, cpu_millicores, memory_bytes, parse_quantity
from trainyard.scheduler.quota import (
    RESOURCES,
    BorrowWithinCohort,
    Cohort,
    FairSharing,
    Flavor,
    QueuePreemption,
    QueueQuota,
    QuotaConfig,
    ReclaimWithinCohort,
    ResourceQuota,
    UserLimits,
    WithinQueue,
)

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9._]{0,61}[a-z0-9])?$")
_DURATION = re.compile(r"^(?P<n>[0-9]+(?:\.[0-9]+)?)(?P<unit>s|m|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TOP_KEYS = ("flavors", "cohorts", "queues", "fair_sharing", "priority_classes")


class QuotaFileError(ValueError):
    """A quota file that breaks a rule; `path` is the key (`queues.a.quotas.h100.gpu`)."""

    def __init__(self, path: str, rule: str) -> None:
        super().__init__(f"{path}: {rule}" if path else rule)
        self.path = path
        self.rule = rule


def load_quota_text(text: str) -> QuotaConfig:
    """Parse and validate a quota file's text."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise QuotaFileError("", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    return parse_quota_config(data if data is not None else {})


def parse_quota_config(data: Any) -> QuotaConfig:
    """Validate an already-parsed document (a mapping) into a `QuotaConfig`."""
    top = _mapping(data, "", _TOP_KEYS)
    flavors = tuple(
        _flavor(name, spec, f"flavors.{name}")
        for name, spec in _named(top.get("flavors"), "flavors").items()
    )
    flavor_names = [f.name for f in flavors]
    cohorts = tuple(
        _cohort(name, spec, f"cohorts.{name}", flavor_names)
        for name, spec in _named(top.get("cohorts"), "cohorts").items()
    )
    queues = tuple(
        _queue(name, spec, f"queues.{name}", flavor_names)
        for name, spec in _named(top.get("queues"), "queues").items()
    )
    config = QuotaConfig(
        flavors=flavors,
        cohorts=cohorts,
        queues=queues,
        fair_sharing=_fair_sharing(top.get("fair_sharing"), "fair_sharing"),
        priority_classes=_priority_classes(top.get("priority_classes"), "priority_classes"),
    )
    _check_tree(config)
    return config


# --------------------------------------------------------------------- sections
def _flavor(name: str, spec: Any, path: str) -> Flavor:
    body = _mapping(spec, path, ("node_labels",))
    labels = _mapping(body.get("node_labels"), f"{path}.node_labels", None)
    for key, value in labels.items():
        if not isinstance(value, str):
            raise QuotaFileError(f"{path}.node_labels.{key}", "must be a string")
    return Flavor(name, dict(labels))


def _cohort(name: str, spec: Any, path: str, flavors: list[str]) -> Cohort:
    body = _mapping(spec, path, ("parent", "quotas"))
    parent = _optional_name(body.get("parent"), f"{path}.parent")
    return Cohort(name, parent, _quotas(body.get("quotas"), f"{path}.quotas", flavors))


def _queue(name: str, spec: Any, path: str, flavors: list[str]) -> QueueQuota:
    body = _mapping(
        spec,
        path,
        (
            "cohort",
            "quotas",
            "weight",
            "preemption",
            "user_limits",
            "policy",
            "order_users_by_usage",
        ),
    )
    order_users = body.get("order_users_by_usage", False)
    if not isinstance(order_users, bool):
        raise QuotaFileError(f"{path}.order_users_by_usage", "must be true or false")
    weight = body.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
        raise QuotaFileError(f"{path}.weight", "must be a number >= 0")
    if not math.isfinite(weight):
        raise QuotaFileError(f"{path}.weight", f"must be a finite number, got {weight}")
    policy = body.get("policy")
    if policy is not None and not isinstance(policy, str):
        raise QuotaFileError(f"{path}.policy", "must be a policy name")
    if policy is not None and policy not in policy_names():
        raise QuotaFileError(
            f"{path}.policy",
            f"unknown policy {policy!r}; known policies: {', '.join(policy_names())}",
        )
    return QueueQuota(
        name,
        cohort=_optional_name(body.get("cohort"), f"{path}.cohort"),
        quotas=_quotas(body.get("quotas"), f"{path}.quotas", flavors),
        weight=float(weight),
        preemption=_preemption(body.get("preemption"), f"{path}.preemption"),
        user_limits=_user_limits(body.get("user_limits"), f"{path}.user_limits"),
        policy=policy,
        order_users_by_usage=order_users,
    )


def _quotas(spec: Any, path: str, flavors: list[str]) -> dict[str, dict[str, ResourceQuota]]:
    out: dict[str, dict[str, ResourceQuota]] = {}
    for flavor, resources in _mapping(spec, path, None).items():
        where = f"{path}.{flavor}"
        if flavor not in flavors:
            known = ", ".join(flavors) or "(none defined)"
            raise QuotaFileError(where, f"unknown flavor {flavor!r}; flavors: {known}")
        per: dict[str, ResourceQuota] = {}
        for resource, value in _mapping(resources, where, None).items():
            rpath = f"{where}.{resource}"
            if resource not in RESOURCES:
                raise QuotaFileError(
                    rpath, f"unknown resource {resource!r}; resources: {', '.join(RESOURCES)}"
                )
            per[resource] = _resource_quota(resource, value, rpath)
        out[flavor] = per
    return out


def _resource_quota(resource: str, value: Any, path: str) -> ResourceQuota:
    if not isinstance(value, Mapping):
        value = {"nominal": value}
    body = _mapping(value, path, ("nominal", "borrowing_limit", "lending_limit"))
    if "nominal" not in body:
        raise QuotaFileError(f"{path}.nominal", "is required")
    nominal = _amount(resource, body["nominal"], f"{path}.nominal")
    borrowing = body.get("borrowing_limit")
    lending = body.get("lending_limit")
    borrow_amount = (
        None if borrowing is None else _amount(resource, borrowing, f"{path}.borrowing_limit")
    )
    lend_amount = None if lending is None else _amount(resource, lending, f"{path}.lending_limit")
    if lend_amount is not None and lend_amount > nominal:
        raise QuotaFileError(
            f"{path}.lending_limit",
            f"{lending} is above nominal {body['nominal']} (a queue lends only its own quota)",
        )
    return ResourceQuota(nominal, borrow_amount, lend_amount)


def _amount(resource: str, value: Any, path: str) -> int:
    """A quantity in the core's unit for `resource`; negative or malformed is an error."""
    if (isinstance(value, str) and value.strip().startswith("-")) or (
        isinstance(value, int | float) and not isinstance(value, bool) and value < 0
    ):
        raise QuotaFileError(path, f"must be >= 0, got {value}")
    try:
        if resource == "cpu":
            return cpu_millicores(value)
        if resource == "memory":
            return memory_bytes(value)
        number = parse_quantity(value)
    except QuantityError as exc:
        raise QuotaFileError(path, str(exc)) from exc
    if resource == "tpu":
        if number != number.to_integral_value():
            raise QuotaFileError(path, f"TPU chips are whole, got {value}")
        return int(number)
    milli = number * 1000
    if milli != milli.to_integral_value():
        raise QuotaFileError(path, f"GPUs are counted in thousandths at most, got {value}")
    return int(milli)


def _preemption(spec: Any, path: str) -> QueuePreemption:
    body = _mapping(spec, path, ("within_queue", "reclaim_within_cohort", "borrow_within_cohort"))
    within = _choice(body.get("within_queue", "never"), WithinQueue, f"{path}.within_queue")
    reclaim = _choice(
        body.get("reclaim_within_cohort", "never"),
        ReclaimWithinCohort,
        f"{path}.reclaim_within_cohort",
    )
    borrow_spec = body.get("borrow_within_cohort")
    borrow = BorrowWithinCohort.NEVER
    threshold: int | None = None
    if borrow_spec is not None:
        bpath = f"{path}.borrow_within_cohort"
        if isinstance(borrow_spec, str):
            borrow_spec = {"policy": borrow_spec}
        bbody = _mapping(borrow_spec, bpath, ("policy", "max_priority_threshold"))
        borrow = _choice(bbody.get("policy", "never"), BorrowWithinCohort, f"{bpath}.policy")
        raw = bbody.get("max_priority_threshold")
        if raw is not None:
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise QuotaFileError(f"{bpath}.max_priority_threshold", "must be an integer")
            threshold = raw
    return QueuePreemption(within, reclaim, borrow, threshold)


def _user_limits(spec: Any, path: str) -> UserLimits:
    body = _mapping(spec, path, ("max_running_jobs", "max_gpus"))
    values: dict[str, int | None] = {}
    for key in ("max_running_jobs", "max_gpus"):
        raw = body.get(key)
        if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int) or raw < 0):
            raise QuotaFileError(f"{path}.{key}", "must be an integer >= 0")
        values[key] = raw
    return UserLimits(values["max_running_jobs"], values["max_gpus"])


def _fair_sharing(spec: Any, path: str) -> FairSharing:
    body = _mapping(spec, path, ("enabled", "usage_half_life"))
    enabled = body.get("enabled", False)
    if not isinstance(enabled, bool):
        raise QuotaFileError(f"{path}.enabled", "must be true or false")
    half_life = body.get("usage_half_life")
    seconds = None if half_life is None else _duration(half_life, f"{path}.usage_half_life")
    if seconds is not None and not math.isfinite(seconds):
        raise QuotaFileError(f"{path}.usage_half_life", f"must be a finite duration, got {seconds}")
    if seconds is not None and seconds <= 0:
        raise QuotaFileError(f"{path}.usage_half_life", "must be > 0")
    return FairSharing(enabled, seconds)


def _priority_classes(spec: Any, path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, value in _mapping(spec, path, None).items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise QuotaFileError(f"{path}.{name}", "must be an integer priority")
        out[str(name)] = value
    return out


# --------------------------------------------------------------------- the tree
def _check_tree(config: QuotaConfig) -> None:
    cohorts = {c.name: c for c in config.cohorts}
    for queue in config.queues:
        if queue.order_users_by_usage and config.fair_sharing.usage_half_life is None:
            raise QuotaFileError(
                f"queues.{queue.name}.order_users_by_usage",
                "needs fair_sharing.usage_half_life (the decayed usage it orders users by)",
            )
        if queue.name in cohorts:
            raise QuotaFileError(f"queues.{queue.name}", "a queue and a cohort share this name")
        if queue.cohort is not None and queue.cohort not in cohorts:
            raise QuotaFileError(
                f"queues.{queue.name}.cohort", _unknown_cohort(queue.cohort, cohorts)
            )
        if queue.cohort is None:
            _no_borrowing_without_cohort(f"queues.{queue.name}", queue.quotas)
    for cohort in config.cohorts:
        if cohort.parent is not None and cohort.parent not in cohorts:
            raise QuotaFileError(
                f"cohorts.{cohort.name}.parent", _unknown_cohort(cohort.parent, cohorts)
            )
        if cohort.parent is None:
            _no_borrowing_without_cohort(f"cohorts.{cohort.name}", cohort.quotas)
        seen = [cohort.name]
        at = cohort.parent
        while at is not None:
            if at in seen:
                loop = " -> ".join([*seen[seen.index(at) :], at])
                raise QuotaFileError(
                    f"cohorts.{cohort.name}.parent", f"a cycle in the cohort tree: {loop}"
                )
            seen.append(at)
            at = cohorts[at].parent


def _no_borrowing_without_cohort(
    path: str, quotas: Mapping[str, Mapping[str, ResourceQuota]]
) -> None:
    for flavor, per in quotas.items():
        for resource, quota in per.items():
            if quota.borrowing_limit is not None:
                raise QuotaFileError(
                    f"{path}.quotas.{flavor}.{resource}.borrowing_limit",
                    "only a member of a cohort can borrow (set a cohort or drop the limit)",
                )


def _unknown_cohort(name: str, cohorts: Mapping[str, Cohort]) -> str:
    return f"unknown cohort {name!r}; cohorts: {', '.join(cohorts) or '(none defined)'}"


# --------------------------------------------------------------------- scalars
def _mapping(value: Any, path: str, allowed: tuple[str, ...] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise QuotaFileError(path or "(top level)", "must be a mapping of keys to values")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            key = str(key)
        if allowed is not None and key not in allowed:
            where = f"{path}.{key}" if path else key
            raise QuotaFileError(where, f"unknown key; allowed: {', '.join(allowed)}")
        out[key] = item
    return out


def _named(value: Any, path: str) -> dict[str, Any]:
    """A section keyed by object names, each name checked."""
    section = _mapping(value, path, None)
    for name in section:
        if not _NAME.match(name):
            raise QuotaFileError(
                f"{path}.{name}",
                "names are 1-63 lowercase letters, digits, '-', '.', '_', "
                "starting and ending with a letter or digit",
            )
    return section


def _optional_name(value: Any, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise QuotaFileError(path, "must be a name")
    return value


def _choice(value: Any, enum_type: type, path: str) -> Any:
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum_type)
        raise QuotaFileError(path, f"{value!r} is not one of {allowed}") from None


def _duration(value: Any, path: str) -> float:
    if isinstance(value, bool):
        raise QuotaFileError(path, "must be a duration such as 3600, 30m, 12h or 7d")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value).strip())
    if match is None:
        raise QuotaFileError(path, f"{value!r} is not a duration (examples: 3600, 30m, 12h, 7d)")
    return float(Decimal(match["n"]) * _UNIT_SECONDS[match["unit"]])
