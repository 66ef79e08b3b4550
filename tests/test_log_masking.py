"""Logs never contain clear personal data (SEC-3).

A full scenario runs through the HTTP API with logging at DEBUG — demo
customers seeded, cards bound, payments made (one with personal data typed
into its purpose), refusals, background delivery — and the captured log is
scanned for every seeded ID number, phone number, card number and name.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog
from fastapi.testclient import TestClient

from tests.api_helpers import Api, captured_logs, card_number, new_key
from tongbao import demo
from tongbao.api.app import create_app
from tongbao.customers import CustomerKind
from tongbao.platform import SIMULATED_BANK, Platform

NEW_CARD_PHONE = "13512345678"


@pytest.fixture
def debug_logs() -> Iterator[io.StringIO]:
    with captured_logs("DEBUG") as buffer:
        yield buffer


def test_a_full_scenario_leaves_no_personal_data_in_the_logs(
    platform: Platform, debug_logs: io.StringIO
) -> None:
    seeded = demo.seed(platform)
    client = TestClient(create_app(platform))
    zhang, li = (Api(client, s.demo.token) for s in seeded[:2])
    new_card = card_number()
    platform.simulated_bank().open_card(
        card_number=new_card,
        holder_name="张三",
        phone=NEW_CARD_PHONE,
        balance=1_000_000,
        expires_on=demo.CARD_EXPIRY,
    )

    assert zhang.get("/v1/me").status_code == 200
    bound = zhang.post(
        "/v1/cards",
        {
            "bank_code": SIMULATED_BANK,
            "card_number": new_card,
            "holder_name": "张三",
            "phone": NEW_CARD_PHONE,
            "expires": "2030-12",
        },
        key=new_key(),
    )
    assert bound.status_code == 201, bound.text
    paid = zhang.post(
        "/v1/payments",
        {
            "kind": "transfer",
            "amount": "1.00",
            "payee_account_id": seeded[1].customer.account_id,
            "payee_name": "李四",
            # A customer types personal data where it does not belong.
            "purpose": f"还款 {seeded[1].demo.id_number} {seeded[1].demo.phone}",
        },
        key=new_key(),
    )
    assert paid.status_code in (200, 201), paid.text
    refused = zhang.post(
        "/v1/cards",
        {
            "bank_code": SIMULATED_BANK,
            "card_number": new_card[:-1],
            "holder_name": "张三",
            "phone": NEW_CARD_PHONE,
            "expires": "2030-13",
        },
        key=new_key(),
    )
    assert refused.status_code >= 400
    assert li.get("/v1/payments").status_code == 200
    platform.tick()
    # Positive control: the masking is in the logging pipeline itself.
    structlog.get_logger("test").warning(
        "operator_note", note=f"customer said {seeded[0].demo.id_number}"
    )

    log = debug_logs.getvalue()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert any(line.get("event") == "request" for line in lines)
    note = next(line for line in lines if line.get("event") == "operator_note")
    assert note["note"] == "customer said 110101********1233"
    secrets = {new_card, NEW_CARD_PHONE}
    for s in seeded:
        secrets.add(s.demo.phone)
        if s.demo.kind is CustomerKind.PERSON:  # a shop's name is public
            secrets.add(s.demo.name)
        secrets |= {v for v in (s.demo.id_number, s.demo.card_number) if v}
    leaked = sorted(secret for secret in secrets if secret in log)
    assert leaked == []
