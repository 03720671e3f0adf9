"""Where training data comes from: a bars DataFrame (the database), OHLCV CSV files in the
shared-data format, or an HDF5 export read in chunks.

Each source ends as a `WindowSet` (array-backed, zero-copy windows) or an `H5Samples`
(file-backed); both answer `len()` and `batch(index) -> (raw windows, future closes)`,
which is all the featurizer and the Keras batch feeder need.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from db.errors import InputError
from trainer.params import FEATURE_COLUMNS
from trainer.windows import BarArray, bars_from_frame, fill_short_gaps

CSV_COLUMNS: tuple[str, ...] = ("timestamp", "open", "high", "low", "close", "volume")


class SampleSource(Protocol):
    """Training samples that can be read a batch at a time."""

    @property
    def window(self) -> int: ...

    @property
    def horizon(self) -> int: ...

    @property
    def features(self) -> tuple[str, ...]: ...

    def __len__(self) -> int: ...

    def batch(self, index: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]: ...


def iter_batches(source: SampleSource, size: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Contiguous batches in order (contiguous so HDF5 reads are chunk reads)."""
    for lo in range(0, len(source), size):
        yield source.batch(slice(lo, min(lo + size, len(source))))


def read_csv_frame(path: str | Path) -> pd.DataFrame:
    """An OHLCV CSV (`timestamp,open,high,low,close,volume[,trade_count]`, Unix seconds of bar open)
    as a `db.bars.bars_frame`-shaped frame. A bad row is an InputError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise InputError(f"{path}: not a CSV file: {e}") from None
    missing = [c for c in CSV_COLUMNS if c not in raw.columns]
    if missing:
        raise InputError(f"{path}:1: header lacks {', '.join(missing)} (expected {','.join(CSV_COLUMNS)})")
    data: dict[str, np.ndarray] = {}
    for col in (*CSV_COLUMNS, "trade_count"):
        if col not in raw.columns:
            continue
        values = pd.to_numeric(raw[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))  # 'inf' parses, and reached the models
        if bad.size and not (col == "trade_count" and (raw[col].iloc[bad] == "").all()):
            row = int(bad[0])
            raise InputError(f"{path}:{row + 2}: {col} {raw[col].iloc[row]!r} is not a finite number")
        data[col] = values
    ts = data.pop("timestamp")
    if np.any(ts != np.floor(ts)):
        row = int(np.argmax(ts != np.floor(ts)))
        raise InputError(f"{path}:{row + 2}: timestamp {ts[row]!r} is not whole Unix seconds")
    if ts.size > 1 and np.any(np.diff(ts) <= 0):
        row = int(np.argmax(np.diff(ts) <= 0)) + 1
        raise InputError(f"{path}:{row + 2}: timestamp {int(ts[row])} does not ascend")
    index = pd.DatetimeIndex(pd.to_datetime(ts.astype(np.int64), unit="s", utc=True), name="open_time")
    frame = pd.DataFrame({c: data[c] for c in FEATURE_COLUMNS if c in data}, index=index)
    if "trade_count" not in frame.columns:
        frame["trade_count"] = np.nan
    return frame


def load_bars(
    frame: pd.DataFrame, features: tuple[str, ...], *, fill_gaps: int = 0, source: str = "bars"
) -> BarArray:
    """Bars of the chosen features, short gaps forward-filled if asked."""
    return fill_short_gaps(bars_from_frame(frame, features, source=source), fill_gaps)


def csv_bars(path: str | Path, features: tuple[str, ...] = ("close",), *, fill_gaps: int = 0) -> BarArray:
    return load_bars(read_csv_frame(path), features, fill_gaps=fill_gaps, source=str(path))


@dataclass(slots=True)
class H5Samples:
    """Samples of an HDF5 export (`inputs` (n, window, f), `outputs` (n, horizon, f)) in rows
    `[start, stop)`; reads only the rows a batch asks for."""

    path: Path
    start: int
    stop: int
    window: int
    horizon: int
    features: tuple[str, ...]
    _file: Any = None

    def _h5(self) -> Any:
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        return self._file

    def __len__(self) -> int:
        return self.stop - self.start

    def batch(self, index: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
        f = self._h5()
        close = self.features.index("close")
        if isinstance(index, slice):
            lo, hi, _ = index.indices(len(self))
            rows: slice | np.ndarray = slice(self.start + lo, self.start + hi)
        else:
            rows = np.sort(np.asarray(index)) + self.start  # h5py wants increasing indices
        return np.asarray(f["inputs"][rows], dtype=np.float64), np.asarray(
            f["outputs"][rows, :, close], dtype=np.float64
        )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def h5_splits(path: str | Path, train_frac: float, val_frac: float) -> tuple[H5Samples, H5Samples, H5Samples]:
    """Chronological train / validation / test row ranges of an export, cut by origin time so no
    training target reaches into validation time."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            n, window, nf = f["inputs"].shape
            horizon = f["outputs"].shape[1]
            features = tuple(str(s) for s in f.attrs["features"])
            origin = np.asarray(f["origin_time"][:], dtype=np.int64)
            step = int(f.attrs["step_seconds"])
    except (OSError, KeyError, ValueError) as e:
        raise InputError(f"{path}: not a barcast HDF5 export ({e})") from None
    if len(features) != nf or "close" not in features:
        raise InputError(f"{path}: attribute features {features} does not match inputs of {nf} columns")
    t0, t1 = int(origin[0]), int(origin[-1]) + horizon * step
    val_t = t0 + (t1 - t0) * train_frac
    test_t = t0 + (t1 - t0) * (train_frac + val_frac)
    last_target = origin + horizon * step
    train_stop = int(np.searchsorted(last_target, val_t, side="left"))
    val_start = int(np.searchsorted(origin, val_t, side="left"))
    val_stop = int(np.searchsorted(last_target, test_t, side="left"))
    test_start = int(np.searchsorted(origin, test_t, side="left"))

    def part(lo: int, hi: int) -> H5Samples:
        return H5Samples(path, lo, max(lo, hi), window, horizon, features)

    return part(0, train_stop), part(val_start, val_stop), part(test_start, n)
