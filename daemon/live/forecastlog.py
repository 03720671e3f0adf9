"""The forecast log: one JSON line per forecast, rotated by size and age without losing lines.

Rotation renames `forecasts.jsonl` to `.1` (older ones shift up, the oldest beyond `backups` is
deleted) between two whole lines and opens a fresh file, so `tail -F` style readers see every
line exactly once. SIGHUP calls `reopen()` for external rotation tools.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from db.records import Forecast, decimal_text, iso


def forecast_line(f: Forecast) -> dict[str, Any]:
    """The documented JSON object of one forecast (see README, `barcast tail`)."""
    return {
        "series": str(f.series),
        "exchange": f.series.exchange,
        "symbol": f.series.symbol,
        "interval": f.series.interval,
        "issued_at": iso(f.issued_at),
        "last_close": decimal_text(f.last_close) if f.last_close is not None else None,
        "model_id": f.model_id,
        "targets": [iso(t) for t in f.target_times],
        "closes": [round(float(c), 8) for c in f.closes],
        "levels": None if f.levels is None else list(f.levels),
        "quantiles": None if f.quantiles is None else [[round(float(v), 8) for v in q] for q in f.quantiles],
        "latency_ms": None if f.latency_ms is None else round(f.latency_ms, 3),
        "created_at": iso(f.created_at),
    }


class ForecastLog:
    """Append-only JSON-lines writer with size/age rotation; thread-safe."""

    def __init__(self, path: Path, *, max_bytes: int = 50_000_000, max_age_s: float = 86_400.0,
                 backups: int = 7, fsync: bool = False) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.backups = backups
        self.fsync = fsync
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self._open()

    def _open(self) -> Any:
        # Age counts from when this process opened the file (Linux keeps no creation time).
        self._opened = time.time()
        return self.path.open("ab")

    def _due(self, incoming: int) -> bool:
        size = self._fh.tell()
        if size == 0:
            return False
        if self.max_bytes and size + incoming > self.max_bytes:
            return True
        return bool(self.max_age_s and time.time() - self._opened > self.max_age_s)

    def _rotate(self) -> None:
        self._fh.close()
        for i in range(self.backups, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if not src.exists():
                continue
            if i == self.backups:
                src.unlink()
            else:
                src.rename(self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self._fh = self.path.open("ab")
        self._opened = time.time()

    def write(self, forecasts: list[Forecast]) -> None:
        if not forecasts:
            return
        data = b"".join(orjson.dumps(forecast_line(f)) + b"\n" for f in forecasts)
        with self._lock:
            if self._due(len(data)):
                self._rotate()
            self._fh.write(data)
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())

    def tail_keys(self, max_bytes: int = 1_000_000) -> dict[str, tuple[str, set[tuple[str, str]]]]:
        """Per series: the newest logged `issued_at` and the (issued_at, model_id) pairs seen in the
        last `max_bytes` of the log, reaching into `.1` when the current file is shorter (what
        `reconcile` needs after a crash: just after a rotation a series may have no line in the
        current file yet, and reading that alone left its crash-lost line out for good)."""
        out: dict[str, tuple[str, set[tuple[str, str]]]] = {}
        chunks: list[bytes] = []
        torn = False  # the oldest chunk starts mid-line
        for path in (self.path, self.path.with_name(f"{self.path.name}.1")):
            left = max_bytes - sum(map(len, chunks))
            if left <= 0:
                break
            try:
                with path.open("rb") as fh:
                    size = fh.seek(0, os.SEEK_END)
                    fh.seek(max(0, size - left))
                    chunks.insert(0, fh.read())
                    torn = size > left
            except FileNotFoundError:
                continue
        chunk = b"\n".join(chunks)
        for raw in chunk.splitlines()[1 if torn else 0 :]:
            try:
                doc = orjson.loads(raw)
                series, issued, model = doc["series"], doc["issued_at"], doc["model_id"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue  # a line torn by a crash mid-write
            newest, seen = out.get(series, ("", set()))
            seen.add((issued, model))
            out[series] = (max(newest, issued), seen)
        return out

    def reopen(self) -> None:
        with self._lock:
            self._fh.close()
            self._fh = self._open()

    def close(self) -> None:
        with self._lock:
            self._fh.close()
