"""Staff credentials: password policy and hashing, TOTP, lockout, session lifetime. Pure.

Staff sign in with three things (SEC-13: two factors): a username, a
password (knowledge) and a TOTP code from their authenticator (possession).

    >>> check_password("correct horse battery staple", min_length=12, username="wang")
    >>> check_password("password1234", min_length=12, username="wang")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tongbao.errors.WeakPasswordError: weak_password: that password is on the list of common ...
    >>> after_failure(2, NOW, max_failures=3, lockout=timedelta(hours=1))
    (3, datetime.datetime(2026, 11, 23, 3, 0, tzinfo=datetime.timezone.utc))
    >>> session_alive(NOW, NOW, NOW + timedelta(minutes=31), idle=timedelta(minutes=30))
    False
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from tongbao import errors

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # for the examples above

MAX_PASSWORD_LENGTH = 128
SESSION_ABSOLUTE = timedelta(hours=12)
"""A session ends this long after login however active it is (a working day)."""
SESSION_TOUCH_EVERY = timedelta(minutes=1)
"""How stale ``last_seen_at`` may get before a request refreshes it (saves a write per call)."""
TOTP_PERIOD = 30
TOTP_DRIFT_STEPS = 1
"""Codes of the previous and next 30-second step are accepted (clock drift)."""

# The most common passwords and the patterns people reach for first; a real
# deployment can add a breached-password list, this refuses the obvious.
COMMON_PASSWORDS = frozenset(
    {
        "123456789012",
        "1234567890ab",
        "password1234",
        "password123!",
        "passw0rd1234",
        "qwertyuiop12",
        "qwerty123456",
        "iloveyou1234",
        "admin1234567",
        "administrator",
        "welcome12345",
        "letmein12345",
        "changeme1234",
        "tongbao12345",
        "abcdefghijkl",
        "abc123456789",
        "woaini123456",
        "woaini1314520",
        "1qaz2wsx3edc",
        "zaq12wsxcde3",
        "p@ssw0rd1234",
        "p@ssword1234",
    }
)

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile, random salt per hash


def check_password(password: str, *, min_length: int, username: str) -> None:
    """Refuse a weak staff password with :class:`errors.WeakPassword` (AUTH-9).

    Long enough, not common, not the username, and either three kinds of
    character (lower, upper, digit, other) or a passphrase of 20+ characters.
    """
    if len(password) < min_length:
        raise errors.WeakPassword(f"a staff password has at least {min_length} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise errors.WeakPassword(f"a staff password has at most {MAX_PASSWORD_LENGTH} characters")
    lowered = password.lower()
    if lowered in COMMON_PASSWORDS:
        raise errors.WeakPassword("that password is on the list of common passwords")
    if username and username.lower() in lowered:
        raise errors.WeakPassword("the password may not contain the username")
    if len(set(password)) < 5:
        raise errors.WeakPassword("the password repeats too few different characters")
    kinds = sum(
        (
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        )
    )
    if kinds < 3 and len(password) < 20:
        raise errors.WeakPassword(
            "use three of: lower case, upper case, digits, symbols — or a passphrase of 20+ "
            "characters"
        )


def hash_password(password: str) -> str:
    """Salted argon2id hash (AUTH-9): the clear password is never stored."""
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored``; without a stored hash a dummy
    hash is checked anyway, so unknown users take as long as known ones."""
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


_DUMMY_HASH = _hasher.hash("not a password of anyone")


def new_totp_secret() -> str:
    """A fresh 160-bit TOTP secret (base32), as authenticator apps expect."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, *, username: str, issuer: str) -> str:
    """The ``otpauth://`` URI an authenticator app scans as a QR code."""
    return pyotp.TOTP(secret, interval=TOTP_PERIOD).provisioning_uri(
        name=username, issuer_name=issuer
    )


def totp_step(at: datetime) -> int:
    """The 30-second TOTP step an instant falls in."""
    return int(at.timestamp()) // TOTP_PERIOD


def match_totp(secret: str, code: str, *, at: datetime, last_step: int | None) -> int | None:
    """The step whose code ``code`` is, if it is within the drift window and
    newer than ``last_step`` — a code is never accepted twice (replay)."""
    if not (len(code) == 6 and code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret, interval=TOTP_PERIOD)
    now_step = totp_step(at)
    for step in range(now_step - TOTP_DRIFT_STEPS, now_step + TOTP_DRIFT_STEPS + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.at(step * TOTP_PERIOD), code):
            return step
    return None


def is_locked(locked_until: datetime | None, now: datetime) -> bool:
    return locked_until is not None and now < locked_until


def after_failure(
    failed: int, now: datetime, *, max_failures: int, lockout: timedelta
) -> tuple[int, datetime | None]:
    """AUTH-3: the failure count after one more failure, and the lock it earns."""
    failed += 1
    return failed, (now + lockout if failed >= max_failures else None)


def password_expired(changed_at: datetime | None, now: datetime, *, max_age: timedelta) -> bool:
    """AUTH-6: a password never set by its owner (``None``) or older than ``max_age``."""
    return changed_at is None or now - changed_at >= max_age


def session_alive(
    created_at: datetime, last_seen_at: datetime, now: datetime, *, idle: timedelta
) -> bool:
    """A session lives while used within ``idle`` and for at most :data:`SESSION_ABSOLUTE`."""
    return now - last_seen_at < idle and now - created_at < SESSION_ABSOLUTE
