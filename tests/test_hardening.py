"""API hardening (SEC-11): security headers on every response, the request
size limit (413), per-client rate limiting (429) in-process and shared through
the real Redis at ``127.0.0.1:6379``."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from tongbao.api.app import create_app
from tongbao.api.hardening import (
    InProcessRateLimiter,
    RatePolicy,
    RedisRateLimiter,
    rate_limiter_for,
    take,
)
from tongbao.api.middleware import BodySizeLimit, RateLimit, RequestContext, SecurityHeaders
from tongbao.clock import ManualClock
from tongbao.config import Settings
from tongbao.platform import Platform

from .api_helpers import assert_problem, bearer, new_customer, new_key, row_counts
from .conftest import IN_CI

MAX_BYTES = 4_096
BURST = 5
REDIS_URL = os.environ.get("TONGBAO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"max_request_bytes": MAX_BYTES, "rate_limit_per_minute": 60, "rate_limit_burst": 5}
    )


def seconds(clock: ManualClock) -> Any:
    """The limiter's time source, driven by the test's manual clock."""
    return lambda: clock.now().timestamp()


def policy(settings: Settings) -> RatePolicy:
    return RatePolicy(settings.rate_limit_per_minute, settings.rate_limit_burst)


@pytest.fixture
def client(platform: Platform, clock: ManualClock) -> Iterator[TestClient]:
    app = create_app(
        platform, rate_limiter=InProcessRateLimiter(policy(platform.settings), now=seconds(clock))
    )
    with TestClient(app) as client:
        yield client


@pytest.fixture
def token(platform: Platform) -> str:
    return new_customer(platform, "王五")[1]


# --- security headers ----------------------------------------------------------------

BASELINE = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def assert_hardened(response: Any) -> None:
    for name, value in BASELINE.items():
        assert response.headers.get(name) == value, (name, response.headers)
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_every_response_carries_the_security_headers(client: TestClient, token: str) -> None:
    """SEC-11: answers with money or personal data are never cached, framed or
    sniffed — successes, refusals and the health check alike; no HSTS over plain HTTP."""
    responses = [
        client.get("/v1/accounts", headers=bearer(token)),
        client.get("/v1/accounts"),  # 401
        client.post("/v1/payments", headers=bearer(token)),  # no body
        client.get("/v1/nothing-here", headers=bearer(token)),
        client.get("/healthz"),
        client.get("/openapi.json"),
    ]
    assert [r.status_code for r in responses] == [200, 401, 422, 404, 200, 200]
    for response in responses:
        assert_hardened(response)
        assert "strict-transport-security" not in response.headers
    assert responses[0].headers["content-security-policy"].startswith("default-src 'none'")


def test_hsts_is_sent_over_https(platform: Platform) -> None:
    """SEC-2/SEC-11: over TLS browsers are told to use nothing else for a year."""
    with TestClient(create_app(platform), base_url="https://testserver") as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    hsts = response.headers["strict-transport-security"]
    assert re.fullmatch(r"max-age=(\d+); includeSubDomains", hsts)
    assert int(hsts.split("=")[1].split(";")[0]) >= 31_536_000
    assert_hardened(response)


def directive(policy: str, name: str) -> list[str]:
    for part in policy.split(";"):
        words = part.split()
        if words and words[0] == name:
            return words[1:]
    raise AssertionError(f"{name} missing from {policy!r}")


def origin(url: str) -> str:
    match = re.match(r"https?://[^/]+", url)
    return match.group(0) if match else "'self'"


def test_docs_page_policy_lets_exactly_swagger_ui_run(client: TestClient) -> None:
    """SEC-11: /docs keeps working under its own Content-Security-Policy: each
    script and stylesheet it loads is allowed by origin, its inline start-up
    script by hash — no inline script or eval otherwise; it cannot be framed."""
    response = client.get("/docs")
    assert response.status_code == 200
    html = response.text
    csp = response.headers["content-security-policy"]
    scripts, styles = directive(csp, "script-src"), directive(csp, "style-src")
    assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts
    sources = re.findall(r'<script src="([^"]+)"', html)
    inline = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    assert sources and inline
    for url in sources:
        assert origin(url) in scripts, (url, csp)
    for body in inline:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in scripts
    for url in re.findall(r'<link type="text/css" rel="stylesheet" href="([^"]+)"', html):
        assert origin(url) in styles
    assert directive(csp, "connect-src") == ["'self'"]  # "Try it out" calls this API only
    assert directive(csp, "frame-ancestors") == ["'none'"]
    assert response.headers["x-frame-options"] == "DENY"
    # The pages that would need a wider policy are not served.
    assert client.get("/redoc").status_code == 404
    assert client.get("/docs/oauth2-redirect").status_code == 404


# --- request size limit ------------------------------------------------------------------


def too_big_transfer() -> dict[str, str]:
    return {
        "kind": "transfer",
        "amount": "1.00",
        "payee_account_id": "acct_01M846D3CMEM69G2SRGYKQ6M1A",
        "payee_name": "李" * MAX_BYTES,
    }


def test_oversized_body_is_refused_with_413_and_changes_nothing(
    client: TestClient, platform: Platform, token: str
) -> None:
    """SEC-11: a body above TONGBAO_MAX_REQUEST_BYTES gets 413 problem+json,
    whether it declares its length or streams in chunks, and writes nothing."""
    before = row_counts(platform)
    key = new_key()
    declared = client.post(
        "/v1/payments", json=too_big_transfer(), headers={**bearer(token), "Idempotency-Key": key}
    )
    body = assert_problem(declared, 413, "payload_too_large")
    assert body["max_bytes"] == MAX_BYTES
    assert_hardened(declared)

    payload = repr(too_big_transfer()).encode()
    chunked = client.post(
        "/v1/payments",
        content=iter([payload[i : i + 1000] for i in range(0, len(payload), 1000)]),
        headers={**bearer(token), "Idempotency-Key": key, "Content-Type": "application/json"},
    )
    assert chunked.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in chunked.request.headers
    assert_problem(chunked, 413, "payload_too_large")
    assert row_counts(platform) == before


def echo_app(max_bytes: int = 1_024) -> tuple[FastAPI, list[int]]:
    """A route that records every body it receives, behind the size limit."""
    app = FastAPI()
    received: list[int] = []

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        body = await request.body()
        received.append(len(body))
        return {"bytes": len(body), "checksum": sum(body) % 65_521}

    app.add_middleware(BodySizeLimit, max_bytes=max_bytes)
    app.add_middleware(RequestContext)
    return app, received


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_route_never_sees_an_oversized_body(chunked: bool) -> None:
    """SEC-11: the limit is enforced before the route runs; a body of exactly
    the limit, chunked or not, reaches the route whole."""
    app, received = echo_app(1_024)
    client = TestClient(app)

    def send(size: int) -> Any:
        data = bytes(i % 251 for i in range(size))
        content: Any = iter([data[i : i + 100] for i in range(0, size, 100)]) if chunked else data
        return client.post("/echo", content=content), data

    refused, _ = send(1_025)
    assert_problem(refused, 413, "payload_too_large")
    assert refused.headers["connection"] == "close"
    assert received == []
    accepted, data = send(1_024)
    assert accepted.status_code == 200
    assert accepted.json() == {"bytes": 1_024, "checksum": sum(data) % 65_521}
    assert received == [1_024]


# --- rate limiting -----------------------------------------------------------------------------


def test_rate_limit_refuses_with_429_then_recovers(
    client: TestClient, platform: Platform, clock: ManualClock, token: str
) -> None:
    """SEC-11: a client gets TONGBAO_RATE_LIMIT_BURST requests at once, then 429
    problem+json with Retry-After and RateLimit headers, touching nothing; once
    Retry-After has passed it is served again."""
    remaining = []
    for _ in range(BURST):
        response = client.get("/v1/accounts", headers=bearer(token))
        assert response.status_code == 200, response.text
        assert response.headers["ratelimit-limit"] == str(BURST)
        remaining.append(int(response.headers["ratelimit-remaining"]))
    assert remaining == [4, 3, 2, 1, 0]

    before = row_counts(platform)
    refused = client.post(
        "/v1/payments",
        json={"kind": "transfer", "amount": "1.00", "payee_account_id": "acct_x"},
        headers={**bearer(token), "Idempotency-Key": new_key()},
    )
    body = assert_problem(refused, 429, "rate_limited")
    assert refused.headers["retry-after"] == "1"  # 60 per minute: one more each second
    assert body["retry_after"] == 1
    assert refused.headers["ratelimit-remaining"] == "0"
    assert int(refused.headers["ratelimit-reset"]) == BURST
    assert_hardened(refused)
    assert row_counts(platform) == before

    clock.advance(timedelta(milliseconds=500))
    assert client.get("/v1/accounts", headers=bearer(token)).status_code == 429
    clock.advance(timedelta(milliseconds=500))
    assert client.get("/v1/accounts", headers=bearer(token)).status_code == 200
    assert client.get("/v1/accounts", headers=bearer(token)).status_code == 429
    clock.advance(timedelta(minutes=1))
    for _ in range(BURST):  # a full burst again, never more
        assert client.get("/v1/accounts", headers=bearer(token)).status_code == 200
    assert client.get("/v1/accounts", headers=bearer(token)).status_code == 429


def test_rate_limit_counts_each_client_apart_and_spares_the_health_check(
    client: TestClient, platform: Platform, token: str
) -> None:
    """SEC-11: one client's burst does not limit another token or anonymous
    callers (counted by address); the health check is never limited."""
    other = new_customer(platform, "赵六")[1]
    for _ in range(BURST):
        client.get("/v1/accounts", headers=bearer(token))
    assert client.get("/v1/accounts", headers=bearer(token)).status_code == 429
    assert client.get("/v1/accounts", headers=bearer(other)).status_code == 200
    assert client.get("/v1/accounts").status_code == 401  # by address, own bucket
    for _ in range(3 * BURST):
        health = client.get("/healthz")
        assert health.status_code == 200
        assert "ratelimit-limit" not in health.headers


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_settings_choose_the_limit(platform: Platform) -> None:
    """SEC-11: without an injected limiter the app limits by the settings."""
    platform.settings = platform.settings.model_copy(update={"rate_limit_per_minute": 1})
    with TestClient(create_app(platform)) as client:
        codes = [client.get("/v1/accounts").status_code for _ in range(BURST + 1)]
    assert codes == [401] * BURST + [429]
    shared = platform.settings.model_copy(update={"redis_url": REDIS_URL})
    assert isinstance(rate_limiter_for(shared), RedisRateLimiter)
    assert isinstance(rate_limiter_for(platform.settings), InProcessRateLimiter)


# --- shared limiter in Redis -------------------------------------------------------------------


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the real Redis; removed afterwards."""
    connection = redis.Redis.from_url(REDIS_URL)
    try:
        connection.ping()
    except redis.RedisError as exc:
        if IN_CI:
            pytest.fail(f"Redis unreachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc}")
    prefix = f"tongbao-test:{uuid.uuid4().hex}:"
    yield prefix
    for key in connection.scan_iter(match=prefix + "*"):
        connection.delete(key)
    connection.close()


