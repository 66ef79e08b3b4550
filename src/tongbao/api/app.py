"""The FastAPI application: ``create_app(platform)``.

Interactive documentation at ``/docs``, the OpenAPI document at
``/openapi.json``. Every route under ``/v1`` needs a bearer token.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tongbao.api import problems
from tongbao.api.middleware import RequestContext
from tongbao.api.routes import accounts, cards, health, notifications, payments, staff
from tongbao.platform import Platform

DESCRIPTION = """
Tongbao (通宝) payment platform API.

* **Money** goes in as yuan strings (`"12.34"`) and comes out as both yuan and integer fen.
* **Every mutating call** needs an `Idempotency-Key` header; a retry with the same key
  returns the first result and never moves money twice.
* **Errors** are `application/problem+json` with a stable `code`.
* **Lists** are newest first with cursor pagination (`next_cursor`).
"""


def create_app(platform: Platform, *, background: bool = False) -> FastAPI:
    """The API over ``platform``; with ``background`` the platform's duties
    (hold expiry, bank status, notifications, scheduled payments) run in a thread."""

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

    app = FastAPI(title="Tongbao", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.state.platform = platform
    problems.install(app)
    for module in (accounts, payments, cards, notifications, staff, health):
        app.include_router(module.router)
    app.add_middleware(RequestContext)
    return app


def app_from_environment() -> FastAPI:
    """Factory for ``serve`` with several worker processes: settings from the
    environment, background duties in every worker (they are safe to run
    concurrently: each step is guarded by row locks and state checks)."""
    from tongbao.config import Settings  # noqa: PLC0415
    from tongbao.logs import configure_logging  # noqa: PLC0415

    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    background = os.environ.get("TONGBAO_BACKGROUND", "1") == "1"
    return create_app(Platform(settings).start(), background=background)
