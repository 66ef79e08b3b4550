"""Business calendar (REC-4) on both engines: holidays, adjusted working days,
deadlines in working days, unknown years refused, whole-year imports."""

from __future__ import annotations

import doctest
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from tongbao import errors
from tongbao.calendar import BusinessCalendar, days, parse_calendar_csv, service
from tongbao.calendar.tables import business_days
from tongbao.clock import SHANGHAI
from tongbao.storage import Database


def year_2027_csv() -> str:
    """A made-up but plausible 2027: weekends off, a few holidays, one adjusted Saturday."""
    holidays = {date(2027, 1, 1): "元旦"}
    holidays |= {date(2027, 2, 5) + timedelta(days=i): "春节" for i in range(7)}
    worked_saturday = date(2027, 2, 20)
    lines = ["# 2027, made up for tests", ""]
    day = date(2027, 1, 1)
    while day.year == 2027:
        if day == worked_saturday:
            lines.append(f"{day},work,adjusted working day (春节)")
        elif day in holidays:
            lines.append(f"{day},off,{holidays[day]}")
        else:
            lines.append(f"{day},{'work' if day.weekday() < 5 else 'off'}")
        day += timedelta(days=1)
    return "\n".join(lines) + "\n"


@pytest.fixture
def calendar(db: Database) -> BusinessCalendar:
    return BusinessCalendar(db)


def rows_of_year(db: Database, year: int) -> int:
    c = business_days.c
    query = select(func.count()).where(c.day.between(date(year, 1, 1), date(year, 12, 31)))
    return int(db.read(lambda conn: conn.execute(query).scalar_one()))


def test_migration_seeds_2004_to_2026(db: Database) -> None:
    assert BusinessCalendar(db).known_years() == list(range(2004, 2027))
    assert rows_of_year(db, 2024) == 366


def test_national_day_is_off_and_the_adjusted_saturday_is_worked(calendar) -> None:
    assert calendar.is_working_day(date(2026, 10, 1)) is False  # National Day, a Thursday
    assert calendar.is_working_day(date(2026, 10, 7)) is False
    assert calendar.is_working_day(date(2026, 2, 14)) is True  # Saturday, moved for Spring Festival
    assert calendar.is_working_day(date(2026, 2, 15)) is False  # an ordinary Sunday
    assert calendar.is_working_day(date(2026, 9, 30)) is True


def test_adding_working_days_skips_the_national_day_holiday(calendar) -> None:
    # Wed 30 Sep + 3: Thu 8 Oct, Fri 9 Oct, Sat 10 Oct (an adjusted working day).
    assert calendar.add_working_days(date(2026, 9, 30), 3) == date(2026, 10, 10)
    assert calendar.next_working_day(date(2026, 9, 30)) == date(2026, 10, 8)
    assert calendar.next_working_day(date(2026, 10, 3)) == date(2026, 10, 8)
    assert calendar.add_working_days(date(2026, 10, 3), 0) == date(2026, 10, 3)
    assert calendar.working_days_between(date(2026, 9, 30), date(2026, 10, 10)) == 3
    assert calendar.working_days_between(date(2026, 10, 10), date(2026, 9, 30)) == -3
    with pytest.raises(ValueError, match="non-negative"):
        calendar.add_working_days(date(2026, 9, 30), -1)
    with pytest.raises(TypeError, match="expected a date"):
        calendar.is_working_day(datetime(2026, 10, 1, tzinfo=UTC))


def test_an_unknown_year_is_refused_not_guessed(calendar) -> None:
    assert 2027 not in calendar.known_years()
    with pytest.raises(errors.CalendarYearUnknown, match="2027") as caught:
        calendar.is_working_day(date(2027, 1, 4))  # a Monday: guessing would say "working"
    assert caught.value.extra == {"year": 2027}
    assert caught.value.code == "calendar_year_unknown"
    # Counting from a known year into an unknown one is refused too.
    with pytest.raises(errors.CalendarYearUnknown, match="year 2027"):
        calendar.add_working_days(date(2026, 12, 30), 5)
    with pytest.raises(errors.CalendarYearUnknown):
        calendar.end_of_working_day_after(datetime(2026, 12, 31, 8, tzinfo=UTC), 1)


def test_importing_a_whole_2027_csv_makes_it_usable(db: Database, calendar) -> None:
    rows = parse_calendar_csv(year_2027_csv())
    assert calendar.import_year(2027, rows, "csv: test 2027") == 365
    assert 2027 in calendar.known_years()
    assert calendar.is_working_day(date(2027, 1, 1)) is False
    assert calendar.is_working_day(date(2027, 2, 20)) is True  # the adjusted Saturday
    # Thu 31 Dec 2026 + 1 working day: 1 Jan 2027 is a holiday, 2-3 Jan a weekend.
    assert calendar.add_working_days(date(2026, 12, 31), 1) == date(2027, 1, 4)
    assert rows_of_year(db, 2027) == 365
    # Another process (a fresh instance) reads the same table.
    assert BusinessCalendar(db).is_working_day(date(2027, 2, 20)) is True
    with db.snapshot() as conn:
        row = conn.execute(
            select(business_days).where(business_days.c.day == date(2027, 2, 20))
        ).one()
    assert (row.name, row.source) == ("adjusted working day (春节)", "csv: test 2027")


