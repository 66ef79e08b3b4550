"""The business calendar service (REC-4): the working-day table, held in memory.

Deadlines are counted in working days of the State Council's holiday
arrangement ("arrives within 3 working days", PAY-6; "objection within 1
working day", PAY-10). The table is small (one row per day, about 8,400 rows
for 2004–2026), read on the payment path and changed about once a year, so
each process loads it once and reads it again after :data:`RELOAD_AFTER`;
an import through this process takes effect here at once, one through
another process within :data:`RELOAD_AFTER`.

Years are imported whole (:meth:`BusinessCalendar.import_year`), so a year is
either fully known or refused with :class:`~tongbao.errors.CalendarYearUnknown`.
"""

from __future__ import annotations

import csv
import io
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from time import monotonic
from types import MappingProxyType

import structlog
from sqlalchemy import Connection, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from tongbao import errors
from tongbao.calendar import days
from tongbao.calendar import tables as t
from tongbao.clock import SHANGHAI, business_date
from tongbao.storage.database import Database, is_unique_violation

log = structlog.get_logger(__name__)

RELOAD_AFTER = timedelta(minutes=10)
"""How long a process trusts its copy of the table before reading it again."""

CalendarRow = tuple[date, bool, str | None]
"""One day: the date, whether it is a working day, and its name (``None`` for none)."""

_NAME_MAX = 60  # column widths of business_calendar
_SOURCE_MAX = 60
# A Chinese year has about 245-251 working days. Far outside that, the data is
# wrong (work/off swapped, a weekend-only file): refuse rather than move every
# deadline in the year.
_PLAUSIBLE_WORKING_DAYS = range(200, 301)
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_KINDS = {"work": True, "off": False}
_c = t.business_days.c


@dataclass(frozen=True, slots=True)
class _Snapshot:
    table: Mapping[date, bool]
    years: tuple[int, ...]
    loaded_at: float
    """``time.monotonic()`` when read, immune to wall-clock steps."""


