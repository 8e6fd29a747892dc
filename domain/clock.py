"""Days are counted in Asia/Shanghai time."""

import re
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from domain.errors import InvalidInput

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(moment: datetime) -> datetime:
    return moment.astimezone(SHANGHAI)


def today() -> date:
    return local(datetime.now(timezone.utc)).date()


def end_of_day_after(moment: datetime, days: int) -> datetime:
    """The first moment after the `days`-th whole day from `moment`, Shanghai time.

    A stage entered on 3 March with 10 days is due at the start of 14 March:
    the day of entry does not count against the stage.
    """
    day = local(moment).date() + timedelta(days=days + 1)
    return datetime.combine(day, time(0), tzinfo=SHANGHAI)


MONTH = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")


def check_month(field: str, value: object) -> str:
    """A month as YYYY-MM, of a year from 1 to 9998 (so that the next month is a date too)."""
    match = MONTH.fullmatch(value) if isinstance(value, str) else None
    if match is None or not 1 <= int(match.group(1)) <= 9998:
        raise InvalidInput(field, "must be a month as YYYY-MM, years 0001 to 9998")
    return value


def month_bounds(field: str, month: str) -> tuple[datetime, datetime]:
    """The first moment of `month` (YYYY-MM, checked as `field`) and of the month after, Shanghai time."""
    check_month(field, month)
    year, number = int(month[:4]), int(month[5:])
    return (datetime(year, number, 1, tzinfo=SHANGHAI),
            datetime(year + number // 12, number % 12 + 1, 1, tzinfo=SHANGHAI))


def month_start(moment: datetime) -> datetime:
    """The first moment of the month `moment` falls in, Shanghai time."""
    return local(moment).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def read_day(field: str, value: object) -> date:
    """A day written YYYY-MM-DD, and no other way: Python 3.11's date.fromisoformat also reads the ISO
    week (2026-W48-7) and basic (20261129) forms, which no one here writes a day in."""
    try:
        if DAY.fullmatch(value):
            return date.fromisoformat(value)
    except (TypeError, ValueError):  # not text, or no such day (2024-02-30)
        pass
    raise InvalidInput(field, "must be a date as YYYY-MM-DD")


# The days a case's service or a contract can fall on. A visit in year 1 or works in 9999 is a slip of
# the keyboard, not a record: refused with the window named, not stored for every report to carry.
EARLIEST_DAY, LATEST_DAY = date(1950, 1, 1), date(2099, 12, 31)


def check_day(field: str, day: date) -> date:
    if not EARLIEST_DAY <= day <= LATEST_DAY:
        raise InvalidInput(field, f"must be a day from {EARLIEST_DAY} to {LATEST_DAY}")
    return day


def check_moment(field: str, moment: datetime) -> date:
    """The day of `moment` in Shanghai, whatever offset it was sent with, checked as check_day does."""
    try:
        day = local(moment).date()
    except OverflowError:  # near year 1 or 9999 the calendar ends: far outside the days allowed anyway
        day = moment.date()
    return check_day(field, day)
