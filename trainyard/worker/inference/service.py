"""Long-running inference: HTTP `POST /predict` with dynamic batching.

Requests are validated as they arrive (a bad one gets a 422 naming the field, at once), then
queued. One batching task takes the first waiting request, keeps collecting until it has
`max_batch` or `max_wait` has passed since that first one, and runs the whole batch once in a
worker thread, so the event loop keeps accepting requests while the model computes. Under load
batches fill up (throughput); when idle a request waits at most `max_wait` (latency).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trainyard.worker.inference.predictors import Predictor, RecordError
from trainyard.worker.metrics import WorkerMetrics

MAX_BODY_BYTES = 1024 * 1024


@dataclass
class _Pending:
    item: Any
    future: asyncio.Future[dict[str, Any]]


class DynamicBatcher:
    """Collects requests into batches of up to `max_batch`, waiting at most `max_wait_s`."""

    def __init__(
        self, predictor: Predictor, max_batch: int, max_wait_s: float, metrics: WorkerMetrics
    ) -> None:
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.metrics = metrics
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(self, item: Any) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(item, future))
        return await future

    async def _collect(self) -> list[_Pending]:
        batch = [await self.queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), timeout=remaining))
            except TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        while True:
            batch = await self._collect()
            self.metrics.inference_batch_size.observe(len(batch))
            try:
                results = await asyncio.to_thread(self.predictor.predict, [p.item for p in batch])
            except Exception as exc:  # a model failure fails this batch, not the service
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            for p, result in zip(batch, results, strict=True):
                if not p.future.done():
                    p.future.set_result(result)


def create_app(
    predictor: Predictor,
    info: dict[str, Any],
    metrics: WorkerMetrics,
    max_batch: int = 32,
    max_wait_s: float = 0.005,
    *,
    serve_metrics: bool = False,
) -> Starlette:
    """The service: POST /predict (one record), GET /healthz, and with `serve_metrics`
    GET /metrics (Prometheus text) on the same port."""
    batcher = DynamicBatcher(predictor, max_batch, max_wait_s, metrics)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(predictor.warm_up, max_batch)
        batcher.start()
        yield
        await batcher.stop()

    async def predict(request: Request) -> JSONResponse:
        metrics.inference_inflight.inc()
        try:
            return await answer(request)
        finally:
            metrics.inference_inflight.dec()

    async def answer(request: Request) -> JSONResponse:
        started = time.perf_counter()
        declared = request.headers.get("content-length", "0")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return JSONResponse({"error": f"body: larger than {MAX_BODY_BYTES} bytes"}, 413)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": f"body: larger than {MAX_BODY_BYTES} bytes"}, 413)
        try:
            record = json.loads(body)
            item = predictor.parse(record)
        except json.JSONDecodeError as exc:
            return JSONResponse({"error": f"body: invalid JSON: {exc.msg}"}, 422)
        except RecordError as exc:
            return JSONResponse({"error": str(exc)}, 422)
        try:
            result = await batcher.submit(item)
        except Exception as exc:
            return JSONResponse({"error": f"prediction failed: {type(exc).__name__}"}, 500)
        metrics.inference_latency.observe(time.perf_counter() - started)
        record_id = record.get("id") if isinstance(record, dict) else None
        return JSONResponse({"id": record_id, **result})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", **info})

    async def metrics_text(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/predict", predict, methods=["POST"]), Route("/healthz", healthz)]
    if serve_metrics:
        routes.append(Route("/metrics", metrics_text))
    return Starlette(routes=routes, lifespan=lifespan)
