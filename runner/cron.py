"""EventBridge Scheduler's schedule expressions: `at()`, `rate()` and six-field `cron()`.

Pure: parse an expression once (`parse`), then ask when it fires next after a moment
(`Expression.next_after`), in the schedule's time zone, as EventBridge Scheduler
documents it:

- `at(yyyy-mm-ddThh:mm:ss)`: once, at that wall-clock time in the time zone;
- `rate(N minutes|hours|days)`: every N units from the schedule's start (its StartDate,
  else when it was created: "the schedule starts invoking its target immediately"); a
  day is 24 hours, whatever daylight saving does to the wall clock;
- `cron(minutes hours day-of-month month day-of-week year)`: wall-clock times in the
  time zone. Day-of-week is 1-7 = SUN-SAT (or the names); one of day-of-month and
  day-of-week must be `?`; `L`, `W`, `LW`, `nL` and `n#k` as EventBridge reads them. When
  daylight saving skips an hour a time in it does not fire; when it repeats one, a time
  in it fires once (the first).

Used by `list-schedules` (next fire times) and by the local stack's scheduler.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((.+)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {name.upper(): n for n, name in enumerate(calendar.month_abbr) if name}
_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
# EventBridge's cron years.
_YEARS = (1970, 2199)


class ExpressionError(ValueError):
    """Not a schedule expression EventBridge Scheduler accepts."""


def zone(name: str | None) -> ZoneInfo:
    """The IANA time zone `name` (default UTC); ExpressionError if there is none."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ExpressionError(f"unknown time zone {name!r}") from exc


@dataclass(frozen=True)
class Expression:
    """A parsed schedule expression; `next_after` is all a scheduler asks of it."""

    text: str
    kind: str  # "at", "rate" or "cron"
    at: datetime | None = None  # naive wall-clock time, for "at"
    period: timedelta | None = None  # for "rate"
    cron: _Cron | None = None

    @property
    def recurring(self) -> bool:
        return self.kind != "at"

    def next_after(
        self, after: datetime, *, timezone: str | None = None, start: datetime | None = None
    ) -> datetime | None:
        """The first fire time strictly after `after` (aware, UTC), or None (an `at` that
        has passed, a cron with no time left). `start`: a rate schedule's first fire."""
        tz = zone(timezone)
        after = after.astimezone(UTC)
        if self.kind == "at":
            assert self.at is not None
            moment = _existing(self.at, tz)
            return moment if moment is not None and moment > after else None
        if self.kind == "rate":
            assert self.period is not None
            first = (start or after).astimezone(UTC)
            if first > after:
                return first
            periods = (after - first) // self.period + 1
            return first + periods * self.period
        assert self.cron is not None
        return self.cron.next_after(after, tz)


def parse(text: str) -> Expression:
    """Parse an EventBridge Scheduler expression; ExpressionError says what is wrong."""
    stripped = " ".join(text.strip().split())
    if match := _AT.match(stripped):
        try:
            moment = datetime.fromisoformat(match.group(1))
        except ValueError as exc:
            raise ExpressionError(f"{text!r}: not a date and time") from exc
        return Expression(stripped, "at", at=moment)
    if match := _RATE.match(stripped):
        value, unit = int(match.group(1)), match.group(2).rstrip("s")
        if value < 1:
            raise ExpressionError(f"{text!r}: a rate must be a positive number")
        if (value == 1) != (match.group(2) == unit):
            raise ExpressionError(f"{text!r}: say 1 {unit}, or N {unit}s")
        return Expression(stripped, "rate", period=timedelta(seconds=value * _UNIT_SECONDS[unit]))
    if match := _CRON.match(stripped):
        return Expression(stripped, "cron", cron=_Cron.parse(match.group(1), text))
    raise ExpressionError(
        f"{text!r} is not a schedule expression: at(yyyy-mm-ddThh:mm:ss), rate(N minutes|"
        "hours|days) or cron(minutes hours day-of-month month day-of-week year)"
    )


def _existing(wall: datetime, tz: ZoneInfo) -> datetime | None:
    """The UTC moment of a wall-clock time in `tz` (its first occurrence when the clock
    goes back), or None if the clock skips it."""
    aware = wall.replace(tzinfo=tz, fold=0)
    moment = aware.astimezone(UTC)
    if moment.astimezone(tz).replace(tzinfo=None) != wall:
        return None  # in a gap: daylight saving skipped this time
    return moment