class BusinessCalendar:
    """Working days of the business calendar, refusing years it does not hold."""

    def __init__(self, db: Database, *, reload_after: timedelta = RELOAD_AFTER) -> None:
        self.db = db
        self.reload_after = reload_after.total_seconds()
        self._snapshot: _Snapshot | None = None
        self._lock = threading.Lock()

    # --- queries ---------------------------------------------------------------------

    def is_working_day(self, day: date) -> bool:
        return days.is_working_day(self._current().table, day)

    def add_working_days(self, day: date, n: int) -> date:
        """The ``n``-th working day strictly after ``day`` (``day`` itself for 0)."""
        return days.add_working_days(self._current().table, day, n)

    def next_working_day(self, day: date) -> date:
        """The first working day strictly after ``day``."""
        return days.next_working_day(self._current().table, day)

    def working_days_between(self, start: date, end: date) -> int:
        """How many working days lie in ``(start, end]``."""
        return days.working_days_between(self._current().table, start, end)

    def known_years(self) -> list[int]:
        """The years the calendar holds, ascending."""
        return list(self._current().years)

    def end_of_working_day_after(self, instant: datetime, n: int) -> datetime:
        """The UTC instant of 24:00 Asia/Shanghai ending the ``n``-th working day
        after the Shanghai date of ``instant`` (the deadline of "within ``n``
        working days"); with ``n`` 0, the end of that date itself.

        A payment at 23:30 on Friday 27 November 2026 Shanghai time, plus one
        working day, must be answered by the end of Monday 30 November, which is
        2026-11-30 16:00 UTC.
        """
        if instant.tzinfo is None:
            raise ValueError("naive datetime given where an instant is required")
        last = self.add_working_days(business_date(instant), n)
        midnight = datetime.combine(last + timedelta(days=1), time(0), tzinfo=SHANGHAI)
        return midnight.astimezone(UTC)

    # --- the in-memory table ----------------------------------------------------------

    def _fresh(self, snapshot: _Snapshot | None) -> bool:
        return snapshot is not None and monotonic() - snapshot.loaded_at < self.reload_after

    def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is not None and self._fresh(snapshot):
            return snapshot
        # One thread reads the table. Without any copy the others wait for it;
        # with a stale one they keep using it meanwhile rather than queue up on
        # the payment path (the stale copy was right ten minutes ago).
        if not self._lock.acquire(blocking=snapshot is None):
            assert snapshot is not None
            return snapshot
        try:
            current = self._snapshot
            if current is None or not self._fresh(current):
                current = self._load()
                self._snapshot = current
            return current
        finally:
            self._lock.release()

    def _load(self) -> _Snapshot:
        rows = self.db.read(lambda conn: conn.execute(select(_c.day, _c.is_working_day)).all())
        table = {row.day: bool(row.is_working_day) for row in rows}
        years = tuple(sorted({day.year for day in table}))
        log.debug("business_calendar_loaded", days=len(table), years=len(years))
        return _Snapshot(MappingProxyType(table), years, monotonic())

    def invalidate(self) -> None:
        """Forget the in-memory table; the next query reads it again."""
        # Taking the lock orders this after any load in progress, which may
        # have read the table before the change being published committed.
        with self._lock:
            self._snapshot = None

    # --- import ------------------------------------------------------------------------

    def import_year(
        self,
        year: int,
        rows: Iterable[CalendarRow],
        source: str,
        *,
        replace: bool = False,
    ) -> int:
        """Store the whole of ``year``; returns the number of days written.

        ``rows`` must cover every day of the year exactly once; otherwise
        :class:`~tongbao.errors.CalendarDataInvalid` is raised and nothing is
        written. A year already held is refused with
        :class:`~tongbao.errors.CalendarYearPresent` unless ``replace``, which
        swaps the year's rows in one transaction (readers see the old year or
        the new one, never a mix).
        """
        values = check_year(year, rows, source)
        first, last = date(year, 1, 1), date(year, 12, 31)

        def write(conn: Connection) -> int:
            held = conn.execute(
                select(func.count()).select_from(t.business_days).where(_c.day.between(first, last))
            ).scalar_one()
            if held and not replace:
                raise _year_present(year)
            if held:
                conn.execute(delete(t.business_days).where(_c.day.between(first, last)))
            conn.execute(insert(t.business_days), values)
            return len(values)

        try:
            written = self.db.run(write, what="calendar_import")
        except IntegrityError as exc:
            # Another import of the same year committed between our check and insert.
            if is_unique_violation(exc):
                raise _year_present(year) from exc
            raise
        self.invalidate()
        log.info(
            "business_calendar_imported",
            year=year,
            days=written,
            working_days=sum(1 for v in values if v["is_working_day"]),
            source=source,
            replaced=replace,
        )
        return written


def _year_present(year: int) -> errors.TongbaoError:
    return errors.CalendarYearPresent(
        f"the business calendar already holds {year}; import with replace to replace it",
        year=year,
    )


