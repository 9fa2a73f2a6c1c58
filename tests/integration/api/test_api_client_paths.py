"""The Python client (and so the CLI) puts a job id into a URL as one path segment:
an id such as '../queues' must ask for that job, not reach another endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.servers import ApiServer
from trainyard.api.client import ApiError, TrainyardClient


@pytest.mark.parametrize("job_id", ["../queues", "..", "x/../../jobs", "x?limit=1", "x#y"])
@pytest.mark.parametrize("operation", ["get_job", "events", "cancel", "logs"])
def test_a_job_id_cannot_reach_another_endpoint(
    server: ApiServer, job_id: str, operation: str
) -> None:
    with TrainyardClient(server.url, server.admin_token) as client:
        call: Callable[[str], Any] = getattr(client, operation)
        with pytest.raises(ApiError) as raised:
            call(job_id)
    assert raised.value.status == 404, str(raised.value)
