"""Audit records and their hash chain (AUD-3). Pure: no I/O.

Every record is *sealed*: ``hash = H(canonical bytes of all its fields, its
seq and the previous record's hash)``. Records form one linear chain, seq
1, 2, 3, … with no gaps, the first one linked to :data:`GENESIS_HASH`.
Changing, removing, inserting or reordering records breaks the chain at the
first record involved; :class:`ChainChecker` walks a chain and names that
record. An attacker who rewrites the *whole* tail consistently (the hash is
unkeyed) is caught by the signed checkpoints kept outside the database
(:mod:`tongbao.audit.checkpoints`): the rewritten chain no longer matches
the hash a checkpoint signed.

The canonical form is a JSON array (UTF-8, no whitespace) of a format tag
and the fields in a fixed order; ``details`` enters as its stored canonical
JSON text, so verifying never depends on re-serialising anything:

    >>> r = seal(
    ...     make_entry(actor="system:test", action="demo.run", target="nothing"),
    ...     seq=1, at=datetime(2026, 1, 1, tzinfo=UTC), prev_hash=GENESIS_HASH,
    ... )
    >>> canonical_record(r)[:60]
    b'["tongbao-audit-v1",1,"2026-01-01T00:00:00.000000Z","system:'
    >>> record_hash(r) == r.hash and len(r.hash) == 64
    True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from tongbao import errors
from tongbao.security.algorithms import DIGESTS, digest_of

FORMAT = "tongbao-audit-v1"
GENESIS_HASH = "0" * 64
"""What the first record's ``prev_hash`` links to."""

