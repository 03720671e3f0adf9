from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.splits import SplitIndex, split_windows
from trainer.windows import BarArray, window_set


@settings(max_examples=60, deadline=None)
@given(
    missing=st.lists(st.integers(0, 2), min_size=30, max_size=120),
    window=st.integers(2, 8),
    horizon=st.integers(1, 4),
    train_frac=st.floats(0.3, 0.7),
    val_frac=st.floats(0.0, 0.25),
)
def test_splits_are_chronological_and_targets_never_cross_a_cut(
    missing: list[int], window: int, horizon: int, train_frac: float, val_frac: float
) -> None:
    times = np.cumsum([60 * (1 + m) for m in missing]).astype(np.int64)
    bars = BarArray(times, np.ones((len(times), 1)), ("close",), 60)
    samples = window_set(bars, window, horizon)
    idx = SplitIndex.from_fractions(len(bars), train_frac, val_frac)
    s = split_windows(samples, idx)
    assert np.all(s.train.origins + horizon < idx.val_start)
    assert np.all(s.val.origins + 1 >= idx.val_start) and np.all(s.val.origins + horizon < idx.test_start)
    assert np.all(s.test.origins + 1 >= idx.test_start)
    # disjoint and in time order
    allo = np.concatenate([s.train.origins, s.val.origins, s.test.origins])
    assert np.all(np.diff(allo) > 0)
