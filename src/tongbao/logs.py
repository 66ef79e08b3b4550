"""Structured logs: one JSON object per line, with the request id on every line.

Both structlog loggers and the standard library's (uvicorn, SQLAlchemy) go
through the same processors, so every line of a request — ours or a
library's — carries ``request_id`` from the context variable the HTTP
middleware binds.
"""

from __future__ import annotations

import logging
import sys

import structlog

from tongbao.security.masking import mask_personal_data

_configured = False


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    global _configured  # noqa: PLW0603 - logging is process-wide by nature
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        # SEC-3: last, so it also sees exception text and library messages.
        mask_personal_data,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Our own middleware writes one access line per request, with its id.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # Alembic narrates every start-up's schema check at INFO; not news.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
    _configured = True
