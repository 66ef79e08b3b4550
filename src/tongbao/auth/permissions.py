"""Roles, permissions, segregation of duties and data classification. Pure.

SEC-4 (least privilege): a staff member may do exactly what the permissions
of their roles name, nothing more. The administrator manages staff and
configuration but is *not* all-powerful: no audit reading, no payment
review, no approval of fund adjustments.

SEC-5 (segregation of duties): some roles may never be held by one person
(:data:`CONFLICTS`); assignment refuses them. SEC-6 dual-control operations
need one permission to ask (``….request``) and another, held by somebody
else, to approve (``….approve``).

AUD-5 (internal-audit samples of transactions) splits the work the way an
internal-audit department expects: the auditor draws a sample
(``audit.sample.draw``), checks its transactions and raises findings
(``audit.sample.review``) and issues the report (``audit.sample.report``); the
business side that owns the transactions — operators, and the compliance
officer who oversees them — fixes each problem and records the rectification
(``audit.sample.rectify``), seeing the samples and findings it must act on
(``audit.sample.read``); the compliance officer also follows the report's
overdue rectifications. On top of the roles, the sampling service refuses a
person who drew a sample reviewing its items, and anyone who drew the sample
or raised a finding recording its rectification
(:func:`tongbao.audit.sampling.check_reviewer`, ``check_rectifier``). There is
no separate "verified by the auditor" step yet: the auditor reviews each
rectification (note, who, when, late or not) in the sample's report.

DATA-2: every permission that touches data names the class of data and what
it may do with it (:data:`DATA_ACCESS`).

    >>> sorted(permissions_for({"reviewer"}))[:3]
    ['alerts.view', 'customers.read_masked', 'funds.adjust.approve']
    >>> "audit.read" in permissions_for({"administrator"})
    False
    >>> [(str(a), str(b)) for a, b, _ in conflicts({"operator", "reviewer", "auditor"})]
    [('auditor', 'operator'), ('auditor', 'reviewer'), ('operator', 'reviewer')]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from tongbao import errors


class Role(StrEnum):
    OPERATOR = "operator"
    """Back-office operations: asks for fund adjustments and limit changes; records
    the rectification of internal-audit findings (AUD-5)."""
    REVIEWER = "reviewer"
    """Checks the operators' work: payment review, approves fund adjustments."""
    RISK_OFFICER = "risk_officer"
    """Owns the risk policy and the limits; watches behaviour alerts."""
    COMPLIANCE_OFFICER = "compliance_officer"
    """Oversight: approves risk-policy changes, reviews permissions and alerts."""
    AUDITOR = "auditor"
    """Internal audit: reads, exports and verifies the audit log; draws and checks
    samples of transactions (AUD-5); nothing operational."""
    CUSTOMER_SERVICE = "customer_service"
    """Answers customers: masked customer data, complaints."""
    ADMINISTRATOR = "administrator"
    """Staff accounts, role grants, configuration and keys; no money, no audit reading."""


class DataClass(StrEnum):
    """DATA-2 sensitivity classes, least to most sensitive."""

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"  # personal data, transactions
    SECRET = "secret"  # noqa: S105 - key material, the class name


class Access(StrEnum):
    READ = "read"
    MODIFY = "modify"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Permission:
    name: str
    description: str
    data: DataClass | None = None
    access: frozenset[Access] = frozenset()


def _p(name: str, description: str, data: DataClass | None = None, *access: Access) -> Permission:
    return Permission(name, description, data, frozenset(access))


R, M, D = Access.READ, Access.MODIFY, Access.DELETE
CONF, INT, SECRET = DataClass.CONFIDENTIAL, DataClass.INTERNAL, DataClass.SECRET

