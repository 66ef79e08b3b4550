"""Amount parsing: yuan strings in, integer fen out; everything else refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tongbao import errors
from tongbao.money import check_fen, format_yuan, parse_yuan

MAX = 100_000_000


@pytest.mark.parametrize(
    ("text", "fen"),
    [("12.34", 1234), ("0.01", 1), ("7", 700), ("7.5", 750), ("1000000", 100_000_000)],
)
def test_parses_yuan_strings_to_fen(text: str, fen: int) -> None:
    assert parse_yuan(text, max_fen=MAX) == fen


@pytest.mark.parametrize(
    ("value", "error", "phrase"),
    [
        (12.34, errors.InvalidAmount, "not a float"),
        (1234, errors.InvalidAmount, "not int"),
        (True, errors.InvalidAmount, "not bool"),
        ("-1.00", errors.InvalidAmount, "negative"),
        ("0", errors.InvalidAmount, "greater than zero"),
        ("0.00", errors.InvalidAmount, "greater than zero"),
        ("1.234", errors.InvalidAmount, "more than 2 decimal"),
        ("1e3", errors.InvalidAmount, "not a yuan amount"),
        ("1,000", errors.InvalidAmount, "not a yuan amount"),
        (" 1", errors.InvalidAmount, "not a yuan amount"),
        (".5", errors.InvalidAmount, "not a yuan amount"),
        ("01.00", errors.InvalidAmount, "not a yuan amount"),
        ("NaN", errors.InvalidAmount, "not a yuan amount"),
        ("１２", errors.InvalidAmount, "not a yuan amount"),  # full-width digits
        ("1000000.01", errors.AmountTooLarge, "above the maximum"),
        ("9" * 40, errors.AmountTooLarge, "above the maximum"),
    ],
)
def test_refuses_every_malformed_amount_with_a_clear_reason(
    value: object, error: type[Exception], phrase: str
) -> None:
    with pytest.raises(error, match=phrase):
        parse_yuan(value, max_fen=MAX)


def test_zero_only_where_meaningful() -> None:
    assert parse_yuan("0.00", max_fen=MAX, allow_zero=True) == 0
    with pytest.raises(errors.InvalidAmount):
        check_fen(0, max_fen=MAX)
    assert check_fen(0, max_fen=MAX, allow_zero=True) == 0


@given(st.integers(min_value=1, max_value=MAX))
def test_format_and_parse_round_trip(fen: int) -> None:
    assert parse_yuan(format_yuan(fen), max_fen=MAX) == fen


def test_format_negative_amounts() -> None:
    assert format_yuan(-5) == "-0.05"
    assert format_yuan(-1234) == "-12.34"
