"""The control plane's /metrics over real HTTP, on SQLite and PostgreSQL: every catalog
name on a fresh install, numbers that follow the stored history, the same numbers from
two API processes on one store, and bounded route labels."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.databases import database_url, postgres_admin, postgres_schema  # noqa: F401
from tests.support.servers import ApiServer, running_server
from tests.support.store_rows import admit, end, job_spec, start, submit
from trainyard.api.inventory import NodeCapacity
from trainyard.observability import catalog
from trainyard.observability.cycles import CycleRecorder
from trainyard.store import JobState, get_job, read_transaction


class FixedInventory:
    """Two nodes, one with GPUs: this machine has none, so the GPU node is described,
    not detected (the only stand-in in this module)."""

    def nodes(self) -> list[NodeCapacity]:
        return [
            NodeCapacity(name="node-a", cpu_millicores=8000, memory_bytes=32 * 2**30),
            NodeCapacity(
                name="gpu-1",
                cpu_millicores=32000,
                memory_bytes=256 * 2**30,
                gpu=8,
                gpu_model="NVIDIA-H100",
            ),
        ]


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ApiServer]:  # noqa: F811
    with running_server(
        home=tmp_path / "home", database_url=database_url, inventory=FixedInventory()
    ) as running:
        yield running


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def names(samples: dict) -> set[str]:
    return {name for name, _ in samples}


def test_fresh_server_exposes_every_catalog_name_at_zero(server: ApiServer) -> None:
    samples = scrape(server.url)
    exposed = names(samples)
    for spec in catalog.CONTROL_PLANE:
        if spec.type == "histogram":
            assert f"{spec.name}_bucket" in exposed, spec.name
            assert f"{spec.name}_count" in exposed, spec.name
        elif spec.type == "counter":
            assert f"{spec.name.removesuffix('_total')}_total" in exposed, spec.name
        else:
            assert spec.name in exposed, spec.name
        # ... with the catalog's labels (histogram buckets add `le`), not fewer or others
        base = spec.name.removesuffix("_total")
        for sample_name, labels in samples:
            if sample_name.removesuffix("_total") in (base, f"{base}_bucket", f"{base}_count"):
                keys = {k for k, _ in labels} - (
                    {"le"} if sample_name.endswith("_bucket") else set()
                )
                assert keys == set(spec.labels), (sample_name, labels)
    assert (
        value(
            samples,
            "trainyard_queue_pending_jobs",
            queue="default",
            priority="normal",
            kind="training",
        )
        == 0
    )
    assert value(samples, "trainyard_admissions_total", queue="default") == 0
    assert value(samples, "trainyard_scheduling_cycle_seconds_count") == 0
    assert value(samples, "trainyard_scheduling_decisions_total", result="admitted") == 0
    assert value(samples, "trainyard_unschedulable_jobs", queue="default", reason="never_fits") == 0
    assert value(samples, "trainyard_cluster_capacity", resource="gpu", model="NVIDIA-H100") == 8
    assert value(samples, "trainyard_cluster_capacity", resource="cpu", model="") == 40
    assert (
        value(
            samples,
            "trainyard_cluster_allocated",
            resource="gpu",
            model="NVIDIA-H100",
            queue="default",
        )
        == 0
    )


def test_metrics_follow_the_stored_history(server: ApiServer) -> None:
    engine = server.engine
    base = 1_000_000_000_000_000  # a fixed past instant (us); offsets below are exact
    done = submit(engine, job_spec("done", gpu=2, workers=2))
    failed = submit(engine, job_spec("failed"))
    running = submit(engine, job_spec("running", gpu=4), owner="bob")
    submit(engine, job_spec("waiting"))
    with read_transaction(engine) as conn:
        created = {j: get_job(conn, job_id=j).created_at for j in (done, failed, running)}

    a = admit(engine, done, at=base, node="gpu-1", model="NVIDIA-H100")
    start(engine, done, a, at=created[done] + 3_000_000)  # waited 3 s
    end(engine, done, a, at=created[done] + 3_000_000 + 3_600_000_000, to_state=JobState.SUCCEEDED)
    # failed: one retry (RUNNING -> PENDING), then FAILED
    a = admit(engine, failed, at=base)
    start(engine, failed, a, at=created[failed] + 20_000_000)
    end(engine, failed, a, at=created[failed] + 30_000_000, to_state=JobState.PENDING)
    a = admit(engine, failed, at=base)
    start(engine, failed, a, at=created[failed] + 40_000_000)
    end(engine, failed, a, at=created[failed] + 50_000_000, to_state=JobState.FAILED)
    # running: preempted once, then admitted again and running
    a = admit(engine, running, at=base, node="gpu-1", model="NVIDIA-H100")
    start(engine, running, a, at=created[running] + 1_000)
    end(engine, running, a, at=created[running] + 2_000, to_state=JobState.PREEMPTED)
    a = admit(engine, running, at=base, node="gpu-1", model="NVIDIA-H100")
    start(engine, running, a, at=created[running] + 3_000)

    samples = scrape(server.url)
    assert (
        value(
            samples,
            "trainyard_queue_pending_jobs",
            queue="default",
            priority="normal",
            kind="training",
        )
        == 1
    )
    assert value(samples, "trainyard_queue_oldest_pending_seconds", queue="default") >= 0
    assert value(samples, "trainyard_jobs_running", queue="default") == 1
    assert value(samples, "trainyard_admissions_total", queue="default") == 5
    assert value(samples, "trainyard_preemptions_total", queue="default") == 1
    assert value(samples, "trainyard_job_retries_total", queue="default") == 1
    assert value(samples, "trainyard_job_finished_total", queue="default", outcome="SUCCEEDED") == 1
    assert value(samples, "trainyard_job_finished_total", queue="default", outcome="FAILED") == 1
    # waits: 3 s (done), 20 s (failed, first start), 1 ms (running)
    assert value(samples, "trainyard_job_wait_seconds_count", queue="default") == 3
    assert value(samples, "trainyard_job_wait_seconds_bucket", queue="default", le="5.0") == 2
    assert value(samples, "trainyard_job_wait_seconds_bucket", queue="default", le="30.0") == 3
    assert value(samples, "trainyard_job_duration_seconds_count", outcome="SUCCEEDED") == 1
    assert (
        value(samples, "trainyard_job_duration_seconds_bucket", outcome="SUCCEEDED", le="3600.0")
        == 1
    )
    # the running job holds 4 GPUs (1 worker x 4) and 2 CPUs
    assert (
        value(
            samples,
            "trainyard_cluster_allocated",
            resource="gpu",
            model="NVIDIA-H100",
            queue="default",
        )
        == 4
    )
    assert (
        value(samples, "trainyard_cluster_allocated", resource="cpu", model="", queue="default")
        == 2
    )
    # done: 2 workers x 2 GPUs x 1 h = 4 GPU-hours for alice
    gpu_hours = value(
        samples, "trainyard_gpu_hours_total", queue="default", owner="alice", model="NVIDIA-H100"
    )
    assert gpu_hours == pytest.approx(4.0, rel=1e-6)
    assert (
        "trainyard_gpu_hours_total",
        (("model", "NVIDIA-H100"), ("owner", "bob"), ("queue", "default")),
    ) in samples
    # label values stay bounded: no job id (or any 32-hex id) in any series
    ids = set(created) | {submitted for submitted in (done, failed, running)}
    for name, labels in samples:
        for _, label_value in labels:
            assert label_value not in ids, (name, labels)
            assert not re.fullmatch(r"[0-9a-f]{32}", label_value), (name, labels)


def test_loop_stats_and_two_api_processes_agree(
    server: ApiServer,
    database_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    recorder = CycleRecorder(server.engine, interval_s=3600)
    recorder.record_cycle(
        0.004, {"admitted": 2, "no_fit": 1}, pending={("default", "never_fits"): 3}
    )
    recorder.record_cycle(0.3, {"admitted": 1})
    recorder.flush()
    with running_server(
        home=tmp_path / "other", database_url=database_url, inventory=FixedInventory()
    ) as other:
        first, second = scrape(server.url), scrape(other.url)
    store_names = [s.name for s in catalog.CONTROL_PLANE if not s.name.startswith("trainyard_api_")]
    for key, number in first.items():
        if any(key[0].startswith(n) for n in store_names) and not key[0].endswith("_created"):
            assert second.get(key) == number, key
    assert value(first, "trainyard_scheduling_cycle_seconds_count") == 2
    assert value(first, "trainyard_scheduling_cycle_seconds_bucket", le="0.005") == 1
    assert value(first, "trainyard_scheduling_cycle_seconds_bucket", le="0.5") == 2
    assert value(first, "trainyard_scheduling_decisions_total", result="admitted") == 3
    assert value(first, "trainyard_unschedulable_jobs", queue="default", reason="never_fits") == 3
    assert value(first, "trainyard_scheduling_last_cycle_timestamp_seconds") > 0


def test_request_metrics_use_route_templates(server: ApiServer) -> None:
    with server.client() as client:
        for job_id in ("a" * 32, "b" * 32, "../../etc"):
            client.get(f"/v1/jobs/{job_id}")
        client.get("/no/such/route/12345")
    samples = scrape(server.url)
    routes = {
        dict(labels).get("route")
        for name, labels in samples
        if name == "trainyard_api_requests_total"
    }
    assert "/v1/jobs/{job_id}" in routes
    assert "unmatched" in routes
    assert not any(r and ("aaaa" in r or "12345" in r) for r in routes)
    assert (
        value(
            samples,
            "trainyard_api_requests_total",
            method="GET",
            route="/v1/jobs/{job_id}",
            status="404",
        )
        >= 2
    )
    latency = value(
        samples,
        "trainyard_api_request_duration_seconds_count",
        method="GET",
        route="/v1/jobs/{job_id}",
        status="404",
    )
    assert latency >= 2


def test_every_metric_family_is_exposed_once(server: ApiServer) -> None:
    """Two families of one name make Prometheus refuse the whole scrape."""
    with server.client() as client:
        text = client.get("/metrics").text
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
