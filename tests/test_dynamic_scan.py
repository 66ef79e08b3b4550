"""SEC-10 dynamic scanning: schemathesis generates requests from the app's own
OpenAPI document (valid ones and deliberately invalid ones) and sends them to
the app in-process (ASGI), as a demo customer and as staff of several roles.

Every answer must be no server error (5xx), conform to the documented status
codes, content types and response schemas, reject invalid data with a 4xx,
and every refusal must be an ``application/problem+json`` problem with a
stable ``code``. Deterministic (derandomised) and bounded: a few examples per
operation and mode.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CheckContext
from schemathesis.core.failures import FailureGroup
from schemathesis.core.transport import Response
from schemathesis.generation.case import Case

from tongbao import demo
from tongbao.api.app import create_app
from tongbao.platform import Platform

from .api_helpers import PROBLEM, bearer, database_url, seeded_template  # noqa: F401 - fixtures: demo data
from .staff_helpers import staff_session

EXAMPLES = 8
"""Examples per operation and generation mode (positive, negative)."""

# Staff whose roles together reach every staff route without breaking SEC-5.
STAFF_ROLES = (
    ["administrator", "compliance_officer", "customer_service"],
    ["operator"],
    ["reviewer"],
    ["auditor"],
)


@schemathesis.check
def problem_json_on_errors(ctx: CheckContext, response: Response, case: Case) -> None:
    """Every 4xx/5xx answer is an RFC 9457 problem with a stable code."""
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type == PROBLEM, f"{response.status_code} answered as {content_type!r}"
    body = response.json()
    assert isinstance(body, dict) and body.get("status") == response.status_code, body
    assert isinstance(body.get("code"), str) and body["code"], body


CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
    problem_json_on_errors,
]


def scan(app: FastAPI, headers: dict[str, str], known: dict[str, str] | None = None) -> list[str]:
    """Failures found in every operation of ``app``'s OpenAPI document; path
    parameters named in ``known`` take those (real) values in valid requests,
    so the scan gets past "not found"."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        fixed = {k: v for k, v in (known or {}).items() if "{" + k + "}" in operation.path}
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed or None),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            run()
        except (Exception, FailureGroup) as exc:  # the group names each failure
            failures.append(f"{operation.label}: {exc}")
    assert operations > 0
    return failures


sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


@pytest.fixture
def app(platform: Platform) -> FastAPI:
    # The scan sends far more than a client would; the rate limit is tested elsewhere.
    platform.settings.rate_limit_per_minute = 1_000_000
    platform.settings.rate_limit_burst = 1_000_000
    return create_app(platform)


@sqlite_only
def test_the_api_survives_a_schema_driven_scan_as_a_customer(
    app: FastAPI, platform: Platform
) -> None:
    """SEC-10: no 5xx, answers as documented, problem+json refusals, for a customer."""
    seeded = demo.seed(platform)  # already there: looks the demo customers up
    zhang = seeded[0]
    known = {"account_id": zhang.customer.account_id, "card_id": zhang.card_id or "card_x"}
    assert scan(app, bearer(zhang.demo.token), known) == []


@sqlite_only
@pytest.mark.parametrize("roles", STAFF_ROLES, ids="+".join)
def test_the_api_survives_a_schema_driven_scan_as_staff(
    app: FastAPI, platform: Platform, roles: list[str]
) -> None:
    """SEC-10: the same scan with a staff session (SEC-4 roles decide what it reaches)."""
    assert scan(app, bearer(staff_session(platform, roles))) == []


def test_the_scan_reports_server_errors_and_non_problem_refusals() -> None:
    """The scan is no formality: a route that crashes, and one that refuses
    with plain JSON, are both reported."""
    broken = FastAPI()

    @broken.get("/crash")
    def crash() -> dict[str, Any]:
        raise RuntimeError("a defect")

    @broken.get("/plain")
    def plain() -> Any:
        from fastapi.responses import JSONResponse  # noqa: PLC0415

        return JSONResponse({"error": "no"}, status_code=409)

    failures = scan(broken, {})
    # In-process the crash surfaces as the exception itself (the real app's
    # middleware would answer 500 internal_error, which not_a_server_error flags).
    assert any(f.startswith("GET /crash: a defect") for f in failures), failures
    assert any(f.startswith("GET /plain") for f in failures), failures
