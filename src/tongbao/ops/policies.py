"""Which policy settings exist and what values they take. Pure.

Three families, each changed only under dual control (SEC-6):

* ``limits.*`` — transaction limits (``limits.change``),
* ``risk.*`` — risk-policy parameters (``risk_policy.change``),
* ``config.<setting>`` — a :class:`~tongbao.config.Settings` field that is
  safe to change while running (``config.change``); deployment settings
  (database, keys, TLS, listening address) are not on the list and stay in
  the environment.

Values are JSON; each key has a validator that refuses a bad value with a
specific error and returns the normalised value.

    >>> validate_policy("limits.change", "limits.single_payment_max_fen", 500_000)
    ('limits.single_payment_max_fen', 500000)
    >>> validate_policy("config.change", "config.review_threshold_fen", 6_000_000)
    ('config.review_threshold_fen', 6000000)
    >>> validate_policy("config.change", "config.database_url", "sqlite://")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tongbao.errors.ValidationFailedError: validation_failed: config.database_url cannot be ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from tongbao import errors
from tongbao.config import Settings

JsonValue = Any
Validator = Callable[[str, JsonValue], JsonValue]

MAX_FEN = 10**13  # far above any real limit, far below a 64-bit overflow


def _fen(key: str, value: JsonValue) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_FEN:
        raise errors.ValidationFailed(f"{key} is an amount in fen: a whole number >= 0")
    return value


def _count(key: str, value: JsonValue) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise errors.ValidationFailed(f"{key} is a whole number from 1 to 1000000")
    return value


def _codes(key: str, value: JsonValue) -> list[str]:
    if not isinstance(value, list) or not all(
        isinstance(v, str) and v.isascii() and v.isalnum() and 0 < len(v) <= 20 for v in value
    ):
        raise errors.ValidationFailed(f"{key} is a list of short alphanumeric codes")
    return sorted(set(value))


LIMITS: dict[str, Validator] = {
    "limits.single_payment_max_fen": _fen,
    "limits.daily_payment_max_fen": _fen,
    "limits.daily_withdrawal_max_fen": _fen,
    "limits.weak_account_daily_fen": _fen,  # ACC-13
}

RISK_POLICY: dict[str, Validator] = {
    "risk.review_threshold_fen": _fen,
    "risk.velocity_max_payments_per_hour": _count,
    "risk.velocity_max_payees_per_day": _count,
    "risk.blocked_merchant_categories": _codes,
}

# Settings that only steer decisions made per request: changing them needs no
# restart and cannot lock anyone out of the database or the keys.
RUNTIME_SETTINGS = frozenset(
    {
        "verification_threshold_fen",
        "verification_max_attempts",
        "review_threshold_fen",
        "familiar_payee_check",
        "staff_login_max_failures",
        "staff_lockout_minutes",
        "staff_session_minutes",
        "dual_control_ttl_hours",
        "behaviour_window_minutes",
        "behaviour_failed_operations",
        "behaviour_bulk_reads",
        "permission_review_days",
        "rate_limit_per_minute",
        "rate_limit_burst",
    }
)
CONFIG_PREFIX = "config."


def _setting(key: str, value: JsonValue) -> JsonValue:
    name = key.removeprefix(CONFIG_PREFIX)
    probe = Settings.model_construct()
    try:
        Settings.__pydantic_validator__.validate_assignment(probe, name, value, strict=True)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"]
        raise errors.ValidationFailed(f"{key}: {problem}") from None
    return getattr(probe, name)


CONFIG: dict[str, Validator] = {CONFIG_PREFIX + name: _setting for name in RUNTIME_SETTINGS}

FAMILIES: dict[str, dict[str, Validator]] = {
    "limits.change": LIMITS,
    "risk_policy.change": RISK_POLICY,
    "config.change": CONFIG,
}


def validate_policy(operation: str, key: object, value: JsonValue) -> tuple[str, JsonValue]:
    """The key and normalised value of a policy change, or a specific refusal."""
    family = FAMILIES.get(operation)
    if family is None:
        raise errors.UnknownOperation(f"{operation!r} does not change a policy setting")
    if not isinstance(key, str) or key not in family:
        verb = "cannot be changed at run time" if operation == "config.change" else "is unknown"
        raise errors.ValidationFailed(f"{key} {verb}; changeable: {', '.join(sorted(family))}")
    return key, family[key](key, value)
