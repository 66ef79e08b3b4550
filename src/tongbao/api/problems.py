"""``application/problem+json`` (RFC 9457) for every refusal.

``code`` is the stable, machine-readable part (see :mod:`tongbao.errors`);
``type`` is a URI made from it, ``detail`` a one-line human explanation.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from tongbao import errors

PROBLEM = "application/problem+json"
TYPE_BASE = "https://tongbao.dev/problems/"

log = structlog.get_logger(__name__)


def problem_response(status: int, code: str, title: str, detail: str, **extra: Any) -> Response:
    body = {
        "type": TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id:
        body["request_id"] = request_id
    headers = {"Retry-After": str(extra["retry_after"])} if "retry_after" in extra else None
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM, headers=headers)


def error_response(exc: errors.TongbaoError) -> Response:
    return problem_response(exc.status, exc.code, exc.title, exc.detail, **exc.extra)


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details; `code` is the stable part (tongbao.errors).",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "problem": {"type": "string"}},
            },
        },
    },
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def document(openapi: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document as the API really answers: every refusal (FastAPI
    would document only a 422 ``HTTPValidationError`` in ``application/json``)
    is an ``application/problem+json`` Problem (SEC-10: the dynamic scan checks
    responses against this document)."""
    refused = {
        "description": "Refused: an RFC 9457 problem with a stable `code`",
        "content": {PROBLEM: {"schema": _PROBLEM_REF}},
    }
    for item in openapi.get("paths", {}).values():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            for status in [s for s in responses if s[:1] in {"4", "5"}]:
                responses[status] = {**refused, "description": responses[status]["description"]}
            responses["default"] = refused
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    return openapi


def install(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(errors.TongbaoError)
    async def _domain(_: Request, exc: errors.TongbaoError) -> Response:
        log.info("request_refused", code=exc.code, status=exc.status)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return error_response(errors.MalformedJson("the request body is not valid JSON"))
        fields = [
            {"field": ".".join(str(part) for part in p["loc"][1:]) or "body", "problem": p["msg"]}
            for p in problems
        ]
        first = fields[0]
        return problem_response(
            422,
            "validation_failed",
            errors.ValidationFailed.title,
            f"{first['field']}: {first['problem']}",
            errors=fields,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        code = codes.get(exc.status_code, "http_error")
        return problem_response(exc.status_code, code, str(exc.detail), str(exc.detail))


def internal_error() -> Response:
    """The answer to an unexpected failure (sent by the request middleware, which
    still knows the request id)."""
    return problem_response(
        500,
        "internal_error",
        "Internal error",
        "something went wrong on our side; retrying with the same Idempotency-Key is "
        "safe, and the request_id identifies the failure in our logs",
    )
