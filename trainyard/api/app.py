"""The FastAPI application: `create_app(settings)` builds a ready-to-serve app.

The store is prepared when the app is built (migrations applied, admin token ensured),
not in a lifespan hook, so every way of running the app (uvicorn, an ASGI test client,
schemathesis) sees the same ready state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Engine
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

import trainyard
from trainyard.api.auth import TokenVerifier, ensure_admin_token
from trainyard.api.body import DeclaredSizeLimit
from trainyard.api.errors import install_error_handlers
from trainyard.api.inventory import NodeInventory, PublishedInventory, inventory_for
from trainyard.api.logs import LogFollowers
from trainyard.api.metrics import ApiMetrics, RequestMetricsMiddleware
from trainyard.api.openapi_rules import express_deployment_rules, express_document_rules
from trainyard.api.routes import (
    cluster,
    health,
    jobs,
    predict,
    queues,
    targets,
    tokens,
    updates,
    usage,
)
from trainyard.api.submissions import GroupCommitter
from trainyard.api.wake import LoopWaker
from trainyard.config import Settings
from trainyard.layout import ensure_private_dir
from trainyard.quotas import effective_priority_classes, effective_queues
from trainyard.store import TERMINAL_STATES, job_states, make_engine, migrate, read_transaction


def create_app(
    settings: Settings | None = None, *, inventory: NodeInventory | None = None
) -> FastAPI:
    """Build the API for `settings` (default: from TRAINYARD_* environment variables)."""
    settings = settings or Settings()
    ensure_private_dir(settings.home)
    engine = make_engine(settings.resolved_database_url(), timeouts=settings.database_timeouts())
    migrate(engine)
    admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
    token_file = ensure_admin_token(engine, home=settings.home, configured=admin_token)

    app = build_api(settings)
    app.state.settings = settings
    app.state.engine = engine
    app.state.tokens = TokenVerifier(engine)
    app.state.committer = GroupCommitter(engine)
    # The loop's published view; before its first cycle, the backend's own listing
    # (built now, so a broken kubeconfig fails the start in one clear line).
    app.state.inventory = inventory or PublishedInventory(
        engine, inventory_for(settings.backend, settings.kubeconfig)
    )
    app.state.waker = LoopWaker(engine)
    app.state.waker.wake()  # reads the loop's address in the background
    app.state.metrics = ApiMetrics(
        engine,
        queues=[q.name for q in settings.queues],
        priority_classes=list(settings.priority_classes),
        inventory=app.state.inventory,
        settings=settings,
    )
    app.state.admin_token_file = token_file
    app.state.log_followers = LogFollowers(
        job_states=_finished_jobs(engine), max_per_user=settings.max_log_followers_per_user
    )
    return app


def _finished_jobs(engine: Engine) -> Callable[[list[str]], dict[str, bool]]:
    """For the log watcher: {job id: finished} for the jobs that exist."""

    def finished(job_ids: list[str]) -> dict[str, bool]:
        with read_transaction(engine) as conn:
            states = job_states(conn, job_ids=job_ids)
        return {job_id: state in TERMINAL_STATES for job_id, state in states.items()}

    return finished


def build_api(settings: Settings) -> FastAPI:
    """The routes, middleware and error handlers, without any store (enough for OpenAPI)."""
    app = FastAPI(
        title="Trainyard",
        version=trainyard.__version__,
        description="Submit, inspect and cancel ML jobs. Every /v1 call needs a bearer token.",
    )
    # Starlette's limit counts the bytes as they arrive (a missing or false Content-Length
    # does not get past it); the outer check answers an oversize declaration in our format.
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=settings.max_body_bytes)
    app.add_middleware(DeclaredSizeLimit, max_body_size=settings.max_body_bytes)
    app.add_middleware(
        RequestMetricsMiddleware, metrics=lambda: getattr(app.state, "metrics", None)
    )
    install_error_handlers(app)
    for module in (jobs, updates, predict, queues, cluster, tokens, health, usage, targets):
        app.include_router(module.router)
    _document_configured_names(app, settings)
    return app


def openapi_document(settings: Settings | None = None) -> dict[str, Any]:
    """The OpenAPI schema the server would publish for `settings` (no side effects)."""
    return build_api(settings or Settings()).openapi()


def _document_configured_names(app: FastAPI, settings: Settings) -> None:
    """Publish the configured queues and priority classes as enums in the OpenAPI schema."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            properties = schema["components"]["schemas"]["JobCreate"]["properties"]
            properties["queue"]["enum"] = [q.name for q in effective_queues(settings)]
            properties["priority"]["enum"] = list(effective_priority_classes(settings))
            express_document_rules(schema)
            express_deployment_rules(
                schema, backend=settings.backend, allow_host_path=settings.allow_host_path
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_environment() -> FastAPI:
    """Factory for `uvicorn --factory trainyard.api.app:app_from_environment`."""
    return create_app(Settings())