def _values(field: str, low: int, high: int, names: dict[str, int], text: str) -> frozenset[int]:
    """A cron field of `, - * /` (and names) as the set of values it allows."""
    allowed: set[int] = set()
    for part in field.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ExpressionError(f"{text!r}: bad step in {part!r}")
            step = int(step_text)
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, b = base.split("-", 1)
            first, last = _value(a, names, text), _value(b, names, text)
        else:
            first = _value(base, names, text)
            last = high if slash else first
        if not (low <= first <= high and low <= last <= high) or first > last:
            raise ExpressionError(f"{text!r}: {part!r} is outside {low}-{high}")
        allowed.update(range(first, last + 1, step))
    return frozenset(allowed)


def _value(token: str, names: dict[str, int], text: str) -> int:
    if token.isdigit():
        return int(token)
    if token.upper() in names:
        return names[token.upper()]
    raise ExpressionError(f"{text!r}: {token!r} is not a value of its field")


@dataclass(frozen=True)
class _Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    months: frozenset[int]
    years: frozenset[int]
    day_of_month: str  # the raw field: `?`, `L`, `LW`, `15W` or a value set (below)
    days_of_month: frozenset[int] | None
    day_of_week: str
    days_of_week: frozenset[int] | None

    @classmethod
    def parse(cls, body: str, text: str) -> _Cron:
        fields = body.split(" ")
        if len(fields) != 6:
            raise ExpressionError(
                f"{text!r}: cron() takes six fields: minutes hours day-of-month month"
                " day-of-week year"
            )
        minute, hour, dom, month, dow, year = fields
        if (dom == "?") == (dow == "?"):
            raise ExpressionError(f"{text!r}: exactly one of day-of-month and day-of-week is ?")
        days_of_month = None
        if dom != "?" and not re.fullmatch(r"L|LW|\d{1,2}W", dom):
            days_of_month = _values(dom, 1, 31, {}, text)
        if re.fullmatch(r"\d{1,2}W", dom) and not 1 <= int(dom[:-1]) <= 31:
            raise ExpressionError(f"{text!r}: {dom!r} is outside 1-31")
        days_of_week = None
        if dow != "?" and not re.fullmatch(r"L|[1-7]L|[1-7]#[1-5]", dow.upper()):
            days_of_week = _values(dow, 1, 7, _DAYS, text)
        return cls(
            minutes=_values(minute, 0, 59, {}, text),
            hours=_values(hour, 0, 23, {}, text),
            months=_values(month, 1, 12, _MONTHS, text),
            years=_values(year, *_YEARS, {}, text),
            day_of_month=dom,
            days_of_month=days_of_month,
            day_of_week=dow.upper(),
            days_of_week=days_of_week,
        )

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months or day.year not in self.years:
            return False
        last = calendar.monthrange(day.year, day.month)[1]
        weekday = (day.weekday() + 1) % 7 + 1  # Monday=0 → 2 ... Sunday=6 → 1
        if self.day_of_month != "?":
            dom = self.day_of_month
            if self.days_of_month is not None:
                return day.day in self.days_of_month
            if dom == "L":
                return day.day == last
            target = last if dom == "LW" else int(dom[:-1])
            return day.day == _nearest_weekday(day.year, day.month, min(target, last))
        dow = self.day_of_week
        if self.days_of_week is not None:
            return weekday in self.days_of_week
        if dow == "L":
            return weekday == 7 and day.day + 7 > last  # the month's last Saturday
        if dow.endswith("L"):
            return weekday == int(dow[0]) and day.day + 7 > last
        wanted, nth = (int(p) for p in dow.split("#"))
        return weekday == wanted and (day.day - 1) // 7 + 1 == nth

    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime | None:
        local = after.astimezone(tz)
        day = local.date()
        # A day's first wall-clock times may fall before `after` (or in a gap); later
        # days are tried whole. Bounded by the last cron year.
        while day.year <= _YEARS[1]:
            if day.year not in self.years:
                day = date(day.year + 1, 1, 1)
                continue
            if day.month not in self.months:
                day = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
                continue
            if self.matches_day(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        wall = datetime(day.year, day.month, day.day, hour, minute)
                        moment = _existing(wall, tz)
                        if moment is not None and moment > after:
                            return moment
            day += timedelta(days=1)
        return None


def _nearest_weekday(year: int, month: int, day: int) -> int:
    """`15W`: the weekday nearest the 15th, within the month."""
    weekday = date(year, month, day).weekday()
    if weekday < 5:
        return day
    last = calendar.monthrange(year, month)[1]
    if weekday == 5:  # Saturday: the Friday before, or the Monday after the 1st
        return day - 1 if day > 1 else day + 2
    return day + 1 if day < last else day - 2  # Sunday


def utc_at(moment: datetime) -> str:
    """`at(...)` for a one-time schedule in UTC, to the second."""
    return f"at({moment.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S')})"
