"""Signed bank instructions (SEC-12 non-repudiation, PAY-6 tamper-proof channel), on
SQLite and PostgreSQL: the platform signs every instruction it sends, the bank
verifies and keeps the signature, refuses anything altered or signed by another
key, the payment then fails with its reason and no money moves; ``sm2`` is
refused at start-up; ``tongbao bank verify-instruction`` proves what was sent."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.payment_helpers import Env
from tests.test_cli import RUNNER, environment, invoke, one_line_error
from tongbao import cli, errors
from tongbao.banking import (
    BankStatementLine,
    CardAgreement,
    CardVerification,
    Instruction,
    InstructionDirection,
    InstructionReceipt,
    InstructionStatus,
    SignedInstruction,
)
from tongbao.banking.signing import InstructionSigner, public_key_pem, verify
from tongbao.banking.simulated import Reason, SimulatedBank
from tongbao.config import Settings
from tongbao.ledger import verify_ledger
from tongbao.money import format_yuan
from tongbao.payments import PaymentKind, PaymentState
from tongbao.platform import SIMULATED_BANK, Platform

FAILED, SUCCEEDED = PaymentState.FAILED, PaymentState.SUCCEEDED


@pytest.fixture
def env(platform: Platform) -> Iterator[Env]:
    environment_ = Env(platform)
    yield environment_
    environment_.assert_ledger_ok()  # PAY-13: the books balance whatever happened


class TamperingChannel:
    """A man in the middle between the platform and the bank: it alters every
    instruction after the platform signed it, and passes everything else on."""

    def __init__(self, bank: SimulatedBank, alter: Callable[[Instruction], Instruction]) -> None:
        self.bank = bank
        self.alter = alter
        self.seen: list[SignedInstruction] = []

    @property
    def bank_code(self) -> str:
        return self.bank.bank_code

    def sign_agreement(self, request: CardVerification) -> CardAgreement:
        return self.bank.sign_agreement(request)

    def cancel_agreement(self, agreement_id: str) -> None:
        self.bank.cancel_agreement(agreement_id)

    def agreement_active(self, agreement_id: str) -> bool:
        return self.bank.agreement_active(agreement_id)

    def submit(self, signed: SignedInstruction) -> InstructionReceipt:
        self.seen.append(signed)
        return self.bank.submit(replace(signed, instruction=self.alter(signed.instruction)))

    def status(self, instruction_id: str) -> InstructionReceipt | None:
        return self.bank.status(instruction_id)

    def statement(self, value_date: date) -> list[BankStatementLine]:
        return self.bank.statement(value_date)


def one_fen_more(instruction: Instruction) -> Instruction:
    return replace(instruction, amount=instruction.amount + 1)


def test_sec12_topups_and_withdrawals_go_out_signed_and_the_bank_keeps_the_signature(
    env: Env,
) -> None:
    """SEC-12: the bank's book holds every instruction with the platform's
    signature over exactly its fields, verifiable with the public key the bank
    was given when the channel was set up."""
    alice = env.person("张三", topup=100_000)
    withdrawal = env.withdraw(alice, 30_000)
    assert withdrawal.state is PaymentState.PROCESSING  # accepted; settles later
    topup = env.topup(alice, 2_000)
    assert topup.state is SUCCEEDED
    bank = env.p.simulated_bank()
    signer = env.p.instruction_signer
    assert bank.platform_key(signer.key_id) == signer.public_key
    for order, direction, amount in [
        (topup, InstructionDirection.DEBIT, topup.split.debit),
        (withdrawal, InstructionDirection.CREDIT, withdrawal.split.credit),
    ]:
        signed = bank.signed_instruction(order.id)
        assert signed is not None
        assert signed.key_id == signer.key_id and signed.algorithm == "ed25519"
        assert verify(signer.public_key, signed)
        ins = signed.instruction
        assert (ins.id, ins.direction, ins.amount, ins.bank_code) == (
            order.id,
            direction,
            amount,
            SIMULATED_BANK,
        )
        assert order.serial_no in ins.memo
        # Proof of exactly this: one fen more and the stored signature no longer fits.
        assert not verify(signer.public_key, replace(signed, instruction=one_fen_more(ins)))


@pytest.mark.parametrize("kind", [PaymentKind.TOPUP, PaymentKind.WITHDRAWAL])
def test_pay6_an_instruction_altered_in_transit_is_rejected_and_moves_no_money(
    env: Env, monkeypatch: pytest.MonkeyPatch, kind: PaymentKind
) -> None:
    """PAY-6/PAY-9: the amount changed after signing: the bank refuses it as
    "signature invalid", keeps nothing, the payment fails with
    ``bank_signature_rejected`` and wallet, card and reserve are untouched."""
    alice = env.person("张三", topup=100_000)
    bank = env.p.simulated_bank()
    card_before, reserve_before = bank.card_balance(alice.card_number or ""), bank.reserve_balance()
    wallet_before = env.balance(alice.account_id)
    counts_before = env.counts()
    channel = TamperingChannel(bank, one_fen_more)
    monkeypatch.setitem(env.p.banks, SIMULATED_BANK, channel)  # type: ignore[index]

    order = env.topup(alice, 5_000) if kind is PaymentKind.TOPUP else env.withdraw(alice, 5_000)

    assert len(channel.seen) == 1 and verify(env.p.instruction_signer.public_key, channel.seen[0])
    assert (order.state, order.failure_code) == (FAILED, "bank_signature_rejected")
    assert order.failure_message is not None
    assert Reason.SIGNATURE_INVALID.value in order.failure_message
    assert order.retry_hint
    assert bank.status(order.id) is None and bank.signed_instruction(order.id) is None
    assert bank.card_balance(alice.card_number or "") == card_before
    assert bank.reserve_balance() == reserve_before
    wallet = env.balance(alice.account_id)
    assert (wallet.ledger, wallet.available, wallet.held) == (
        wallet_before.ledger,
        wallet_before.available,
        0,
    )
    after = env.counts()
    assert after["ledger_entries"] == counts_before["ledger_entries"]
    assert env.db.read(verify_ledger).ok
    (sms,) = [m for m in env.messages(alice) if m.kind == "payment_failed"]
    assert "50.00" in sms.text

    # The channel repaired: the next instruction goes through.
    monkeypatch.setitem(env.p.banks, SIMULATED_BANK, bank)  # type: ignore[index]
    assert env.topup(alice, 5_000).state is SUCCEEDED


def test_sec12_an_instruction_signed_with_another_key_is_rejected(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SEC-12: the bank accepts only the registered key: an instruction signed
    with another key fails the payment, and a forged one (another key, claiming
    ours) is refused, as is one signed for another bank."""
    alice = env.person("张三", topup=10_000)
    bank = env.p.simulated_bank()
    card_before = bank.card_balance(alice.card_number or "")
    intruder = InstructionSigner(bytes([9]) * 32)
    monkeypatch.setattr(env.p.payments, "signer", intruder)
    order = env.topup(alice, 3_000)
    assert (order.state, order.failure_code) == (FAILED, "bank_signature_rejected")
    assert Reason.KEY_NOT_REGISTERED.value in (order.failure_message or "")
    assert bank.card_balance(alice.card_number or "") == card_before

    card = env.db.read(lambda conn: env.p.customers.card(conn, alice.id, alice.card_id or ""))
    instruction = Instruction(
        "pay_forged", InstructionDirection.DEBIT, card.agreement_id, 100, "x", SIMULATED_BANK
    )
    now = env.p.clock.now()
    forged = replace(intruder.sign(instruction, now), key_id=env.p.instruction_signer.key_id)
    receipt = bank.submit(forged)
    assert (receipt.status, receipt.reason, receipt.signature_rejected) == (
        InstructionStatus.REJECTED,
        Reason.SIGNATURE_INVALID.value,
        True,
    )
    elsewhere = env.p.instruction_signer.sign(replace(instruction, bank_code="OTHERBANK"), now)
    receipt = bank.submit(elsewhere)
    assert (receipt.status, receipt.reason) == (InstructionStatus.REJECTED, Reason.WRONG_BANK)
    assert bank.status("pay_forged") is None
    assert bank.card_balance(alice.card_number or "") == card_before
    # The id stayed free: the genuine instruction is taken.
    genuine = bank.submit(env.p.instruction_signer.sign(instruction, now))
    assert genuine.status is InstructionStatus.SETTLED
    assert bank.card_balance(alice.card_number or "") == card_before - 100


