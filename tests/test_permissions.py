"""Pure rules of staff security: roles and permissions (SEC-4), segregation of
duties (SEC-5), data classification (DATA-2), dual-control decisions (SEC-6),
credentials (AUTH-3, AUTH-6, AUTH-9, SEC-13). No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tongbao import errors
from tongbao.auth import Principal, PrincipalType
from tongbao.auth.credentials import (
    after_failure,
    check_password,
    hash_password,
    match_totp,
    new_totp_secret,
    password_expired,
    provisioning_uri,
    session_alive,
    totp_step,
    verify_password,
)
from tongbao.auth.dual_control import (
    OPERATIONS,
    DualControlRequest,
    RequestState,
    check_decision,
    check_request,
    normalise_params,
)
from tongbao.auth.permissions import (
    CATALOGUE,
    CONFLICTS,
    DATA_ACCESS,
    ROLE_PERMISSIONS,
    Access,
    DataClass,
    Role,
    check_roles,
    conflicts,
    permissions_for,
    roles_with,
)
from tongbao.ops.policies import validate_policy

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
roles = st.sets(st.sampled_from([r.value for r in Role]))


def staff(*held: str, staff_id: str = "staff_a") -> Principal:
    return Principal(PrincipalType.STAFF, staff_id, frozenset(held), permissions_for(held))


# --- roles and permissions (SEC-4, SEC-5, DATA-2) --------------------------------------


def test_every_role_grants_only_catalogued_permissions_and_every_permission_has_a_role() -> None:
    """SEC-4: the catalogue is the whole vocabulary; nothing is granted by nobody."""
    granted = set().union(*ROLE_PERMISSIONS.values())
    assert granted <= set(CATALOGUE)
    assert set(CATALOGUE) == granted
    assert set(ROLE_PERMISSIONS) == set(Role)


def test_the_administrator_is_not_all_powerful() -> None:
    """SEC-4: who manages access reads no audit log, reviews no payment, approves no money."""
    admin = permissions_for({"administrator"})
    for forbidden in ("audit.read", "audit.export", "payments.review", "funds.adjust.approve",
                      "funds.adjust.request", "customers.read_pii"):  # fmt: skip
        assert forbidden not in admin
    assert {"staff.manage", "staff.offboard", "roles.grant.approve"} <= admin


def test_the_auditor_reads_the_audit_log_and_does_nothing_operational() -> None:
    """SEC-5: the auditor is independent; AUD-2 reading is theirs alone. SEC-10:
    they read the vulnerability register, and change nothing in it."""
    assert permissions_for({"auditor"}) == {
        "audit.read", "audit.export", "audit.verify", "staff.review", "reports.view",
        "audit.sample.draw", "audit.sample.review", "audit.sample.read", "audit.sample.report",
        "vulns.view",
    }  # fmt: skip
    assert roles_with("audit.read") == [Role.AUDITOR]
    for role in Role:
        if role is not Role.AUDITOR:
            with pytest.raises(errors.RoleConflict):
                check_roles({"auditor", role.value})


def test_internal_audit_samples_are_drawn_by_audit_and_rectified_by_the_business() -> None:
    """AUD-5 with SEC-4: the auditor draws, checks and reports; the business
    side (operator, compliance officer) rectifies findings and sees them; the
    compliance officer follows the report."""
    assert roles_with("audit.sample.draw") == [Role.AUDITOR]
    assert roles_with("audit.sample.review") == [Role.AUDITOR]
    assert set(roles_with("audit.sample.rectify")) == {Role.OPERATOR, Role.COMPLIANCE_OFFICER}
    assert set(roles_with("audit.sample.report")) == {Role.AUDITOR, Role.COMPLIANCE_OFFICER}
    assert set(roles_with("audit.sample.read")) == {
        Role.AUDITOR, Role.OPERATOR, Role.COMPLIANCE_OFFICER
    }  # fmt: skip


@given(roles)
def test_nobody_alone_both_raises_audit_findings_and_rectifies_them(held: set[str]) -> None:
    """SEC-5 for AUD-5: checking samples and fixing what they find belong to
    roles that conflict (the service also refuses it person by person)."""
    if conflicts(held):
        return
    granted = permissions_for(held)
    assert not {"audit.sample.review", "audit.sample.rectify"} <= granted, held
    assert not {"audit.sample.draw", "audit.sample.rectify"} <= granted, held


@pytest.mark.parametrize(
    "pair",
    [("operator", "reviewer"), ("operator", "risk_officer"), ("reviewer", "risk_officer"),
     ("administrator", "auditor"), ("administrator", "operator")],
)  # fmt: skip
def test_conflicting_roles_are_refused(pair: tuple[str, str]) -> None:
    """SEC-5: operator, reviewer and risk officer are separate people."""
    with pytest.raises(errors.RoleConflict) as caught:
        check_roles(pair)
    assert set(caught.value.extra["roles"]) == set(pair)


def test_unknown_roles_are_refused_and_grant_nothing() -> None:
    with pytest.raises(errors.UnknownRole):
        check_roles({"superuser"})
    assert permissions_for({"superuser"}) == frozenset()


@given(roles)
def test_a_role_set_is_accepted_exactly_when_no_pair_conflicts(held: set[str]) -> None:
    """SEC-5, for every combination of roles."""
    clashes = conflicts(held)
    expected = {
        frozenset({a, b}) for a in held for b in held if a != b and frozenset({a, b}) in CONFLICTS
    }
    assert {frozenset({a, b}) for a, b, _ in clashes} == expected
    if clashes:
        with pytest.raises(errors.RoleConflict):
            check_roles(held)
    else:
        assert check_roles(held) == {Role(r) for r in held}


@given(roles, roles)
def test_more_roles_never_mean_fewer_permissions(a: set[str], b: set[str]) -> None:
    assert permissions_for(a) <= permissions_for(a | b)


@given(roles)
def test_nobody_alone_both_asks_for_and_approves_money_limits_or_risk_policy(
    held: set[str],
) -> None:
    """SEC-5 + SEC-6: for money, limits and risk policy, asking and approving
    belong to roles that conflict, so two *different kinds* of people are needed."""
    if conflicts(held):
        return
    granted = permissions_for(held)
    for operation in ("funds.adjust", "limits.change", "risk_policy.change"):
        rule = OPERATIONS[operation]
        assert not {rule.request_permission, rule.approve_permission} <= granted, held


def test_every_dual_controlled_operation_can_be_asked_for_and_approved() -> None:
    for rule in OPERATIONS.values():
        assert roles_with(rule.request_permission), rule.name
        assert roles_with(rule.approve_permission), rule.name


def test_data_classification_names_who_reads_modifies_and_deletes_what() -> None:
    """DATA-2: personal data in clear only for oversight roles; key material
    only for the administrator; customer service sees personal data masked."""
    assert DATA_ACCESS["customers.read_pii"] == (DataClass.CONFIDENTIAL, {Access.READ})
    assert set(roles_with("customers.read_pii")) == {Role.RISK_OFFICER, Role.COMPLIANCE_OFFICER}
    assert "customers.read_pii" not in permissions_for({"customer_service"})
    secret = [name for name, (cls, _) in DATA_ACCESS.items() if cls is DataClass.SECRET]
    assert secret == ["keys.manage"]
    assert roles_with("keys.manage") == [Role.ADMINISTRATOR]
    deleters = {name for name, (_, access) in DATA_ACCESS.items() if Access.DELETE in access}
    assert deleters == {"keys.manage", "staff.offboard"}


# --- dual-control decisions (SEC-6) ---------------------------------------------------


def _request(**overrides: object) -> DualControlRequest:
    values: dict[str, object] = {
        "id": "dcr_1",
        "operation": "funds.adjust",
        "params": {"account_id": "acct_1", "amount_fen": 100, "direction": "credit"},
        "reason": "bank error in customer's favour",
        "state": RequestState.PENDING,
        "requested_by": "staff_op",
        "created_at": NOW,
        "expires_at": NOW + timedelta(hours=24),
    }
    values.update(overrides)
    return DualControlRequest(**values)  # type: ignore[arg-type]


def test_only_holders_of_the_request_permission_may_ask() -> None:
    check_request(staff("operator"), "funds.adjust", "refund a double charge")
    with pytest.raises(errors.PermissionDenied):
        check_request(staff("reviewer"), "funds.adjust", "refund")
    with pytest.raises(errors.UnknownOperation):
        check_request(staff("operator"), "funds.steal", "x")
    with pytest.raises(errors.ValidationFailed):
        check_request(staff("operator"), "funds.adjust", "   ")


def test_the_requester_never_approves_and_the_approver_needs_the_permission() -> None:
    """SEC-6: two authorised people."""
    request = _request()
    with pytest.raises(errors.SelfApproval):
        check_decision(request, staff("reviewer", staff_id="staff_op"), NOW, approving=True)
    with pytest.raises(errors.PermissionDenied):
        check_decision(request, staff("customer_service", staff_id="staff_x"), NOW, approving=True)
    check_decision(request, staff("reviewer", staff_id="staff_rv"), NOW, approving=True)
    # The requester may withdraw their own request.
    check_decision(request, staff("operator", staff_id="staff_op"), NOW, approving=False)


def test_decided_and_expired_requests_cannot_be_decided() -> None:
    reviewer = staff("reviewer", staff_id="staff_rv")
    for state in set(RequestState) - {RequestState.PENDING}:
        with pytest.raises(errors.DualControlDecided):
            check_decision(_request(state=state), reviewer, NOW, approving=True)
    with pytest.raises(errors.DualControlExpired):
        check_decision(_request(), reviewer, NOW + timedelta(hours=24), approving=True)


def test_nobody_approves_a_role_grant_to_themselves() -> None:
    grant = _request(
        operation="roles.grant",
        params={"staff_id": "staff_b", "role": "administrator"},
        requested_by="staff_a",
    )
    with pytest.raises(errors.SelfApproval):
        check_decision(grant, staff("administrator", staff_id="staff_b"), NOW, approving=True)
    check_decision(grant, staff("administrator", staff_id="staff_c"), NOW, approving=True)


def test_operation_parameters_are_checked_and_normalised() -> None:
    assert normalise_params(
        "funds.adjust",
        {"account_id": "acct_1", "amount": "12.34", "direction": "debit"},
        max_fen=10**8,
    ) == {"account_id": "acct_1", "amount_fen": 1234, "direction": "debit"}
    for bad, code in (
        ({"account_id": "acct_1", "amount": 12.34, "direction": "debit"}, "invalid_amount"),
        ({"account_id": "acct_1", "amount": "-1", "direction": "debit"}, "invalid_amount"),
        ({"account_id": "acct_1", "amount": "1", "direction": "sideways"}, "validation_failed"),
        ({"account_id": "acct_1", "amount": "1", "direction": "credit", "x": 1},
         "validation_failed"),
    ):  # fmt: skip
        with pytest.raises(errors.TongbaoError) as caught:
            normalise_params("funds.adjust", bad, max_fen=10**8)
        assert caught.value.code == code
    with pytest.raises(errors.UnknownRole):
        normalise_params("roles.grant", {"staff_id": "s", "role": "god"}, max_fen=1)
    assert normalise_params(
        "limits.change", {"key": "limits.weak_account_daily_fen", "value": 100_000}, max_fen=1
    ) == {"key": "limits.weak_account_daily_fen", "value": 100_000}


def test_configuration_changes_only_reach_whitelisted_settings_with_valid_values() -> None:
    """SEC-6: system configuration changes; deployment settings stay out of reach."""
    assert validate_policy("config.change", "config.staff_lockout_minutes", 90) == (
        "config.staff_lockout_minutes",
        90,
    )
    for key, value in (
        ("config.database_url", "sqlite://"),
        ("config.master_key", "x"),
        ("config.staff_lockout_minutes", 0),  # below the setting's minimum
        ("config.staff_lockout_minutes", "90"),  # JSON string, not a number
        ("limits.single_payment_max_fen", 5),  # a limit, not configuration
    ):
        with pytest.raises(errors.ValidationFailed):
            validate_policy("config.change", key, value)
    with pytest.raises(errors.ValidationFailed):
        validate_policy("limits.change", "limits.single_payment_max_fen", -1)
    with pytest.raises(errors.ValidationFailed):
        validate_policy("risk_policy.change", "risk.velocity_max_payments_per_hour", True)


# --- credentials (AUTH-3, AUTH-6, AUTH-9, SEC-13) -------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["short1A!", "password1234", "wang.xiaoming-2026!", "aaaaaaaaaaaaaaaa", "alllowercaseletters"],
)
def test_weak_passwords_are_refused(password: str) -> None:
    """AUTH-9: too short, common, containing the username, repetitive, one kind of character."""
    with pytest.raises(errors.WeakPassword):
        check_password(password, min_length=12, username="wang.xiaoming")


def test_passwords_are_stored_only_as_salted_argon2id() -> None:
    """AUTH-9."""
    first, second = hash_password("Tongbao-Staff-2026"), hash_password("Tongbao-Staff-2026")
    assert first.startswith("$argon2id$") and first != second  # salted
    assert "Tongbao-Staff-2026" not in first
    assert verify_password(first, "Tongbao-Staff-2026")
    assert not verify_password(first, "tongbao-staff-2026")
    assert not verify_password(None, "anything")


def test_a_totp_code_is_accepted_once_within_its_window() -> None:
    """SEC-13: possession factor; a code seen once is never accepted again (replay)."""
    secret = new_totp_secret()
    code = pyotp.TOTP(secret).at(NOW)
    step = match_totp(secret, code, at=NOW, last_step=None)
    assert step == totp_step(NOW)
    assert match_totp(secret, code, at=NOW + timedelta(seconds=5), last_step=step) is None
    later = NOW + timedelta(seconds=30)
    assert match_totp(secret, pyotp.TOTP(secret).at(later), at=later, last_step=step) == step + 1
    assert match_totp(secret, code, at=NOW + timedelta(minutes=5), last_step=None) is None
    assert match_totp(secret, "12345x", at=NOW, last_step=None) is None
    uri = provisioning_uri(secret, username="wang", issuer="Tongbao")
    assert uri.startswith("otpauth://totp/Tongbao:wang?") and f"secret={secret}" in uri


def test_lockout_and_password_age_and_session_lifetime() -> None:
    """AUTH-3 (three failures lock for an hour), AUTH-6 (age), session idle/absolute limits."""
    hour = timedelta(hours=1)
    assert after_failure(0, NOW, max_failures=3, lockout=hour) == (1, None)
    assert after_failure(2, NOW, max_failures=3, lockout=hour) == (3, NOW + hour)
    age = timedelta(days=182)
    assert password_expired(None, NOW, max_age=age)
    assert not password_expired(NOW - age + timedelta(seconds=1), NOW, max_age=age)
    assert password_expired(NOW - age, NOW, max_age=age)
    idle = timedelta(minutes=30)
    assert session_alive(NOW, NOW + timedelta(hours=11), NOW + timedelta(hours=11, minutes=29),
                         idle=idle)  # fmt: skip
    assert not session_alive(NOW, NOW + timedelta(hours=11, minutes=59), NOW + timedelta(hours=12),
                             idle=idle)  # fmt: skip
