"""Crash safety (issue 2): a process posting a large batch is killed with SIGKILL
mid-way; after a restart the ledger verifies and every accepted idempotency
key has exactly one effect (invariant P4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Connection, func, select

from tests.crash_worker import post
from tongbao.customers import CustomerKind
from tongbao.ledger import transfer_postings, verify_ledger
from tongbao.payments import tables as pt
from tongbao.platform import Platform

WORKER = Path(__file__).with_name("crash_worker.py")
BATCH = 400
KILL_AFTER = 60


def _setup(platform: Platform) -> tuple[str, str, str]:
    policy = platform.settings.privacy_policy_version

    def create(conn: Connection) -> tuple[str, str, str]:
        person = CustomerKind.PERSON
        payer = platform.customers.register(conn, kind=person, name="Payer", policy_version=policy)
        payee = platform.customers.register(conn, kind=person, name="Payee", policy_version=policy)
        clearing = platform.ledger.account_id_by_code(conn, "bank_clearing:SIMBANK")
        platform.ledger.transfer(conn, transfer_postings(clearing, payer.account_id, 10_000_000))
        return payer.id, payer.account_id, payee.account_id

    return platform.db.run(create)


def test_sigkill_mid_batch_then_restart(platform: Platform, settings) -> None:
    payer_id, payer_account, payee_account = _setup(platform)
    env = {**os.environ, "PYTHONPATH": str(WORKER.parent.parent)}
    child = subprocess.Popen(
        [sys.executable, str(WORKER), settings.database_url, payer_id, payee_account, str(BATCH)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    accepted: dict[str, str] = {}
    assert child.stdout is not None
    for line in child.stdout:
        if not line.startswith("ACCEPTED "):
            continue
        _, key, payment_id = line.split()
        accepted[key] = payment_id
        if len(accepted) >= KILL_AFTER:
            child.send_signal(signal.SIGKILL)
            break
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert KILL_AFTER <= len(accepted) < BATCH, "the child must die mid-batch"

    # After the crash, before any repair: the ledger is consistent.
    restarted = Platform(platform.settings, clock=platform.clock).start()
    try:
        assert restarted.db.read(verify_ledger).ok

        # The client retries every key of the batch, in a new process life.
        results = {
            f"key-{i}": post(restarted, payer_id, payee_account, f"key-{i}", 100 + i)
            for i in range(BATCH)
        }
        for key, payment_id in accepted.items():
            assert results[key] == payment_id, f"{key} was accepted as {payment_id}"
        assert len(set(results.values())) == BATCH

        def count_orders(conn: Connection) -> int:
            o = pt.payment_orders
            return int(
                conn.execute(
                    select(func.count()).where(o.c.payer_account_id == payer_account)
                ).scalar_one()
            )

        assert restarted.db.read(count_orders) == BATCH  # exactly one effect per key
        moved = sum(100 + i for i in range(BATCH))
        balances = restarted.db.read(
            lambda conn: restarted.ledger.balances(conn, [payer_account, payee_account])
        )
        assert balances[payer_account].ledger == 10_000_000 - moved
        assert balances[payee_account].ledger == moved
        assert restarted.db.read(verify_ledger).ok
    finally:
        restarted.close()
