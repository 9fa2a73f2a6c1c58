"""The quota file: a full example parses; every broken rule is named by its key."""

from __future__ import annotations

import textwrap

import pytest

from trainyard.scheduler.quota import (
    BorrowWithinCohort,
    ReclaimWithinCohort,
    ResourceQuota,
    WithinQueue,
)
from trainyard.scheduler.quota_file import QuotaFileError, load_quota_text

EXAMPLE = textwrap.dedent(
    """
    flavors:
      h100: {node_labels: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}}
      a100: {node_labels: {nvidia.com/gpu.product: NVIDIA-A100-SXM4-40GB}}
    cohorts:
      org: {}
      research-org: {parent: org, quotas: {h100: {gpu: 8}}}
    fair_sharing: {enabled: true, usage_half_life: 7d}
    priority_classes: {low: 100, high: 1000}
    queues:
      research:
        cohort: research-org
        weight: 2
        policy: backfill
        quotas:
          h100:
            gpu: 64
            cpu: {nominal: 256, borrowing_limit: 64, lending_limit: 128}
            memory: 2Ti
          a100: {gpu: 0.5}
        preemption:
          within_queue: lower_priority
          reclaim_within_cohort: any
          borrow_within_cohort: {policy: lower_priority, max_priority_threshold: 100}
        user_limits: {max_running_jobs: 4, max_gpus: 16}
        order_users_by_usage: true
      prod:
        cohort: org
        quotas: {a100: {gpu: 16}}
    """
)


def test_the_documented_example_parses() -> None:
    config = load_quota_text(EXAMPLE)
    assert [f.name for f in config.flavors] == ["h100", "a100"]
    research = config.queue("research")
    assert research is not None
    assert list(research.quotas) == ["h100", "a100"]  # the order jobs try them in
    assert research.quotas["h100"]["gpu"] == ResourceQuota(64_000)
    assert research.quotas["h100"]["cpu"] == ResourceQuota(256_000, 64_000, 128_000)
    assert research.quotas["h100"]["memory"].nominal == 2 * 2**40
    assert research.quotas["a100"]["gpu"].nominal == 500
    assert research.weight == 2.0 and research.policy == "backfill"
    assert research.preemption.within_queue == WithinQueue.LOWER_PRIORITY
    assert research.preemption.reclaim_within_cohort == ReclaimWithinCohort.ANY
    assert research.preemption.borrow_within_cohort == BorrowWithinCohort.LOWER_PRIORITY
    assert research.preemption.borrow_max_priority == 100
    assert research.user_limits.max_running_jobs == 4
    assert research.order_users_by_usage and config.user_ordered_queues() == {"research"}
    assert config.fair_sharing.enabled and config.fair_sharing.usage_half_life == 7 * 86400
    assert config.priority_classes == {"low": 100, "high": 1000}
    assert config.cohorts[1].parent == "org"


def test_an_empty_file_is_no_quota() -> None:
    assert load_quota_text("").queues == ()


BROKEN = [
    (
        "unknown flavor",
        "queues: {a: {quotas: {h200: {gpu: 1}}}}",
        "queues.a.quotas.h200",
        "unknown flavor 'h200'",
    ),
    (
        "negative quota",
        "flavors: {h: {}}\nqueues: {a: {quotas: {h: {gpu: -4}}}}",
        "queues.a.quotas.h.gpu.nominal",
        "must be >= 0",
    ),
    (
        "lending limit above nominal",
        "flavors: {h: {}}\ncohorts: {o: {}}\n"
        "queues: {a: {cohort: o, quotas: {h: {gpu: {nominal: 8, lending_limit: 9}}}}}",
        "queues.a.quotas.h.gpu.lending_limit",
        "above nominal 8",
    ),
    (
        "a cycle in the cohort tree",
        "cohorts: {x: {parent: y}, y: {parent: x}}",
        "cohorts.x.parent",
        "a cycle in the cohort tree: x -> y -> x",
    ),
    ("unknown cohort", "queues: {a: {cohort: nope}}", "queues.a.cohort", "unknown cohort 'nope'"),
    (
        "unknown resource",
        "flavors: {h: {}}\nqueues: {a: {quotas: {h: {gpus: 1}}}}",
        "queues.a.quotas.h.gpus",
        "unknown resource 'gpus'",
    ),
    ("unknown key", "queues: {a: {weihgt: 2}}", "queues.a.weihgt", "unknown key"),
    (
        "bad enum",
        "queues: {a: {preemption: {within_queue: sometimes}}}",
        "queues.a.preemption.within_queue",
        "'sometimes' is not one of never",
    ),
    (
        "borrowing without a cohort",
        "flavors: {h: {}}\nqueues: {a: {quotas: {h: {gpu: {nominal: 1, borrowing_limit: 1}}}}}",
        "queues.a.quotas.h.gpu.borrowing_limit",
        "only a member of a cohort can borrow",
    ),
    (
        "bad quantity",
        "flavors: {h: {}}\nqueues: {a: {quotas: {h: {memory: lots}}}}",
        "queues.a.quotas.h.memory.nominal",
        "not a Kubernetes quantity",
    ),
    (
        "fractional TPU",
        "flavors: {t: {}}\nqueues: {a: {quotas: {t: {tpu: 1.5}}}}",
        "queues.a.quotas.t.tpu.nominal",
        "TPU chips are whole",
    ),
    (
        "bad half-life",
        "fair_sharing: {usage_half_life: soon}",
        "fair_sharing.usage_half_life",
        "not a duration",
    ),
    ("negative weight", "queues: {a: {weight: -1}}", "queues.a.weight", "must be a number >= 0"),
    ("bad name", "queues: {Research: {}}", "queues.Research", "lowercase"),
    (
        "queue named like a cohort",
        "cohorts: {a: {}}\nqueues: {a: {}}",
        "queues.a",
        "share this name",
    ),
    ("not a mapping", "queues: [a, b]", "queues", "must be a mapping"),
    ("weight not a number", "queues: {a: {weight: .nan}}", "queues.a.weight", "finite"),
    ("infinite weight", "queues: {a: {weight: .inf}}", "queues.a.weight", "finite"),
    (
        "infinite half-life",
        "fair_sharing: {usage_half_life: .inf}",
        "fair_sharing.usage_half_life",
        "finite",
    ),
    (
        "half-life not a number",
        "fair_sharing: {usage_half_life: .nan}",
        "fair_sharing.usage_half_life",
        "finite",
    ),
    ("unknown policy", "queues: {a: {policy: fastest}}", "queues.a.policy", "unknown policy"),
    (
        "users ordered by usage without a half-life",
        "queues: {a: {order_users_by_usage: true}}",
        "queues.a.order_users_by_usage",
        "needs fair_sharing.usage_half_life",
    ),
    (
        "users ordered by a non-boolean",
        "queues: {a: {order_users_by_usage: sometimes}}",
        "queues.a.order_users_by_usage",
        "true or false",
    ),
]


@pytest.mark.parametrize(
    ("text", "path", "rule"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN]
)
def test_a_broken_rule_names_its_key(text: str, path: str, rule: str) -> None:
    with pytest.raises(QuotaFileError) as caught:
        load_quota_text(text)
    assert caught.value.path == path
    assert rule in str(caught.value)
    assert str(caught.value).startswith(f"{path}: ")


def test_invalid_yaml_says_where() -> None:
    with pytest.raises(QuotaFileError, match="not valid YAML at line 2"):
        load_quota_text("queues:\n  a: {quotas: [}\n")
