"""Days are counted in Asia/Shanghai time."""

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(moment: datetime) -> datetime:
    return moment.astimezone(SHANGHAI)


def end_of_day_after(moment: datetime, days: int) -> datetime:
    """The first moment after the `days`-th whole day from `moment`, Shanghai time.

    A stage entered on 3 March with 10 days is due at the start of 14 March:
    the day of entry does not count against the stage.
    """
    day = local(moment).date() + timedelta(days=days + 1)
    return datetime.combine(day, time(0), tzinfo=SHANGHAI)
