"""Masking of personal data for display and logs (SEC-3) — one module, used everywhere.

Pure functions; nothing here can unmask. Rules:

==============  =========================================  ==========================
what            shown                                      example
==============  =========================================  ==========================
ID number       first 6 and last 4, the rest ``*``         ``110101********1234``
                (length kept; 10 or fewer characters:
                only the last 4)
bank card       last 4 behind a fixed ``**** **** ****``   ``**** **** **** 1234``
                (the length of the number is not shown)
mobile phone    first 3 and last 4 of the digits           ``138****5678``
name (Chinese)  first character, and the last one from     ``张*``, ``张*丰``, ``欧**娜``
                three characters on; ``·`` kept
name (latin)    the initial of each word                   ``J*** S***``
address         province and city, then ``****``           ``广东省深圳市****``
==============  =========================================  ==========================

:func:`redact_text` masks whatever in free text looks like an ID number, a
mobile number or a (Luhn-valid) card number, and :func:`mask_personal_data`
applies it to every string of a structlog event.

    >>> mask_id_number("110101199003071234"), mask_phone("13812345678")
    ('110101********1234', '138****5678')
    >>> mask_card_number("6222 0212 3456 7890 128"), mask_name("张三丰")
    ('**** **** **** 0128', '张*丰')
    >>> redact_text("付款人 张三 身份证110101199003071234 手机 13812345678")
    '付款人 张三 身份证110101********1234 手机 138****5678'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any

MASK = "*"
CARD_MASK = "**** **** ****"

# --- single fields -------------------------------------------------------------------


def mask_id_number(value: str) -> str:
    """First 6 and last 4 characters (region code and check part); length kept.

    >>> mask_id_number("11010119900307123X")
    '110101********123X'
    >>> mask_id_number("110101900307123")  # the old 15-digit form
    '110101*****7123'
    >>> mask_id_number("E1234567"), mask_id_number("123")
    ('****4567', '***')
    """
    value = "".join(value.split())
    if len(value) > 10:
        return value[:6] + MASK * (len(value) - 10) + value[-4:]
    if len(value) > 4:
        return MASK * (len(value) - 4) + value[-4:]
    return MASK * len(value)


def mask_card_number(value: str) -> str:
    """Only the last 4 digits, behind a fixed mask: the mask does not reveal how
    long the number is (16 to 19 digits).

    >>> mask_card_number("6222021234567890"), mask_card_number("12")
    ('**** **** **** 7890', '**** **** ****')
    """
    digits = "".join(ch for ch in value if ch.isdigit())
    return f"{CARD_MASK} {digits[-4:]}" if len(digits) >= 8 else CARD_MASK


def mask_phone(value: str) -> str:
    """The first 3 and last 4 digits of a mobile number; an international
    prefix (``+86``) is dropped; short numbers keep only their last 2 digits.

    >>> mask_phone("+86 138-1234-5678"), mask_phone("010-6552 9988"), mask_phone("95588")
    ('138****5678', '010****9988', '***88')
    """
    digits = "".join(ch for ch in value if ch.isdigit())
    if len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    if len(digits) > 7:
        return digits[:3] + MASK * (len(digits) - 7) + digits[-4:]
    return MASK * max(len(digits) - 2, 0) + digits[-2:]


def _is_cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff"


def mask_name(value: str) -> str:
    """Chinese names keep the first character and, from three characters on,
    the last; latin names keep each word's initial.

    >>> mask_name("张三"), mask_name("欧阳娜娜"), mask_name("买买提·艾力")
    ('张*', '欧**娜', '买**·*力')
    >>> mask_name("John Smith"), mask_name("李")
    ('J*** S***', '*')
    """
    value = value.strip()
    if any(_is_cjk(ch) for ch in value):
        if len(value) == 1:
            return MASK
        last = len(value) - 1 if len(value) >= 3 else 0
        return "".join(ch if i in (0, last) or ch in "·•" else MASK for i, ch in enumerate(value))
    return " ".join(word[0] + MASK * 3 for word in value.split())


_REGION = re.compile(
    r"(?P<province>[^\d\s]{2,8}?(?:省|自治区|特别行政区))?"
    r"(?P<city>[^\d\s省市区县镇乡村街路号]{1,8}?(?:市|自治州|地区|盟))?"
)


def mask_address(value: str) -> str:
    """Province and city kept, the rest replaced by a fixed ``****``.

    >>> mask_address("广东省深圳市南山区科技园路1号")
    '广东省深圳市****'
    >>> mask_address("北京市朝阳区建国路88号"), mask_address("新疆维吾尔自治区乌鲁木齐市天山区")
    ('北京市****', '新疆维吾尔自治区乌鲁木齐市****')
    >>> mask_address("1 Main Street, Springfield")
    '****'
    """
    value = value.strip()
    match = _REGION.match(value)
    kept = match.group(0) if match else ""
    return kept + "****" if kept != value else kept


# --- free text ------------------------------------------------------------------------

# Boundaries: not inside a longer run of digits, letters or ``_`` — so the
# 28-digit serial numbers and the Crockford ids (``pay_01M84…``) are left
# alone — but Chinese text may touch the number ("身份证110101…").
_B = r"(?<![0-9A-Za-z_])"
_E = r"(?![0-9A-Za-z_])"
_ID_NUMBER = re.compile(
    _B + r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]" + _E
)
# Card numbers: one run of 16-19 digits, or groups of four ("6222 0212 3456 7890 128").
_CARD = re.compile(_B + r"(?:\d{16,19}|\d{4}(?:[ -]\d{4}){3}(?:[ -]?\d{1,3})?)" + _E)
_GROUP_SEPARATOR = re.compile(r"[ -]")
_MOBILE = re.compile(
    _B + r"(?P<prefix>(?:\+|00)?86[ -]?)?(?P<number>1[3-9]\d(?:[ -]?\d{4}){2})" + _E
)


def luhn_valid(digits: str) -> bool:
    """The Luhn check bank card numbers carry.

    >>> luhn_valid("6222021234567890128"), luhn_valid("6222021234567890123")
    (True, False)
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = "".join(ch for ch in text if ch.isdigit())
    if luhn_valid(digits):
        return mask_card_number(digits)
    # Grouped digits may have taken in a number just before the card: look
    # again from the next group on.
    parts = _GROUP_SEPARATOR.split(text, maxsplit=1)
    if len(parts) == 2:
        return text[: len(parts[0]) + 1] + _CARD.sub(_card, parts[1])
    return text


