"""Child process for test_crash.py: posts transfers under idempotency keys and
prints each key once its transaction has committed. The parent kills it with
SIGKILL at a random moment."""

from __future__ import annotations

import sys

import orjson

from tests.conftest import TEST_MASTER_KEY
from tongbao.config import Settings
from tongbao.idempotency import request_hash
from tongbao.logs import configure_logging
from tongbao.payments import PaymentKind, PaymentRequest
from tongbao.platform import Platform


def transfer_body(payee_account_id: str, amount_fen: int) -> bytes:
    return orjson.dumps({"payee": payee_account_id, "amount_fen": amount_fen})


def post(
    platform: Platform, payer_id: str, payee_account_id: str, key: str, amount_fen: int
) -> str:
    payer = platform.db.read(lambda conn: platform.customers.get(conn, payer_id))
    request = PaymentRequest(
        kind=PaymentKind.TRANSFER,
        amount=amount_fen,
        payee_account_id=payee_account_id,
        payee_name="Payee",
    )

    def operation(conn):  # type: ignore[no-untyped-def]
        order = platform.payments.pay(conn, payer, request)
        return 201, order.id

    outcome = platform.idempotency.run(
        principal_id=f"customer:{payer_id}",
        key=key,
        method="POST",
        path="/crash",
        fingerprint=request_hash("POST", "/crash", transfer_body(payee_account_id, amount_fen)),
        operation=operation,
    )
    return outcome.body


def main() -> None:
    url, payer_id, payee_account_id, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    configure_logging("WARNING")  # stdout carries only the ACCEPTED lines
    settings = Settings(_env_file=None, env="test", database_url=url, master_key=TEST_MASTER_KEY)  # type: ignore[call-arg]
    platform = Platform(settings).start()
    for i in range(count):
        payment_id = post(platform, payer_id, payee_account_id, f"key-{i}", 100 + i)
        print(f"ACCEPTED key-{i} {payment_id}", flush=True)


if __name__ == "__main__":
    main()
