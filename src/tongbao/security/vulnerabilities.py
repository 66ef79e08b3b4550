"""Vulnerability-database check and the vulnerability register (SEC-10): the pure part.

The project's dependencies (the locked set in ``uv.lock``, or the
distributions installed in an environment) are matched against advisories in
the OSV format (https://ossf.github.io/osv-schema/): an advisory affects a
package version when the version is listed in ``affected[].versions`` or falls
inside one of its ``ECOSYSTEM`` ranges (``introduced`` … ``fixed`` exclusive,
or … ``last_affected`` inclusive). Names are compared after PEP 503
normalisation, versions with :mod:`packaging.version`.

The register's rules: every finding must be fixed within a deadline
(``found_at`` + ``vuln_fix_hours``, 24 h by SEC-10), may instead be accepted as
a risk with a reason by somebody other than who reported it, and is overdue
when still open after its deadline. Nothing here reads or writes storage.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from packaging.version import InvalidVersion, Version

from tongbao import errors

ECOSYSTEM = "PyPI"
MAX_TEXT = 2_000
"""Characters of a title, detail, scope, reason or note."""


def normalise_name(name: str) -> str:
    """PEP 503: ``Foo_Bar.baz`` and ``foo-bar-baz`` are one project.

    >>> normalise_name("Jinja2"), normalise_name("zope.interface"), normalise_name("A__b-C")
    ('jinja2', 'zope-interface', 'a-b-c')
    """
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True, slots=True, order=True)
class LockedPackage:
    name: str
    """PEP 503-normalised."""
    version: str


def parse_lock(text: str) -> tuple[LockedPackage, ...]:
    """The third-party packages a ``uv.lock`` pins (the project itself, an
    editable or virtual source, is no dependency).

    >>> parse_lock('version = 1\\n[[package]]\\nname = "Jinja2"\\nversion = "3.1.2"\\n'
    ...            'source = { registry = "https://pypi.org/simple" }\\n'
    ...            '[[package]]\\nname = "tongbao"\\nversion = "0.1.0"\\n'
    ...            'source = { editable = "." }')
    (LockedPackage(name='jinja2', version='3.1.2'),)
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise errors.LockFileInvalid(f"the lock file is not valid TOML: {exc}") from None
    packages = data.get("package")
    if not isinstance(packages, list) or not packages:
        raise errors.LockFileInvalid("the lock file lists no [[package]] entries")
    found: set[LockedPackage] = set()
    for entry in packages:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise errors.LockFileInvalid("a [[package]] entry has no name")
        source = entry.get("source", {})
        if isinstance(source, dict) and ({"editable", "virtual"} & source.keys()):
            continue
        version = entry.get("version")
        if not isinstance(version, str):
            raise errors.LockFileInvalid(f"package {entry['name']} has no version in the lock file")
        found.add(LockedPackage(normalise_name(entry["name"]), version))
    return tuple(sorted(found))


def installed_packages(distributions: Iterable[tuple[str, str]]) -> tuple[LockedPackage, ...]:
    """(name, version) pairs of installed distributions as packages to check."""
    return tuple(sorted({LockedPackage(normalise_name(n), v) for n, v in distributions}))


# --- OSV advisories --------------------------------------------------------------------


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    UNKNOWN = "unknown"


_SEVERITY_WORDS = {
    "critical": Severity.CRITICAL,
    "high": Severity.HIGH,
    "moderate": Severity.MEDIUM,
    "medium": Severity.MEDIUM,
    "low": Severity.LOW,
}


def parse_severity(text: str) -> Severity:
    """A severity as staff or a database word it (GitHub's ``MODERATE`` is medium)."""
    value = _SEVERITY_WORDS.get(text.strip().lower())
    if value is None and text.strip().lower() == Severity.UNKNOWN:
        value = Severity.UNKNOWN
    if value is None:
        raise errors.ValidationFailed(
            f"severity {text!r} is not one of {', '.join(s.value for s in Severity)}"
        )
    return value


@dataclass(frozen=True, slots=True)
class Range:
    events: tuple[tuple[str, str], ...]
    """(kind, version) with kind introduced | fixed | last_affected, as listed."""


@dataclass(frozen=True, slots=True)
class Affected:
    name: str
    """PEP 503-normalised PyPI name."""
    ranges: tuple[Range, ...]
    versions: frozenset[str]


@dataclass(frozen=True, slots=True)
class Advisory:
    id: str
    aliases: tuple[str, ...]
    summary: str
    severity: Severity
    affected: tuple[Affected, ...]
    """Only the PyPI packages it affects."""


_EVENT_KINDS = ("introduced", "fixed", "last_affected")


