"""A small HTTP client for the /v1 API, used by the CLI (and handy in scripts).

Errors surface as one exception type whose message is a single readable line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx


class ApiError(Exception):
    """The server refused a request, or could not be reached; `str()` is one line."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TrainyardClient:
    """Calls a Trainyard server at `url` with a bearer `token`."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TrainyardClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach Trainyard at {self.url}: {exc}") from exc
        _raise_for_status(response)
        return response

    def submit(
        self, document: bytes, *, content_type: str, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        headers = {"Content-Type": content_type}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return self._request("POST", "/v1/jobs", content=document, headers=headers).json()

    def list_jobs(self, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v not in (None, [], ())}
        return self._request("GET", "/v1/jobs", params=params).json()

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{_segment(job_id)}").json()

    def events(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{_segment(job_id)}/events").json()

    def checkpoints(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{_segment(job_id)}/checkpoints").json()

    def update(self, job_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """PATCH a model service: each field named replaces the document's."""
        return self._request("PATCH", f"/v1/jobs/{_segment(job_id)}", json=changes).json()

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{_segment(job_id)}/cancel").json()

    def queues(self) -> dict[str, Any]:
        return self._request("GET", "/v1/queues").json()

    def cluster(self) -> dict[str, Any]:
        return self._request("GET", "/v1/cluster").json()

    def usage(self, *, group_by: str = "queue", since: str = "30d") -> dict[str, Any]:
        params = {"group_by": group_by, "since": since}
        return self._request("GET", "/v1/usage", params=params).json()

    def metrics_targets(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/metrics/targets").json()

    def logs(self, job_id: str) -> bytes:
        return self._request("GET", f"/v1/jobs/{_segment(job_id)}/logs").content

    def follow_logs(self, job_id: str) -> Iterator[bytes]:
        """Stream the job's output until it finishes."""
        try:
            with self._http.stream(
                "GET", f"/v1/jobs/{_segment(job_id)}/logs", params={"follow": "true"}, timeout=None
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_status(response)
                yield from response.iter_bytes()
        except httpx.TransportError as exc:
            raise ApiError(f"lost the log stream from {self.url}: {exc}") from exc


def _segment(job_id: str) -> str:
    """A job id as one path segment: '/', '..', '?' or '#' in it cannot reach another URL."""
    if job_id in ("", ".", ".."):
        return quote(job_id.replace(".", "%2E"), safe="%")
    return quote(job_id, safe="")


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    message = detail if isinstance(detail, str) and detail else response.text[:300]
    message = " ".join(message.split())  # always one line
    raise ApiError(
        f"{response.status_code} {response.reason_phrase}: {message}", response.status_code
    )
