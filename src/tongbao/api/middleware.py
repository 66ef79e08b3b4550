"""ASGI middleware: request ids and one structured access-log line per request;
security headers, request size limit and per-client rate limit (SEC-11).

All plain ASGI (no ``BaseHTTPMiddleware``): the payment API's latency budget
is a few milliseconds, and each layer here costs microseconds.
"""

from __future__ import annotations

import re
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tongbao import errors
from tongbao.api.hardening import RateLimiter, client_key, security_headers
from tongbao.api.problems import error_response, internal_error
from tongbao.ids import new_id

log = structlog.get_logger("tongbao.access")
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class RequestContext:
    """Binds ``request_id`` (from ``X-Request-Id`` if sane, else new) to every log
    line of the request, returns it in the response and logs the access line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _VALID_ID.fullmatch(given) else new_id("req")
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        responded = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                message.setdefault("headers", [])
                message["headers"].append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Here, not in an exception handler: Starlette runs those outside all
            # middleware, where the request id is already gone.
            log.exception("unhandled_error")
            if not responded:
                await internal_error()(scope, receive, send_with_id)
        finally:
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.clear_contextvars()


class SecurityHeaders:
    """Adds :func:`~tongbao.api.hardening.security_headers` to every response,
    keeping any header of the same name the route chose (``/docs`` has its own
    Content-Security-Policy)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._plain = security_headers(https=False)
        self._tls = security_headers(https=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._tls if scope.get("scheme") == "https" else self._plain

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in extra if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodySizeLimit:
    """Refuses a body larger than ``max_bytes`` with 413 before any route runs.

    A declared ``Content-Length`` is judged at once, without reading the body
    (the server holds the body to its declared length). A body without one
    (chunked) is read here, up to the limit, before the route sees any of it.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None:
            if declared > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away; there is no one to answer
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            errors.PayloadTooLarge(
                f"the request body may be at most {self.max_bytes} bytes",
                max_bytes=self.max_bytes,
            )
        )
        # The unread rest of the body must not be taken for the next request.
        response.headers["connection"] = "close"
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # counted while read instead
    return None


class RateLimit:
    """Per-client token bucket (:mod:`tongbao.api.hardening`): ``RateLimit-*``
    headers on every counted response, 429 with ``Retry-After`` beyond the limit.
    Liveness probes (``exempt``) are never counted: a load balancer must always
    see whether the server is up."""

    def __init__(
        self, app: ASGIApp, *, limiter: RateLimiter, exempt: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        verdict = await self.limiter.take(client_key(scope))
        limits = verdict.headers()
        if not verdict.allowed:
            log.info("request_refused", code=errors.RateLimited.code, status=429)
            response = error_response(
                errors.RateLimited(
                    f"more than {self.limiter.policy.per_minute} requests per minute "
                    f"(bursts of {self.limiter.policy.burst}); retry in {verdict.retry_after} s",
                    retry_after=verdict.retry_after,
                )
            )
            response.raw_headers.extend(limits)
            await response(scope, receive, send)
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *limits]
            await send(message)

        await self.app(scope, receive, send_with_limits)
