"""Durations as operators type them (`90s`, `30m`, `12h`, `7d`, `2w`): one parser for every
command and endpoint, so `--window 3d` and `--since 3d` accept exactly the same texts."""

from __future__ import annotations

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: Digits accepted before the unit: far beyond any duration (callers bound the value and say
#: "more than 100 years"), short of what `int` refuses to read (4,300 digits) or slows on.
MAX_DIGITS = 30


def duration_seconds(text: str) -> int | None:
    """Seconds of a duration text (surrounding space ignored, unit in either case, ASCII digits
    only: `int` would read other scripts' digits too), else None."""
    t = text.strip().lower()
    digits, unit = t[:-1], t[-1:]
    if unit in UNITS and 0 < len(digits) <= MAX_DIGITS and digits.isascii() and digits.isdigit():
        return int(digits) * UNITS[unit]
    return None
