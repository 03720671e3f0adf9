"""Per-series rolling window of the last N closed bars: a fixed ring buffer, no allocation per bar.

Gaps are handled as the trainer handles them: a missing bar breaks the window (the model never
sees a window that straddles a gap) unless it is at most `fill_gaps` bars long, in which case
it is forward-filled with flat bars at the previous close.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import numpy as np

from db.records import Bar, interval_seconds, to_unix, utc_from_unix

#: Columns kept per bar, in the trainer's FEATURE_COLUMNS order.
COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume", "trade_count")
CLOSE = COLUMNS.index("close")


def bar_values(bar: Bar) -> np.ndarray:
    return np.array(
        [float(bar.open), float(bar.high), float(bar.low), float(bar.close), float(bar.volume),
         float(bar.trade_count) if bar.trade_count is not None else np.nan],
        dtype=np.float64,
    )


class RollingWindow:
    """The newest `size` contiguous bars of one series."""

    __slots__ = ("_buf", "_count", "_head", "_times", "fill_gaps", "resets", "size", "step")

    def __init__(self, size: int, interval: str, *, fill_gaps: int = 0) -> None:
        self.size = size
        self.step = interval_seconds(interval)
        self.fill_gaps = fill_gaps
        self._buf = np.zeros((size, len(COLUMNS)), dtype=np.float64)
        self._times = np.zeros(size, dtype=np.int64)
        self._head = 0  # next write position
        self._count = 0  # contiguous bars held (<= size)
        self.resets = 0  # gaps that broke the window

    def __len__(self) -> int:
        return self._count

    @property
    def ready(self) -> bool:
        return self._count == self.size

    @property
    def last_time(self) -> datetime | None:
        return utc_from_unix(int(self._times[(self._head - 1) % self.size])) if self._count else None

    @property
    def last_close(self) -> float | None:
        return float(self._buf[(self._head - 1) % self.size, CLOSE]) if self._count else None

    def _put(self, t: int, values: np.ndarray) -> None:
        self._buf[self._head] = values
        self._times[self._head] = t
        self._head = (self._head + 1) % self.size
        self._count = min(self._count + 1, self.size)

    def fits(self, bar: Bar) -> str:
        """How `bar` relates to the window: "next" (extends it, or the window is empty), "amend"
        (a bar the window holds), "gap" (later bars are missing in between), "missing" (older than
        the newest bar but absent: it arrived after its successors, e.g. a slow backfill page),
        "old" (older than a full window, irrelevant)."""
        if not self._count:
            return "next"
        t = to_unix(bar.open_time)
        last = int(self._times[(self._head - 1) % self.size])
        if t <= last:
            age, rem = divmod(last - t, self.step)
            if rem == 0 and age < self._count:
                return "amend"
            return "old" if self.ready else "missing"
        return "next" if t - last == self.step or (t - last) // self.step - 1 <= self.fill_gaps else "gap"

    def push(self, bar: Bar) -> bool:
        """Add a closed bar; returns True if it extended the window (False for an amendment or a
        bar older than the window). A gap longer than `fill_gaps` starts the window afresh."""
        t = to_unix(bar.open_time)
        values = bar_values(bar)
        if self._count:
            last = int(self._times[(self._head - 1) % self.size])
            if t <= last:
                age = (last - t) // self.step
                if age < self._count and (last - t) % self.step == 0:
                    self._buf[(self._head - 1 - age) % self.size] = values  # amended bar
                return False
            missing = (t - last) // self.step - 1
            if missing > 0:
                if missing <= self.fill_gaps:
                    prev = self._buf[(self._head - 1) % self.size, CLOSE]
                    flat = np.array([prev, prev, prev, prev, 0.0, 0.0])
                    for k in range(1, missing + 1):
                        self._put(last + k * self.step, flat)
                else:
                    self._count = 0
                    self.resets += 1
        self._put(t, values)
        return True

    def clear(self) -> None:
        self._head = 0
        self._count = 0

    def extend(self, bars: Iterable[Bar]) -> None:
        for b in bars:
            self.push(b)

    def values(self) -> np.ndarray:
        """The window oldest first, shape (size, len(COLUMNS)); a copy, safe to hand to a thread."""
        if not self.ready:
            raise ValueError(f"window holds {self._count} of {self.size} bars")
        return np.roll(self._buf, -self._head, axis=0)

    def times(self) -> np.ndarray:
        return np.roll(self._times, -self._head)[-self._count :] if self._count else self._times[:0]