def tiny_app(limiter: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "ok"}

    app.add_middleware(RateLimit, limiter=limiter)
    app.add_middleware(RequestContext)
    app.add_middleware(SecurityHeaders)
    return app


def test_redis_limiter_is_shared_between_app_instances(
    platform: Platform, clock: ManualClock, redis_prefix: str, token: str
) -> None:
    """SEC-11: with TONGBAO_REDIS_URL every worker and server spends one bucket
    per client: two app instances together allow one burst, not two."""
    limiters = [
        RedisRateLimiter(
            policy(platform.settings), REDIS_URL, prefix=redis_prefix, now=seconds(clock)
        )
        for _ in range(2)
    ]
    with (
        TestClient(create_app(platform, rate_limiter=limiters[0])) as first,
        TestClient(create_app(platform, rate_limiter=limiters[1])) as second,
    ):
        codes = [
            (first if i % 2 else second).get("/v1/accounts", headers=bearer(token)).status_code
            for i in range(BURST + 2)
        ]
        assert codes == [200] * BURST + [429, 429]
        refused = first.get("/v1/accounts", headers=bearer(token))
        assert_problem(refused, 429, "rate_limited")
        assert refused.headers["retry-after"] == "1"
        clock.advance(timedelta(seconds=1))
        assert second.get("/v1/accounts", headers=bearer(token)).status_code == 200
        assert first.get("/v1/accounts", headers=bearer(token)).status_code == 429
    keys = redis.Redis.from_url(REDIS_URL).keys(redis_prefix + "*")
    assert len(keys) == 1
    assert token.encode() not in keys[0]  # a hash of the token, never the token


