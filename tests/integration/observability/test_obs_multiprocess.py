"""`trainyard serve --workers 2`: two API processes behind one port expose ONE consistent
/metrics: request counters summed over both (prometheus-client multiprocess mode), store
gauges identical whichever process answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import wait_for
from trainyard.observability import catalog

TRAINYARD = str(Path(sys.executable).with_name("trainyard"))
# This module's own loopback ports (Prometheus for the tests listens on 26990).
PORTS = range(26900, 26990)


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
# Store series that move with the clock, not with the store.
CLOCK_SERIES = ("trainyard_queue_oldest_pending_seconds", "trainyard_queue_expected_wait")


def _scrape(url: str) -> Samples:
    """One scrape on a new connection (so either process may answer)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _requests_to_queues(samples: Samples) -> float:
    key = ("trainyard_api_requests_total", (("method", "GET"), ("route", "/v1/queues"),
                                            ("status", "200")))  # fmt: skip
    return samples.get(key, 0.0)


def _store_series(samples: Samples) -> Samples:
    store = [s.name for s in catalog.CONTROL_PLANE if not s.name.startswith("trainyard_api_")]
    return {
        key: number
        for key, number in samples.items()
        if key[0].startswith(tuple(store))
        and not key[0].startswith(CLOCK_SERIES)
        and not key[0].endswith("_created")
    }


def test_two_server_processes_report_summed_request_counts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env.update(TRAINYARD_HOME=str(home), TRAINYARD_LOOP="false")
    out = (tmp_path / "serve.out").open("wb")
    process = subprocess.Popen(
        [TRAINYARD, "serve", "--port", str(port), "--workers", "2"],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert process.poll() is None, (tmp_path / "serve.out").read_text()
            try:
                up = httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False
            return up and (home / "admin-token").exists()

        wait_for(healthy, timeout=90, interval=0.1, what="trainyard serve --workers 2")
        token = (home / "admin-token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        for i in range(3):  # the loop is off: they stay pending
            job = {"name": f"p{i}", "resources": {"cpu": "1"}, "workload": {"command": ["true"]}}
            response = httpx.post(f"{url}/v1/jobs", json=job, headers=headers, timeout=30)
            assert response.status_code == 201, response.text
        for _ in range(30):
            # a new connection each time, so both processes get some of the requests
            response = httpx.get(f"{url}/v1/queues", headers=headers, timeout=30)
            assert response.status_code == 200
        first = _scrape(url)
        pending = (("kind", "training"), ("priority", "normal"), ("queue", "default"))
        assert first[("trainyard_queue_pending_jobs", pending)] == 3
        for _ in range(6):
            # whichever process answers the scrape, it counts all 30 requests and reports
            # the same store numbers
            samples = _scrape(url)
            assert _requests_to_queues(samples) == 30
            assert _store_series(samples) == _store_series(first)
        assert list((home / "run" / "prometheus").glob("*.db")), "multiprocess files"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        out.close()
