"""A simulated bank with a book of its own: the local :class:`BankChannel`.

The bank keeps customer cards and the institution's reserve account in the
``simbank_*`` tables (:mod:`tongbao.banking.tables`). It reads and writes
them only in transactions of its own (``db.run`` / ``db.read``), never in the
platform's: a real bank is not part of our transactions, and code that
forgets that should fail in tests the way it would fail in production.

How it behaves:

* **Debits** (top-ups, pulled from a card) settle at once: card → reserve.
* **Credits** (withdrawals, paid to a card) are *accepted* first: the amount
  leaves the reserve at once (earmarked, so it cannot be promised twice) and
  reaches the card ``settlement_delay`` later, when :meth:`SimulatedBank.advance`
  runs. If the card was frozen or closed meanwhile the credit *fails* and the
  earmarked amount goes back to the reserve.
* An instruction id seen before gets the stored outcome; nothing moves twice.
* Every instruction must carry the institution's signature (SEC-12, PAY-6):
  the institution registers its public key with the bank when the channel is
  set up (:meth:`SimulatedBank.register_platform_key`; the platform does it
  at start), and an instruction whose signature does not verify with a
  registered key (altered in transit, signed by another key; the receipt
  says ``signature_rejected``) or that is addressed to another bank is
  rejected before anything else, without a row in the book: its id stays
  free for the genuine instruction.
  Accepted and refused instructions are kept with their signed fields and
  signature (non-repudiation: :meth:`SimulatedBank.signed_instruction`). A
  repeated id whose signature does not verify still gets the stored outcome
  (the bank's answer to the genuine instruction) and changes nothing.
* Statement lines are written when money settles, dated with the Asia/Shanghai
  business date of settlement. With ``disagree_rate`` > 0 some lines are
  deliberately wrong (see :class:`Distortion`), decided by a hash of
  ``(seed, instruction id)`` so a drill is reproducible; the true instruction
  rows are never distorted, and :meth:`SimulatedBank.distortions` tells what was.

Invariant (conservation of the bank's book), per bank code::

    sum(balance of every account) + sum(amount of every ACCEPTED credit)

is changed by nothing but :meth:`SimulatedBank.open_card` (money brought into
the simulation from outside). A debit moves an amount card → reserve in one
transaction; accepting a credit moves it reserve → earmark; settling moves it
earmark → card, and failing moves it earmark → reserve. Balances never go
negative: every decrease is checked against the locked row and guarded again
in the ``UPDATE`` itself.

Concurrency: account rows are locked with ``SELECT … FOR UPDATE`` in ascending
account-number order; settlement locks the instruction row first, then the
accounts. No code path takes them the other way round, so there is no lock
cycle (PostgreSQL deadlocks would be retried by :meth:`Database.run` anyway).
On SQLite ``FOR UPDATE`` compiles to nothing and writers are serialised by
``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from functools import partial

import structlog
from sqlalchemy import Connection, RowMapping, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from tongbao import errors
from tongbao.banking import signing
from tongbao.banking import tables as t
from tongbao.banking.channel import (
    BankChannel,
    BankStatementLine,
    CardAgreement,
    CardVerification,
    Instruction,
    InstructionDirection,
    InstructionReceipt,
    InstructionStatus,
    SignedInstruction,
)
from tongbao.clock import Clock, business_date
from tongbao.ids import new_id
from tongbao.storage import Database
from tongbao.storage.database import is_unique_violation

log = structlog.get_logger(__name__)

_acc = t.simbank_accounts
_agr = t.simbank_agreements
_ins = t.simbank_instructions
_lines = t.simbank_statement_lines
_keys = t.simbank_platform_keys

_CARD = "card"
_RESERVE = "reserve"
_AGREEMENT_ACTIVE = "active"
_AGREEMENT_CANCELLED = "cancelled"

# A unique violation that is not "this instruction id is already stored" is a
# bank-reference collision or two first uses creating the reserve account at
# once; both go away when the submission runs again.
_SUBMIT_ATTEMPTS = 5


class CardStatus(StrEnum):
    ACTIVE = "active"
    FROZEN = "frozen"
    """Blocked by the bank (loss report, fraud suspicion): no debits, credits fail."""
    CLOSED = "closed"
    """Gone for good; a closed card is never reopened."""


class Reason(StrEnum):
    """The bank's own words for a refusal (``BankRejected.detail`` / receipt reason)."""

    CARD_NOT_FOUND = "card not found"
    HOLDER_NAME_MISMATCH = "holder name does not match"
    PHONE_MISMATCH = "phone does not match"
    EXPIRY_MISMATCH = "expiry date does not match"
    CARD_EXPIRED = "card expired"
    CARD_BLOCKED = "card blocked"
    CARD_CLOSED = "card closed"
    AGREEMENT_NOT_FOUND = "agreement not found"
    AGREEMENT_CANCELLED = "agreement cancelled"
    INSUFFICIENT_FUNDS = "insufficient funds"
    INSUFFICIENT_RESERVE = "insufficient reserve"
    SIGNATURE_INVALID = "signature invalid"
    KEY_NOT_REGISTERED = "signature invalid: signing key not registered"
    WRONG_BANK = "instruction addressed to another bank"


