"""Idempotency-Key through the HTTP API, on both engines: a retried request has
exactly one effect — replayed, concurrent, refused or interrupted between the
two phases of a bank payment."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, select

from tongbao import demo
from tongbao.api import present
from tongbao.api.app import create_app
from tongbao.clock import ManualClock
from tongbao.idempotency import request_hash
from tongbao.idempotency.tables import idempotency_keys
from tongbao.payments import PaymentKind, PaymentRequest
from tongbao.platform import Platform

from .api_helpers import (
    Api,
    assert_problem,
    available,
    bind_body,
    new_customer,
    new_key,
    open_bank_card,
    row_counts,
    seed_template,
    use_template,
)

THREADS = 8


@pytest.fixture(scope="module")
def seeded_template(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seed_template(sqlite_template, tmp_path_factory.mktemp("seeded"))


@pytest.fixture
def database_url(database_url: str, backend: str, request: pytest.FixtureRequest) -> str:
    """The test database; on SQLite it already holds the demo data (seeded once
    per module and copied, which is much faster than seeding every test)."""
    if backend == "sqlite":
        use_template(database_url, request.getfixturevalue("seeded_template"))
    return database_url


@pytest.fixture
def client(platform: Platform) -> TestClient:
    return TestClient(create_app(platform))


@pytest.fixture
def seeded(platform: Platform) -> list[demo.SeededCustomer]:
    return demo.seed(platform)


@pytest.fixture
def zhang(client: TestClient, seeded: list[demo.SeededCustomer]) -> Api:
    return Api(client, seeded[0].demo.token)


@pytest.fixture
def accounts(seeded: list[demo.SeededCustomer]) -> tuple[str, str]:
    return seeded[0].customer.account_id, seeded[1].customer.account_id


def to_li(li_account: str, amount: str, **extra: Any) -> bytes:
    """The exact bytes of a transfer request (the fingerprint is over the bytes)."""
    body = {
        "kind": "transfer",
        "amount": amount,
        "payee_account_id": li_account,
        "payee_name": "李四",
        "confirm": True,
    }
    body.update(extra)
    return json.dumps(body).encode()


def send(api: Api, path: str, raw: bytes, key: str) -> httpx.Response:
    headers = api.headers(key, **{"Content-Type": "application/json"})
    response: httpx.Response = api.client.post(path, content=raw, headers=headers)
    return response


def keys_stored(platform: Platform) -> int:
    return row_counts(platform, ("idempotency_keys",))["idempotency_keys"]


def test_same_key_same_body_replays_and_moves_money_once(
    platform: Platform, zhang: Api, accounts: tuple[str, str]
) -> None:
    payer, payee = accounts
    before = available(platform, payer), available(platform, payee)
    raw, key = to_li(payee, "12.34"), new_key()

    first = send(zhang, "/v1/payments", raw, key)
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    for _ in range(2):
        again = send(zhang, "/v1/payments", raw, key)
        assert again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        assert again.content == first.content
    assert available(platform, payer) == before[0] - 1234
    assert available(platform, payee) == before[1] + 1234
    payments = zhang.ok(zhang.get("/v1/payments", kind="transfer"))["data"]
    assert [p["id"] for p in payments] == [first.json()["id"]]


def test_confirm_retried_with_its_key_is_a_replay_not_a_conflict(
    platform: Platform, zhang: Api, accounts: tuple[str, str]
) -> None:
    payer, payee = accounts
    quote = zhang.ok(
        zhang.post("/v1/payments", json.loads(to_li(payee, "5.00", confirm=False))), 201
    )
    before = available(platform, payer)
    key = new_key()
    path = f"/v1/payments/{quote['id']}/confirm"
    first = send(zhang, path, b"", key)
    again = send(zhang, path, b"", key)
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json() and first.json()["state"] == "succeeded"
    assert available(platform, payer) == before - 500
    # Another key is another request: that one is refused, the payment stands.
    assert_problem(send(zhang, path, b"", new_key()), 409, "invalid_transition")


def test_bank_payments_and_card_binding_replay_without_a_second_bank_call(
    platform: Platform, client: TestClient, seeded: list[demo.SeededCustomer]
) -> None:
    customer, token = new_customer(platform, "赵六")
    api = Api(client, token)
    number = open_bank_card(platform, "赵六", "13700137000", 100_000)
    bind = json.dumps(bind_body(number, "赵六", "13700137000")).encode()
    key = new_key()
    card = send(api, "/v1/cards", bind, key)
    assert card.status_code == 201
    replay = send(api, "/v1/cards", bind, key)
    assert replay.status_code == 201 and replay.json() == card.json()
    assert replay.headers["idempotent-replayed"] == "true"
    assert [c["id"] for c in api.ok(api.get("/v1/cards"))["data"]] == [card.json()["id"]]

    bank = platform.simulated_bank()
    topup = json.dumps(
        {"kind": "topup", "amount": "300.00", "card_id": card.json()["id"], "confirm": True}
    ).encode()
    key = new_key()
    first = send(api, "/v1/payments", topup, key)
    again = send(api, "/v1/payments", topup, key)
    assert first.status_code == again.status_code == 201
    assert first.json()["state"] == "succeeded"
    assert again.json() == first.json()
    assert bank.card_balance(number) == 100_000 - 30_000
    assert available(platform, customer.account_id) == 30_000


def test_same_key_different_request_is_refused_and_moves_nothing(
    platform: Platform, zhang: Api, client: TestClient, accounts: tuple[str, str]
) -> None:
    payer, payee = accounts
    key = new_key()
    first = send(zhang, "/v1/payments", to_li(payee, "1.00"), key)
    assert first.status_code == 201
    before = row_counts(platform), available(platform, payer), available(platform, payee)

    body = assert_problem(
        send(zhang, "/v1/payments", to_li(payee, "2.00"), key), 422, "idempotency_key_reused"
    )
    assert key in body["detail"]
    # The same key on another endpoint is another request, too.
    path = f"/v1/payments/{first.json()['id']}/cancel"
    assert_problem(send(zhang, path, b"", key), 422, "idempotency_key_reused")
    assert (row_counts(platform), available(platform, payer), available(platform, payee)) == before

    # Keys belong to their caller: someone else may use the same one.
    li = Api(client, demo.DEMO_CUSTOMERS[1].token)
    back = json.dumps(
        {"kind": "transfer", "amount": "1.00", "payee_account_id": payer, "payee_name": "张三"}
    ).encode()
    assert send(li, "/v1/payments", back, key).status_code == 201


def test_a_refused_request_stores_no_key(
    platform: Platform, client: TestClient, accounts: tuple[str, str]
) -> None:
    _, payee = accounts
    customer, token = new_customer(platform, "赵六")
    api = Api(client, token)
    raw, key = to_li(payee, "50.00"), new_key()
    stored = keys_stored(platform)
    assert_problem(send(api, "/v1/payments", raw, key), 409, "insufficient_funds")
    assert_problem(send(api, "/v1/payments", raw, key), 409, "insufficient_funds")  # runs again
    assert keys_stored(platform) == stored

    number = open_bank_card(platform, "赵六", "13700137000", 100_000)
    card = api.ok(api.post("/v1/cards", bind_body(number, "赵六", "13700137000")), 201)
    topup = {"kind": "topup", "amount": "100.00", "card_id": card["id"], "confirm": True}
    api.ok(api.post("/v1/payments", topup), 201)

    paid = send(api, "/v1/payments", raw, key)
    assert paid.status_code == 201, paid.text
    assert paid.json()["state"] == "succeeded"
    assert "idempotent-replayed" not in paid.headers
    assert available(platform, customer.account_id) == 10_000 - 5_000


def test_concurrent_retries_through_the_api_pay_once(
    platform: Platform, zhang: Api, accounts: tuple[str, str]
) -> None:
    payer, payee = accounts
    before = available(platform, payer), available(platform, payee)
    orders = row_counts(platform, ("payment_orders",))["payment_orders"]
    raw, key = to_li(payee, "7.77"), new_key()
    start = threading.Barrier(THREADS)

    def attempt(_: int) -> httpx.Response:
        start.wait()
        return send(zhang, "/v1/payments", raw, key)

    with ThreadPoolExecutor(THREADS) as pool:
        responses = list(pool.map(attempt, range(THREADS)))

    assert [r.status_code for r in responses] == [201] * THREADS, [r.text for r in responses]
    assert len({r.content for r in responses}) == 1
    replayed = [r.headers.get("idempotent-replayed") for r in responses]
    assert replayed.count(None) == 1 and replayed.count("true") == THREADS - 1
    assert row_counts(platform, ("payment_orders",))["payment_orders"] == orders + 1
    assert available(platform, payer) == before[0] - 777
    assert available(platform, payee) == before[1] + 777


def test_concurrent_runs_of_one_key_execute_the_operation_once(
    platform: Platform, zhang: Api, seeded: list[demo.SeededCustomer], accounts: tuple[str, str]
) -> None:
    """Straight at the service, with an operation slow enough that every other
    request arrives while the first still holds its transaction open; then the
    API once more with the same key."""
    payer, payee = accounts
    customer = seeded[0].customer
    raw, key = to_li(payee, "3.21"), new_key()
    calls: list[int] = []
    lock = threading.Lock()

    def operation(conn: Connection) -> tuple[int, str]:
        with lock:
            calls.append(1)
        request = PaymentRequest(
            kind=PaymentKind.TRANSFER, amount=321, payee_account_id=payee, payee_name="李四"
        )
        order = platform.payments.pay(conn, customer, request)
        time.sleep(0.3)
        return 201, present.payment(platform, conn, order).model_dump_json()

    start = threading.Barrier(THREADS)

    def attempt(_: int) -> tuple[int, str, bool]:
        start.wait()
        outcome = platform.idempotency.run(
            principal_id=f"customer:{customer.id}",
            key=key,
            method="POST",
            path="/v1/payments",
            fingerprint=request_hash("POST", "/v1/payments", raw),
            operation=operation,
        )
        return outcome.status_code, outcome.body, outcome.replayed

    before = available(platform, payer)
    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(attempt, range(THREADS)))
    assert len(calls) == 1
    assert len({(status, body) for status, body, _ in outcomes}) == 1
    assert [replayed for _, _, replayed in outcomes].count(False) == 1
    assert available(platform, payer) == before - 321

    via_api = send(zhang, "/v1/payments", raw, key)
    assert via_api.status_code == 201
    assert via_api.headers["idempotent-replayed"] == "true"
    assert via_api.text == outcomes[0][1]
    assert len(calls) == 1


@pytest.mark.parametrize("background_first", [False, True], ids=["retry", "tick-then-retry"])
def test_crash_between_bank_phases_is_finished_by_the_retry(
    platform: Platform,
    clock: ManualClock,
    zhang: Api,
    seeded: list[demo.SeededCustomer],
    background_first: bool,
) -> None:
    """Phase one (the withdrawal and its key) commits, then the process dies
    before the bank is called. The client's retry with the same key calls the
    bank and completes the request; later retries get that final response."""
    customer, card_id = seeded[0].customer, seeded[0].card_id
    assert card_id
    bank = platform.simulated_bank()
    card_number = demo.DEMO_CUSTOMERS[0].card_number
    assert card_number
    card_before, wallet_before = (
        bank.card_balance(card_number),
        available(platform, customer.account_id),
    )
    raw = json.dumps(
        {"kind": "withdrawal", "amount": "100.00", "card_id": card_id, "confirm": True}
    ).encode()
    key = new_key()
    orders = row_counts(platform, ("payment_orders",))["payment_orders"]

    def phase_one(conn: Connection) -> tuple[int, str]:
        request = PaymentRequest(kind=PaymentKind.WITHDRAWAL, amount=10_000, card_id=card_id)
        order = platform.payments.pay(conn, customer, request)
        return 201, present.payment(platform, conn, order).model_dump_json()

    def process_dies(_: str) -> tuple[int, str]:
        raise RuntimeError("killed before the bank call")

    with pytest.raises(RuntimeError, match="killed"):
        platform.idempotency.run(
            principal_id=f"customer:{customer.id}",
            key=key,
            method="POST",
            path="/v1/payments",
            fingerprint=request_hash("POST", "/v1/payments", raw),
            operation=phase_one,
            complete=process_dies,
        )
    pending = _payments_of(platform, zhang)[0]
    assert pending["state"] == "processing" and pending["bank_reference"] is None
    assert bank.status(pending["id"]) is None  # the bank never heard of it
    assert available(platform, customer.account_id) == wallet_before - 10_010  # reserved
    assert _stored_status(platform, customer.id, key) == 0  # marked incomplete

    if background_first:
        platform.tick()  # the background repair reaches the bank first

    retry = send(zhang, "/v1/payments", raw, key)
    assert retry.status_code == 201, retry.text
    done = retry.json()
    assert done["id"] == pending["id"]
    assert done["state"] == "processing" and done["bank_reference"]
    assert bank.status(pending["id"]) is not None
    assert _stored_status(platform, customer.id, key) == 201

    later = send(zhang, "/v1/payments", raw, key)
    assert later.status_code == 201
    assert later.headers["idempotent-replayed"] == "true"
    assert later.content == retry.content
    assert row_counts(platform, ("payment_orders",))["payment_orders"] == orders + 1

    clock.advance(timedelta(seconds=61))
    platform.tick()
    settled = zhang.ok(zhang.get(f"/v1/payments/{pending['id']}"))
    assert settled["state"] == "succeeded"
    assert bank.card_balance(card_number) == card_before + 10_000  # paid out once
    assert available(platform, customer.account_id) == wallet_before - 10_010


def _payments_of(platform: Platform, api: Api) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = api.ok(api.get("/v1/payments", kind="withdrawal"))["data"]
    return data


def _stored_status(platform: Platform, customer_id: str, key: str) -> int | None:
    t = idempotency_keys
    query = select(t.c.status_code).where(
        t.c.principal_id == f"customer:{customer_id}", t.c.key == key
    )
    value: int | None = platform.db.read(lambda conn: conn.execute(query).scalar_one_or_none())
    return value
