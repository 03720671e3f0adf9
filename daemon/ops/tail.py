"""Read the forecast log like `tail -F`: the last lines, then new ones across rotation and truncation.

The daemon rotates by renaming `forecasts.jsonl` to `.1` and opening a fresh file between whole
lines (daemon/live/forecastlog.py). The follower keeps its handle on the file it is reading; when
the path names another file (rotation) it first drains the old handle to its end, then reads the
new file from its start, so no line is lost or repeated. A file that shrinks below the read
position was truncated: reading restarts at its start. A partial last line waits for its newline.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from db.records import SeriesKey
from trainer.quantiles import level_name

PRETTY_STEPS = (1, 4, 8, 16)


def backwards(path: Path, *, block: int = 65536) -> Iterator[bytes]:
    """The complete, non-blank lines of a file from the last to the first, read backwards in
    blocks (a log may be large); the part after the last newline is a write in progress, not a line."""
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return
    with fh:
        pos = fh.seek(0, os.SEEK_END)
        rest = b""  # the piece before the first newline seen so far: it may start mid-line
        seen_newline = False
        while pos > 0:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            pieces = (fh.read(step) + rest).split(b"\n")
            if not seen_newline:
                if len(pieces) == 1:
                    rest = pieces[0]
                    continue
                pieces.pop()  # after the last newline: incomplete (or empty)
                seen_newline = True
            rest = pieces[0]
            yield from (ln for ln in reversed(pieces[1:]) if ln.strip())
        if seen_newline and rest.strip():
            yield rest


def last_lines(path: Path, n: int, *, block: int = 65536) -> list[bytes]:
    """The last `n` complete lines of a file."""
    return list(reversed(list(itertools.islice(backwards(path, block=block), max(n, 0)))))


def recent_lines(path: Path, n: int, keep: Callable[[bytes], bool] = lambda line: True) -> list[bytes]:
    """The last `n` lines of the log that `keep` accepts, oldest first, reaching into rotated files
    (`.1`, `.2`…) until there are `n`: `tail -n 10 --series X` finds X's ten however many other
    series share the log."""
    got: list[bytes] = []
    older, i = path, 0
    while len(got) < n and (i == 0 or older.exists()):
        got += itertools.islice(filter(keep, backwards(older)), n - len(got))
        i += 1
        older = path.with_name(f"{path.name}.{i}")
    return got[::-1]


class Follower:
    """Incremental reader of one log path; `poll()` returns the complete lines written since the last call."""

    def __init__(self, path: Path, *, from_end: bool = True) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None
        self._ident: tuple[int, int] | None = None
        self._buf = b""
        self._open(at_end=from_end)

    def _open(self, *, at_end: bool) -> None:
        try:
            fh = self.path.open("rb")
        except FileNotFoundError:
            return
        st = os.fstat(fh.fileno())
        self._fh, self._ident, self._buf = fh, (st.st_dev, st.st_ino), b""
        if at_end:
            fh.seek(0, os.SEEK_END)

    def _read(self) -> list[bytes]:
        assert self._fh is not None
        chunk = self._fh.read()
        if not chunk:
            return []
        data = self._buf + chunk
        *lines, self._buf = data.split(b"\n")
        return [ln for ln in lines if ln.strip()]

    def poll(self) -> list[bytes]:
        if self._fh is None:
            self._open(at_end=False)  # the file appeared after we started: read it all
            return self._read() if self._fh is not None else []
        out = self._read()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return out  # renamed away, the new file not created yet: keep the old handle
        if (st.st_dev, st.st_ino) != self._ident:
            out += self._read()  # drain what was written before the rename
            self._fh.close()
            self._fh = None
            self._open(at_end=False)
            if self._fh is not None:
                out += self._read()
        elif st.st_size < self._fh.tell():
            self._fh.seek(0)  # truncated in place
            self._buf = b""
            out += self._read()
        return out

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def follow(self, *, interval: float = 0.25, stop: Callable[[], bool] = lambda: False) -> Iterator[bytes]:
        while not stop():
            lines = self.poll()
            yield from lines
            if not lines:
                time.sleep(interval)


def parse(line: bytes) -> dict[str, Any] | None:
    """One log object, or None for a line that is not one (a torn write, foreign text)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def matches(obj: dict[str, Any], series: SeriesKey | None) -> bool:
    if series is None:
        return True
    return (obj.get("exchange"), obj.get("symbol"), obj.get("interval")) == (
        series.exchange, series.symbol, series.interval
    )


def pretty(obj: dict[str, Any]) -> str:
    """time, series, last close, steps 1/4/8/16 with change in % and the central interval
    [lowest..highest quantile] where the forecast has quantiles, model: one line for people."""
    last_text = obj.get("last_close")
    try:
        last = float(last_text) if last_text is not None else None
    except (TypeError, ValueError):
        last = None
    closes = obj.get("closes") or []
    quantiles = obj.get("quantiles") or []
    parts = []
    for k in PRETTY_STEPS:
        if k > len(closes):
            continue
        c = float(closes[k - 1])
        pct = f" ({(c / last - 1) * 100:+.2f}%)" if last else ""
        q = quantiles[k - 1] if k <= len(quantiles) else None
        band = f" [{float(q[0]):.2f}..{float(q[-1]):.2f}]" if q else ""
        parts.append(f"+{k} {c:.2f}{pct}{band}")
    levels = obj.get("levels") or []
    what = f"  [{level_name(float(levels[0]))}..{level_name(float(levels[-1]))}]" if quantiles and levels else ""
    return (
        f"{obj.get('issued_at', '?')}  {obj.get('series', '?')}  last {last_text if last_text is not None else '?'}  "
        + "  ".join(parts)
        + f"{what}  {obj.get('model_id', '?')}"
    )
