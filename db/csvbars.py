"""OHLCV CSV files (`timestamp,open,high,low,close,volume`, Unix seconds of the bar open).

Reading checks every row and names the line at fault; numbers stay as their exact text
(Decimal), so import followed by export reproduces the file's numeric text byte for byte.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TextIO

from db.errors import InputError
from db.records import (
    INTERVALS,
    MAX_PRICE,
    MAX_SIZE,
    MIN_MAGNITUDE,
    Bar,
    BarSource,
    decimal_text,
    interval_seconds,
    to_unix,
    utc_from_unix,
)

HEADER = ("timestamp", "open", "high", "low", "close", "volume")


#: A number as files write it: ASCII digits, a point, a sign, a short exponent (pandas writes
#: 1e-05). `Decimal()` alone also takes `7_100` (as 7100), Arabic-Indic digits, NaN and Infinity.
_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]{1,4})?", re.ASCII)
_MAX_TEXT = 40


def _decimal(text: str, name: str, where: str) -> Decimal:
    """A checked price or volume: plain number text, within the bounds no market goes beyond."""
    if text.lower().lstrip("+-") in ("nan", "snan", "inf", "infinity"):
        raise InputError(f"{where}: {name} {text!r} is not a finite number")
    if len(text) > _MAX_TEXT or _NUMBER.fullmatch(text) is None:
        raise InputError(f"{where}: {name} {text!r} is not a decimal number")
    value = Decimal(text)
    limit = MAX_SIZE if name == "volume" else MAX_PRICE
    if value and not MIN_MAGNITUDE <= abs(value) < limit:
        raise InputError(f"{where}: {name} {text!r} is out of range (non-zero magnitudes are "
                         f"{MIN_MAGNITUDE:.0e} to {limit:.0e})")
    return value


def parse_rows(
    lines: Iterable[str],
    *,
    exchange: str,
    symbol: str,
    interval: str,
    name: str = "<csv>",
    source: BarSource = "import",
    on_line: Callable[[int], None] | None = None,
) -> Iterator[Bar]:
    """Yield bars from CSV text lines, raising InputError naming `name:line` on the first bad row."""
    step = interval_seconds(interval)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{name}: empty file (expected header {','.join(HEADER)})") from None
    if tuple(h.strip().lower() for h in header) != HEADER:
        raise InputError(f"{name}:1: header is {','.join(header)!r}, expected {','.join(HEADER)!r}")
    previous: int | None = None
    for row in reader:
        line = reader.line_num
        where = f"{name}:{line}"
        if on_line is not None:
            on_line(line)
        if not row or row == [""]:
            continue
        if len(row) != 6:
            raise InputError(f"{where}: expected 6 fields, got {len(row)}")
        ts_text = row[0].strip()
        if not (ts_text.isascii() and ts_text.isdigit()):  # isdigit() alone takes '²' and '٣'
            raise InputError(f"{where}: timestamp {ts_text!r} is not whole Unix seconds")
        try:
            ts = int(ts_text)
            open_time = utc_from_unix(ts)
        except (OverflowError, OSError, ValueError):
            raise InputError(f"{where}: timestamp {ts_text[:20]}{'…' if len(ts_text) > 20 else ''} "
                             "is out of range (beyond year 9999)") from None
        if ts % step:
            raise InputError(f"{where}: timestamp {ts} is not aligned to the {interval} interval")
        if previous is not None and ts <= previous:
            raise InputError(f"{where}: timestamp {ts} is not after the previous row's {previous}")
        previous = ts
        o, h, lo, c, v = (_decimal(t.strip(), n, where) for t, n in zip(row[1:], HEADER[1:], strict=True))
        if min(o, h, lo, c) <= 0:
            raise InputError(f"{where}: prices must be positive")
        if h < lo:
            raise InputError(f"{where}: high {h} is below low {lo}")
        if h < max(o, c) or lo > min(o, c):
            raise InputError(f"{where}: open/close outside the high-low range")
        if v < 0:
            raise InputError(f"{where}: negative volume {v}")
        yield Bar(exchange, symbol, interval, open_time, o, h, lo, c, v, None, source)


def read_bars_csv(
    path: Path,
    *,
    exchange: str,
    symbol: str,
    interval: str,
    on_line: Callable[[int], None] | None = None,
) -> list[Bar]:
    """All bars of a CSV file; the whole file is checked before anything is returned."""
    try:
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the header
        with path.open(newline="", encoding="utf-8-sig") as fh:
            bars = list(
                parse_rows(fh, exchange=exchange, symbol=symbol, interval=interval, name=str(path), on_line=on_line)
            )
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    check_interval(bars, interval, str(path))
    return bars


def file_interval(bars: list[Bar]) -> int | None:
    """The file's own bar interval in seconds: the smallest step between consecutive rows
    (gaps only make steps longer); None for fewer than two bars."""
    steps = (to_unix(b.open_time) - to_unix(a.open_time) for a, b in itertools.pairwise(bars))
    return min(steps, default=None)


def check_interval(bars: list[Bar], interval: str, name: str) -> None:
    """Refuse bars of another interval than declared (a 5-minute file imported as 1m would be
    accepted row by row: every 5-minute time is also aligned to 1 minute)."""
    step = file_interval(bars)
    if step is None or step == interval_seconds(interval):
        return
    names = {s: n for n, s in INTERVALS.items()}
    found = names.get(step, f"{step} s")
    raise InputError(f"{name}: the file's bars are {found} apart (its interval is {found}), not {interval}; "
                     f"give the series the file's interval{f' (:{found})' if step in names else ''}")


def write_bars_csv(bars: Iterable[Bar], out: TextIO) -> None:
    """The import format: same columns, numbers as plain decimal text, `\\n` line ends."""
    out.write(",".join(HEADER) + "\n")
    for b in bars:
        out.write(
            f"{to_unix(b.open_time)},{decimal_text(b.open)},{decimal_text(b.high)},"
            f"{decimal_text(b.low)},{decimal_text(b.close)},{decimal_text(b.volume)}\n"
        )


def bars_to_csv_text(bars: Iterable[Bar]) -> str:
    buf = io.StringIO()
    write_bars_csv(bars, buf)
    return buf.getvalue()
