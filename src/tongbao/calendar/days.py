"""Working-day arithmetic over a working-day table (REC-4). Pure: no I/O.

The table maps every known day to whether it is a working day. China moves
working days around public holidays (a Saturday can be a working day, a
Wednesday a holiday), so no rule can stand in for the table: a day it does
not hold is refused with :class:`~tongbao.errors.CalendarYearUnknown`, never
guessed from the weekday.

The examples use 28 September to 11 October 2026: National Day week off,
Saturday 10 October an adjusted working day::

    >>> from datetime import date, timedelta
    >>> first = date(2026, 9, 28)  # a Monday
    >>> table = {first + timedelta(days=i): c == "1" for i, c in enumerate("11100000001110")}
    >>> is_working_day(table, date(2026, 10, 1))
    False
    >>> is_working_day(table, date(2026, 10, 10))
    True
    >>> add_working_days(table, date(2026, 9, 30), 3)
    datetime.date(2026, 10, 10)
    >>> next_working_day(table, date(2026, 9, 30))
    datetime.date(2026, 10, 8)
    >>> working_days_between(table, date(2026, 9, 28), date(2026, 10, 10))
    5
    >>> next_working_day(table, date(2026, 10, 10))
    Traceback (most recent call last):
    ...
    tongbao.errors.CalendarYearUnknownError: calendar_year_unknown: the business calendar has no data for 2026-10-12 (year 2026)
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta

from tongbao import errors

_DAY = timedelta(days=1)


def _unknown(day: date) -> errors.TongbaoError:
    """The refusal for a day the table does not hold."""
    return errors.CalendarYearUnknown(
        f"the business calendar has no data for {day.isoformat()} (year {day.year})",
        year=day.year,
    )


def _check_date(day: date) -> None:
    # A datetime is a date subclass but never equal to one, so it would miss
    # every key and be refused as an unknown year: say what is wrong instead.
    if isinstance(day, datetime) or not isinstance(day, date):
        raise TypeError(f"expected a date, not {type(day).__name__}")


def _lookup(table: Mapping[date, bool], day: date) -> bool:
    try:
        return table[day]
    except KeyError:
        raise _unknown(day) from None


def is_working_day(table: Mapping[date, bool], day: date) -> bool:
    """Whether ``day`` is a working day; refuses a day the table does not hold."""
    _check_date(day)
    return _lookup(table, day)


def add_working_days(table: Mapping[date, bool], start: date, n: int) -> date:
    """The ``n``-th working day strictly after ``start`` (``start`` itself when ``n`` is 0).

    ``start`` need not be a working day: 1 working day after a Saturday is the
    following Monday (if that is a working day).

        >>> table = {date(2026, 11, 20) + timedelta(days=i): i % 7 < 1 or i % 7 > 2
        ...          for i in range(10)}  # Fri 20 Nov 2026 onwards, weekends off
        >>> add_working_days(table, date(2026, 11, 21), 1)
        datetime.date(2026, 11, 23)
        >>> add_working_days(table, date(2026, 11, 21), 0)
        datetime.date(2026, 11, 21)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, not {n!r}")
    _check_date(start)
    day = start
    while n > 0:
        day += _DAY
        if _lookup(table, day):
            n -= 1
    return day


def next_working_day(table: Mapping[date, bool], day: date) -> date:
    """The first working day strictly after ``day``."""
    return add_working_days(table, day, 1)


def working_days_between(table: Mapping[date, bool], start: date, end: date) -> int:
    """How many working days lie in ``(start, end]``; negative when ``end`` is before ``start``.

    The half-open interval matches :func:`add_working_days`, so
    ``working_days_between(t, d, add_working_days(t, d, n)) == n``, and the
    same day counts zero.

        >>> table = {date(2026, 11, 20) + timedelta(days=i): i % 7 < 1 or i % 7 > 2
        ...          for i in range(10)}  # Fri 20 Nov 2026 onwards, weekends off
        >>> working_days_between(table, date(2026, 11, 20), date(2026, 11, 24))
        2
        >>> working_days_between(table, date(2026, 11, 24), date(2026, 11, 20))
        -2
    """
    _check_date(start)
    _check_date(end)
    if end < start:
        return -working_days_between(table, end, start)
    count = 0
    day = start
    while day < end:
        day += _DAY
        count += _lookup(table, day)
    return count
