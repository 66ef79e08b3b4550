"""How a value is normalised before its blind index is computed — pure.

A blind index only finds exact matches, so the same number typed two ways
must normalise to the same text. The kind follows from the field name:

===============================  ====================================================
field name contains              normal form
===============================  ====================================================
``id_number``                    upper-case, no spaces or hyphens (``…123X``)
``phone`` or ``mobile``          digits only, a leading ``86``/``0086`` country code dropped
``card``                         digits only
anything else                    Unicode NFKC, trimmed, inner spaces collapsed, case-folded
===============================  ====================================================

    >>> normalise_for_index("customers.id_number", " 11010119900307123x ")
    '11010119900307123X'
    >>> normalise_for_index("customers.phone", "+86 138-1234-5678")
    '13812345678'
    >>> normalise_for_index("bank_cards.card_number", "6222 0212 3456 7890 128")
    '6222021234567890128'
    >>> normalise_for_index("merchants.name", "  ＡＢＣ   Trading ")
    'abc trading'
"""

from __future__ import annotations

import unicodedata
from enum import StrEnum

from tongbao import errors

_DIGITS = frozenset("0123456789")


class IndexKind(StrEnum):
    ID_NUMBER = "id_number"
    PHONE = "phone"
    CARD = "card"
    TEXT = "text"


def index_kind(field: str) -> IndexKind:
    """The normalisation a field gets, from its name (``table.column``)."""
    column = field.rsplit(".", 1)[-1].lower()
    if "id_number" in column:
        return IndexKind.ID_NUMBER
    if "phone" in column or "mobile" in column:
        return IndexKind.PHONE
    if "card" in column:
        return IndexKind.CARD
    return IndexKind.TEXT


def normalise_for_index(field: str, value: str) -> str:
    """The normal form of ``value`` for ``field``; refuses a value with nothing
    left to index (:class:`~tongbao.errors.ValidationFailed`)."""
    kind = index_kind(field)
    text = unicodedata.normalize("NFKC", value)
    if kind is IndexKind.ID_NUMBER:
        normal = "".join(ch for ch in text if not ch.isspace() and ch != "-").upper()
    elif kind is IndexKind.PHONE:
        normal = "".join(ch for ch in text if ch in _DIGITS)
        for prefix in ("0086", "86"):
            if normal.startswith(prefix) and len(normal) == len(prefix) + 11:
                normal = normal[len(prefix) :]
    elif kind is IndexKind.CARD:
        normal = "".join(ch for ch in text if ch in _DIGITS)
    else:
        normal = " ".join(text.split()).casefold()
    if not normal:
        raise errors.ValidationFailed(f"{field}: nothing left to index in the value")
    return normal
