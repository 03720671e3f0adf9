"""HDF5 export in the study's layout: `inputs` (n, window, f) and `outputs` (n, horizon, f) of
raw bar values, plus `origin_time` (n,) and attributes describing the series, time range,
features and the scaler fit on the training split.

Rows are written in chunks straight from the zero-copy window view, so an export never
holds more than one chunk of windows in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from trainer.features import fit_featurizer
from trainer.params import DataParams
from trainer.splits import split_by_fraction
from trainer.windows import BarArray, window_set, window_view


def export_h5(
    bars: BarArray,
    path: str | Path,
    data: DataParams,
    *,
    series: str = "",
    chunk_rows: int = 1024,
    on_rows: Callable[[int, int], None] | None = None,
) -> int:
    """Write every gap-free sample of `bars`; returns the number of rows. `on_rows(done, total)`
    is called after each chunk (the CLI's progress bar)."""
    import h5py

    path = Path(path)
    samples = window_set(bars, data.window, data.horizon)
    splits = split_by_fraction(samples, data.train_frac, data.val_frac)
    feat = fit_featurizer(
        (splits.train.batch(slice(lo, lo + 4096)) for lo in range(0, len(splits.train), 4096)),
        features=data.features,
        target=data.target,
        scaler=data.scaler,
        window=data.window,
        horizon=data.horizon,
    )
    n, nf, span = len(samples), len(data.features), data.window + data.horizon
    view = window_view(bars.values, span)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = max(1, min(chunk_rows, 256))
    with h5py.File(path, "w") as f:
        inputs = f.create_dataset("inputs", (n, data.window, nf), dtype="f8", chunks=(rows, data.window, nf))
        outputs = f.create_dataset(
            "outputs", (n, data.horizon, nf), dtype="f8", chunks=(rows, data.horizon, nf)
        )
        f.create_dataset("origin_time", data=bars.times[samples.origins], dtype="i8")
        for lo in range(0, n, chunk_rows):
            starts = samples.origins[lo : lo + chunk_rows] - data.window + 1
            block = np.asarray(view[starts])
            inputs[lo : lo + len(starts)] = block[:, : data.window]
            outputs[lo : lo + len(starts)] = block[:, data.window :]
            if on_rows is not None:
                on_rows(lo + len(starts), n)
        f.attrs["series"] = series
        f.attrs["features"] = np.array(data.features, dtype=h5py.string_dtype())
        f.attrs["window"] = data.window
        f.attrs["horizon"] = data.horizon
        f.attrs["step_seconds"] = bars.step
        f.attrs["first_bar"] = int(bars.times[0]) if len(bars) else 0
        f.attrs["last_bar"] = int(bars.times[-1]) if len(bars) else 0
        f.attrs["train_frac"] = data.train_frac
        f.attrs["val_frac"] = data.val_frac
        f.attrs["scaler"] = json.dumps(feat.to_dict())
        f.attrs["values"] = "raw bar values, oldest first; scaler fit on the training split only"
    return n
