"""What the API hardening of issue 14 costs and saves, measured on a real server.

1. Token lookup: every request reads its token from the store (no cache, so a revoked
   token is refused at once by every replica). `TokenVerifier.lookup` is timed in-process
   on SQLite and on PostgreSQL (TRAINYARD_TEST_DATABASE_URL or .postgres/url; a fresh
   schema): the median per lookup of each round, --rounds rounds of --lookups lookups.
2. Log followers: `trainyard serve` on loopback, one job that stays PENDING, --followers
   streams following its log; the server process's CPU over --idle-seconds while nothing
   is written (was 89 % of a core for 200 followers with one poll loop each).
3. Unauthenticated YAML: the 800 KB, 60,000-key YAML body of the issue without a token:
   time to its 401 (median of 5), and /healthz latency while four clients send it in a
   loop (was 4.5 s to the 401 and up to 9.7 s for /healthz).

    .venv/bin/python bench/api/bench_hardening.py
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from trainyard.api.auth import TokenVerifier, create_token
from trainyard.store import make_engine, migrate

TRAINYARD = str(Path(sys.executable).parent / "trainyard")


def postgres_url() -> str | None:
    url = os.environ.get("TRAINYARD_TEST_DATABASE_URL")
    if url:
        return url
    path = Path(__file__).resolve().parents[2] / ".postgres" / "url"
    return path.read_text().strip() if path.exists() else None


def token_lookups(url: str, *, rounds: int, lookups: int) -> list[float]:
    """Median microseconds per lookup, one figure per round."""
    engine = make_engine(url)
    try:
        migrate(engine)
        token = create_token(engine, user="bench", admin=False)
        verifier = TokenVerifier(engine)
        figures = []
        for _ in range(rounds):
            times = []
            for _ in range(lookups):
                start = time.perf_counter()
                verifier.lookup(token)
                times.append(time.perf_counter() - start)
            figures.append(statistics.median(times) * 1e6)
        return figures
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(home: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "TRAINYARD_HOME": str(home), **env}
    process = subprocess.Popen(
        [TRAINYARD, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start")


def followers(workdir: Path, *, count: int, idle_seconds: float) -> float:
    """Percent of a core the server used while `count` streams followed an idle log."""
    port = free_port()
    home = workdir / "followers"
    process = serve(
        home,
        port,
        TRAINYARD_MAX_CONNECTIONS_PER_CLIENT=str(count + 16),
        TRAINYARD_MAX_LOG_FOLLOWERS_PER_USER=str(count),
    )
    streams: list[socket.socket] = []
    try:
        token = (home / "admin-token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        job = {"name": "idle", "resources": {"cpu": "100000"}, "workload": {"builtin": "gpt"}}
        job_id = httpx.post(f"http://127.0.0.1:{port}/v1/jobs", json=job, headers=headers).json()[
            "id"
        ]
        request = (
            f"GET /v1/jobs/{job_id}/logs?follow=true HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(request)
            streams.append(sock)
        for sock in streams:
            sock.settimeout(30)
            head = sock.recv(4096)
            if not head.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"a follower was refused: {head[:80]!r}")
        before, started = cpu_seconds(process.pid), time.monotonic()
        time.sleep(idle_seconds)  # the measurement window, not a synchronisation
        used, elapsed = cpu_seconds(process.pid) - before, time.monotonic() - started
        return 100 * used / elapsed
    finally:
        for sock in streams:
            sock.close()
        process.terminate()
        process.wait(timeout=60)


def big_yaml() -> bytes:
    keys = "".join(f"    k{i}: v\n" for i in range(60_000))
    return ("name: big\nworkload:\n  builtin: gpt\n  args:\n" + keys).encode()


def unauthenticated_yaml(workdir: Path) -> tuple[list[float], list[float]]:
    """Seconds to the 401 (5 tries), and /healthz seconds while four clients send it."""
    port = free_port()
    process = serve(workdir / "yaml", port)
    url = f"http://127.0.0.1:{port}"
    body = big_yaml()
    headers = {"Content-Type": "application/yaml"}
    try:
        answers = []
        for _ in range(5):
            start = time.perf_counter()
            status = httpx.post(f"{url}/v1/jobs", content=body, headers=headers).status_code
            answers.append(time.perf_counter() - start)
            assert status == 401, status
        stop = threading.Event()

        def flood() -> None:
            with httpx.Client(timeout=60) as client:
                while not stop.is_set():
                    client.post(f"{url}/v1/jobs", content=body, headers=headers)

        threads = [threading.Thread(target=flood) for _ in range(4)]
        for thread in threads:
            thread.start()
        health = []
        try:
            with httpx.Client(timeout=60) as client:
                for _ in range(40):
                    start = time.perf_counter()
                    client.get(f"{url}/healthz")
                    health.append(time.perf_counter() - start)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        return answers, health
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--followers", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args()
    os.environ.setdefault("TRAINYARD_SKIP_PROMETHEUS", "1")
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        sqlite = token_lookups(
            f"sqlite:///{workdir / 'tokens.db'}", rounds=args.rounds, lookups=args.lookups
        )
        print("token lookup, SQLite, median us per round:", [round(f) for f in sqlite])
        base = postgres_url()
        if base:
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            admin = create_engine(base, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            try:
                url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
                figures = token_lookups(url, rounds=args.rounds, lookups=args.lookups)
                print("token lookup, PostgreSQL, median us per round:", [round(f) for f in figures])
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
        load = os.getloadavg()[0]
        share = followers(workdir, count=args.followers, idle_seconds=args.idle_seconds)
        print(
            f"{args.followers} idle followers: server CPU {share:.1f} % of a core (load {load:.1f})"
        )
        answers, health = unauthenticated_yaml(workdir)
        print(
            "800 KB YAML without a token: 401 in "
            f"{statistics.median(answers) * 1000:.0f} ms (median of 5); /healthz while four "
            f"send it: median {statistics.median(health) * 1000:.0f} ms, max "
            f"{max(health) * 1000:.0f} ms (load {os.getloadavg()[0]:.1f})"
        )


if __name__ == "__main__":
    main()
