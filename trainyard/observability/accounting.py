"""Usage accounting in the manner of Slurm's `sreport`: resource-hours per queue, owner,
accelerator model, job or attempt (`<job id>/<n>`) over a window, from the stored
attempts (`job_attempts`).

Pure functions over rows: the window clips every attempt (an attempt that started before
`since` counts only from `since`; a running one up to now), so two adjacent windows add
up to their union. Cost is GPU/TPU hours times the configured price per
accelerator-hour of the attempt's model; a model without a price has no cost (None),
rather than a made-up zero.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from trainyard.store.telemetry import UsageRow

GroupBy = Literal["queue", "owner", "model", "job", "attempt"]
GROUP_BY: tuple[str, ...] = ("queue", "owner", "model", "job", "attempt")
NO_ACCELERATOR = "none"
_RELATIVE = re.compile(r"^(\d{1,6})([smhdw])$")
# What parse_since accepts, as the API publishes it (JSON Schema `pattern`): a span, or a
# calendar date (days that exist in every year: February 29 is left out) with an optional
# time and offset.
_DAY = (
    "(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    "|(?:0[13-9]|1[0-2])-(?:29|30)"
    "|(?:0[13578]|1[02])-31)"
)
SINCE_PATTERN = (
    r"^(?:[0-9]{1,6}[smhdw]"
    rf"|(?:19|20|21)[0-9]{{2}}-{_DAY}"
    r"(?:T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?)?)$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str, *, now: datetime) -> datetime:
    """`since` as an aware UTC datetime: an ISO 8601 time (naive means UTC) or a span
    back from now ("90m", "24h", "7d", "2w"). Raises ValueError naming the rule. A time in
    the future is an empty window (it ends now), not an error: whether it is future
    depends on the clock, which no published schema can state. A span longer than the
    time since 1970 is clamped to the Unix epoch (the whole history)."""
    text = value
    match = _RELATIVE.match(text)
    if match:
        span = timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
        # A span reaching past the Unix epoch means "everything": nothing is stored from
        # before it, and datetime cannot go back 999999 weeks.
        return max(now - min(span, now - _EPOCH), _EPOCH)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            "must be an ISO 8601 time (2026-12-01T00:00:00Z) or a span like 90m, 24h, 7d, 2w"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return min(moment, now).astimezone(UTC)


@dataclass(slots=True)
class UsageGroup:
    """The usage of one group over the window (hours of resource held by workers)."""

    key: str
    jobs: int = 0
    attempts: int = 0
    gpu_hours: float = 0.0
    tpu_chip_hours: float = 0.0
    cpu_core_hours: float = 0.0
    wall_hours: float = 0.0
    wait_seconds_total: float = 0.0
    waited_jobs: int = 0
    energy_joules: float | None = None
    cost: float | None = None
    _job_ids: set[str] = field(default_factory=set, repr=False)

    @property
    def wait_seconds_avg(self) -> float | None:
        return self.wait_seconds_total / self.waited_jobs if self.waited_jobs else None


def _key(row: UsageRow, group_by: str) -> str:
    if group_by == "queue":
        return row.queue
    if group_by == "owner":
        return row.owner
    if group_by == "model":
        if row.gpus or row.tpu_chips:
            return row.accelerator_model or "unknown"
        return NO_ACCELERATOR
    if group_by == "attempt":
        return f"{row.job_id}/{row.attempt}"
    return row.job_id


def _worker_hours(row: UsageRow, begin: int, end: int) -> float:
    """Worker-hours of the attempt within [begin, end]: its worker count integrated over
    time (a model service's replica count changes with rollouts and autoscaling)."""
    if not row.replica_changes:
        return max(0, end - begin) / 3.6e9 * row.workers
    assert row.started_at is not None
    steps = [(row.started_at, row.workers), *row.replica_changes]
    total = 0
    for i, (at, workers) in enumerate(steps):
        until = steps[i + 1][0] if i + 1 < len(steps) else end
        total += workers * max(0, min(until, end) - max(at, begin))
    return total / 3.6e9


def aggregate(
    rows: Iterable[UsageRow],
    *,
    group_by: str,
    since_us: int,
    now_us: int,
    prices: Mapping[str, float],
) -> list[UsageGroup]:
    """Group the attempts' usage within [since_us, now_us], largest GPU-hours first."""
    groups: dict[str, UsageGroup] = {}
    for row in rows:
        group = groups.get(_key(row, group_by))
        if group is None:
            group = groups[_key(row, group_by)] = UsageGroup(key=_key(row, group_by))
        group.attempts += 1
        if row.job_id not in group._job_ids:
            group._job_ids.add(row.job_id)
            group.jobs += 1
            started = row.job_started_at
            # per attempt, the job's wait (submit -> first RUNNING) belongs to its first
            first = group_by != "attempt" or row.attempt == 1
            if first and started is not None and since_us <= started <= now_us:
                group.wait_seconds_total += max(0, started - row.job_created_at) / 1e6
                group.waited_jobs += 1
        if row.energy_joules is not None:  # measured even when it ended before RUNNING
            group.energy_joules = (group.energy_joules or 0.0) + row.energy_joules
        if row.started_at is None:
            continue  # admitted, never seen running: no resource time
        begin = max(row.started_at, since_us)
        end = min(row.ended_at if row.ended_at is not None else now_us, now_us)
        hours = max(0, end - begin) / 3.6e9
        worker_hours = _worker_hours(row, begin, end)
        group.wall_hours += hours
        group.gpu_hours += worker_hours * row.gpus
        group.tpu_chip_hours += worker_hours * row.tpu_chips
        group.cpu_core_hours += worker_hours * row.cpu_millicores / 1000
        accelerator_hours = worker_hours * (row.gpus or row.tpu_chips)
        price = prices.get(row.accelerator_model or "")
        if accelerator_hours and price is not None:
            group.cost = (group.cost or 0.0) + accelerator_hours * price
    return sorted(groups.values(), key=lambda g: (-g.gpu_hours, -g.cpu_core_hours, g.key))