class Distortion(StrEnum):
    """What the bank deliberately gets wrong on a statement line."""

    AMOUNT_OFF = "amount_off"
    """The stated amount is off by 1..100 fen."""
    MISSING = "missing"
    """The line is stored but never appears on a statement."""
    DUPLICATE = "duplicate"
    """The line appears twice."""
    LATE = "late"
    """The line carries the next day's value date."""


_DISTORTIONS = tuple(Distortion)


@dataclass(frozen=True, slots=True)
class StatementDistortion:
    """One instruction whose statement line(s) the bank deliberately got wrong."""

    instruction_id: str
    bank_reference: str | None
    kind: Distortion
    direction: InstructionDirection
    true_amount: int
    stated_amount: int | None
    """``None`` when the line is missing from the statement."""
    true_value_date: date
    stated_value_date: date | None
    """``None`` when the line is missing from the statement."""
    line_ids: tuple[str, ...]


class SimulatedBank:
    """A local bank that behaves like one; implements :class:`BankChannel`."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        bank_code: str = "SIMBANK",
        institution: str = "TONGBAO",
        settlement_delay: timedelta = timedelta(seconds=5),
        disagree_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= disagree_rate <= 1.0:
            raise errors.ConfigurationError(f"disagree_rate {disagree_rate} is not in [0, 1]")
        if settlement_delay < timedelta(0):
            raise errors.ConfigurationError("settlement_delay must not be negative")
        reserve_number = f"{bank_code}-RESERVE-{institution}"
        if len(reserve_number) > _acc.c.number.type.length:  # type: ignore[attr-defined]
            raise errors.ConfigurationError(f"reserve account number too long: {reserve_number}")
        self.db = db
        self.clock = clock
        self._bank_code = bank_code
        self.institution = institution
        self.settlement_delay = settlement_delay
        self.disagree_rate = disagree_rate
        self.seed = seed
        self.reserve_number = reserve_number
        self._platform_keys: dict[str, bytes] = {}  # key id -> public key, once read

    @property
    def bank_code(self) -> str:
        return self._bank_code

    # --- bank-side administration (seeding, tests, drills) -------------------------

    def open_card(
        self,
        *,
        card_number: str,
        holder_name: str,
        phone: str,
        balance: int,
        expires_on: date,
    ) -> None:
        """Open a customer card holding ``balance`` fen (money from outside the book)."""
        _check_amount(balance, allow_zero=True)
        if not card_number.strip():
            raise errors.ValidationFailed("card number is empty")
        now = self.clock.now()

        def fn(conn: Connection) -> None:
            exists = conn.execute(select(_acc.c.number).where(_acc.c.number == card_number))
            if exists.first() is not None:
                raise errors.CardAlreadyExists(f"card {_mask(card_number)} already exists")
            conn.execute(
                insert(_acc),
                {
                    "number": card_number,
                    "bank_code": self.bank_code,
                    "kind": _CARD,
                    "holder_name": holder_name,
                    "phone": phone,
                    "balance": balance,
                    "status": CardStatus.ACTIVE.value,
                    "expires_on": expires_on,
                    "created_at": now,
                },
            )

        try:
            self.db.run(fn, what="simbank_open_card")
        except IntegrityError as exc:  # opened concurrently by someone else
            if not is_unique_violation(exc):
                raise
            raise errors.CardAlreadyExists(f"card {_mask(card_number)} already exists") from exc

    def register_platform_key(self, public_key: bytes, *, algorithm: str = signing.ED25519) -> str:
        """Register the institution's public key for instruction signatures (done
        out of band at a real bank, when the channel is set up); returns its key
        id. Registering the same key again changes nothing."""
        signing.require_signature_algorithm(algorithm)
        if len(public_key) != signing.PUBLIC_KEY_BYTES:
            raise errors.ValidationFailed(
                f"an {algorithm} public key has {signing.PUBLIC_KEY_BYTES} bytes, "
                f"not {len(public_key)}"
            )
        key_id = signing.key_id(public_key)
        now = self.clock.now()

        def fn(conn: Connection) -> None:
            found = conn.execute(select(_keys.c.institution).where(_keys.c.key_id == key_id))
            held_by = found.scalar_one_or_none()
            if held_by is None:
                conn.execute(
                    insert(_keys),
                    {
                        "key_id": key_id,
                        "institution": self.institution,
                        "algorithm": algorithm,
                        "public_key": public_key.hex(),
                        "registered_at": now,
                    },
                )
            elif held_by != self.institution:
                raise errors.ValidationFailed(f"key {key_id} is registered to another institution")

        for attempt in (1, 2):
            try:
                self.db.run(fn, what="simbank_register_key")
                break
            except IntegrityError as exc:  # registered concurrently: look again
                if not is_unique_violation(exc) or attempt == 2:
                    raise
        return key_id

    def platform_key(self, key_id: str) -> bytes | None:
        """The institution's registered public key with ``key_id``, if any."""
        found = self._platform_keys.get(key_id)
        if found is None:
            query = select(_keys.c.public_key).where(
                _keys.c.key_id == key_id, _keys.c.institution == self.institution
            )
            text = self.db.read(lambda conn: conn.execute(query).scalar_one_or_none())
            if text is None:
                return None
            found = self._platform_keys.setdefault(key_id, bytes.fromhex(text))
        return found

    def signed_instruction(self, instruction_id: str) -> SignedInstruction | None:
        """The instruction as received and stored, with its signature (non-repudiation:
        :func:`tongbao.banking.signing.verify` with the registered key proves who sent
        it); ``None`` if the bank holds no signed instruction with that id."""
        query = select(_ins).where(_ins.c.id == instruction_id)
        row = self.db.read(lambda conn: conn.execute(query).mappings().first())
        if row is None or row["signature"] is None:
            return None
        return SignedInstruction(
            Instruction(
                row["id"],
                InstructionDirection(row["direction"]),
                row["agreement_id"],
                int(row["amount"]),
                row["memo"] or "",
                row["bank_code"] or "",
            ),
            signed_at=row["signed_at"],
            algorithm=row["signature_algorithm"],
            key_id=row["key_id"],
            signature=base64.b64decode(row["signature"]),
        )

    def card_balance(self, card_number: str) -> int:
        row = self.db.read(lambda conn: self._card(conn, card_number))
        if row is None:
            raise errors.CardNotFound(f"card {_mask(card_number)} is not held by {self.bank_code}")
        return int(row["balance"])

    def reserve_balance(self) -> int:
        """The institution's reserve balance (earmarked credits already taken out)."""
        query = select(_acc.c.balance).where(_acc.c.number == self.reserve_number)
        balance = self.db.read(lambda conn: conn.execute(query).scalar_one_or_none())
        return 0 if balance is None else int(balance)

    def set_card_status(self, card_number: str, status: CardStatus | str) -> None:
        """Freeze, unfreeze or close a card. A closed card stays closed."""
        try:
            new = CardStatus(status)
        except ValueError:
            raise errors.ValidationFailed(f"unknown card status {status!r}") from None

        def fn(conn: Connection) -> None:
            card = self._lock(conn, [card_number]).get(card_number)
            if card is None or card["kind"] != _CARD:
                raise errors.CardNotFound(f"card {_mask(card_number)} is not held here")
            if card["status"] == CardStatus.CLOSED and new is not CardStatus.CLOSED:
                raise errors.AccountClosed(f"card {_mask(card_number)} is closed")
            conn.execute(update(_acc).where(_acc.c.number == card_number).values(status=new.value))

        self.db.run(fn, what="simbank_set_card_status")

    def advance(self) -> int:
        """Settle every accepted credit that is due; return how many settled or failed.

        Each credit is settled in a transaction of its own that first locks the
        instruction row and re-checks that it is still accepted, so concurrent
        or repeated calls settle each credit exactly once.
        """
        now = self.clock.now()
        due_query = (
            select(_ins.c.id)
            .join(_agr, _agr.c.id == _ins.c.agreement_id)
            .join(_acc, _acc.c.number == _ins.c.card_number)
            .where(
                _ins.c.status == InstructionStatus.ACCEPTED.value,
                _ins.c.direction == InstructionDirection.CREDIT.value,
                _ins.c.settle_after <= now,
                _agr.c.institution == self.institution,
                _acc.c.bank_code == self.bank_code,
            )
            .order_by(_ins.c.settle_after, _ins.c.id)
        )
        due: list[str] = list(self.db.read(lambda conn: conn.execute(due_query).scalars().all()))
        changed = 0
        for instruction_id in due:
            if self.db.run(
                partial(self._settle, instruction_id=instruction_id), what="simbank_settle"
            ):
                changed += 1
        return changed

    def distortions(self, value_date: date) -> list[StatementDistortion]:
        """The deliberate statement disagreements for money that settled on ``value_date``
        (a ``late`` line is listed here although the statement shows it the next day)."""
        query = (
            select(
                _lines.c.id,
                _lines.c.value_date,
                _lines.c.amount,
                _lines.c.distortion,
                _ins.c.id.label("instruction_id"),
                _ins.c.bank_reference,
                _ins.c.direction,
                _ins.c.amount.label("true_amount"),
                _ins.c.settled_at,
            )
            .join(_ins, _ins.c.id == _lines.c.instruction_id)
            .join(_agr, _agr.c.id == _ins.c.agreement_id)
            .where(
                _lines.c.bank_code == self.bank_code,
                _agr.c.institution == self.institution,
                _lines.c.distortion.is_not(None),
                _lines.c.value_date.in_([value_date, value_date + timedelta(days=1)]),
            )
            .order_by(_lines.c.created_at, _lines.c.id)
        )
        rows = self.db.read(lambda conn: conn.execute(query).mappings().all())
        grouped: dict[str, list[RowMapping]] = {}
        for row in rows:
            if business_date(row["settled_at"]) == value_date:
                grouped.setdefault(row["instruction_id"], []).append(row)
        result = []
        for instruction_id, group in grouped.items():
            first = group[0]
            kind = Distortion(first["distortion"])
            shown = kind is not Distortion.MISSING
            result.append(
                StatementDistortion(
                    instruction_id=instruction_id,
                    bank_reference=first["bank_reference"],
                    kind=kind,
                    direction=InstructionDirection(first["direction"]),
                    true_amount=int(first["true_amount"]),
                    stated_amount=int(first["amount"]) if shown else None,
                    true_value_date=value_date,
                    stated_value_date=first["value_date"] if shown else None,
                    line_ids=tuple(row["id"] for row in group),
                )
            )
        return result

    # --- BankChannel ---------------------------------------------------------------

    def sign_agreement(self, request: CardVerification) -> CardAgreement:
        """Verify the card and sign a quick-pay agreement.

        The holder's details are checked before the card's state, so someone
        who does not know them learns nothing about the card beyond its existence.
        """
        now = self.clock.now()

        def fn(conn: Connection) -> CardAgreement:
            card = self._card(conn, request.card_number)
            reason = _verification_refusal(card, request, business_date(now))
            if reason is not None:
                raise errors.BankRejected(str(reason), reason=str(reason))
            agreement_id = "AGR" + secrets.token_hex(12).upper()
            conn.execute(
                insert(_agr),
                {
                    "id": agreement_id,
                    "card_number": request.card_number,
                    "institution": self.institution,
                    "status": _AGREEMENT_ACTIVE,
                    "created_at": now,
                    "cancelled_at": None,
                },
            )
            return CardAgreement(agreement_id, self.bank_code, request.card_number[-4:])

        return self.db.run(fn, what="simbank_sign_agreement")

    def cancel_agreement(self, agreement_id: str) -> None:
        """Cancel an agreement; cancelling again (or an unknown id) changes nothing."""
        now = self.clock.now()
        statement = (
            update(_agr)
            .where(
                _agr.c.id == agreement_id,
                _agr.c.institution == self.institution,
                _agr.c.status == _AGREEMENT_ACTIVE,
            )
            .values(status=_AGREEMENT_CANCELLED, cancelled_at=now)
        )
        self.db.run(lambda conn: conn.execute(statement), what="simbank_cancel_agreement")

    def agreement_active(self, agreement_id: str) -> bool:
        """Signed, not cancelled, and the card is active and not expired."""
        today = business_date(self.clock.now())
        query = (
            select(_acc.c.status, _acc.c.expires_on)
            .join(_agr, _agr.c.card_number == _acc.c.number)
            .where(
                _agr.c.id == agreement_id,
                _agr.c.institution == self.institution,
                _agr.c.status == _AGREEMENT_ACTIVE,
                _acc.c.bank_code == self.bank_code,
            )
        )
        row = self.db.read(lambda conn: conn.execute(query).mappings().first())
        return (
            row is not None
            and row["status"] == CardStatus.ACTIVE
            and not _expired(row["expires_on"], today)
        )

    def submit(self, signed: SignedInstruction) -> InstructionReceipt:
        """Receive a signed instruction; a repeated id gets the stored outcome."""
        instruction = signed.instruction
        _check_amount(instruction.amount, allow_zero=False)
        refusal = self._signature_refusal(signed)
        for attempt in range(1, _SUBMIT_ATTEMPTS + 1):
            try:
                return self.db.run(
                    lambda conn: self._submit(conn, signed, refusal), what="simbank_submit"
                )
            except IntegrityError as exc:
                if not is_unique_violation(exc):
                    raise
                # The same id committed concurrently: that first outcome stands.
                stored = self.status(instruction.id)
                if stored is not None:
                    return stored
                if attempt == _SUBMIT_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def status(self, instruction_id: str) -> InstructionReceipt | None:
        # Looked up by id alone: instruction ids are the platform's and unique
        # across banks, and a rejection for an unknown agreement names no card.
        query = select(_ins).where(_ins.c.id == instruction_id)
        row = self.db.read(lambda conn: conn.execute(query).mappings().first())
        return None if row is None else _receipt(row)

    def statement(self, value_date: date) -> list[BankStatementLine]:
        """Lines of our reserve account with ``value_date``, as the bank states them."""
        query = (
            select(_lines)
            .join(_ins, _ins.c.id == _lines.c.instruction_id)
            .join(_agr, _agr.c.id == _ins.c.agreement_id)
            .where(
                _lines.c.bank_code == self.bank_code,
                _agr.c.institution == self.institution,
                _lines.c.value_date == value_date,
                or_(_lines.c.distortion.is_(None), _lines.c.distortion != Distortion.MISSING.value),
            )
            .order_by(_lines.c.created_at, _lines.c.id)
        )
        rows = self.db.read(lambda conn: conn.execute(query).mappings().all())
        return [
            BankStatementLine(
                line_id=row["id"],
                value_date=row["value_date"],
                direction=InstructionDirection(row["direction"]),
                amount=int(row["amount"]),
                instruction_id=row["instruction_id"],
                bank_reference=row["bank_reference"],
                description=row["description"],
            )
            for row in rows
        ]

    # --- inside the bank's transactions ------------------------------------------------

    def _card(self, conn: Connection, card_number: str) -> RowMapping | None:
        query = select(_acc).where(
            _acc.c.number == card_number, _acc.c.kind == _CARD, _acc.c.bank_code == self.bank_code
        )
        return conn.execute(query).mappings().first()

    def _lock(self, conn: Connection, numbers: Iterable[str]) -> dict[str, RowMapping]:
        """Lock this bank's account rows, one at a time in ascending number order."""
        locked: dict[str, RowMapping] = {}
        for number in sorted(set(numbers)):
            query = (
                select(_acc)
                .where(_acc.c.number == number, _acc.c.bank_code == self.bank_code)
                .with_for_update()
            )
            row = conn.execute(query).mappings().first()
            if row is not None:
                locked[number] = row
        return locked

    def _move(self, conn: Connection, number: str, delta: int) -> None:
        """Change a locked account's balance; the guard makes a negative balance impossible
        even if a caller's check were wrong."""
        result = conn.execute(
            update(_acc)
            .where(_acc.c.number == number, _acc.c.balance + delta >= 0)
            .values(balance=_acc.c.balance + delta)
        )
        if result.rowcount != 1:
            raise RuntimeError(f"simulated bank: balance of {number} would go negative")

    def _ensure_reserve(self, conn: Connection, now: datetime) -> None:
        exists = conn.execute(select(_acc.c.number).where(_acc.c.number == self.reserve_number))
        if exists.first() is None:
            conn.execute(
                insert(_acc),
                {
                    "number": self.reserve_number,
                    "bank_code": self.bank_code,
                    "kind": _RESERVE,
                    "holder_name": self.institution,
                    "phone": None,
                    "balance": 0,
                    "status": CardStatus.ACTIVE.value,
                    "expires_on": None,
                    "created_at": now,
                },
            )

    def _signature_refusal(self, signed: SignedInstruction) -> Reason | None:
        """Why ``signed`` is not a genuine instruction of the institution to this bank."""
        public_key = self.platform_key(signed.key_id)
        if public_key is None:
            return Reason.KEY_NOT_REGISTERED
        if not signing.verify(public_key, signed):
            return Reason.SIGNATURE_INVALID
        if signed.instruction.bank_code != self.bank_code:
            return Reason.WRONG_BANK
        return None

    def _submit(
        self, conn: Connection, signed: SignedInstruction, refusal: Reason | None
    ) -> InstructionReceipt:
        instruction = signed.instruction
        now = self.clock.now()
        stored = conn.execute(select(_ins).where(_ins.c.id == instruction.id)).mappings().first()
        if stored is not None:
            if refusal is None:
                _warn_if_different(stored, instruction)
            else:
                log.warning(
                    "simbank_unverified_repeat", instruction_id=instruction.id, reason=refusal
                )
            return _receipt(stored)
        if refusal is not None:
            log.warning(
                "simbank_instruction_refused",
                instruction_id=instruction.id,
                key_id=signed.key_id,
                reason=refusal.value,
            )
            return InstructionReceipt(
                instruction_id=instruction.id,
                status=InstructionStatus.REJECTED,
                bank_reference=None,
                reason=refusal.value,
                signature_rejected=refusal is not Reason.WRONG_BANK,
            )

        agreement = (
            conn.execute(
                select(_agr).where(
                    _agr.c.id == instruction.agreement_id, _agr.c.institution == self.institution
                )
            )
            .mappings()
            .first()
        )
        card_number: str = agreement["card_number"] if agreement is not None else ""
        self._ensure_reserve(conn, now)
        locked = self._lock(conn, [self.reserve_number, card_number])
        reserve = locked[self.reserve_number]
        card = locked.get(card_number)
        amount = instruction.amount
        today = business_date(now)
        debit = instruction.direction is InstructionDirection.DEBIT

        reason = _agreement_refusal(agreement, card, today, debit=debit)
        if reason is None and debit and card is not None and card["balance"] < amount:
            reason = Reason.INSUFFICIENT_FUNDS
        if reason is None and not debit and reserve["balance"] < amount:
            reason = Reason.INSUFFICIENT_RESERVE

        bank_reference = f"SB{today:%Y%m%d}{secrets.randbelow(10**18):018d}"
        settle_after: datetime | None = None
        settled_at: datetime | None = None
        if reason is not None:
            status = InstructionStatus.REJECTED
        elif debit:
            self._move(conn, card_number, -amount)
            self._move(conn, self.reserve_number, amount)
            status, settled_at = InstructionStatus.SETTLED, now
        else:
            self._move(conn, self.reserve_number, -amount)  # earmarked until settlement
            status, settle_after = InstructionStatus.ACCEPTED, now + self.settlement_delay

        conn.execute(
            insert(_ins),
            {
                "id": instruction.id,
                "direction": instruction.direction.value,
                "agreement_id": instruction.agreement_id,
                "card_number": card_number,
                "amount": amount,
                "status": status.value,
                "reason": None if reason is None else reason.value,
                "bank_reference": bank_reference,
                "received_at": now,
                "settle_after": settle_after,
                "settled_at": settled_at,
                "memo": instruction.memo,
                "bank_code": instruction.bank_code,
                "signed_at": signed.signed_at,
                "signature_algorithm": signed.algorithm,
                "key_id": signed.key_id,
                "signature": signing.signature_text(signed.signature),
            },
        )
        if status is InstructionStatus.SETTLED:
            self._write_line(
                conn,
                instruction_id=instruction.id,
                bank_reference=bank_reference,
                direction=instruction.direction,
                amount=amount,
                card_number=card_number,
                settled_at=now,
            )
        return InstructionReceipt(
            instruction_id=instruction.id,
            status=status,
            bank_reference=bank_reference,
            reason=None if reason is None else reason.value,
            settles_by=settle_after,
            settled_at=settled_at,
        )

    def _settle(self, conn: Connection, instruction_id: str) -> bool:
        """Settle or fail one accepted credit; ``False`` if it is not (or no longer) due."""
        now = self.clock.now()
        row = (
            conn.execute(select(_ins).where(_ins.c.id == instruction_id).with_for_update())
            .mappings()
            .first()
        )
        if (
            row is None
            or row["status"] != InstructionStatus.ACCEPTED
            or row["settle_after"] is None
            or row["settle_after"] > now
        ):
            return False  # settled by a concurrent advance(), or the clock moved back
        card_number: str = row["card_number"]
        amount = int(row["amount"])
        card = self._lock(conn, [card_number, self.reserve_number]).get(card_number)
        values: dict[str, object]
        if card is not None and card["status"] == CardStatus.ACTIVE:
            self._move(conn, card_number, amount)
            values = {"status": InstructionStatus.SETTLED.value, "settled_at": now}
        else:
            # The money never left: the earmark goes back, and no statement line.
            self._move(conn, self.reserve_number, amount)
            reason = Reason.CARD_NOT_FOUND if card is None else _card_state_refusal(card)
            values = {
                "status": InstructionStatus.FAILED.value,
                "reason": (reason or Reason.CARD_BLOCKED).value,
            }
        conn.execute(
            update(_ins)
            .where(_ins.c.id == instruction_id, _ins.c.status == InstructionStatus.ACCEPTED.value)
            .values(**values)
        )
        if values["status"] == InstructionStatus.SETTLED:
            self._write_line(
                conn,
                instruction_id=instruction_id,
                bank_reference=row["bank_reference"],
                direction=InstructionDirection.CREDIT,
                amount=amount,
                card_number=card_number,
                settled_at=now,
            )
        return True

    def _write_line(
        self,
        conn: Connection,
        *,
        instruction_id: str,
        bank_reference: str,
        direction: InstructionDirection,
        amount: int,
        card_number: str,
        settled_at: datetime,
    ) -> None:
        """Write the reserve account's statement line(s) for settled money, distorted
        when the dice (a hash, so reproducible) say so."""
        masked = _mask(card_number)
        description = (
            f"Quick-pay debit, card {masked}"
            if direction is InstructionDirection.DEBIT
            else f"Payment to card {masked}"
        )
        line = {
            "id": new_id("sbl"),
            "bank_code": self.bank_code,
            "value_date": business_date(settled_at),
            "instruction_id": instruction_id,
            "bank_reference": bank_reference,
            "direction": direction.value,
            "amount": amount,
            "description": description,
            "distortion": None,
            "created_at": settled_at,
        }
        rows = [line]
        chosen = self._distortion_for(instruction_id)
        if chosen is not None:
            kind, delta = chosen
            line["distortion"] = kind.value
            if kind is Distortion.AMOUNT_OFF:
                line["amount"] = amount + delta if amount + delta > 0 else amount + abs(delta)
            elif kind is Distortion.DUPLICATE:
                rows.append({**line, "id": new_id("sbl")})
            elif kind is Distortion.LATE:
                line["value_date"] = business_date(settled_at) + timedelta(days=1)
            log.info(
                "simbank_statement_distorted",
                bank_code=self.bank_code,
                instruction_id=instruction_id,
                distortion=kind.value,
            )
        conn.execute(insert(_lines), rows)

    def _distortion_for(self, instruction_id: str) -> tuple[Distortion, int] | None:
        """Whether (and how) the line of ``instruction_id`` is distorted: a pure function
        of ``(seed, instruction id)``, so a drill can be replayed exactly."""
        if self.disagree_rate <= 0.0:
            return None
        digest = hashlib.sha256(f"{self.seed}:{instruction_id}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
        if draw >= self.disagree_rate:
            return None
        kind = _DISTORTIONS[digest[8] % len(_DISTORTIONS)]
        delta = 1 + int.from_bytes(digest[9:11], "big") % 100
        return kind, -delta if digest[11] & 1 else delta


# --- helpers ------------------------------------------------------------------------


def _check_amount(amount: int, *, allow_zero: bool) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise errors.InvalidAmount(f"amount must be integer fen, not {type(amount).__name__}")
    if amount < 0 or (amount == 0 and not allow_zero):
        raise errors.InvalidAmount(f"amount {amount} must be {'>= 0' if allow_zero else '> 0'}")


def _mask(card_number: str) -> str:
    return f"****{card_number[-4:]}"


def _expired(expires_on: date | None, today: date) -> bool:
    return expires_on is not None and today > expires_on


def _card_state_refusal(card: RowMapping) -> Reason | None:
    if card["status"] == CardStatus.CLOSED:
        return Reason.CARD_CLOSED
    if card["status"] == CardStatus.FROZEN:
        return Reason.CARD_BLOCKED
    return None


def _verification_refusal(
    card: RowMapping | None, request: CardVerification, today: date
) -> Reason | None:
    if card is None:
        return Reason.CARD_NOT_FOUND
    if card["holder_name"].strip() != request.holder_name.strip():
        return Reason.HOLDER_NAME_MISMATCH
    if (card["phone"] or "").strip() != request.phone.strip():
        return Reason.PHONE_MISMATCH
    if card["expires_on"] != request.expires_on:
        return Reason.EXPIRY_MISMATCH
    if _expired(card["expires_on"], today):
        return Reason.CARD_EXPIRED
    return _card_state_refusal(card)


def _agreement_refusal(
    agreement: RowMapping | None, card: RowMapping | None, today: date, *, debit: bool
) -> Reason | None:
    """Why an instruction under this agreement is refused, before any amount check.

    A frozen card still accepts a credit (it fails at settlement unless the
    card is unfrozen by then, as at a real bank); a debit needs an active card.
    """
    if agreement is None:
        return Reason.AGREEMENT_NOT_FOUND
    if agreement["status"] != _AGREEMENT_ACTIVE:
        return Reason.AGREEMENT_CANCELLED
    if card is None:
        return Reason.CARD_NOT_FOUND
    if card["status"] == CardStatus.CLOSED:
        return Reason.CARD_CLOSED
    if debit and card["status"] != CardStatus.ACTIVE:
        return Reason.CARD_BLOCKED
    if _expired(card["expires_on"], today):
        return Reason.CARD_EXPIRED
    return None


def _receipt(row: RowMapping) -> InstructionReceipt:
    return InstructionReceipt(
        instruction_id=row["id"],
        status=InstructionStatus(row["status"]),
        bank_reference=row["bank_reference"],
        reason=row["reason"],
        settles_by=row["settle_after"],
        settled_at=row["settled_at"],
    )


def _warn_if_different(stored: RowMapping, instruction: Instruction) -> None:
    """A reused id with different content is the platform's bug; the first outcome
    still stands (that is what makes a retry safe), but say so loudly."""
    if (
        stored["direction"] != instruction.direction.value
        or stored["agreement_id"] != instruction.agreement_id
        or int(stored["amount"]) != instruction.amount
    ):
        log.warning(
            "simbank_instruction_id_reused",
            instruction_id=instruction.id,
            stored_amount=int(stored["amount"]),
            new_amount=instruction.amount,
        )


def _is_a_bank_channel(bank: SimulatedBank) -> BankChannel:
    return bank  # mypy checks here that SimulatedBank satisfies the protocol


__all__ = [
    "CardStatus",
    "Distortion",
    "Reason",
    "SimulatedBank",
    "StatementDistortion",
]
