"""Transport and API hardening (SEC-2, SEC-11): the TLS context ``serve`` uses,
the security headers every response carries, and per-client rate limiting.

The decisions are plain functions — :func:`take` (a token bucket),
:func:`security_headers`, :func:`docs_content_security_policy` — and the
limiters around them only keep state: :class:`InProcessRateLimiter` in this
process, :class:`RedisRateLimiter` shared by every worker and server through
Redis. The ASGI middleware that applies them is in :mod:`tongbao.api.middleware`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

# Standard library only at import time: each uvicorn worker process imports
# this module to unpickle the TLS context factory before it answers the
# supervisor's first health check.
from tongbao import errors

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from tongbao.config import Settings

# --- TLS (SEC-2) -------------------------------------------------------------------

TlsMinimum = Literal["TLSv1.2", "TLSv1.3"]
_TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
# TLS 1.2 suites: forward secrecy and authenticated encryption only (TLS 1.3
# suites are all of that by construction and are not affected by this string).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"


@dataclass(frozen=True)
class TlsFiles:
    """Certificate chain and private key (PEM) and the oldest protocol accepted.

    Picklable on purpose: with several workers uvicorn sends its configuration,
    and with it :meth:`uvicorn_factory`, to each worker process."""

    certfile: Path
    keyfile: Path
    min_version: TlsMinimum = "TLSv1.2"

    def context(self) -> ssl.SSLContext:
        return server_tls_context(self)

    def uvicorn_factory(self) -> Callable[[Any, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
        """For ``uvicorn.run(ssl_context_factory=...)``: uvicorn's own context
        (``ssl_version``) sets no minimum protocol version, this one does."""
        return partial(_uvicorn_context, self)


def _uvicorn_context(
    files: TlsFiles, _config: Any, _default: Callable[[], ssl.SSLContext]
) -> ssl.SSLContext:
    return server_tls_context(files)


def tls_files(settings: Settings) -> TlsFiles | None:
    """The TLS set-up the settings ask for: ``None`` for plain HTTP. A lone
    certificate or key is refused rather than silently serving plain HTTP.

    Raises :class:`~tongbao.errors.ConfigurationError`."""
    cert, key = settings.tls_certfile, settings.tls_keyfile
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("CERTFILE", "KEYFILE") if key is None else ("KEYFILE", "CERTFILE")
        raise errors.ConfigurationError(
            f"TONGBAO_TLS_{given} is set but TONGBAO_TLS_{missing} is not: HTTPS needs both"
        )
    return TlsFiles(Path(cert), Path(key), settings.tls_min_version)


def server_tls_context(files: TlsFiles) -> ssl.SSLContext:
    """A server context that refuses everything older than ``files.min_version``
    (TLS 1.3 is always preferred: OpenSSL picks the newest both sides speak).

    Raises :class:`~tongbao.errors.ConfigurationError` when a file is missing,
    unreadable, not PEM, encrypted, or the key does not belong to the certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[files.min_version]
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= (
        ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    )
    context.set_alpn_protocols(["http/1.1"])
    for path in (files.certfile, files.keyfile):
        try:
            path.read_bytes()
        except OSError as exc:
            raise errors.ConfigurationError(
                f"cannot read TLS file {path}: {exc.strerror or exc}"
            ) from None
    try:
        # The password callback keeps OpenSSL from prompting on the terminal
        # for an encrypted key; such a key then fails here instead.
        context.load_cert_chain(files.certfile, files.keyfile, password=lambda: b"")
    except ssl.SSLError as exc:
        reason = (
            "the private key does not belong to the certificate"
            if "KEY_VALUES_MISMATCH" in str(exc)
            else "not a PEM certificate and unencrypted PEM private key"
        )
        raise errors.ConfigurationError(
            f"TLS files {files.certfile} and {files.keyfile} are unusable: {reason} ({exc})"
        ) from None
    return context


# --- security headers (SEC-11) ------------------------------------------------------

HSTS = b"max-age=31536000; includeSubDomains"
# JSON never needs to load, run, frame or submit anything.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SWAGGER_ORIGIN = "https://cdn.jsdelivr.net"
FAVICON_ORIGIN = "https://fastapi.tiangolo.com"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def security_headers(*, https: bool) -> tuple[tuple[bytes, bytes], ...]:
    """Headers every response carries unless the route set its own.

    ``Cache-Control: no-store`` goes on every answer, not only ``/v1``: balances,
    payments and personal data must not stay in a browser or proxy cache, and
    nothing the API serves is worth caching. HSTS only over TLS (a browser
    ignores it over plain HTTP anyway).

    >>> dict(security_headers(https=False))[b"x-frame-options"]
    b'DENY'
    >>> b"strict-transport-security" in dict(security_headers(https=False))
    False
    """
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-security-policy", API_CSP.encode()),
        (b"cache-control", b"no-store"),
        (b"cross-origin-resource-policy", b"same-origin"),
    ]
    if https:
        headers.append((b"strict-transport-security", HSTS))
    return tuple(headers)


