"""Settings -> the loop's parts: the scheduler configuration and the retry policy.

One function per part, so features that tune the core (quotas, estimates) extend it in
one place, and a bad policy name fails the start with the list of valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from trainyard.config import Settings
from trainyard.operator.reconcile import RetryPolicy
from trainyard.quotas import quota_file
from trainyard.scheduler import SchedulerConfig, get_policy
from trainyard.scheduler.policies import check_live_policy


def scheduler_config(settings: Settings) -> SchedulerConfig:
    """The core's configuration: each queue's policy (unknown names raise ValueError)."""
    config = SchedulerConfig(
        default_policy=settings.default_policy,
        queue_policies={q.name: q.policy for q in settings.queues},
    )
    for name in {config.default_policy, *config.queue_policies.values()}:
        check_live_policy(name)  # an oracle needs the future: refused here, with why
        get_policy(name, config.settings)
    return config


def scheduler_config_source(settings: Settings) -> Callable[[], SchedulerConfig]:
    """What the loop calls every cycle: `scheduler_config` plus the quota file's quotas,
    re-read when the file changes (an invalid file at start raises, naming the key)."""
    base = scheduler_config(settings)
    source = quota_file(settings)
    if source is None:
        return lambda: base
    built: dict[int, SchedulerConfig] = {}

    def current() -> SchedulerConfig:
        quotas = source.current()
        config = built.get(id(quotas))
        if config is None:
            for q in quotas.queues:
                if q.policy is not None:
                    get_policy(q.policy, base.settings)  # unknown names: refused like a bad file
            built.clear()
            config = built[id(quotas)] = replace(base, quotas=quotas)
        return config

    current()
    return current


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        backoff_seconds=settings.retry_backoff_seconds,
        backoff_max_seconds=settings.retry_backoff_max_seconds,
    )
