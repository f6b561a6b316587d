"""EventBridge Scheduler's expressions, as its documentation reads them: at(), rate(),
six-field cron() in a time zone, daylight saving's skipped and repeated hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runner.cron import ExpressionError, parse, utc_at


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fires(expression: str, after: datetime, count: int, **kwargs: object) -> list[str]:
    parsed = parse(expression)
    found = []
    moment = after
    for _ in range(count):
        nxt = parsed.next_after(moment, **kwargs)  # type: ignore[arg-type]
        if nxt is None:
            break
        found.append(nxt.strftime("%Y-%m-%d %H:%M %a"))
        moment = nxt
    return found


def test_at_fires_once_at_its_wall_clock_time_in_its_time_zone() -> None:
    at = parse("at(2026-12-24T18:00:00)")

    assert at.next_after(utc(2026, 12, 1), timezone="Europe/Paris") == utc(2026, 12, 24, 17)
    assert at.next_after(utc(2026, 12, 24, 17), timezone="Europe/Paris") is None
    assert not at.recurring
    assert utc_at(utc(2026, 12, 24, 17, 0, 5, 900000)) == "at(2026-12-24T17:00:05)"


def test_rate_fires_at_its_start_then_every_period() -> None:
    rate = parse("rate(5 minutes)")
    start = utc(2026, 1, 1, 10, 0, 30)

    assert rate.next_after(start - timedelta(seconds=1), start=start) == start
    assert rate.next_after(start, start=start) == start + timedelta(minutes=5)
    assert rate.next_after(start + timedelta(minutes=12), start=start) == start + timedelta(
        minutes=15
    )


def test_a_rate_in_days_is_24_hours_whatever_the_wall_clock_does() -> None:
    start = utc(2026, 3, 28, 12)  # Paris moves its clocks forward on 29 March 2026
    nxt = parse("rate(1 day)").next_after(start, timezone="Europe/Paris", start=start)

    assert nxt == start + timedelta(hours=24)


def test_cron_fields_ranges_steps_lists_and_names() -> None:
    assert fires("cron(0/20 9-10 ? * MON-FRI *)", utc(2026, 12, 4, 10, 30), 4) == [
        "2026-12-04 10:40 Fri",
        "2026-12-07 09:00 Mon",
        "2026-12-07 09:20 Mon",
        "2026-12-07 09:40 Mon",
    ]
    # Day-of-week numbers are 1-7 = SUN-SAT
    assert fires("cron(0 12 ? * 1,7 *)", utc(2026, 12, 1), 2) == [
        "2026-12-05 12:00 Sat",
        "2026-12-06 12:00 Sun",
    ]
    assert fires("cron(15 3 1 JAN,JUL ? 2027-2028)", utc(2026, 12, 1), 5) == [
        "2027-01-01 03:15 Fri",
        "2027-07-01 03:15 Thu",
        "2028-01-01 03:15 Sat",
        "2028-07-01 03:15 Sat",
    ]


def test_cron_l_w_and_hash() -> None:
    assert fires("cron(0 0 L * ? *)", utc(2027, 1, 15), 2) == [
        "2027-01-31 00:00 Sun",
        "2027-02-28 00:00 Sun",
    ]
    # The weekday nearest the 1st (a Saturday in May 2027) is Monday the 3rd
    assert fires("cron(0 9 1W * ? *)", utc(2027, 4, 30), 1) == ["2027-05-03 09:00 Mon"]
    assert fires("cron(0 9 LW * ? *)", utc(2027, 1, 1), 1) == ["2027-01-29 09:00 Fri"]
    assert fires("cron(0 9 ? * 6#3 *)", utc(2026, 12, 1), 2) == [
        "2026-12-18 09:00 Fri",
        "2027-01-15 09:00 Fri",
    ]
    assert fires("cron(0 9 ? * 2L *)", utc(2026, 12, 1), 1) == ["2026-12-28 09:00 Mon"]


def test_cron_in_a_time_zone_follows_its_daylight_saving() -> None:
    # 09:00 in New York is 14:00 UTC in winter and 13:00 UTC in summer
    cron = parse("cron(0 9 * * ? *)")
    assert cron.next_after(utc(2026, 3, 7, 20), timezone="America/New_York") == utc(2026, 3, 8, 13)
    assert cron.next_after(utc(2026, 3, 6, 20), timezone="America/New_York") == utc(2026, 3, 7, 14)


def test_a_time_daylight_saving_skips_does_not_fire_and_a_repeated_one_fires_once() -> None:
    # Paris, 29 March 2026: 02:00-02:59 does not exist
    skipped = parse("cron(30 2 * * ? *)")
    assert skipped.next_after(utc(2026, 3, 28, 12), timezone="Europe/Paris") == utc(
        2026, 3, 30, 0, 30
    )
    # Paris, 25 October 2026: 02:00-02:59 happens twice; 02:30 fires at the first
    repeated = parse("cron(30 2 * * ? *)")
    first = repeated.next_after(utc(2026, 10, 24, 12), timezone="Europe/Paris")
    assert first == utc(2026, 10, 25, 0, 30)
    assert repeated.next_after(first, timezone="Europe/Paris") == utc(2026, 10, 26, 1, 30)


@pytest.mark.parametrize(
    "expression",
    [
        "cron(0 9 * * * *)",  # neither day field is ?
        "cron(0 9 ? * ? *)",  # both are
        "cron(0 9 * * ?)",  # five fields
        "cron(60 9 * * ? *)",
        "cron(0 9 32 * ? *)",
        "cron(0 9 ? * 8 *)",
        "rate(0 minutes)",
        "rate(1 minutes)",
        "rate(5 minute)",
        "rate(5 weeks)",
        "at(2026-13-01T00:00:00)",
        "every day",
    ],
)
def test_expressions_eventbridge_refuses_are_refused(expression: str) -> None:
    with pytest.raises(ExpressionError):
        parse(expression)


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ExpressionError, match="time zone"):
        parse("cron(0 9 * * ? *)").next_after(utc(2026, 1, 1), timezone="Mars/Olympus")