def docs_content_security_policy(html: str) -> str:
    """The policy of the interactive ``/docs`` page (Swagger UI): its script and
    stylesheet from the CDN, its one inline start-up script by hash (no
    ``'unsafe-inline'`` for scripts), inline styles (Swagger UI sets them from
    script), SVG icons as ``data:`` images, requests to this origin only.

    >>> policy = docs_content_security_policy("<script>go()</script>")
    >>> "'sha256-" in policy and "'unsafe-inline'" in policy.split("style-src")[1]
    True
    """
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'none'; script-src {SWAGGER_ORIGIN} {hashes}; "
        f"style-src {SWAGGER_ORIGIN} 'unsafe-inline'; img-src 'self' data: {FAVICON_ORIGIN}; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


# --- rate limiting (SEC-11) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """A token bucket: ``burst`` requests at once, refilled at ``per_minute``."""

    per_minute: int
    burst: int

    def __post_init__(self) -> None:
        if self.per_minute < 1 or self.burst < 1:
            raise ValueError("a rate policy needs per_minute >= 1 and burst >= 1")

    @property
    def per_second(self) -> float:
        return self.per_minute / 60


@dataclass(frozen=True, slots=True)
class Bucket:
    """A client's tokens left at instant ``at`` (seconds)."""

    tokens: float
    at: float


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int
    """Whole seconds until the next request would be allowed (0 if allowed now)."""
    reset: int
    """Whole seconds until the bucket is full again."""

    def headers(self) -> list[tuple[bytes, bytes]]:
        """``RateLimit-*`` fields (IETF draft-ietf-httpapi-ratelimit-headers)."""
        return [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset).encode()),
        ]


def refill(policy: RatePolicy, bucket: Bucket | None, now: float) -> float:
    """Tokens in the bucket at ``now``; an unknown client starts full. A clock
    that went backwards (another server's) refills nothing."""
    if bucket is None:
        return float(policy.burst)
    elapsed = max(0.0, now - bucket.at)
    return min(float(policy.burst), bucket.tokens + elapsed * policy.per_second)


def verdict(policy: RatePolicy, tokens_before: float, allowed: bool) -> Verdict:
    """What a client is told, given the tokens it had before this request."""
    left = tokens_before - 1 if allowed else tokens_before
    rate = policy.per_second
    return Verdict(
        allowed=allowed,
        limit=policy.burst,
        remaining=max(0, math.floor(left)),
        retry_after=0 if allowed else max(1, math.ceil((1 - left) / rate)),
        reset=max(0, math.ceil((policy.burst - left) / rate)),
    )


def take(policy: RatePolicy, bucket: Bucket | None, now: float) -> tuple[Bucket, Verdict]:
    """Spend one token if there is one: the bucket to keep and the verdict.

    >>> policy = RatePolicy(per_minute=60, burst=2)
    >>> bucket, v = take(policy, None, now=0.0)
    >>> bucket, v = take(policy, bucket, now=0.0)
    >>> v.allowed, v.remaining
    (True, 0)
    >>> bucket, v = take(policy, bucket, now=0.5)
    >>> v.allowed, v.retry_after
    (False, 1)
    >>> take(policy, bucket, now=1.0)[1].allowed
    True
    """
    tokens = refill(policy, bucket, now)
    allowed = tokens >= 1
    kept = Bucket(tokens - 1 if allowed else tokens, max(now, bucket.at) if bucket else now)
    return kept, verdict(policy, tokens, allowed)


def client_key(scope: Mapping[str, Any]) -> str:
    """Whom a request is counted against: a hash of its bearer token (never the
    token itself: limiter keys may sit in Redis), else its address.

    >>> client_key({"headers": [(b"authorization", b"Bearer tbk_x")], "client": ("10.0.0.1", 5)})
    't:9d4c72f9f6719daa6c812c1dc081df85'
    >>> client_key({"headers": [], "client": ("10.0.0.1", 5)})
    'a:10.0.0.1'
    """
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return "t:" + hashlib.sha256(token.strip()).hexdigest()[:32]
            break
    client = scope.get("client")
    return "a:" + (client[0] if client else "unknown")


class RateLimiter(Protocol):
    policy: RatePolicy

    async def take(self, client: str) -> Verdict: ...

    async def aclose(self) -> None: ...


