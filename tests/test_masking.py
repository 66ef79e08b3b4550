"""Masking of personal data on screens and in logs (SEC-3)."""

from __future__ import annotations

import re

import structlog
from hypothesis import given
from hypothesis import strategies as st

from tongbao.ids import new_id
from tongbao.security.masking import (
    luhn_valid,
    mask_address,
    mask_card_number,
    mask_id_number,
    mask_name,
    mask_personal_data,
    mask_phone,
    redact_text,
)

digits = st.text(alphabet="0123456789", min_size=1, max_size=1)


@st.composite
def id_numbers(draw: st.DrawFn) -> str:
    """18-character resident ID numbers with a plausible birth date."""
    region = draw(st.integers(110000, 659999))
    year = draw(st.integers(1900, 2025))
    month = draw(st.integers(1, 12))
    day = draw(st.integers(1, 28))
    seq = draw(st.integers(0, 999))
    check = draw(st.sampled_from("0123456789X"))
    return f"{region}{year}{month:02d}{day:02d}{seq:03d}{check}"


@st.composite
def mobiles(draw: st.DrawFn) -> str:
    return (
        "1" + draw(st.sampled_from("3456789")) + draw(st.text("0123456789", min_size=9, max_size=9))
    )


def with_luhn(body: str) -> str:
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable")


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    length = draw(st.integers(16, 19))
    body = draw(st.sampled_from("3456")) + draw(
        st.text("0123456789", min_size=length - 2, max_size=length - 2)
    )
    return with_luhn(body)


@given(id_numbers())
def test_id_numbers_show_only_the_first_6_and_last_4(number: str) -> None:
    """SEC-3: the ID number shows the first 6 and the last 4 characters."""
    masked = mask_id_number(number)
    assert len(masked) == len(number) == 18
    assert masked == number[:6] + "*" * 8 + number[-4:]
    assert number[6:14] not in masked  # the birth date and sequence never show


@given(card_numbers())
def test_card_numbers_show_only_the_last_4(number: str) -> None:
    """SEC-3: card numbers are masked; the mask does not even tell the length."""
    masked = mask_card_number(number)
    assert masked == "**** **** **** " + number[-4:]
    assert not re.search(r"\d{5}", masked)


@given(mobiles())
def test_mobile_numbers_hide_the_middle_four(number: str) -> None:
    masked = mask_phone(number)
    assert masked == number[:3] + "****" + number[-4:]
    assert mask_phone("+86 " + number) == masked


@given(st.text(alphabet="张王李赵欧阳司马诸葛买提艾力娜三丰", min_size=2, max_size=6))
def test_chinese_names_keep_the_first_and_last_character_only(name: str) -> None:
    masked = mask_name(name)
    assert len(masked) == len(name) and masked[0] == name[0]
    if len(name) >= 3:
        assert masked[-1] == name[-1] and set(masked[1:-1]) == {"*"}
    else:
        assert masked[1] == "*"


def test_address_keeps_province_and_city() -> None:
    assert mask_address("浙江省杭州市西湖区文三路 90 号 3 幢") == "浙江省杭州市****"
    assert mask_address("上海市浦东新区世纪大道100号") == "上海市****"
    assert mask_address("广东省东莞长安镇振安路8号") == "广东省****"  # no city part found
    assert mask_address("") == ""


sensitive = st.one_of(id_numbers(), mobiles(), card_numbers())
harmless = st.one_of(
    st.sampled_from(["付款", "转账成功", "amount=1234", "账户", " ", "，", "ok"]),
    st.builds(lambda: new_id("pay")),  # Crockford ids
    st.text("0123456789", min_size=28, max_size=28),  # serial numbers
    st.integers(0, 10**9).map(str),  # amounts in fen, counts
)


@given(st.lists(st.tuples(harmless, sensitive), min_size=1, max_size=4), harmless)
def test_redact_text_masks_personal_numbers_and_nothing_else(
    parts: list[tuple[str, str]], tail: str
) -> None:
    """SEC-3 in logs: ID, card and mobile numbers are masked in free text, even
    touching Chinese text; serial numbers, ids and amounts are left alone."""
    text = "".join(f"{before} {secret} " for before, secret in parts) + tail
    redacted = redact_text(text)
    for before, secret in parts:
        assert secret not in redacted
        assert before in redacted
    assert tail in redacted
    touching = "身份证" + parts[0][1] + "已核验"
    assert parts[0][1] not in redact_text(touching)


@given(st.text("0123456789", min_size=16, max_size=19).filter(lambda d: not luhn_valid(d)))
def test_digit_runs_that_are_not_card_numbers_survive(run: str) -> None:
    assert (
        redact_text(f"ref {run} end") == f"ref {run} end"
        or re.match(r"1[3-9]\d{9}$", run) is not None
        or re.match(r"[1-9]\d{5}(18|19|20)", run) is not None
    )


def test_structlog_processor_masks_every_string_in_the_event() -> None:
    """SEC-3: one processor in the logging chain keeps personal numbers out of logs."""
    logger = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[mask_personal_data, structlog.processors.JSONRenderer(ensure_ascii=False)],
    )
    line = logger.info(
        "card 6222021234567890128 bound for 13812345678",
        customer={"id_number": "110101199003071234", "tags": ["13912345678", 7]},
        serial="2026112310000000000000000042",
    )
    assert "6222021234567890128" not in line and "**** **** **** 0128" in line
    assert "138****5678" in line and "139****5678" in line
    assert "110101********1234" in line and "2026112310000000000000000042" in line
    assert '"tags": ["139****5678", 7]' in line
