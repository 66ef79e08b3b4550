"""Transaction serial numbers (交易流水号, PAY-7).

Every payment order gets a 28-digit serial number, unique across the
platform, printed on receipts and statements and accepted by every query::

    YYYYMMDD HHMMSSfff KK RRRRRRR CC
    date     time      kind random check

* ``YYYYMMDD HHMMSSfff`` — when the order was created, Asia/Shanghai, to the
  millisecond, so serials sort by time and staff can read the day at a glance;
* ``KK`` — the payment kind (10 transfer, 20 merchant payment, 30 top-up,
  40 withdrawal, 50 refund);
* ``RRRRRRR`` — seven random digits; two orders of the same millisecond and
  kind collide with probability 1e-7, and the database's unique index turns
  that rare case into a retry, never a duplicate;
* ``CC`` — ISO 7064 MOD 97-10 check digits over the first 26 digits (the
  scheme of IBAN), catching every single-digit typo and transposition when
  a customer reads a serial out on the phone.

>>> is_valid("2026112310152345610123456748")
False
>>> serial = compose(datetime(2026, 11, 23, 2, 15, 23, 456000, tzinfo=UTC), "10", "1234567")
>>> serial
'2026112310152345610123456753'
>>> is_valid(serial), is_valid(serial[:-1] + "0")
(True, False)
>>> format_serial(serial)
'20261123 101523456 10 1234567 53'
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime  # noqa: F401 - UTC is used by the doctests

from stdnum.iso7064 import mod_97_10

from tongbao.clock import SHANGHAI

KIND_CODES = {
    "transfer": "10",
    "merchant_payment": "20",
    "topup": "30",
    "withdrawal": "40",
    "refund": "50",
}

LENGTH = 28

__all__ = ["KIND_CODES", "LENGTH", "compose", "format_serial", "is_valid", "new_serial"]


def compose(created_at: datetime, kind_code: str, random_digits: str) -> str:
    local = created_at.astimezone(SHANGHAI)
    body = (
        local.strftime("%Y%m%d%H%M%S")
        + f"{local.microsecond // 1000:03d}"
        + kind_code
        + random_digits
    )
    return body + mod_97_10.calc_check_digits(body)


def new_serial(created_at: datetime, kind: str) -> str:
    """A fresh serial for an order of ``kind`` created at ``created_at``."""
    return compose(created_at, KIND_CODES[kind], f"{secrets.randbelow(10**7):07d}")


def is_valid(serial: str) -> bool:
    """Whether ``serial`` has the documented form and correct check digits."""
    return (
        len(serial) == LENGTH
        and serial.isascii()
        and serial.isdigit()
        and serial[17:19] in KIND_CODES.values()
        and mod_97_10.is_valid(serial)
    )


def format_serial(serial: str) -> str:
    """Group a serial for reading aloud."""
    return " ".join((serial[:8], serial[8:17], serial[17:19], serial[19:26], serial[26:]))
