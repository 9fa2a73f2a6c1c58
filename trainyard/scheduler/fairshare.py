"""Fair sharing arithmetic: weighted dominant resource share and decayed usage.

- `dominant_share` is Kueue's dominantResourceShare: for each resource, what a queue
  borrows (usage above its nominal quota, summed over flavors) divided by what its
  cohort tree can lend (the root's subtree quota); the largest of those, divided by
  the queue's weight. A queue within its nominal quota has share 0; weight 0 means it
  only borrows what nobody else wants.
- `usage_share` is the same maximum over resources of usage (not only borrowing) over
  the tree's total quota: what the decayed history integrates.
- `decay_usage` folds the usage of an interval into an exponentially decayed history
  (Slurm's PriorityDecayHalfLife): history(t+dt) = history(t) * 2^(-dt/h) + the integral
  of the constant usage over the interval, weighted the same way. The caller keeps the
  history between cycles (it is state) and passes it in `ClusterSnapshot.queue_usage`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import TypeVar

from trainyard.scheduler.quota import RESOURCES, QuotaTree

K = TypeVar("K", bound=Hashable)


def frs_by_resource(tree: QuotaTree) -> list[list[int]]:
    """For each resource index, the flavor-resource ids of that resource."""
    out: list[list[int]] = [[] for _ in RESOURCES]
    for k, (_flavor, r) in enumerate(tree.frs):
        out[r].append(k)
    return out


def dominant_share(
    tree: QuotaTree, by_resource: list[list[int]], node: int, weight: float
) -> float:
    """Borrowed / lendable, maximised over resources, divided by the weight."""
    root = tree.root[node]
    if root == node:
        return 0.0  # a queue outside any cohort never borrows
    usage, subtree = tree.usage[node], tree.subtree[node]
    root_quota = tree.subtree[root]
    best = 0.0
    for ks in by_resource:
        borrowed = 0
        lendable = 0
        for k in ks:
            over = usage[k] - subtree[k]
            if over > 0:
                borrowed += over
            lendable += root_quota[k]
        if borrowed and lendable:
            ratio = borrowed / lendable
            if ratio > best:
                best = ratio
        elif borrowed:
            best = math.inf
    if best == 0.0:
        return 0.0
    if weight <= 0:
        return math.inf
    return best / weight


def usage_share(tree: QuotaTree, by_resource: list[list[int]], node: int) -> float:
    """Usage over the whole tree's quota, maximised over resources."""
    root = tree.root[node]
    usage, total = tree.usage[node], tree.subtree[root]
    best = 0.0
    for ks in by_resource:
        used = sum(usage[k] for k in ks)
        cap = sum(total[k] for k in ks)
        if used and cap:
            best = max(best, used / cap)
    return best


def decay_usage(
    history: Mapping[K, float],
    current: Mapping[K, float],
    elapsed: float,
    half_life: float,
) -> dict[K, float]:
    """The history after `elapsed` seconds during which each queue (or (queue, user))
    used `current`."""
    if elapsed <= 0:
        merged = dict(history)
        for queue in current:
            merged.setdefault(queue, 0.0)
        return merged
    factor = 0.5 ** (elapsed / half_life)
    gained = half_life / math.log(2) * (1.0 - factor)  # integral of 2^(-s/h) over the interval
    out = {queue: value * factor for queue, value in history.items()}
    for queue, share in current.items():
        out[queue] = out.get(queue, 0.0) + share * gained
    return out


class UsageHistory:
    """A caller's decayed usage per queue across cycles (the loop keeps one).

    `before_cycle` folds in the usage seen after the previous cycle over the time since,
    and returns the history to put in `ClusterSnapshot.queue_usage`; `after_cycle`
    records the usage the cycle left (`CycleResult.queue_usage`). Without a half-life in
    the config it stays empty. The same per (queue, user) in `user_history`
    (`ClusterSnapshot.user_usage`, `CycleResult.user_usage`) for queues that order their
    users by usage. Pure bookkeeping: the times are the caller's."""

    def __init__(self) -> None:
        self.history: dict[str, float] = {}
        self.user_history: dict[tuple[str, str], float] = {}
        self._last: Mapping[str, float] = {}
        self._last_users: Mapping[tuple[str, str], float] = {}
        self._at: float | None = None

    def before_cycle(self, config: object, now: float) -> Mapping[str, float]:
        quotas = getattr(config, "quotas", None)
        half_life = quotas.fair_sharing.usage_half_life if quotas is not None else None
        if not half_life:
            self.history, self._last, self._at = {}, {}, None
            self.user_history, self._last_users = {}, {}
            return self.history
        if self._at is not None and now > self._at:
            elapsed = now - self._at
            self.history = decay_usage(self.history, self._last, elapsed, half_life)
            self.user_history = decay_usage(self.user_history, self._last_users, elapsed, half_life)
        self._at = now if self._at is None or now > self._at else self._at
        return self.history

    def after_cycle(
        self,
        usage: Mapping[str, float],
        now: float,
        user_usage: Mapping[tuple[str, str], float] | None = None,
    ) -> None:
        self._last = dict(usage)
        self._last_users = dict(user_usage or {})
