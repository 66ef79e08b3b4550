"""Helpers shared by the HTTP API tests: a small client wrapper, row counts,
customers and bank cards of the tests' own."""

from __future__ import annotations

import io
import logging
import random
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from fastapi.testclient import TestClient
from sqlalchemy import Connection, func, make_url, select
from stdnum import luhn

from tongbao import demo
from tongbao.auth import PrincipalType
from tongbao.clock import ManualClock
from tongbao.config import Settings
from tongbao.customers import Customer, CustomerKind
from tongbao.logs import configure_logging
from tongbao.platform import SIMULATED_BANK, Platform
from tongbao.storage.tables import metadata

from .conftest import START, TEST_MASTER_KEY

PROBLEM = "application/problem+json"
TYPE_BASE = "https://tongbao.dev/problems/"
# Where a refused request must leave no trace.
WRITTEN_TABLES = ("payment_orders", "ledger_entries", "idempotency_keys", "notification_outbox")
CARD_EXPIRES = date(2030, 12, 31)


def new_key() -> str:
    return str(uuid.uuid4())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Api:
    """One caller of the API: a test client and that caller's token."""

    client: TestClient
    token: str

    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        headers = bearer(self.token)
        if key is not None:
            headers["Idempotency-Key"] = key
        headers.update(extra)
        return headers

    def get(self, path: str, **params: Any) -> httpx.Response:
        response: httpx.Response = self.client.get(
            path, headers=self.headers(), params=params or None
        )
        return response

    def post(
        self, path: str, body: Any = None, *, key: str | None = "auto", **extra: str
    ) -> httpx.Response:
        """POST with a fresh Idempotency-Key unless ``key`` says otherwise (None: no key)."""
        chosen = new_key() if key == "auto" else key
        response: httpx.Response = self.client.post(
            path, headers=self.headers(chosen, **extra), json=body
        )
        return response

    def delete(self, path: str, *, key: str | None = "auto") -> httpx.Response:
        chosen = new_key() if key == "auto" else key
        response: httpx.Response = self.client.delete(path, headers=self.headers(chosen))
        return response

    def ok(self, response: httpx.Response, status: int = 200) -> Any:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json")
        return response.json()


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An RFC 9457 problem with the stable ``code`` and the request's id."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM, response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["type"] == TYPE_BASE + code
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"], body
    return body


def row_counts(platform: Platform, tables: tuple[str, ...] = WRITTEN_TABLES) -> dict[str, int]:
    def count(conn: Connection) -> dict[str, int]:
        return {
            name: conn.execute(select(func.count()).select_from(metadata.tables[name])).scalar_one()
            for name in tables
        }

    return platform.db.read(count)


def available(platform: Platform, account_id: str) -> int:
    """Available balance in fen."""
    return platform.db.read(lambda conn: platform.ledger.balance(conn, account_id)).available


def new_customer(
    platform: Platform, name: str, kind: CustomerKind = CustomerKind.PERSON
) -> tuple[Customer, str]:
    def create(conn: Connection) -> tuple[Customer, str]:
        customer = platform.customers.register(
            conn,
            kind=kind,
            name=name,
            phone="13700137000",
            policy_version=platform.settings.privacy_policy_version,
        )
        token = platform.auth.issue_token(conn, PrincipalType.CUSTOMER, customer.id, label="test")
        return customer, token

    return platform.db.run(create)


def card_number(prefix: str = "622202") -> str:
    """A fresh Luhn-valid 19-digit UnionPay-style number."""
    body = prefix + "".join(random.choices("0123456789", k=18 - len(prefix)))
    return body + luhn.calc_check_digit(body)


def open_bank_card(platform: Platform, holder: str, phone: str, balance_fen: int) -> str:
    """A card at the simulated bank (not yet bound); returns its number."""
    number = card_number()
    platform.simulated_bank().open_card(
        card_number=number,
        holder_name=holder,
        phone=phone,
        balance=balance_fen,
        expires_on=CARD_EXPIRES,
    )
    return number


def bind_body(number: str, holder: str, phone: str) -> dict[str, str]:
    return {
        "bank_code": SIMULATED_BANK,
        "card_number": number,
        "holder_name": holder,
        "phone": phone,
        "expires": CARD_EXPIRES.strftime("%Y-%m"),
    }


def deliver(platform: Platform) -> None:
    """Deliver the notification outbox (what the background loop does)."""
    platform.notifications.dispatch(platform.db)


def latest_code(api: Api, platform: Platform) -> str:
    """The one-time code of the newest verification SMS sent to the caller."""
    deliver(platform)
    messages = api.ok(api.get("/v1/notifications"))["data"]
    texts = [m["text"] for m in messages if m["kind"] == "verification_code"]
    assert texts, messages
    match = re.search(r"验证码(\d{6})", texts[0])
    assert match, texts[0]
    return match.group(1)


def seed_template(migrated: Path, directory: Path) -> Path:
    """A copy of the migrated SQLite template holding the demo data, seeded
    once (as the ``platform`` fixture would: same clock start, same settings)."""
    path = directory / "seeded.db"
    shutil.copy(migrated, path)
    settings = Settings(
        _env_file=None,
        env="test",
        database_url=f"sqlite:///{path}",
        internal_account_buckets=4,
        sim_bank_settlement_delay_seconds=60,
        master_key=TEST_MASTER_KEY,
    )
    platform = Platform(settings, clock=ManualClock(START)).start()
    try:
        demo.seed(platform)
    finally:
        platform.close()
    assert not path.with_name(path.name + "-wal").exists()
    return path


def use_template(database_url: str, template: Path) -> None:
    """Replace the test's (not yet opened) SQLite file with ``template``."""
    database = make_url(database_url).database
    assert database
    shutil.copy(template, database)


@contextmanager
def captured_logs(level: str) -> Iterator[io.StringIO]:
    """The platform's JSON logging at ``level`` into a buffer; logging restored after."""
    root = logging.getLogger()
    handlers, old_level = root.handlers[:], root.level
    config = structlog.get_config()
    configure_logging(level, json=True)
    # Module loggers cached now would keep this configuration for later tests.
    structlog.configure(cache_logger_on_first_use=False)
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = handlers
        root.setLevel(old_level)
        structlog.configure(**config)


@pytest.fixture(scope="module")
def seeded_template(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seed_template(sqlite_template, tmp_path_factory.mktemp("seeded"))


@pytest.fixture
def database_url(database_url: str, backend: str, request: pytest.FixtureRequest) -> str:
    """The test database; on SQLite it already holds the demo data (seeded once
    per module and copied, which is much faster than seeding every test).
    Import it (and ``seeded_template``) into a test module to use it there."""
    if backend == "sqlite":
        use_template(database_url, request.getfixturevalue("seeded_template"))
    return database_url