MAX_DETAILS_CHARS = 16_000
# ``<kind>:<who>``: staff:…, customer:… (``Principal.actor``), system:<component>,
# and whatever else names a caller without a principal (cli:<os user>, anonymous:…).
_ACTOR = re.compile(r"[a-z][a-z_]{0,19}:\S.*")
_OUTCOME = re.compile(r"[a-z][a-z_]{0,19}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# --- digests -------------------------------------------------------------------------


def digest(algorithm: str, data: bytes) -> str:
    """Hex digest with SHA-256 or SM3 (GB/T 32905, the national algorithm).

    >>> digest("SM3", b"abc")  # the standard's own example
    '66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0'
    >>> digest("SHA-256", b"abc")[:16]
    'ba7816bf8f01cfea'
    """
    if algorithm not in DIGESTS:
        raise errors.ConfigurationError(f"unknown digest algorithm {algorithm!r}")
    return digest_of(algorithm, data).hex()


def canonical_json(value: Mapping[str, Any]) -> str:
    """Sorted keys, no whitespace, UTF-8 text as is: one text per value.

    >>> canonical_json({"b": [1, 2], "a": "张三"})
    '{"a":"张三","b":[1,2]}'
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError as exc:
        raise errors.ValidationFailed(f"not representable as JSON: {exc}") from None


def state_digest(algorithm: str, state: str | None) -> str | None:
    """The digest standing in for a before/after state (its canonical JSON): it
    proves what the state was to whoever holds it, without keeping the
    (personal) data in the log."""
    if state is None:
        return None
    return digest(algorithm, state.encode())


def instant_text(at: datetime) -> str:
    """UTC, microseconds, ``Z``: the form an instant takes in the hash.

    >>> from datetime import timedelta, timezone
    >>> instant_text(datetime(2026, 1, 1, 8, tzinfo=timezone(timedelta(hours=8))))
    '2026-01-01T00:00:00.000000Z'
    """
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    return at.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# --- records ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What a caller asks to record, checked and reduced to what is stored."""

    actor: str
    action: str
    target: str
    outcome: str
    source_ip: str | None
    before: str | None
    after: str | None
    """``before`` and ``after``: canonical JSON text, digested when sealed."""
    details: str
    """Canonical JSON text, free of personal data."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One sealed record of the audit log."""

    seq: int
    at: datetime
    actor: str
    """``staff:…``, ``customer:…`` or ``system:…`` (``Principal.actor``)."""
    action: str
    target: str
    outcome: str
    source_ip: str | None
    before_digest: str | None
    after_digest: str | None
    details: str
    """Canonical JSON text; :attr:`details_data` parses it."""
    algorithm: str
    prev_hash: str
    hash: str

    @property
    def details_data(self) -> dict[str, Any]:
        loaded = orjson.loads(self.details)
        return loaded if isinstance(loaded, dict) else {"value": loaded}


def _text(name: str, value: object, limit: int, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise errors.ValidationFailed(f"{name} must be a non-empty text of at most {limit} chars")
    if pattern is not None and not pattern.fullmatch(value):
        raise errors.ValidationFailed(f"{name} {value!r} has the wrong form")
    if _CONTROL.search(value):
        raise errors.ValidationFailed(f"{name} contains control characters")
    return value


def _redacted(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: _redacted(item, redact) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item, redact) for item in value]
    return value


def make_entry(
    *,
    actor: str,
    action: str,
    target: str,
    outcome: str = "ok",
    source_ip: str | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    details: Mapping[str, Any] | None = None,
    redact: Callable[[str], str] | None = None,
) -> AuditEntry:
    """Check what is to be recorded; refuse (``validation_failed``) anything malformed.

    ``action`` is best a dotted lower-case verb (``customer.update``);
    ``details`` must not carry personal data; ``redact`` (masking of phone,
    ID and card numbers) runs over every text in it as a second line.

    >>> make_entry(actor="nobody", action="x", target="y")
    Traceback (most recent call last):
    ...
    tongbao.errors.ValidationFailedError: validation_failed: actor 'nobody' has the wrong form
    """
    _text("actor", actor, 80, _ACTOR)
    _text("action", action, 100)
    _text("target", target, 200)
    _text("outcome", outcome, 20, _OUTCOME)
    if source_ip is not None:
        _text("source_ip", source_ip, 45)
    for name, state in (("before", before), ("after", after), ("details", details)):
        if state is not None and not isinstance(state, Mapping):
            raise errors.ValidationFailed(f"{name} must be a mapping")
    shown = dict(details or {})
    if redact is not None:
        shown = _redacted(shown, redact)
    text = canonical_json(shown)
    if len(text) > MAX_DETAILS_CHARS:
        raise errors.ValidationFailed(f"details exceed {MAX_DETAILS_CHARS} characters")
    # Serialised here, before the chain head is locked; refuses unrepresentable states.
    before_text = None if before is None else canonical_json(before)
    after_text = None if after is None else canonical_json(after)
    return AuditEntry(actor, action, target, outcome, source_ip, before_text, after_text, text)


def canonical_record(r: AuditRecord) -> bytes:
    """The bytes the record's hash is taken over (everything but the hash)."""
    return orjson.dumps(
        [
            FORMAT,
            r.seq,
            instant_text(r.at),
            r.actor,
            r.action,
            r.target,
            r.outcome,
            r.source_ip,
            r.before_digest,
            r.after_digest,
            r.details,
            r.algorithm,
            r.prev_hash,
        ]
    )


def record_hash(r: AuditRecord) -> str:
    return digest(r.algorithm, canonical_record(r))


def seal(
    entry: AuditEntry,
    *,
    seq: int,
    at: datetime,
    prev_hash: str,
    algorithm: str = "SHA-256",
) -> AuditRecord:
    """The record at ``seq``, chained to ``prev_hash``."""
    unsealed = AuditRecord(
        seq=seq,
        at=at,
        actor=entry.actor,
        action=entry.action,
        target=entry.target,
        outcome=entry.outcome,
        source_ip=entry.source_ip,
        before_digest=state_digest(algorithm, entry.before),
        after_digest=state_digest(algorithm, entry.after),
        details=entry.details,
        algorithm=algorithm,
        prev_hash=prev_hash,
        hash="",
    )
    return replace(unsealed, hash=record_hash(unsealed))


# --- search ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """AUD-2 search: exact actor / action / target, a time range ``[since,
    until)`` and a keyword matched (case-insensitively, as a substring)
    against actor, action, target and details."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    keyword: str | None = None

    def described(self) -> dict[str, str]:
        """The filters in effect, for the record that a search was made (AUD-4)."""
        return {
            name: instant_text(value) if isinstance(value, datetime) else value
            for name in AuditQuery.__slots__
            if (value := getattr(self, name)) is not None
        }