def test_redis_limiter_decides_exactly_like_the_in_process_one(
    clock: ManualClock, redis_prefix: str
) -> None:
    """SEC-11: the Lua token bucket in Redis and :func:`take` agree on every
    verdict (allowed, remaining, Retry-After, reset) and on the tokens left,
    over a run of requests."""
    rule = RatePolicy(per_minute=120, burst=4)
    limiter = RedisRateLimiter(rule, REDIS_URL, prefix=redis_prefix, now=seconds(clock))
    steps = [0, 0, 0, 0, 0, 0.125, 0.25, 0.5, 0, 0, 0, 1.5, 0, 0, 0.375, 10, 0, 0, 0, 0, 0, 0]
    store = redis.Redis.from_url(REDIS_URL)
    bucket = None
    verdicts, answers = [], []
    with TestClient(tiny_app(limiter)) as client:
        for step in steps:
            clock.advance(timedelta(seconds=step))
            bucket, verdict = take(rule, bucket, clock.now().timestamp())
            status = 200 if verdict.allowed else 429
            verdicts.append((status, verdict.remaining, verdict.retry_after, verdict.reset))
            response = client.get("/ping")
            answers.append(
                (
                    response.status_code,
                    int(response.headers["ratelimit-remaining"]),
                    int(response.headers.get("retry-after", 0)),
                    int(response.headers["ratelimit-reset"]),
                )
            )
            [key] = store.keys(redis_prefix + "*")
            assert float(store.hget(key, "tokens") or -1) == pytest.approx(bucket.tokens, abs=1e-5)
    store.close()
    assert answers == verdicts
    assert {code for code, *_ in answers} == {200, 429}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_redis_outage_falls_back_to_counting_in_process(clock: ManualClock) -> None:
    """SEC-11: if Redis is unreachable payments go on, still limited per process."""
    rule = RatePolicy(per_minute=1, burst=3)
    limiter = RedisRateLimiter(rule, f"redis://127.0.0.1:{closed_port()}/0", now=seconds(clock))
    with TestClient(tiny_app(limiter)) as client:
        codes = [client.get("/ping").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