class InProcessRateLimiter:
    """Buckets in this process's memory: each worker counts on its own, so with
    ``n`` workers a client may get up to ``n`` times the rate."""

    # Beyond this many clients, full buckets (equivalent to none) are forgotten;
    # if that is not enough, the least recently seen half.
    MAX_CLIENTS = 100_000

    def __init__(self, policy: RatePolicy, *, now: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._now = now
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def take_now(self, client: str) -> Verdict:
        with self._lock:
            now = self._now()
            bucket, result = take(self.policy, self._buckets.get(client), now)
            self._buckets[client] = bucket
            if len(self._buckets) > self.MAX_CLIENTS:
                self._forget(now)
            return result

    async def take(self, client: str) -> Verdict:
        return self.take_now(client)

    def _forget(self, now: float) -> None:
        full = float(self.policy.burst)
        self._buckets = {
            k: b for k, b in self._buckets.items() if refill(self.policy, b, now) < full
        }
        if len(self._buckets) > self.MAX_CLIENTS // 2:
            recent = sorted(self._buckets.items(), key=lambda kv: kv[1].at)
            self._buckets = dict(recent[len(recent) // 2 :])

    async def aclose(self) -> None:
        return None


# KEYS[1]: the client's bucket; ARGV: tokens per second, burst, now (seconds).
# The same arithmetic as `take`, done atomically inside Redis so that concurrent
# requests from every worker and server spend one shared bucket.
_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(saved[1])
local at = tonumber(saved[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
local left = tokens
if tokens >= 1 then
  allowed = 1
  left = tokens - 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', left),
           'at', string.format('%.6f', math.max(at, now)))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - left) / rate * 1000) + 1000)
return {allowed, string.format('%.6f', tokens)}
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every worker and server using the same Redis
    and ``prefix``. Time is the wall clock (``time.time``), which servers share.

    If Redis cannot be reached, requests are counted by an in-process limiter
    for :attr:`OUTAGE_SECONDS` before Redis is tried again: a Redis outage
    weakens the limit to per-process, it does not stop payments.
    """

    OUTAGE_SECONDS = 5.0
    TIMEOUT_SECONDS = 0.1

    def __init__(
        self,
        policy: RatePolicy,
        url: str,
        *,
        prefix: str = "tongbao:ratelimit:",
        now: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.url = url
        self.prefix = prefix
        self._now = now
        self._fallback = InProcessRateLimiter(policy, now=time.monotonic)
        self._clients: dict[asyncio.AbstractEventLoop, tuple[Redis, AsyncScript]] = {}
        self._down_until = 0.0

    def _script(self) -> AsyncScript:
        # A redis.asyncio connection belongs to the event loop that opened it;
        # tests (and some servers) run more than one loop over the app's life.
        loop = asyncio.get_running_loop()
        known = self._clients.get(loop)
        if known is None:
            from redis.asyncio import Redis  # noqa: PLC0415 - only when configured

            client = Redis.from_url(
                self.url,
                socket_timeout=self.TIMEOUT_SECONDS,
                socket_connect_timeout=self.TIMEOUT_SECONDS,
            )
            known = (client, client.register_script(_BUCKET_LUA))
            self._clients = {lp: c for lp, c in self._clients.items() if not lp.is_closed()}
            self._clients[loop] = known
        return known[1]

    async def take(self, client: str) -> Verdict:
        from redis.exceptions import RedisError  # noqa: PLC0415

        if time.monotonic() < self._down_until:
            return self._fallback.take_now(client)
        script = self._script()
        try:
            # EVALSHA: the script is sent once per connection pool, not per request.
            allowed, tokens = await script(
                keys=[self.prefix + client],
                args=[repr(self.policy.per_second), self.policy.burst, f"{self._now():.6f}"],
            )
        except (RedisError, OSError, TimeoutError) as exc:
            import structlog  # noqa: PLC0415 - see the imports above

            self._down_until = time.monotonic() + self.OUTAGE_SECONDS
            structlog.get_logger(__name__).warning("rate_limit_redis_unavailable", error=str(exc))
            return self._fallback.take_now(client)
        return verdict(self.policy, float(tokens), bool(int(allowed)))

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        known = self._clients.pop(loop, None)
        if known is not None:
            await known[0].aclose()


def rate_limiter_for(settings: Settings) -> RateLimiter:
    """The limiter the settings ask for: shared through Redis with ``redis_url``."""
    policy = RatePolicy(settings.rate_limit_per_minute, settings.rate_limit_burst)
    if settings.redis_url:
        return RedisRateLimiter(policy, settings.redis_url)
    return InProcessRateLimiter(policy)