def check_query(query: AuditQuery) -> AuditQuery:
    """Refuse malformed filters; blank texts mean "no filter".

    >>> check_query(AuditQuery(actor=" ", keyword=" 张三 "))
    AuditQuery(actor=None, action=None, target=None, since=None, until=None, keyword='张三')
    """
    cleaned: dict[str, Any] = {}
    for name in ("actor", "action", "target", "keyword"):
        value = getattr(query, name)
        if value is not None:
            if not isinstance(value, str) or len(value) > 200:
                raise errors.ValidationFailed(f"{name} must be a text of at most 200 chars")
            value = value.strip() or None
        cleaned[name] = value
    for name in ("since", "until"):
        value = getattr(query, name)
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
            raise errors.ValidationFailed(f"{name} must be an instant with a time zone")
        cleaned[name] = value
    if cleaned["since"] and cleaned["until"] and cleaned["since"] >= cleaned["until"]:
        raise errors.ValidationFailed("since must be before until")
    return AuditQuery(**cleaned)


# --- verification ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The newest record of a chain: its seq and hash (seq 0: empty chain)."""

    seq: int
    hash: str


GENESIS = ChainHead(0, GENESIS_HASH)


class BreakKind(StrEnum):
    MODIFIED = "modified"
    """The stored hash is not the hash of the stored fields: a field was changed."""
    UNLINKED = "unlinked"
    """``prev_hash`` is not the previous record's hash: a record was inserted,
    replaced or re-hashed."""
    MISSING = "missing"
    """A seq is missing: records were deleted."""
    DUPLICATE = "duplicate"
    """A seq occurs more than once: a record was inserted."""
    DIVERGED = "diverged"
    """The record's hash differs from the one a signed checkpoint holds: the
    chain was rewritten up to here."""
    TRUNCATED = "truncated"
    """Records a signed checkpoint or the chain head counts are gone."""
    HEAD_MISMATCH = "head_mismatch"
    """The chain head row disagrees with the newest record: records were
    appended behind the log's back, or the head row was edited."""


@dataclass(frozen=True, slots=True)
class ChainBreak:
    seq: int
    kind: BreakKind
    detail: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.kind}: {self.detail}"


@dataclass(frozen=True, slots=True)
class SignedPoint:
    """What a verified checkpoint vouches for: the chain had ``hash`` at ``seq``."""

    seq: int
    hash: str
    at: datetime


@dataclass(frozen=True, slots=True)
class CheckpointProblem:
    """A checkpoint-file line that cannot be trusted (unreadable or forged)."""

    line: int
    detail: str

    def __str__(self) -> str:
        return f"checkpoint file line {self.line}: {self.detail}"


MAX_BREAKS_KEPT = 1_000


