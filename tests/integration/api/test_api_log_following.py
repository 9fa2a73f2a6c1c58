"""Worker logs and following them (issue 14, item 8): `?worker=i`, one shared watcher for
every follower instead of a poll loop each, a cap of streams per user, and streams that
end with their job."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.servers import ApiServer, running_server, wait_for
from trainyard.layout import worker_log_path
from trainyard.store import JobState, transition_job, write_transaction

JOB: dict[str, Any] = {"name": "job", "workload": {"builtin": "gpt"}}


def _job(server: ApiServer, **overrides: Any) -> str:
    with server.client() as client:
        response = client.post("/v1/jobs", json={**JOB, **overrides})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _move(server: ApiServer, job_id: str, *states: JobState) -> None:
    for state in states:
        with write_transaction(server.engine) as conn:
            transition_job(conn, job_id=job_id, to_state=state)


def _write(server: ApiServer, job_id: str, worker: int, text: str) -> None:
    path = worker_log_path(server.home, job_id, worker)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(text)


def _watchers() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "trainyard-log-watcher")


def test_each_worker_has_its_own_log(server: ApiServer) -> None:
    job_id = _job(server, workers=2)
    _write(server, job_id, 0, "rank 0\n")
    _write(server, job_id, 1, "rank 1\n")
    with server.client() as client:
        default = client.get(f"/v1/jobs/{job_id}/logs")
        second = client.get(f"/v1/jobs/{job_id}/logs", params={"worker": 1})
        beyond = client.get(f"/v1/jobs/{job_id}/logs", params={"worker": 2})
        negative = client.get(f"/v1/jobs/{job_id}/logs", params={"worker": -1})
    assert default.text == "rank 0\n" and second.text == "rank 1\n"
    for response in (beyond, negative):
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "worker"
    assert "0 to 1" in beyond.json()["detail"]


class _Stream:
    """A follower on a raw socket in a thread, collecting what it receives.

    A raw socket so that `close` ends it at once (shutting the socket down wakes the
    blocked read), as a client that goes away would.
    """

    def __init__(self, server: ApiServer, job_id: str, token: str | None = None) -> None:
        self.raw = b""
        self.ended = threading.Event()
        address = urlsplit(server.url)
        self._sock = socket.create_connection((address.hostname, address.port))
        self._sock.sendall(
            f"GET /v1/jobs/{job_id}/logs?follow=true HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {token or server.admin_token}\r\n\r\n".encode()
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while chunk := self._sock.recv(65536):
                self.raw += chunk
                if self.raw.endswith(b"\r\n0\r\n\r\n"):  # the last chunk: the stream ended
                    break
        except OSError:
            pass
        finally:
            self.ended.set()

    @property
    def status(self) -> int | None:
        head = self.raw.split(b"\r\n", 1)[0].split()
        return int(head[1]) if len(head) > 1 else None

    @property
    def text(self) -> str:
        """The body, with the chunked transfer coding taken off."""
        _, _, body = self.raw.partition(b"\r\n\r\n")
        out = b""
        while body:
            size_line, _, rest = body.partition(b"\r\n")
            if not rest and not body.endswith(b"\r\n"):
                break
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0 or len(rest) < size:
                break
            out += rest[:size]
            body = rest[size + 2 :]
        return out.decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self.ended.wait(timeout=30)


@pytest.fixture
def capped(database_url: str, tmp_path: Path) -> Iterator[ApiServer]:
    with running_server(
        home=tmp_path / "home", database_url=database_url, max_log_followers_per_user=3
    ) as running:
        yield running


def test_many_followers_share_one_watcher_and_end_with_the_job(server: ApiServer) -> None:
    job_id = _job(server)
    with ExitStack() as stack:
        streams = [_Stream(server, job_id) for _ in range(12)]
        for stream in streams:
            stack.callback(stream.close)
        followers = server.app.state.log_followers
        wait_for(lambda: followers.count == 12, timeout=30, what="12 followers")
        assert _watchers() == 1
        _move(server, job_id, JobState.ADMITTED, JobState.RUNNING)
        _write(server, job_id, 0, "step 1\n")
        wait_for(
            lambda: all(s.text == "step 1\n" for s in streams), timeout=30, what="every follower"
        )
        assert not any(s.ended.is_set() for s in streams)
        _write(server, job_id, 0, "last\n")
        _move(server, job_id, JobState.SUCCEEDED)
        for stream in streams:
            assert stream.ended.wait(timeout=30), "a stream did not end with its job"
            assert (stream.status, stream.text) == (200, "step 1\nlast\n")
            assert stream.raw.endswith(b"\r\n0\r\n\r\n")
        wait_for(lambda: _watchers() == 0, timeout=30, what="the watcher to exit")
        assert followers.count == 0


def test_followers_per_user_are_capped_with_a_429(capped: ApiServer) -> None:
    job_id = _job(capped)
    other = capped.token("other")
    followers = capped.app.state.log_followers
    with ExitStack() as stack:
        streams = [_Stream(capped, job_id) for _ in range(3)]
        for stream in streams:
            stack.callback(stream.close)
        wait_for(lambda: followers.count == 3, timeout=30, what="3 followers")
        with capped.client() as client:
            refused = client.get(f"/v1/jobs/{job_id}/logs", params={"follow": "true"})
            # Reading (not following) is not capped.
            assert client.get(f"/v1/jobs/{job_id}/logs").status_code == 200
        assert refused.status_code == 429
        assert "admin already follows 3 logs" in refused.json()["detail"]
        # The cap is per user.
        own = _job(capped)
        with capped.client() as admin:
            assert admin.get(f"/v1/jobs/{own}").status_code == 200
        streams[0].close()
        wait_for(lambda: followers.count == 2, timeout=30, what="a closed stream to be released")
        again = _Stream(capped, job_id)
        stack.callback(again.close)
        wait_for(lambda: followers.count == 3, timeout=30, what="the freed slot to be reused")
        wait_for(lambda: again.status is not None, timeout=30, what="the stream's headers")
        assert again.status == 200
        # Another user has slots of their own.
        with capped.client() as admin:
            shared = admin.post("/v1/jobs", json={**JOB, "name": "theirs"})
        assert shared.status_code == 201
        with capped.client(other) as client:
            theirs = client.post("/v1/jobs", json=JOB).json()["id"]
        own_stream = _Stream(capped, theirs, token=other)
        stack.callback(own_stream.close)
        wait_for(lambda: own_stream.status is not None, timeout=30, what="other's stream")
        assert own_stream.status == 200 and followers.count == 4


def test_following_a_finished_job_returns_its_log_and_ends(server: ApiServer) -> None:
    job_id = _job(server)
    _write(server, job_id, 0, "done\n")
    _move(server, job_id, JobState.CANCELLED)
    with server.client() as client:
        response = client.get(f"/v1/jobs/{job_id}/logs", params={"follow": "true"})
    assert (response.status_code, response.text) == (200, "done\n")
    assert server.app.state.log_followers.count == 0