CATALOGUE: dict[str, Permission] = {
    p.name: p
    for p in (
        _p("payments.review", "approve or reject payments held for review", CONF, R, M),
        _p("funds.adjust.request", "ask for a fund adjustment (dual control)", CONF, M),
        _p("funds.adjust.approve", "approve a fund adjustment", CONF, M),
        _p("limits.change.request", "ask for a limit change (dual control)", INT, M),
        _p("limits.change.approve", "approve a limit change", INT, M),
        _p("risk_policy.change.request", "ask for a risk-policy change (dual control)", INT, M),
        _p("risk_policy.change.approve", "approve a risk-policy change", INT, M),
        _p("config.change.request", "ask for a configuration change (dual control)", INT, M),
        _p("config.change.approve", "approve a configuration change", INT, M),
        _p("roles.grant.request", "ask for a role to be granted (dual control)", INT, M),
        _p("roles.grant.approve", "approve a role grant", INT, M),
        _p("staff.manage", "create staff, issue credentials, unlock, revoke roles", INT, R, M),
        _p("staff.offboard", "offboard a leaving staff member (SEC-7)", INT, M, D),
        _p("staff.review", "the quarterly permission review report (SEC-7)", INT, R),
        _p("alerts.view", "staff behaviour alerts (SEC-8)", INT, R),
        _p("audit.read", "search and read the audit log", CONF, R),
        _p("audit.export", "export audit reports", CONF, R),
        _p("audit.verify", "verify the audit chain and its checkpoints", INT, R),
        _p("audit.sample.draw", "draw a random sample of transactions (AUD-5)", CONF, R, M),
        _p("audit.sample.review", "record a sampled transaction's check: ok or a finding", CONF, M),
        _p("audit.sample.read", "see audit samples, their transactions and findings", CONF, R),
        _p("audit.sample.rectify", "record the rectification of an audit finding", CONF, M),
        _p("audit.sample.report", "an audit sample's report, overdue rectifications", CONF, R),
        _p("customers.read_pii", "read customers' personal data in clear (AUD-4 logged)", CONF, R),
        _p("customers.read_masked", "read customer records with personal data masked", INT, R),
        _p("complaints.handle", "handle customer complaints", CONF, R, M),
        _p("reports.view", "operational reports", INT, R),
        _p("keys.manage", "rotate, re-encrypt and shred encryption keys", SECRET, M, D),
        _p("vulns.view", "the vulnerability register, pentests, their report (SEC-10)", INT, R),
        _p("vulns.manage", "register vulnerabilities and pentests, mark fixes (SEC-10)", INT, M),
        _p("vulns.accept_risk", "accept a vulnerability's risk instead of a fix (SEC-10)", INT, M),
    )
}

ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.OPERATOR: frozenset(
        {
            "funds.adjust.request",
            "limits.change.request",
            "customers.read_masked",
            "reports.view",
            "audit.sample.read",
            "audit.sample.rectify",
        }
    ),
    Role.REVIEWER: frozenset(
        {
            "payments.review",
            "funds.adjust.approve",
            "customers.read_masked",
            "reports.view",
            "alerts.view",
        }
    ),
    Role.RISK_OFFICER: frozenset(
        {
            "risk_policy.change.request",
            "limits.change.approve",
            "alerts.view",
            "customers.read_pii",
            "reports.view",
        }
    ),
    Role.COMPLIANCE_OFFICER: frozenset(
        {
            "risk_policy.change.approve",
            "staff.review",
            "alerts.view",
            "customers.read_pii",
            "reports.view",
            "audit.sample.read",
            "audit.sample.rectify",
            "audit.sample.report",
            "vulns.view",
            "vulns.accept_risk",
        }
    ),
    Role.AUDITOR: frozenset(
        {
            "audit.read",
            "audit.export",
            "audit.verify",
            "audit.sample.draw",
            "audit.sample.review",
            "audit.sample.read",
            "audit.sample.report",
            "staff.review",
            "reports.view",
            "vulns.view",
        }
    ),
    Role.CUSTOMER_SERVICE: frozenset({"customers.read_masked", "complaints.handle"}),
    Role.ADMINISTRATOR: frozenset(
        {
            "staff.manage",
            "staff.offboard",
            "staff.review",
            "roles.grant.request",
            "roles.grant.approve",
            "config.change.request",
            "config.change.approve",
            "keys.manage",
            "vulns.view",
            "vulns.manage",
        }
    ),
}

_OPERATIONAL = (
    Role.OPERATOR,
    Role.REVIEWER,
    Role.RISK_OFFICER,
    Role.COMPLIANCE_OFFICER,
    Role.CUSTOMER_SERVICE,
    Role.ADMINISTRATOR,
)

CONFLICTS: dict[frozenset[Role], str] = {
    frozenset({Role.OPERATOR, Role.REVIEWER}): "who does the work does not check it",
    frozenset({Role.OPERATOR, Role.RISK_OFFICER}): "who does the work does not set its limits",
    frozenset({Role.REVIEWER, Role.RISK_OFFICER}): (
        "who checks payments does not also set the policy they are checked against"
    ),
    frozenset({Role.RISK_OFFICER, Role.COMPLIANCE_OFFICER}): (
        "who proposes risk policy does not approve it"
    ),
    frozenset({Role.ADMINISTRATOR, Role.OPERATOR}): "who grants access does not move money",
    frozenset({Role.ADMINISTRATOR, Role.REVIEWER}): "who grants access does not approve money",
    frozenset({Role.ADMINISTRATOR, Role.RISK_OFFICER}): "who grants access does not set limits",
    **{
        frozenset({Role.AUDITOR, other}): "the auditor is independent of what is audited"
        for other in _OPERATIONAL
    },
}

# DATA-2: for each permission that reaches data, its class and access.
DATA_ACCESS: dict[str, tuple[DataClass, frozenset[Access]]] = {
    p.name: (p.data, p.access) for p in CATALOGUE.values() if p.data is not None and p.access
}


ROLE_NAMES: frozenset[str] = frozenset(role.value for role in Role)


def parse_role(name: str) -> Role:
    """The role called ``name``, or :class:`errors.UnknownRole`."""
    try:
        return Role(name)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise errors.UnknownRole(f"no role {name!r}; roles are: {known}") from None


def conflicts(roles: Iterable[str]) -> list[tuple[Role, Role, str]]:
    """Every conflicting pair among ``roles`` (unknown names ignored), with the reason."""
    known = sorted({Role(r) for r in roles if r in ROLE_NAMES})
    found = []
    for i, first in enumerate(known):
        for second in known[i + 1 :]:
            reason = CONFLICTS.get(frozenset({first, second}))
            if reason is not None:
                found.append((first, second, reason))
    return found


def check_roles(roles: Iterable[str]) -> frozenset[Role]:
    """The roles, if every name is known and no two conflict (SEC-5)."""
    parsed = frozenset(parse_role(name) for name in roles)
    clash = conflicts(parsed)
    if clash:
        first, second, reason = clash[0]
        raise errors.RoleConflict(
            f"{first} and {second} may not be held by one person: {reason}",
            roles=[first.value, second.value],
        )
    return parsed


def permissions_for(roles: Iterable[str]) -> frozenset[str]:
    """The union of the permissions of the (known) ``roles``; unknown names grant nothing."""
    granted: set[str] = set()
    for name in roles:
        if name in ROLE_NAMES:
            granted |= ROLE_PERMISSIONS[Role(name)]
    return frozenset(granted)


def roles_with(permission: str) -> list[Role]:
    """The roles that grant ``permission``."""
    return [role for role, perms in ROLE_PERMISSIONS.items() if permission in perms]