def test_pay6_an_altered_repeat_of_a_settled_instruction_changes_nothing(env: Env) -> None:
    """A repeated id keeps its first outcome even when the copy was altered:
    the bank answers with what it did and moves nothing again."""
    alice = env.person("张三")
    order = env.topup(alice, 10_000)
    bank = env.p.simulated_bank()
    card_after = bank.card_balance(alice.card_number or "")
    stored = bank.signed_instruction(order.id)
    assert stored is not None
    receipt = bank.submit(replace(stored, instruction=one_fen_more(stored.instruction)))
    assert receipt.status is InstructionStatus.SETTLED
    assert bank.card_balance(alice.card_number or "") == card_after
    assert bank.signed_instruction(order.id) == stored


def test_sec12_sm2_is_refused_at_start_up(settings: Settings, tmp_path: Path) -> None:
    """SEC-12: the national algorithm is a recognised choice but cannot be
    offered: start-up refuses it with its own code rather than falling back."""
    sm2 = settings.model_copy(update={"instruction_signature": "sm2"})
    with pytest.raises(errors.InstructionSignatureUnsupported, match="SM2") as refused:
        Platform(sm2)
    assert "ed25519" in refused.value.detail
    url = settings.database_url
    result = RUNNER.invoke(
        cli.app,
        ["bank", "public-key"],
        env={**environment(url), "TONGBAO_INSTRUCTION_SIGNATURE": "sm2"},
    )
    line = one_line_error(result, "instruction_signature_unsupported")
    assert "no maintained" in line


