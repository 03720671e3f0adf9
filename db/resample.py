"""Roll bars up into a coarser interval (e.g. 1m files into 5m bars), exactly."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from db.errors import InputError
from db.records import Bar, floor_time, interval_seconds


@dataclass(frozen=True, slots=True)
class ResampleResult:
    bars: list[Bar]
    #: Coarse buckets left out because some of their fine bars are missing (a gap in the data).
    incomplete: int


def resample(bars: Iterable[Bar], interval: str) -> ResampleResult:
    """Complete buckets only: a coarse bar is emitted only when every fine bar in it exists,
    so a gap in the source stays a gap instead of becoming a bar built from part of the time."""
    target = interval_seconds(interval)
    out: list[Bar] = []
    incomplete = 0
    bucket: list[Bar] = []
    per_bucket = 0

    def flush() -> None:
        nonlocal incomplete
        if not bucket:
            return
        if len(bucket) != per_bucket:
            incomplete += 1
        else:
            counts = [b.trade_count for b in bucket]
            out.append(
                Bar(
                    exchange=bucket[0].exchange,
                    symbol=bucket[0].symbol,
                    interval=interval,
                    open_time=floor_time(bucket[0].open_time, interval),
                    open=bucket[0].open,
                    high=max(b.high for b in bucket),
                    low=min(b.low for b in bucket),
                    close=bucket[-1].close,
                    volume=sum((b.volume for b in bucket), start=bucket[0].volume * 0),
                    trade_count=None if any(c is None for c in counts) else sum(c for c in counts if c is not None),
                    source="resample",
                )
            )
        bucket.clear()

    current = None
    for bar in bars:
        source = interval_seconds(bar.interval)
        if target <= source or target % source:
            raise InputError(f"cannot resample {bar.interval} bars to {interval}")
        per_bucket = target // source
        start = floor_time(bar.open_time, interval)
        if start != current:
            flush()
            current = start
        bucket.append(bar)
    flush()
    return ResampleResult(out, incomplete)