def parse_advisory(record: Mapping[str, Any]) -> Advisory | None:
    """One OSV record; ``None`` when it is withdrawn. Refuses a record that is
    not OSV (no ``id``, malformed ``affected``): a database that cannot be
    read completely cannot say that nothing is affected."""
    advisory_id = record.get("id")
    if not isinstance(advisory_id, str) or not advisory_id:
        raise errors.VulnerabilityDbUnavailable("an advisory record has no id: not OSV")
    if record.get("withdrawn"):
        return None
    affected: list[Affected] = []
    entries = record.get("affected", [])
    if not isinstance(entries, list):
        raise errors.VulnerabilityDbUnavailable(f"advisory {advisory_id}: affected is not a list")
    for entry in entries:
        package = entry.get("package") if isinstance(entry, dict) else None
        if not isinstance(package, dict) or package.get("ecosystem") != ECOSYSTEM:
            continue
        name = package.get("name")
        if not isinstance(name, str):
            raise errors.VulnerabilityDbUnavailable(f"advisory {advisory_id}: package has no name")
        ranges = tuple(
            Range(
                tuple(
                    (kind, str(event[kind]))
                    for event in r.get("events", [])
                    for kind in _EVENT_KINDS
                    if kind in event
                )
            )
            for r in entry.get("ranges", [])
            if r.get("type") == "ECOSYSTEM"
        )
        versions = frozenset(str(v) for v in entry.get("versions", []))
        affected.append(Affected(normalise_name(name), ranges, versions))
    return Advisory(
        id=advisory_id,
        aliases=tuple(str(a) for a in record.get("aliases", [])),
        summary=str(record.get("summary") or record.get("details") or "")[:500].strip(),
        severity=_record_severity(record),
        affected=tuple(affected),
    )


def _record_severity(record: Mapping[str, Any]) -> Severity:
    """The database's word for it (GitHub advisories carry one), else unknown:
    a CVSS vector alone is not turned into a word here."""
    specific = record.get("database_specific")
    word = specific.get("severity") if isinstance(specific, dict) else None
    if isinstance(word, str) and word.strip().lower() in _SEVERITY_WORDS:
        return _SEVERITY_WORDS[word.strip().lower()]
    return Severity.UNKNOWN


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _in_range(version: Version, events: Sequence[tuple[str, str]]) -> tuple[bool, str | None]:
    """The OSV evaluation of one range: walk the events in version order;
    ``introduced`` at or below the version opens, ``fixed`` at or below closes,
    ``last_affected`` below closes. Returns (affected, the fix that closes it)."""
    parsed: list[tuple[Version, int, str, str]] = []
    for kind, text in events:
        value = Version("0") if kind == "introduced" and text == "0" else _version(text)
        if value is None:
            continue  # a version packaging cannot order says nothing about ours
        parsed.append((value, _EVENT_KINDS.index(kind), kind, text))
    parsed.sort()
    affected = False
    fixed_in: str | None = None
    for value, _, kind, text in parsed:
        if kind == "introduced" and value <= version:
            affected, fixed_in = True, None
        elif (kind == "fixed" and value <= version) or (
            kind == "last_affected" and value < version
        ):
            affected = False
        elif kind == "fixed" and affected and fixed_in is None:
            fixed_in = text
    return affected, fixed_in if affected else None


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    """One advisory affecting one locked package version."""

    package: str
    version: str
    advisory_id: str
    severity: Severity
    fixed_in: str | None
    """The first fixed version above the locked one, when the database names one."""
    summary: str
    aliases: tuple[str, ...]

    @property
    def fingerprint(self) -> str:
        """What makes a finding the same finding when the check runs again."""
        return f"osv:{self.advisory_id}:{self.package}@{self.version}"


def affects(affected: Affected, version: str) -> tuple[bool, str | None]:
    """Whether ``affected`` covers ``version``, and the version that fixes it.

    >>> a = Affected("jinja2", (Range((("introduced", "0"), ("fixed", "3.1.3"))),), frozenset())
    >>> affects(a, "3.1.2"), affects(a, "3.1.3"), affects(a, "3.1.4")
    ((True, '3.1.3'), (False, None), (False, None))
    >>> b = Affected("x", (Range((("introduced", "1.0"), ("last_affected", "1.2"))),),
    ...              frozenset({"0.9"}))
    >>> affects(b, "1.2"), affects(b, "1.2.1"), affects(b, "0.9"), affects(b, "0.8")
    ((True, None), (False, None), (True, None), (False, None))
    """
    parsed = _version(version)
    fixes: list[str] = []
    hit = version in affected.versions
    if parsed is not None:
        hit = hit or any(_version(v) == parsed for v in affected.versions if _version(v))
        for r in affected.ranges:
            inside, fixed_in = _in_range(parsed, r.events)
            if inside:
                hit = True
                if fixed_in is not None:
                    fixes.append(fixed_in)
    if not hit:
        return False, None
    return True, min(fixes, key=Version) if fixes else None


