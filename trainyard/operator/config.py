"""Settings -> the loop's parts: the scheduler configuration and the retry policy.

One function per part, so features that tune the core (quotas, estimates) extend it in
one place, and a bad policy name fails the start with the list of valid ones.
"""

from __future__ import annotations

from trainyard.config import Settings
from trainyard.operator.reconcile import RetryPolicy
from trainyard.scheduler import SchedulerConfig, get_policy


def scheduler_config(settings: Settings) -> SchedulerConfig:
    """The core's configuration: each queue's policy (unknown names raise ValueError)."""
    config = SchedulerConfig(
        default_policy=settings.default_policy,
        queue_policies={q.name: q.policy for q in settings.queues},
    )
    for name in {config.default_policy, *config.queue_policies.values()}:
        get_policy(name, config.settings)
    return config


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        backoff_seconds=settings.retry_backoff_seconds,
        backoff_max_seconds=settings.retry_backoff_max_seconds,
    )
