"""The dashboards and alert rules against a REAL Prometheus scraping a real control plane.

`trainyard serve` (API + loop + local backend) runs real CPU jobs (a two-worker DDP gpt
and a `command` job); the test Prometheus (hack/prometheus/up.sh) is pointed at the
server's /metrics and, through /v1/metrics/targets (http_sd), at every running worker.
Then every PromQL expression of every dashboard panel, with its variables substituted,
is sent to Prometheus's HTTP API and must return at least one series, and every alert
rule must evaluate without error.

One exception, stated rather than hidden: series that only NVML can produce (GPU
utilisation, GPU memory, GPU energy: `catalog.NVML_ONLY`) do not exist on a machine
without an NVIDIA GPU, by design (absent, never faked); panels that select only those
are skipped when `nvidia-smi` is not on this machine.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml

from tests.integration.operator.loop_support import Serve, serve, tiny_gpt
from tests.support.prometheus import prometheus_server
from tests.support.servers import wait_for
from trainyard.observability import catalog
from trainyard.observability.dashboards import (
    expressions,
    load,
    render_all,
    substitute,
    variable_queries,
)

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "helm" / "trainyard" / "rules" / "trainyard-alerts.yaml"
HAS_GPU = shutil.which("nvidia-smi") is not None


class Prometheus:
    """The test Prometheus: rewrite its config, reload, query."""

    def __init__(self, url: str, config: Path) -> None:
        self.url = url
        self.config = config
        self.original = config.read_text(encoding="utf-8")

    def apply(self, document: dict[str, Any]) -> None:
        self.config.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        response = httpx.post(f"{self.url}/-/reload", timeout=30)
        assert response.status_code == 200, response.text

    def restore(self) -> None:
        self.config.write_text(self.original, encoding="utf-8")
        httpx.post(f"{self.url}/-/reload", timeout=30)

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        body = response.json()
        assert body.get("status") == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else float("nan")

    def get(self, path: str, **params: Any) -> Any:
        body = httpx.get(f"{self.url}{path}", params=params, timeout=30).json()
        assert body.get("status") == "success", body
        return body["data"]


@pytest.fixture
def prometheus() -> Iterator[Prometheus]:
    url, config = prometheus_server()
    server = Prometheus(url, config)
    yield server
    server.restore()


def scrape_config(server: Serve, token_file: Path) -> dict[str, Any]:
    host = server.url.removeprefix("http://")
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "trainyard", "static_configs": [{"targets": [host]}]},
            {
                # Workers keep their own `job` label (the Trainyard job's name).
                "job_name": "trainyard-workers",
                "honor_labels": True,
                "http_sd_configs": [
                    {
                        "url": f"{server.url}/v1/metrics/targets",
                        "refresh_interval": "1s",
                        "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                    }
                ],
            },
        ],
    }


def _only_nvml(expr: str) -> bool:
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return bool(names) and names <= catalog.NVML_ONLY


@pytest.mark.slow
def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    tmp_path: Path, prometheus: Prometheus
) -> None:
    with serve(tmp_path / "home") as server:
        token_file = tmp_path / "prometheus-token"
        token_file.write_text(server.token, encoding="utf-8")
        token_file.chmod(0o600)
        prometheus.apply(scrape_config(server, token_file))

        quick = server.submit(
            {"name": "quick", "resources": {"cpu": "1"}, "workload": {"command": ["true"]}}
        )
        ddp = server.submit(
            {
                "name": "ddp-gpt",
                "workers": 2,
                "resources": {"cpu": "500m"},
                "workload": {
                    "builtin": "gpt",
                    "args": tiny_gpt(100000, checkpoint_every=100000, log_every=10),
                },
            }
        )
        try:
            server.wait_state(quick["id"], "SUCCEEDED", timeout=120)
            server.wait_state(ddp["id"], "RUNNING", timeout=180)

            def scraped() -> bool:
                up = prometheus.query('up{job="trainyard-workers"} == 1')
                steps = prometheus.query(
                    'count_over_time(trainyard_worker_step{job="ddp-gpt"}[1m]) >= 5'
                )
                server_up = prometheus.query('up{job="trainyard"} == 1')
                return len(up) == 2 and len(steps) == 2 and len(server_up) == 1

            wait_for(scraped, timeout=240, interval=0.5, what="Prometheus to scrape workers")
            # a few samples of the cycle histogram too, so rate() has two points
            wait_for(
                lambda: (
                    prometheus.value(
                        "count_over_time(trainyard_scheduling_cycle_seconds_count[1m])"
                    )
                    >= 3
                ),
                timeout=60,
                interval=0.5,
                what="the loop's metrics in Prometheus",
            )
            targets = prometheus.get("/api/v1/targets", state="active")["activeTargets"]
            workers = [t for t in targets if t["labels"]["job"] == "trainyard-workers"]
            assert {t["labels"]["trainyard_worker"] for t in workers} == {"0", "1"}
            assert all(t["labels"]["trainyard_job_id"] == ddp["id"] for t in workers)

            empty, checked, skipped = [], 0, []
            # "All" (Grafana's .*) and one value picked in each variable, as a user would
            picked = {"$queue": "default", "$job": "ddp-gpt"}
            for name, text in render_all().items():
                document = load(text)
                for title, expr in expressions(document):
                    if _only_nvml(substitute(expr)) and not HAS_GPU:
                        skipped.append(f"{name}: {title}")
                        continue
                    checked += 1
                    for query in sorted({substitute(expr), substitute(expr, picked)}):
                        if not prometheus.query(query):
                            empty.append(f"{name}: {title}: {query}")
                for variable, query in variable_queries(document):
                    selector = query.removeprefix("label_values(").rsplit(",", 1)
                    label = selector[1].strip(" )")
                    values = prometheus.get(
                        f"/api/v1/label/{label}/values", **{"match[]": substitute(selector[0])}
                    )
                    if not values:
                        empty.append(f"{name}: variable {variable}: {query}")
            assert not empty, "queries without data:\n" + "\n".join(empty)
            assert checked >= 25, checked
            assert HAS_GPU or skipped == ["jobs-and-workers.json: GPU utilisation"], skipped

            # the jobs show up with their labels and sensible values
            assert prometheus.value('max(trainyard_worker_step{job="ddp-gpt"})') > 0
            assert prometheus.value('sum(trainyard_admissions_total{queue="default"})') >= 2
            succeeded = 'sum(trainyard_job_finished_total{outcome="SUCCEEDED"})'
            assert prometheus.value(succeeded) >= 1
            allocated = 'sum(trainyard_cluster_allocated{resource="cpu",queue="default"})'
            assert prometheus.value(allocated) == pytest.approx(1.0)  # 2 workers x 500m

            def rules_evaluated() -> bool:
                groups = prometheus.get("/api/v1/rules")["groups"]
                rules = [rule for group in groups for rule in group["rules"]]
                never = "0001-01-01"  # Prometheus's zero time: not evaluated yet
                return len(rules) >= 7 and not any(
                    r.get("lastEvaluation", never).startswith(never) for r in rules
                )

            wait_for(rules_evaluated, timeout=30, interval=0.5, what="the alert rules to run")
            groups = prometheus.get("/api/v1/rules")["groups"]
            broken = [
                (rule["name"], rule.get("lastError"))
                for group in groups
                for rule in group["rules"]
                if rule["health"] != "ok"
            ]
            assert not broken, broken
        finally:
            with server.client() as client:
                for job in (ddp, quick):
                    client.post(f"/v1/jobs/{job['id']}/cancel")
            server.wait_state(ddp["id"], "CANCELLED", "SUCCEEDED", "FAILED", timeout=120)