def _mobile(match: re.Match[str]) -> str:
    return (match.group("prefix") or "") + mask_phone(match.group("number"))


def redact_text(text: str) -> str:
    """Mask everything in free text that looks like an 18-character ID number,
    a Luhn-valid card number of 16–19 digits or a mainland mobile number.

    >>> redact_text("card 6222021234567890128 ok; serial 2026112310000000000000000042 ok")
    'card **** **** **** 0128 ok; serial 2026112310000000000000000042 ok'
    >>> redact_text("pay_01M8489P4ME2CS101MJGZAFDZP 13800000000x 138 1234 5678")
    'pay_01M8489P4ME2CS101MJGZAFDZP 13800000000x 138****5678'
    """
    if not any(ch.isdigit() for ch in text):
        return text  # the common case: nothing to look at
    text = _ID_NUMBER.sub(lambda m: mask_id_number(m.group(0)), text)
    text = _CARD.sub(_card, text)
    return _MOBILE.sub(_mobile, text)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(v) for v in value)
    return value


def mask_personal_data(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: :func:`redact_text` on every string of the event,
    also inside dicts and lists (the event message and tracebacks included).

    >>> mask_personal_data(None, "info", {"event": "bound 6222021234567890128", "n": 3})
    {'event': 'bound **** **** **** 0128', 'n': 3}
    """
    for key, value in event_dict.items():
        event_dict[key] = _redact(value)
    return event_dict