def test_a_year_already_held_is_replaced_only_when_asked(db: Database, calendar) -> None:
    rows = parse_calendar_csv(year_2027_csv())
    calendar.import_year(2027, rows, "first")
    with pytest.raises(errors.CalendarYearPresent, match="2027"):
        calendar.import_year(2027, rows, "second")
    # The State Council moves a day: 5 Mar 2027 becomes a holiday.
    changed = [(d, False, "made up") if d == date(2027, 3, 5) else (d, w, n) for d, w, n in rows]
    assert calendar.is_working_day(date(2027, 3, 5)) is True
    assert calendar.import_year(2027, changed, "revised", replace=True) == 365
    assert calendar.is_working_day(date(2027, 3, 5)) is False
    assert rows_of_year(db, 2027) == 365
    assert rows_of_year(db, 2026) == 365  # the neighbouring year is untouched


def test_a_partial_year_is_refused_and_nothing_is_written(db: Database, calendar) -> None:
    rows = parse_calendar_csv(year_2027_csv())
    without_march = [r for r in rows if r[0].month != 3]
    with pytest.raises(errors.CalendarDataInvalid, match=r"31 days missing \(2027-03-01"):
        calendar.import_year(2027, without_march, "partial")
    with pytest.raises(errors.CalendarDataInvalid, match="2028-01-01 is not in 2027"):
        calendar.import_year(2027, [*rows, (date(2028, 1, 1), False, None)], "spill")
    with pytest.raises(errors.CalendarDataInvalid, match="more than once"):
        calendar.import_year(2027, [*rows, rows[10]], "twice")
    swapped = [(d, not w, n) for d, w, n in rows]
    with pytest.raises(errors.CalendarDataInvalid, match="swapped"):
        calendar.import_year(2027, swapped, "swapped")
    assert rows_of_year(db, 2027) == 0
    assert 2027 not in calendar.known_years()
    with pytest.raises(errors.CalendarYearUnknown):
        calendar.is_working_day(date(2027, 6, 1))


def test_end_of_working_day_after_crosses_the_weekend(calendar) -> None:
    monday_end = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)  # 24:00 Mon 30 Nov in Shanghai
    friday_afternoon = datetime(2026, 11, 27, 15, 30, tzinfo=SHANGHAI)
    assert calendar.end_of_working_day_after(friday_afternoon, 1) == monday_end
    friday_late = datetime(2026, 11, 27, 23, 59, tzinfo=SHANGHAI)
    assert calendar.end_of_working_day_after(friday_late, 1) == monday_end
    # 17:00 UTC on Friday is already 01:00 Saturday in Shanghai; Shanghai counts.
    saturday_early = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
    assert calendar.end_of_working_day_after(saturday_early, 1) == monday_end
    assert calendar.end_of_working_day_after(saturday_early, 3) == datetime(
        2026, 12, 2, 16, 0, tzinfo=UTC
    )
    assert calendar.end_of_working_day_after(friday_afternoon, 0) == datetime(
        2026, 11, 27, 16, 0, tzinfo=UTC
    )
    deadline = calendar.end_of_working_day_after(friday_afternoon, 1)
    assert deadline.tzinfo is UTC
    assert deadline.astimezone(SHANGHAI).isoformat() == "2026-12-01T00:00:00+08:00"
    with pytest.raises(ValueError, match="naive"):
        calendar.end_of_working_day_after(datetime(2026, 11, 27, 12), 1)


def test_the_table_is_cached_and_reloaded(db: Database, calendar) -> None:
    cached = BusinessCalendar(db)
    assert 2027 not in cached.known_years()
    calendar.import_year(2027, parse_calendar_csv(year_2027_csv()), "csv")
    assert 2027 not in cached.known_years()  # another process's import shows up later...
    cached.invalidate()
    assert 2027 in cached.known_years()  # ...or at once once told
    eager = BusinessCalendar(db, reload_after=timedelta(0))
    assert eager.known_years() == calendar.known_years()


def test_concurrent_first_use_loads_the_table_once(db: Database, calendar, monkeypatch) -> None:
    cold = BusinessCalendar(db)
    loads: list[int] = []
    real_load = cold._load

    def counting_load() -> object:
        loads.append(1)
        return real_load()

    monkeypatch.setattr(cold, "_load", counting_load)
    start = threading.Barrier(8)
    answers: list[bool] = []

    def ask() -> None:
        start.wait()
        answers.append(cold.is_working_day(date(2026, 10, 1)))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [False] * 8
    assert loads == [1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2027-01-01", "line 1: expected YYYY-MM-DD,work|off"),
        ("2027-01-01,off,a,b", "quote a name"),
        ("\n# comment\n2027-13-01,off", "line 3: '2027-13-01' is not a date"),
        ("20270101,off", "line 1: '20270101' is not a date written YYYY-MM-DD"),
        ("2027-01-01,off\n2027-01-02,maybe", "line 2: expected work or off, got 'maybe'"),
        ("2027-01-01,off\n2027-01-01,work", "line 2: 2027-01-01 was already given on line 1"),
        ("2027-01-01,off," + "x" * 61, "longer than 60"),
    ],
)
def test_csv_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(errors.CalendarDataInvalid, match=message):
        parse_calendar_csv(text)


def test_csv_accepts_bom_spaces_case_and_quoted_names() -> None:
    text = (
        "\ufeff2027-01-01 , OFF , 元旦\r\n"
        '2027-01-02,off,"Saturday, of course"\r\n'
        "2027-01-04,work,\n"
    )
    assert parse_calendar_csv(text) == [
        (date(2027, 1, 1), False, "元旦"),
        (date(2027, 1, 2), False, "Saturday, of course"),
        (date(2027, 1, 4), True, None),
    ]


@pytest.mark.parametrize("module", [days, service])
def test_doctests(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0
    assert result.failed == 0