def match(packages: Iterable[LockedPackage], advisories: Iterable[Advisory]) -> list[Finding]:
    """Every (advisory, package version) pair where the advisory affects the version."""
    by_name: dict[str, list[tuple[Advisory, Affected]]] = {}
    for advisory in advisories:
        for entry in advisory.affected:
            by_name.setdefault(entry.name, []).append((advisory, entry))
    found: set[Finding] = set()
    for package in packages:
        for advisory, entry in by_name.get(package.name, []):
            hit, fixed_in = affects(entry, package.version)
            if hit:
                found.add(
                    Finding(
                        package=package.name,
                        version=package.version,
                        advisory_id=advisory.id,
                        severity=advisory.severity,
                        fixed_in=fixed_in,
                        summary=advisory.summary,
                        aliases=advisory.aliases,
                    )
                )
    return sorted(found)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one check consulted and found."""

    source: str
    """Which database, e.g. ``osv-zip:/srv/osv/PyPI/all.zip``."""
    advisories: int
    """PyPI advisories read from it."""
    packages: int
    findings: tuple[Finding, ...]
    names: frozenset[str] = frozenset()
    """The (normalised) names of the packages checked."""


# --- the register ------------------------------------------------------------------------


class VulnSource(StrEnum):
    DEPS_CHECK = "deps-check"
    PENTEST = "pentest"
    STAFF = "staff"


class VulnStatus(StrEnum):
    OPEN = "open"
    FIXED = "fixed"
    ACCEPTED = "accepted-risk"


def fix_deadline(found_at: datetime, hours: int) -> datetime:
    """SEC-10: a vulnerability found at ``found_at`` is fixed within ``hours`` (24)."""
    return found_at + timedelta(hours=hours)


def check_text(name: str, text: str | None, *, limit: int = MAX_TEXT) -> str:
    """Required, trimmed, at most ``limit`` characters."""
    value = (text or "").strip()
    if not value:
        raise errors.ValidationFailed(f"{name} must not be empty")
    if len(value) > limit:
        raise errors.ValidationFailed(f"{name} is longer than {limit} characters")
    return value


def check_close(status: VulnStatus, target: VulnStatus) -> None:
    """Only an open vulnerability is fixed or accepted.

    >>> check_close(VulnStatus.FIXED, VulnStatus.ACCEPTED)
    Traceback (most recent call last):
    ...
    tongbao.errors.InvalidTransitionError: invalid_transition: a vulnerability that is fixed \
cannot become accepted-risk
    """
    if status is not VulnStatus.OPEN or target is VulnStatus.OPEN:
        raise errors.InvalidTransition(f"a vulnerability that is {status} cannot become {target}")


def check_acceptance(reported_by: str, actor: str) -> None:
    """Accepting a risk takes a second person: not who reported it (SEC-10, four eyes)."""
    if reported_by == actor:
        raise errors.SelfApproval(
            "the risk of a vulnerability is accepted by somebody other than who reported it"
        )


@dataclass(frozen=True, slots=True)
class Vulnerability:
    id: str
    source: VulnSource
    title: str
    severity: Severity
    package: str | None
    version: str | None
    advisory_id: str | None
    fixed_in: str | None
    detail: str | None
    pentest_id: str | None
    reported_by: str
    found_at: datetime
    deadline: datetime
    status: VulnStatus
    closed_by: str | None
    closed_at: datetime | None
    resolution: str | None
    """How it was fixed, or why the risk is accepted."""

    def overdue(self, now: datetime) -> bool:
        """Still open after its deadline."""
        return self.status is VulnStatus.OPEN and now > self.deadline


@dataclass(frozen=True, slots=True)
class Pentest:
    id: str
    tested_on: date
    scope: str
    tester: str
    summary: str | None
    recorded_by: str
    recorded_at: datetime
    findings: int


def pentest_due(last: date | None, interval_days: int) -> date | None:
    """The day the next penetration test is due (quarterly), ``None`` when none
    was ever recorded (then one is due now)."""
    return None if last is None else last + timedelta(days=interval_days)


@dataclass(frozen=True, slots=True)
class VulnReport:
    """SEC-10 at a glance: what is open, what is overdue, and whether the
    quarterly penetration test is."""

    at: datetime
    today: date
    """The business day of ``at`` (Asia/Shanghai), for the pentest interval."""
    open: tuple[Vulnerability, ...]
    overdue: tuple[Vulnerability, ...]
    accepted: tuple[Vulnerability, ...]
    fixed: int
    fixed_late: int
    last_pentest: Pentest | None
    pentest_due_on: date | None

    @property
    def pentest_overdue(self) -> bool:
        return self.pentest_due_on is None or self.today > self.pentest_due_on

    @property
    def ok(self) -> bool:
        """Nothing overdue and the penetration test current."""
        return not self.overdue and not self.pentest_overdue


def report(
    vulns: Sequence[Vulnerability],
    fixed: int,
    fixed_late: int,
    last_pentest: Pentest | None,
    interval_days: int,
    now: datetime,
    today: date,
) -> VulnReport:
    open_ = tuple(sorted((v for v in vulns if v.status is VulnStatus.OPEN), key=_by_deadline))
    return VulnReport(
        at=now,
        today=today,
        open=open_,
        overdue=tuple(v for v in open_ if v.overdue(now)),
        accepted=tuple(v for v in vulns if v.status is VulnStatus.ACCEPTED),
        fixed=fixed,
        fixed_late=fixed_late,
        last_pentest=last_pentest,
        pentest_due_on=pentest_due(last_pentest.tested_on if last_pentest else None, interval_days),
    )


def _by_deadline(v: Vulnerability) -> tuple[datetime, str]:
    return v.deadline, v.id
