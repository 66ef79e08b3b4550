"""The FastAPI application: ``create_app(platform)``.

Interactive documentation at ``/docs``, the OpenAPI document at
``/openapi.json``. Every route under ``/v1`` needs a bearer token. Every
response carries the security headers, and every request passes the size
limit and the per-client rate limit (SEC-11, :mod:`tongbao.api.hardening`).

Threading model
---------------
Routes and their dependencies are ``async def`` and call the (synchronous)
services directly on the event loop: a request is a handful of indexed
statements on a nearby database, a millisecond or two, and handing it to
FastAPI's thread pool and back costs more CPU than that work (two hand-offs
per request and the GIL passed between threads: measured about 1.5 ms of
CPU per payment). Each worker process therefore runs one request's
database work at a time — like a synchronous worker — and
``TONGBAO_HTTP_WORKERS`` processes run side by side. A transaction never
spans an ``await``, so two requests of one process never hold locks the
other waits for; the background duties run in a thread of their own (one
worker) or a process of their own (several, :mod:`tongbao.background`). The
rare retry of a transaction after a serialization failure or deadlock waits
its few milliseconds of back-off on the loop too.

Routes that spend long on the CPU or the disk stay plain ``def`` so the
thread pool keeps them off the loop: password hashing (login, password
change, issuing credentials), verifying the audit chain and the CSV export.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from tongbao.api import problems
from tongbao.api.hardening import RateLimiter, docs_content_security_policy, rate_limiter_for
from tongbao.api.middleware import BodySizeLimit, RateLimit, RequestContext, SecurityHeaders
from tongbao.api.routes import (
    accounts,
    admin,
    audit,
    audit_samples,
    cards,
    health,
    notifications,
    payments,
    security,
    staff,
)
from tongbao.platform import Platform

DESCRIPTION = """
Tongbao (通宝) payment platform API.

* **Money** goes in as yuan strings (`"12.34"`) and comes out as both yuan and integer fen.
* **Every mutating call** needs an `Idempotency-Key` header; a retry with the same key
  returns the first result and never moves money twice.
* **Errors** are `application/problem+json` with a stable `code`.
* **Lists** are newest first with cursor pagination (`next_cursor`).
"""


def create_app(
    platform: Platform, *, background: bool = False, rate_limiter: RateLimiter | None = None
) -> FastAPI:
    """The API over ``platform``; with ``background`` the platform's duties
    (hold expiry, bank status, notifications, scheduled payments) run in a thread.
    ``rate_limiter`` defaults to the one the settings ask for (in-process, or
    shared through Redis with ``TONGBAO_REDIS_URL``)."""
    limiter = rate_limiter or rate_limiter_for(platform.settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        worker = None
        if background:
            worker = threading.Thread(
                target=platform.run_background, args=(stop,), name="tongbao-background", daemon=True
            )
            worker.start()
        yield
        stop.set()
        if worker is not None:
            worker.join(timeout=10)
        await limiter.aclose()

    # ReDoc and Swagger's OAuth2 redirect page are off: bearer tokens need
    # neither, and each would widen the pages' Content-Security-Policy.
    app = FastAPI(
        title="Tongbao",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.platform = platform
    problems.install(app)
    for module in (
        accounts,
        payments,
        cards,
        notifications,
        staff,
        admin,
        security,
        audit,
        audit_samples,
        health,
    ):
        app.include_router(module.router)
    _install_docs(app)
    # Outermost last: headers on every answer, the request id on every refusal,
    # the rate limit before any body is read.
    app.add_middleware(BodySizeLimit, max_bytes=platform.settings.max_request_bytes)
    app.add_middleware(RateLimit, limiter=limiter, exempt=frozenset({"/healthz"}))
    app.add_middleware(RequestContext)
    app.add_middleware(SecurityHeaders)
    return app


def _install_docs(app: FastAPI) -> None:
    """``/docs``: FastAPI's Swagger UI page, with a Content-Security-Policy that
    lets exactly it run (see :func:`docs_content_security_policy`)."""

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root_path = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=root_path + (app.openapi_url or "/openapi.json"),
            title=f"{app.title} - Swagger UI",
        )
        policy = docs_content_security_policy(bytes(page.body).decode())
        return HTMLResponse(page.body, headers={"Content-Security-Policy": policy})


def app_from_environment() -> FastAPI:
    """Factory for ``serve`` with several worker processes: settings from the
    environment; background duties only where ``TONGBAO_BACKGROUND=1`` (``serve``
    runs them in a process of their own, :mod:`tongbao.background`)."""
    from tongbao.config import Settings  # noqa: PLC0415
    from tongbao.logs import configure_logging  # noqa: PLC0415

    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    background = os.environ.get("TONGBAO_BACKGROUND", "1") == "1"
    return create_app(Platform(settings).start(), background=background)
