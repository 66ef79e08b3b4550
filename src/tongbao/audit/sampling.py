"""Random sampling of transactions for internal audit (AUD-5): the pure part.

The draw is deterministic given its seed: the population is sorted first, so
the same payments and the same seed always give the same sample, whatever
order the database returned them in. The seed is drawn at random *before*
anyone sees the sample and is recorded with it, so an auditor can re-run the
draw and show the sample was not picked by hand.

Each sampled payment then goes through a small state machine: it is checked
(``ok``) or a ``problem`` is found, and a problem must be ``rectified``
before its deadline. Nothing here reads or writes storage.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from tongbao import errors

MAX_FINDING = 1_000
"""Characters of a finding or rectification note."""


def draw(population: Sequence[str], size: int, seed: bytes) -> list[str]:
    """``size`` distinct members of ``population``, chosen by ``seed``.

    >>> payments = ["pay_c", "pay_a", "pay_d", "pay_b"]
    >>> draw(payments, 2, b"seed") == draw(list(reversed(payments)), 2, b"seed")
    True
    >>> sorted(draw(payments, 4, b"any seed"))
    ['pay_a', 'pay_b', 'pay_c', 'pay_d']
    >>> draw(payments, 5, b"seed")
    Traceback (most recent call last):
    ...
    tongbao.errors.ValidationFailedError: validation_failed: the sample size 5 exceeds the 4 \
transactions of the period
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise errors.ValidationFailed(f"the sample size must be at least 1, not {size!r}")
    if size > len(population):
        if not population:
            raise errors.ValidationFailed("the period has no completed transactions to sample")
        raise errors.ValidationFailed(
            f"the sample size {size} exceeds the {len(population)} transactions of the period"
        )
    if len(set(population)) != len(population):
        raise errors.ValidationFailed("the population lists a transaction twice")
    if not seed:
        raise errors.ValidationFailed("the seed must not be empty")
    # Reproducible on purpose; the unpredictability comes from the secret-drawn seed.
    return random.Random(seed).sample(sorted(population), size)  # noqa: S311


def check_period(since: datetime, until: datetime) -> None:
    """The period is a half-open interval ``[since, until)`` of aware instants."""
    if since.tzinfo is None or until.tzinfo is None:
        raise errors.ValidationFailed("the period needs times with a time zone")
    if since >= until:
        raise errors.ValidationFailed(
            f"the period must end after it starts ({since.isoformat()} .. {until.isoformat()})"
        )


class FindingState(StrEnum):
    """Where the review of one sampled payment stands."""

    PENDING = "pending"
    OK = "ok"
    PROBLEM = "problem"
    RECTIFIED = "rectified"


_NEXT = {
    FindingState.PENDING: frozenset({FindingState.OK, FindingState.PROBLEM}),
    FindingState.PROBLEM: frozenset({FindingState.RECTIFIED}),
    FindingState.OK: frozenset[FindingState](),
    FindingState.RECTIFIED: frozenset[FindingState](),
}


def check_finding_transition(current: FindingState, target: FindingState) -> None:
    """Refuse any change the review does not allow.

    >>> check_finding_transition(FindingState.PENDING, FindingState.PROBLEM)
    >>> check_finding_transition(FindingState.OK, FindingState.RECTIFIED)
    Traceback (most recent call last):
    ...
    tongbao.errors.InvalidTransitionError: invalid_transition: a sampled payment that is ok \
cannot become rectified
    """
    if target not in _NEXT[current]:
        raise errors.InvalidTransition(
            f"a sampled payment that is {current} cannot become {target}"
        )


def check_reviewer(drawn_by: str, actor: str) -> None:
    """Segregation of duties (AUD-5, SEC-5): who drew a sample does not review
    its items — the draw and its checking are two people's work.

    >>> check_reviewer("staff:staff_a", "staff:staff_b")
    >>> check_reviewer("staff:staff_a", "staff:staff_a")
    Traceback (most recent call last):
    ...
    tongbao.errors.AuditSampleSelfReviewError: audit_sample_self_review: staff:staff_a drew \
this sample, so another auditor must review its items
    """
    if actor == drawn_by:
        raise errors.AuditSampleSelfReview(
            f"{actor} drew this sample, so another auditor must review its items"
        )


