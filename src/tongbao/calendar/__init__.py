"""The business calendar (REC-4): which days are working days in mainland China.

Public API: :class:`BusinessCalendar` (the service, cached in memory),
:func:`parse_calendar_csv` for ``tongbao calendar import`` and the pure
working-day arithmetic in :mod:`tongbao.calendar.days`. A date of a year the
calendar does not hold is refused with
:class:`~tongbao.errors.CalendarYearUnknown`, never guessed.
"""

from tongbao.calendar.service import (
    RELOAD_AFTER,
    BusinessCalendar,
    CalendarRow,
    check_year,
    parse_calendar_csv,
)

__all__ = ["RELOAD_AFTER", "BusinessCalendar", "CalendarRow", "check_year", "parse_calendar_csv"]
