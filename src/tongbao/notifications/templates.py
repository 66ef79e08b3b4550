"""Short SMS texts for notifications (PAY-8 results, PAY-9 failures). Pure.

Every text starts with the signature 【通宝】, shows amounts in yuan and
times in Asia/Shanghai as ``YYYY-MM-DD HH:MM``. A successful payment names
the time, the amount and the payee (PAY-8); a failed one says how to retry
(PAY-9)::

    >>> print(render("payment_succeeded", {
    ...     "serial_no": "TB202611230000001", "amount_fen": 12_345, "fee_fen": 0,
    ...     "payee_name": "张三", "completed_at": "2026-11-23T02:05:00+00:00"}))
    【通宝】您于2026-11-23 10:05向张三付款123.45元，手续费0.00元，流水号TB202611230000001。
    >>> print(render("payment_failed", {
    ...     "serial_no": "TB202611230000002", "amount_fen": 500,
    ...     "failure_message": "余额不足", "retry_hint": None}))
    【通宝】您的付款5.00元未成功，原因：余额不足。请核对后在通宝App重新发起付款。流水号TB202611230000002。

A payload missing a field its kind needs is refused with ``ValueError``
(:meth:`~tongbao.notifications.outbox.Notifications.enqueue` renders once to
catch that in the caller's transaction). A kind this module does not know
still renders, from whatever common fields it finds::

    >>> print(render("card_bound", {"serial_no": "TB1", "amount_fen": None}))
    【通宝】您的账户有一条新通知，流水号TB1，详情请登录通宝App查看。
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from tongbao.clock import SHANGHAI
from tongbao.money import format_yuan

SIGNATURE: Final = "【通宝】"
DEFAULT_RETRY_HINT: Final = "请核对后在通宝App重新发起付款。"
_TEXT_MAX = 30  # of a name or reason inside a text: an SMS is short
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]+")
# Brackets like the signature's, in a payee name, could make a text look as if
# another sender (【公安局】) had sent it.
_SIGNATURE_BRACKETS = str.maketrans({"【": "[", "】": "]"})


def _get(payload: Mapping[str, Any], kind: str, key: str) -> Any:
    if payload.get(key) is None:
        raise ValueError(f"{kind} needs {key} in its payload")
    return payload[key]


def _amount(payload: Mapping[str, Any], kind: str, key: str = "amount_fen") -> str:
    value = _get(payload, kind, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{kind}: {key} must be an integer number of fen")
    return f"{format_yuan(value)}元"


def _instant(payload: Mapping[str, Any], kind: str, key: str) -> datetime:
    value = _get(payload, kind, key)
    try:
        instant = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise ValueError(f"{kind}: {key} must be an ISO 8601 time with a zone, not {value!r}")
    return instant.astimezone(SHANGHAI)


def _time(payload: Mapping[str, Any], kind: str, key: str) -> str:
    """When something happened, in Shanghai."""
    return _instant(payload, kind, key).strftime("%Y-%m-%d %H:%M")


def _deadline(payload: Mapping[str, Any], kind: str, key: str) -> str:
    """A deadline in Shanghai; midnight is written as 24:00 of the day it ends,
    the way the working-day deadlines are meant (see ``BusinessCalendar``).

    >>> _deadline({"t": "2026-11-30T16:00:00+00:00"}, "k", "t")
    '2026-11-30 24:00'
    """
    local = _instant(payload, kind, key)
    if (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0):
        return f"{(local - timedelta(days=1)):%Y-%m-%d} 24:00"
    return local.strftime("%Y-%m-%d %H:%M")


def _text(payload: Mapping[str, Any], kind: str, key: str) -> str:
    """User-supplied text made safe for one line of an SMS."""
    value = _get(payload, kind, key)
    if not isinstance(value, str):
        raise ValueError(f"{kind}: {key} must be text")
    return _clean(value)


def _clean(value: str) -> str:
    """
    >>> _clean(" 【公安局】\\n张三 ")
    '[公安局] 张三'
    >>> _clean("很" * 40)
    '很很很很很很很很很很很很很很很很很很很很很很很很很很很很很…'
    """
    text = " ".join(_CONTROL.sub(" ", value).split()).translate(_SIGNATURE_BRACKETS)
    return text if len(text) <= _TEXT_MAX else text[: _TEXT_MAX - 1] + "…"


def _sentence(text: str) -> str:
    return text if text.endswith(("。", "！", "？", ".", "!", "?")) else text + "。"


def _payment_succeeded(p: Mapping[str, Any], k: str) -> str:
    return (
        f"您于{_time(p, k, 'completed_at')}向{_text(p, k, 'payee_name')}付款{_amount(p, k)}，"
        f"手续费{_amount(p, k, 'fee_fen')}，流水号{_text(p, k, 'serial_no')}。"
    )


def _topup_succeeded(p: Mapping[str, Any], k: str) -> str:
    return (
        f"您于{_time(p, k, 'completed_at')}从{_text(p, k, 'payer_name')}向钱包充值{_amount(p, k)}，"
        f"流水号{_text(p, k, 'serial_no')}。"
    )


def _payment_received(p: Mapping[str, Any], k: str) -> str:
    return (
        f"您于{_time(p, k, 'completed_at')}收到{_text(p, k, 'payer_name')}付款{_amount(p, k)}，"
        f"流水号{_text(p, k, 'serial_no')}。"
    )


def _payment_failed(p: Mapping[str, Any], k: str) -> str:
    hint = p.get("retry_hint")
    hint = _sentence(_clean(hint)) if isinstance(hint, str) and hint.strip() else None
    return (
        f"您的付款{_amount(p, k)}未成功，原因：{_sentence(_text(p, k, 'failure_message'))}"
        f"{hint or DEFAULT_RETRY_HINT}流水号{_text(p, k, 'serial_no')}。"
    )


def _payment_pending_review(p: Mapping[str, Any], k: str) -> str:
    return f"您的付款{_amount(p, k)}正在审核，结果将另行通知，流水号{_text(p, k, 'serial_no')}。"


def _verification_code(p: Mapping[str, Any], k: str) -> str:
    code = _get(p, k, "code")
    if not isinstance(code, str) or not code.isascii() or not code.isalnum():
        # An int would have lost its leading zeros.
        raise ValueError(f"{k}: code must be a string of letters or digits")
    minutes = _get(p, k, "expires_minutes")
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 0:
        raise ValueError(f"{k}: expires_minutes must be a non-negative integer")
    # A code valid for under a minute (rounded down to 0) must not read "0分钟内有效".
    validity = f"{minutes}分钟内有效" if minutes else "即将失效，请尽快使用"
    return (
        f"验证码{code}，您正在向{_text(p, k, 'payee_name')}付款{_amount(p, k)}，"
        f"{validity}。切勿将验证码告知他人。"
    )


def _refund_succeeded(p: Mapping[str, Any], k: str) -> str:
    return (
        f"您的退款{_amount(p, k)}已于{_time(p, k, 'completed_at')}办理成功，"
        f"流水号{_text(p, k, 'serial_no')}。"
    )


def _withdrawal_accepted(p: Mapping[str, Any], k: str) -> str:
    return (
        f"您的提现{_amount(p, k)}已受理，预计{_deadline(p, k, 'arrives_by')}前到账，"
        f"流水号{_text(p, k, 'serial_no')}。"
    )


def _generic(p: Mapping[str, Any], k: str) -> str:
    # Never refuses: an unknown kind gets whichever common fields are usable.
    parts = ["您的账户有一条新通知"]
    fields: tuple[tuple[str, Callable[[], str]], ...] = (
        ("流水号", lambda: _text(p, k, "serial_no")),
        ("金额", lambda: _amount(p, k)),
        ("时间", lambda: _time(p, k, "completed_at")),
    )
    for label, render_field in fields:
        with contextlib.suppress(ValueError):
            parts.append(label + render_field())
    parts.append("详情请登录通宝App查看。")
    return "，".join(parts)


_TEMPLATES: Final[dict[str, Callable[[Mapping[str, Any], str], str]]] = {
    "payment_succeeded": _payment_succeeded,
    "payment_received": _payment_received,
    "topup_succeeded": _topup_succeeded,
    "payment_failed": _payment_failed,
    "payment_pending_review": _payment_pending_review,
    "verification_code": _verification_code,
    "refund_succeeded": _refund_succeeded,
    "withdrawal_accepted": _withdrawal_accepted,
}

KINDS: Final = frozenset(_TEMPLATES)
"""The kinds with a template of their own; others get a generic text."""


def render(kind: str, payload: Mapping[str, Any]) -> str:
    """The SMS text for a notification of ``kind``; ``ValueError`` if the payload
    lacks something the kind needs."""
    return SIGNATURE + _TEMPLATES.get(kind, _generic)(payload, kind)