def check_year(year: int, rows: Iterable[CalendarRow], source: str) -> list[dict[str, object]]:
    """Validate one whole year of rows and return them as table rows. Pure.

    >>> from datetime import timedelta
    >>> def year_of(y):
    ...     first = date(y, 1, 1)
    ...     return [(first + timedelta(days=i), (first + timedelta(days=i)).weekday() < 5,
    ...              None) for i in range((date(y + 1, 1, 1) - first).days)]
    >>> len(check_year(2027, year_of(2027), "test"))
    365
    >>> check_year(2028, year_of(2028)[1:], "test")
    Traceback (most recent call last):
    ...
    tongbao.errors.CalendarDataInvalidError: calendar_data_invalid: 2028 is incomplete: 1 day missing (2028-01-01)
    """  # noqa: E501
    if isinstance(year, bool) or not isinstance(year, int) or not 1900 <= year <= 9999:
        raise errors.CalendarDataInvalid(f"{year!r} is not a calendar year")
    source = source.strip() if isinstance(source, str) else ""
    if not source or len(source) > _SOURCE_MAX:
        raise errors.CalendarDataInvalid(f"source must be 1 to {_SOURCE_MAX} characters")
    values: dict[date, dict[str, object]] = {}
    for row in rows:
        day, working, name = row
        if isinstance(day, datetime) or not isinstance(day, date):
            raise errors.CalendarDataInvalid(f"{day!r} is not a date")
        if day.year != year:
            raise errors.CalendarDataInvalid(f"{day.isoformat()} is not in {year}")
        if day in values:
            raise errors.CalendarDataInvalid(f"{day.isoformat()} is given more than once")
        if not isinstance(working, bool):
            raise errors.CalendarDataInvalid(f"{day.isoformat()}: working must be true or false")
        name = (name.strip() or None) if isinstance(name, str) else name
        if name is not None and (not isinstance(name, str) or len(name) > _NAME_MAX):
            raise errors.CalendarDataInvalid(
                f"{day.isoformat()}: name must be text of at most {_NAME_MAX} characters"
            )
        values[day] = {"day": day, "is_working_day": working, "name": name, "source": source}
    first = date(year, 1, 1)
    every = [first + timedelta(days=i) for i in range((date(year + 1, 1, 1) - first).days)]
    missing = [day for day in every if day not in values]
    if missing:
        shown = ", ".join(day.isoformat() for day in missing[:5])
        more = ", …" if len(missing) > 5 else ""
        plural = "day" if len(missing) == 1 else "days"
        raise errors.CalendarDataInvalid(
            f"{year} is incomplete: {len(missing)} {plural} missing ({shown}{more})",
            missing=len(missing),
        )
    working_days = sum(1 for v in values.values() if v["is_working_day"])
    if working_days not in _PLAUSIBLE_WORKING_DAYS:
        raise errors.CalendarDataInvalid(
            f"{year} has {working_days} working days, not a plausible Chinese business year "
            f"({_PLAUSIBLE_WORKING_DAYS.start}-{_PLAUSIBLE_WORKING_DAYS.stop - 1}); "
            "are work and off swapped?"
        )
    return [values[day] for day in every]


def parse_calendar_csv(text: str) -> list[CalendarRow]:
    """Parse calendar CSV: one ``YYYY-MM-DD,work|off[,name]`` line per day.

    Blank lines and lines starting with ``#`` are skipped; a name containing a
    comma must be quoted. Errors name the line.

        >>> parse_calendar_csv("# 2027\\n2027-01-01,off,元旦\\n2027-01-04,work\\n")
        [(datetime.date(2027, 1, 1), False, '元旦'), (datetime.date(2027, 1, 4), True, None)]
        >>> parse_calendar_csv("2027-01-01,holiday")
        Traceback (most recent call last):
        ...
        tongbao.errors.CalendarDataInvalidError: calendar_data_invalid: line 1: expected work or off, got 'holiday'
    """  # noqa: E501
    parsed: list[CalendarRow] = []
    seen: dict[date, int] = {}
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))  # Excel writes a BOM
    for fields in reader:
        line = reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if fields[0].lstrip().startswith("#"):
            continue
        if not 2 <= len(fields) <= 3:
            raise errors.CalendarDataInvalid(
                f"line {line}: expected YYYY-MM-DD,work|off[,name], got {len(fields)} fields"
                + (" (quote a name that contains a comma)" if len(fields) > 3 else ""),
                line=line,
            )
        day_text, kind = fields[0].strip(), fields[1].strip().lower()
        day = _parse_day(day_text, line)
        if kind not in _KINDS:
            raise errors.CalendarDataInvalid(
                f"line {line}: expected work or off, got {fields[1].strip()!r}", line=line
            )
        if day in seen:
            raise errors.CalendarDataInvalid(
                f"line {line}: {day_text} was already given on line {seen[day]}", line=line
            )
        seen[day] = line
        name = fields[2].strip() if len(fields) == 3 else ""
        if len(name) > _NAME_MAX:
            raise errors.CalendarDataInvalid(
                f"line {line}: the name is longer than {_NAME_MAX} characters", line=line
            )
        parsed.append((day, _KINDS[kind], name or None))
    return parsed


def _parse_day(text: str, line: int) -> date:
    # fromisoformat alone also takes 20270101 and 2027-W01-1; the file format is stricter.
    if _ISO_DATE.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise errors.CalendarDataInvalid(
        f"line {line}: {text!r} is not a date written YYYY-MM-DD", line=line
    )
