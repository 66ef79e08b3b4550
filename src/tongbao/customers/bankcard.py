"""Bank card numbers (PAN) of China UnionPay cards, python-stdnum style.

>>> validate("6222 0212 3456 7890 128")
'6222021234567890128'
>>> validate("6222021234567890123")
Traceback (most recent call last):
...
tongbao.errors.InvalidCardNumberError: invalid_card_number: the card number's check digit is wrong
>>> mask("6222021234567890128")
'**** **** **** ***0128'
>>> expiry_date("2029-02")
datetime.date(2029, 2, 28)
"""

from __future__ import annotations

import calendar
import re
from datetime import date

from stdnum import luhn

from tongbao import errors

_EXPIRY = re.compile(r"(?P<year>20[0-9]{2})-(?P<month>0[1-9]|1[0-2])")


def compact(number: str) -> str:
    return "".join(number.split()).replace("-", "")


def validate(number: str) -> str:
    """The compact card number, or :class:`errors.InvalidCardNumber` saying what is wrong."""
    digits = compact(number)
    if not digits.isascii() or not digits.isdigit():
        raise errors.InvalidCardNumber("a card number has digits only")
    if not 16 <= len(digits) <= 19:
        raise errors.InvalidCardNumber("a card number has 16 to 19 digits")
    if not luhn.is_valid(digits):
        raise errors.InvalidCardNumber("the card number's check digit is wrong")
    return digits


def mask(number: str) -> str:
    """Only the last four digits stay visible (SEC-3)."""
    hidden = len(number) - 4
    groups = [("*" * hidden)[i : i + 4] for i in range(0, hidden, 4)]
    return " ".join([*groups[:-1], groups[-1] + number[-4:]]) if groups else number


def expiry_date(text: str) -> date:
    """``YYYY-MM`` to the last day of that month (cards are valid through it)."""
    match = _EXPIRY.fullmatch(text)
    if match is None:
        raise errors.ValidationFailed(f"card expiry {text!r} is not of the form YYYY-MM")
    year, month = int(match["year"]), int(match["month"])
    return date(year, month, calendar.monthrange(year, month)[1])