def check_rectifier(drawn_by: str, item: SampleItem, actor: str) -> None:
    """Segregation of duties (AUD-5, SEC-5): a problem is rectified by the
    business side, never by the audit side of that sample — neither whoever
    raised the finding nor whoever drew the sample records its rectification.

    >>> item = SampleItem("pay_1", "1", FindingState.PROBLEM, "x", None,
    ...                   "staff:staff_r", None, None, None, None)
    >>> check_rectifier("staff:staff_d", item, "staff:staff_ops")
    >>> check_rectifier("staff:staff_d", item, "staff:staff_r")
    Traceback (most recent call last):
    ...
    tongbao.errors.AuditSampleSelfRectificationError: audit_sample_self_rectification: \
staff:staff_r raised this finding; the business side records its rectification
    """
    if actor == item.reviewed_by:
        raise errors.AuditSampleSelfRectification(
            f"{actor} raised this finding; the business side records its rectification"
        )
    if actor == drawn_by:
        raise errors.AuditSampleSelfRectification(
            f"{actor} drew this sample; the business side records the rectification"
        )


def check_text(name: str, text: str | None) -> str:
    """A finding or note: required, trimmed, at most :data:`MAX_FINDING` characters."""
    value = (text or "").strip()
    if not value:
        raise errors.ValidationFailed(f"{name} must not be empty")
    if len(value) > MAX_FINDING:
        raise errors.ValidationFailed(f"{name} is longer than {MAX_FINDING} characters")
    return value


def rectification_deadline(found_at: datetime, days: int) -> datetime:
    """When a problem found at ``found_at`` must be rectified (AUD-5: one month)."""
    return found_at + timedelta(days=days)


@dataclass(frozen=True, slots=True)
class SampleItem:
    payment_id: str
    serial_no: str
    state: FindingState
    finding: str | None
    deadline: datetime | None
    reviewed_by: str | None
    reviewed_at: datetime | None
    rectification: str | None
    rectified_by: str | None
    rectified_at: datetime | None

    def overdue(self, now: datetime) -> bool:
        """A problem still open after its deadline."""
        return (
            self.state is FindingState.PROBLEM and self.deadline is not None and now > self.deadline
        )


@dataclass(frozen=True, slots=True)
class Sample:
    id: str
    period_start: datetime
    period_end: datetime
    population: int
    size: int
    seed: str
    """Hex of the seed bytes: ``draw(population, size, bytes.fromhex(seed))`` repeats the draw."""
    drawn_by: str
    drawn_at: datetime
    items: tuple[SampleItem, ...]


@dataclass(frozen=True, slots=True)
class SampleReport:
    """The audit report of one sample (AUD-5): counts and the open problems."""

    sample: Sample
    at: datetime
    counts: dict[FindingState, int]
    problems: tuple[SampleItem, ...]
    """Problems found, rectified or not, by deadline."""
    overdue: tuple[SampleItem, ...]
    """Problems still open after their deadline."""

    @property
    def complete(self) -> bool:
        """Every sampled payment reviewed and every problem rectified."""
        return self.counts[FindingState.PENDING] == 0 and self.counts[FindingState.PROBLEM] == 0


def report(sample: Sample, now: datetime) -> SampleReport:
    counts = dict.fromkeys(FindingState, 0)
    for item in sample.items:
        counts[item.state] += 1
    found = (FindingState.PROBLEM, FindingState.RECTIFIED)
    problems = tuple(
        sorted(
            (i for i in sample.items if i.state in found),
            key=lambda i: (i.deadline or now, i.serial_no),
        )
    )
    return SampleReport(
        sample=sample,
        at=now,
        counts=counts,
        problems=problems,
        overdue=tuple(i for i in problems if i.overdue(now)),
    )
