"""Money: integer fen (0.01 yuan), parsed from and formatted as yuan strings.

Amounts are ``int`` fen everywhere in the code base; a float never touches
money. People and API clients write yuan as decimal strings, so this module is
the one place where text becomes fen::

    >>> parse_yuan("12.34", max_fen=10_000_000)
    1234
    >>> parse_yuan("0.5", max_fen=10_000_000)
    50
    >>> format_yuan(1234)
    '12.34'
    >>> format_yuan(-5)
    '-0.05'
    >>> parse_yuan("1.234", max_fen=10_000_000)
    Traceback (most recent call last):
    ...
    tongbao.errors.InvalidAmountError: invalid_amount: '1.234' has more than 2 decimal places

Accepted form: digits, optionally a dot and one or two digits. No sign, no
exponent, no thousands separators, no whitespace inside, no leading dot.
"""

from __future__ import annotations

import re
from typing import Final

from tongbao import errors

CURRENCY: Final = "CNY"
"""The only currency the platform books in (ISO 4217)."""

_YUAN = re.compile(r"(?P<whole>0|[1-9][0-9]*)(?:\.(?P<frac>[0-9]{1,2}))?")
_DECIMALS = re.compile(r"[0-9]+\.[0-9]{3,}")
_MAX_DIGITS: Final = 15  # keeps int arithmetic far from any 64-bit column limit


def parse_yuan(text: object, *, max_fen: int, allow_zero: bool = False) -> int:
    """Parse a yuan amount written as a decimal string into fen.

    Refuses, with :class:`errors.InvalidAmount` or :class:`errors.AmountTooLarge`:
    non-strings (floats and JSON numbers included, since a float cannot carry
    an exact amount), negatives, zero (unless ``allow_zero``), more than two
    decimal places, malformed text and amounts above ``max_fen``.
    """
    if isinstance(text, bool) or not isinstance(text, str):
        kind = "a float" if isinstance(text, float) else type(text).__name__
        raise errors.InvalidAmount(f'amount must be a yuan string such as "12.34", not {kind}')
    if text.startswith("-"):
        raise errors.InvalidAmount(f"{text!r} is negative")
    if _DECIMALS.fullmatch(text):
        raise errors.InvalidAmount(f"{text!r} has more than 2 decimal places")
    match = _YUAN.fullmatch(text)
    if match is None:
        raise errors.InvalidAmount(f'{text!r} is not a yuan amount like "12.34"')
    whole, frac = match["whole"], match["frac"] or ""
    if len(whole) > _MAX_DIGITS:
        raise errors.AmountTooLarge(f"{text!r} is above the maximum {format_yuan(max_fen)}")
    fen = int(whole) * 100 + int(frac.ljust(2, "0"))
    return check_fen(fen, max_fen=max_fen, allow_zero=allow_zero)


def check_fen(fen: object, *, max_fen: int, allow_zero: bool = False) -> int:
    """Validate an amount already in fen (an ``int``; bools and floats refused)."""
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise errors.InvalidAmount(f"amount in fen must be an integer, not {type(fen).__name__}")
    if fen < 0:
        raise errors.InvalidAmount(f"{format_yuan(fen)} is negative")
    if fen == 0 and not allow_zero:
        raise errors.InvalidAmount("amount must be greater than zero")
    if fen > max_fen:
        raise errors.AmountTooLarge(
            f"{format_yuan(fen)} is above the maximum {format_yuan(max_fen)}"
        )
    return fen


def format_yuan(fen: int) -> str:
    """Format fen as a yuan string with exactly two decimals."""
    sign = "-" if fen < 0 else ""
    whole, frac = divmod(abs(fen), 100)
    return f"{sign}{whole}.{frac:02d}"
