"""``tongbao ledger verify``: recompute the ledger from its records and compare.

Each check names the invariant of ``docs/invariants.md`` it tests. The
checks are aggregate SQL queries, so they scale with the database rather than
with Python memory.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import Connection, Table, case, func, select

from tongbao.ledger import tables as t
from tongbao.ledger.model import AccountType, Balance, HoldState, overdrawn, rules_for


@dataclass(frozen=True, slots=True)
class Discrepancy:
    invariant: str
    subject: str
    detail: str


@dataclass(frozen=True, slots=True)
class VerificationReport:
    accounts: int
    entries: int
    postings: int
    holds: int
    discrepancies: tuple[Discrepancy, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.discrepancies


def verify_ledger(conn: Connection) -> VerificationReport:
    found: list[Discrepancy] = []
    found += _entries_balance(conn)
    found += _balances_match_records(conn)
    found += _holds_consistent(conn)
    found += _reversals_negate(conn)
    found += _trial_balance(conn)

    def count(table: Table) -> int:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    return VerificationReport(
        accounts=count(t.accounts),
        entries=count(t.entries),
        postings=count(t.postings),
        holds=count(t.holds),
        discrepancies=tuple(found),
    )


def _entries_balance(conn: Connection) -> list[Discrepancy]:
    """L1: every entry has two or more postings summing to zero, in its currency."""
    p, e, a = t.postings, t.entries, t.accounts
    out = []
    rows = conn.execute(
        select(e.c.id, func.count(p.c.account_id), func.coalesce(func.sum(p.c.amount), 0))
        .select_from(e.outerjoin(p, p.c.entry_id == e.c.id))
        .group_by(e.c.id)
        .having((func.count(p.c.account_id) < 2) | (func.coalesce(func.sum(p.c.amount), 0) != 0))
    )
    for entry_id, count, total in rows:
        out.append(Discrepancy("L1", entry_id, f"{count} postings summing to {total}"))
    # NOT EXISTS, not NOT IN: PostgreSQL runs it as a hashed anti-join at any size.
    orphans = conn.execute(
        select(p.c.entry_id)
        .where(~select(e.c.id).where(e.c.id == p.c.entry_id).exists())
        .distinct()
    ).scalars()
    out += [Discrepancy("L1", entry_id, "postings without an entry") for entry_id in orphans]
    mixed = conn.execute(
        select(e.c.id, a.c.id, a.c.currency, e.c.currency)
        .join(p, p.c.entry_id == e.c.id)
        .join(a, a.c.id == p.c.account_id)
        .where(a.c.currency != e.c.currency)
    )
    for entry_id, account_id, account_currency, entry_currency in mixed:
        out.append(
            Discrepancy(
                "L1",
                entry_id,
                f"posting on {account_id} ({account_currency}) in a {entry_currency} entry",
            )
        )
    return out


def _balances_match_records(conn: Connection) -> list[Discrepancy]:
    """L3/L4/L5: stored counters equal the postings and pending holds; status
    copies agree; no-overdraft accounts are not overdrawn."""
    p, b, h, a = t.postings, t.balances, t.holds, t.accounts
    expected: dict[str, Balance] = defaultdict(Balance)
    for account_id, debits, credits in conn.execute(
        select(
            p.c.account_id,
            func.sum(case((p.c.amount > 0, p.c.amount), else_=0)),
            func.sum(case((p.c.amount < 0, -p.c.amount), else_=0)),
        ).group_by(p.c.account_id)
    ):
        expected[account_id] += Balance(debits_posted=int(debits), credits_posted=int(credits))
    pending = h.c.state == HoldState.PENDING.value
    for account_id, amount in conn.execute(
        select(h.c.debit_account_id, func.sum(h.c.amount))
        .where(pending)
        .group_by(h.c.debit_account_id)
    ):
        expected[account_id] += Balance(debits_pending=int(amount))
    for account_id, amount in conn.execute(
        select(h.c.credit_account_id, func.sum(h.c.amount))
        .where(pending)
        .group_by(h.c.credit_account_id)
    ):
        expected[account_id] += Balance(credits_pending=int(amount))

    out = []
    stored: dict[str, Balance] = {}
    for account_id, dp, cp, dpe, cpe in conn.execute(
        select(
            b.c.account_id,
            func.sum(b.c.debits_posted),
            func.sum(b.c.credits_posted),
            func.sum(b.c.debits_pending),
            func.sum(b.c.credits_pending),
        ).group_by(b.c.account_id)
    ):
        stored[account_id] = Balance(int(dp), int(cp), int(dpe), int(cpe))

    types: dict[str, str] = {r.id: r.type for r in conn.execute(select(a.c.id, a.c.type))}
    for account_id in sorted(set(expected) | set(stored) | set(types)):
        if account_id not in types:
            out.append(Discrepancy("L3", account_id, "balances or postings of an unknown account"))
            continue
        want, have = expected.get(account_id, Balance()), stored.get(account_id)
        if have is None:
            out.append(Discrepancy("L3", account_id, "account has no balance rows"))
            continue
        if want != have:
            out.append(Discrepancy("L3", account_id, f"stored {have}, recomputed {want}"))
        if overdrawn(want, rules_for(AccountType(types[account_id]))):
            out.append(Discrepancy("L5", account_id, f"overdrawn: {want}"))

    for account_id, status, copy_status in conn.execute(
        select(a.c.id, a.c.status, b.c.status)
        .join(b, b.c.account_id == a.c.id)
        .where(a.c.status != b.c.status)
        .distinct()
    ):
        out.append(
            Discrepancy("L3", account_id, f"status {status} but balance row says {copy_status}")
        )
    return out


def _holds_consistent(conn: Connection) -> list[Discrepancy]:
    """L6/L7: final holds have a resolution time; a posted hold has exactly one
    entry of its posted amount, at most the held amount."""
    h, e, p = t.holds, t.entries, t.postings
    out = []
    for hold_id, state in conn.execute(
        select(h.c.id, h.c.state).where(
            (h.c.state != HoldState.PENDING.value) & h.c.resolved_at.is_(None)
        )
    ):
        out.append(Discrepancy("L6", hold_id, f"{state} without a resolution time"))
    posted = conn.execute(
        select(
            h.c.id, h.c.amount, h.c.posted_amount, h.c.debit_account_id, h.c.posted_entry_id
        ).where(h.c.state == HoldState.POSTED.value)
    ).all()
    entry_amounts = {
        hold_id: (entry_id, amount)
        for hold_id, entry_id, amount in conn.execute(
            select(e.c.hold_id, e.c.id, p.c.amount)
            .join(p, (p.c.entry_id == e.c.id))
            .join(h, (h.c.id == e.c.hold_id) & (h.c.debit_account_id == p.c.account_id))
        )
    }
    for hold_id, amount, posted_amount, _debit, entry_id in posted:
        recorded = entry_amounts.get(hold_id)
        if posted_amount is None or posted_amount > amount:
            out.append(Discrepancy("L7", hold_id, f"posted {posted_amount} of {amount}"))
        if recorded is None or recorded != (entry_id, posted_amount):
            out.append(
                Discrepancy(
                    "L7",
                    hold_id,
                    f"posting entry {recorded} does not match ({entry_id}, {posted_amount})",
                )
            )
    unposted = conn.execute(
        select(e.c.id, e.c.hold_id)
        .join(h, h.c.id == e.c.hold_id)
        .where(h.c.state != HoldState.POSTED.value)
    )
    for entry_id, hold_id in unposted:
        out.append(Discrepancy("L6", hold_id, f"entry {entry_id} posts a hold that is not posted"))
    return out


def _reversals_negate(conn: Connection) -> list[Discrepancy]:
    """L8: a reversal's postings are the exact negation of the original's."""
    e, p = t.entries, t.postings
    out = []
    pairs = conn.execute(
        select(e.c.id, e.c.reverses_entry_id).where(e.c.reverses_entry_id.is_not(None))
    ).all()
    for reversal_id, original_id in pairs:
        lines = conn.execute(
            select(p.c.entry_id, p.c.account_id, p.c.amount).where(
                p.c.entry_id.in_([reversal_id, original_id])
            )
        ).all()
        original = {(acct, amount) for entry, acct, amount in lines if entry == original_id}
        negated = {(acct, -amount) for entry, acct, amount in lines if entry == reversal_id}
        if original != negated:
            out.append(Discrepancy("L8", reversal_id, f"does not negate {original_id}"))
    return out


def _trial_balance(conn: Connection) -> list[Discrepancy]:
    """L2: all postings together sum to zero (money is neither created nor lost)."""
    total = conn.execute(select(func.coalesce(func.sum(t.postings.c.amount), 0))).scalar_one()
    if total:
        return [Discrepancy("L2", "ledger", f"all postings sum to {total}, not zero")]
    b = t.balances
    debits, credits = conn.execute(
        select(
            func.coalesce(func.sum(b.c.debits_posted), 0),
            func.coalesce(func.sum(b.c.credits_posted), 0),
        )
    ).one()
    if debits != credits:
        return [Discrepancy("L2", "ledger", f"stored debits {debits} != credits {credits}")]
    return []