class ChainChecker:
    """Walks a chain record by record (in seq order) and collects every break.

    Memory stays constant: only the previous record and the checkpoints are kept.

        >>> checker = ChainChecker()
        >>> entry = make_entry(actor="system:t", action="a", target="t")
        >>> at = datetime(2026, 1, 1, tzinfo=UTC)
        >>> one = seal(entry, seq=1, at=at, prev_hash=GENESIS_HASH)
        >>> three = seal(entry, seq=3, at=at, prev_hash=one.hash)
        >>> checker.add(one); checker.add(three)
        >>> [str(b) for b in checker.finish(head=ChainHead(3, three.hash))]
        ['seq 2: missing: seq 2 is missing (seq 1 is followed by seq 3)']
    """

    def __init__(self, signed: Iterable[SignedPoint] = (), *, start: ChainHead = GENESIS) -> None:
        self.signed = {point.seq: point for point in signed}
        self.start = start
        self.last = start
        self.checked = 0
        self.break_count = 0
        self._breaks: list[ChainBreak] = []
        self._duplicated: set[int] = set()

    def _break(self, seq: int, kind: BreakKind, detail: str) -> None:
        self.break_count += 1
        if len(self._breaks) < MAX_BREAKS_KEPT:
            self._breaks.append(ChainBreak(seq, kind, detail))

    def add(self, r: AuditRecord) -> None:
        self.checked += 1
        expected = self.last.seq + 1
        if r.seq <= self.last.seq:
            self.duplicate(r.seq)
            return  # the chain goes on from the first record of that seq
        if r.seq > expected:
            gap = f"seq {expected}" if r.seq == expected + 1 else f"seq {expected}–{r.seq - 1}"
            self._break(
                expected,
                BreakKind.MISSING,
                f"{gap} {'is' if r.seq == expected + 1 else 'are'} missing "
                f"(seq {self.last.seq} is followed by seq {r.seq})",
            )
        if r.algorithm not in DIGESTS:
            self._break(r.seq, BreakKind.MODIFIED, f"unknown digest algorithm {r.algorithm!r}")
        elif record_hash(r) != r.hash:
            self._break(r.seq, BreakKind.MODIFIED, "the stored fields do not hash to its hash")
        if r.seq == expected and r.prev_hash != self.last.hash:
            self._break(
                r.seq,
                BreakKind.UNLINKED,
                f"prev_hash does not match the hash of seq {self.last.seq}",
            )
        point = self.signed.get(r.seq)
        if point is not None and point.hash != r.hash:
            self._break(
                r.seq,
                BreakKind.DIVERGED,
                f"the hash differs from the checkpoint signed {instant_text(point.at)}: "
                f"records up to seq {r.seq} were rewritten"
                + self._since_previous_checkpoint(r.seq),
            )
        self.last = ChainHead(r.seq, r.hash)

    def duplicate(self, seq: int) -> None:
        """Note that ``seq`` occurs more than once (the storage found it)."""
        if seq not in self._duplicated:
            self._duplicated.add(seq)
            self._break(seq, BreakKind.DUPLICATE, f"seq {seq} occurs more than once")

    def _since_previous_checkpoint(self, seq: int) -> str:
        earlier = [s for s in self.signed if s < seq]
        return f" after seq {max(earlier)} (the previous checkpoint)" if earlier else ""

    def finish(self, head: ChainHead | None) -> tuple[ChainBreak, ...]:
        """All breaks, in seq order; ``head`` is the stored chain head (``None``:
        there is no head row)."""
        last = self.last
        beyond = [p for p in self.signed.values() if p.seq > last.seq]
        if beyond:
            newest = max(beyond, key=lambda p: p.seq)
            self._break(
                last.seq + 1,
                BreakKind.TRUNCATED,
                f"the chain ends at seq {last.seq} but the checkpoint signed "
                f"{instant_text(newest.at)} covers seq {newest.seq}: newer records were removed",
            )
        if head is None:
            if last.seq > self.start.seq:
                self._break(last.seq, BreakKind.HEAD_MISMATCH, "the chain head row is missing")
        elif head.seq > last.seq:
            self._break(
                last.seq + 1,
                BreakKind.TRUNCATED,
                f"the chain ends at seq {last.seq} but the chain head says seq {head.seq}",
            )
        elif head.seq < last.seq:
            self._break(
                head.seq + 1,
                BreakKind.HEAD_MISMATCH,
                f"records after seq {head.seq} (up to {last.seq}) were not appended "
                "through the audit log: the chain head ends there",
            )
        elif head.hash != last.hash:
            self._break(
                last.seq, BreakKind.HEAD_MISMATCH, "the newest record's hash differs from the head"
            )
        return tuple(sorted(self._breaks, key=lambda b: b.seq))


@dataclass(frozen=True, slots=True)
class AuditVerifyReport:
    """What ``tongbao audit verify`` found."""

    records: int
    """Records checked."""
    head: ChainHead
    """The newest record checked."""
    checkpoints: int
    """Signed checkpoints the chain was compared with."""
    breaks: tuple[ChainBreak, ...] = ()
    """In seq order (at most :data:`MAX_BREAKS_KEPT`)."""
    break_count: int = 0
    checkpoint_problems: tuple[CheckpointProblem, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.break_count and not self.checkpoint_problems

    @property
    def first_break(self) -> ChainBreak | None:
        return self.breaks[0] if self.breaks else None

    def summary(self) -> str:
        return (
            f"{self.records} records (head seq {self.head.seq}), "
            f"{self.checkpoints} signed checkpoints"
        )


def report(
    checker: ChainChecker,
    head: ChainHead | None,
    problems: Sequence[CheckpointProblem] = (),
) -> AuditVerifyReport:
    breaks = checker.finish(head)
    return AuditVerifyReport(
        records=checker.checked,
        head=checker.last,
        checkpoints=len(checker.signed),
        breaks=breaks,
        break_count=checker.break_count,
        checkpoint_problems=tuple(problems),
    )