def test_sec12_cli_proves_an_instruction_and_catches_an_altered_row(
    env: Env, settings: Settings, tmp_path: Path
) -> None:
    """``tongbao bank verify-instruction`` passes for what the platform sent and
    exits 1 once the bank's stored row was changed behind its back; ``public-key``
    prints the key the bank verifies with."""
    alice = env.person("张三")
    order = env.topup(alice, 10_000)
    sent, altered = format_yuan(order.split.debit), format_yuan(order.split.debit + 1)
    url = settings.database_url

    key = invoke(url, "bank", "public-key", cwd=tmp_path)
    assert key.exit_code == 0, key.stderr
    assert key.stdout == public_key_pem(env.p.instruction_signer.public_key)
    assert env.p.instruction_signer.key_id in key.stderr

    good = invoke(url, "bank", "verify-instruction", order.id, cwd=tmp_path)
    assert good.exit_code == 0, (good.stdout, good.stderr)
    assert "signature OK" in good.stdout and f"{sent} yuan" in good.stdout
    assert "the platform's current key" in good.stdout

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE simbank_instructions SET amount = amount + 1 WHERE id = :id"),
                {"id": order.id},
            )
    finally:
        engine.dispose()
    bad = invoke(url, "bank", "verify-instruction", order.id, cwd=tmp_path)
    assert bad.exit_code == 1
    assert "signature BROKEN" in bad.stderr and f"{altered} yuan" in bad.stderr

    missing = invoke(url, "bank", "verify-instruction", "pay_nothing", cwd=tmp_path)
    one_line_error(missing, "instruction_not_found")
