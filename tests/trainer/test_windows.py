from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.datasets import load_bars
from trainer.windows import (
    BarArray,
    fill_short_gaps,
    materialised_windows,
    segments,
    valid_origins,
    window_set,
    window_view,
)


def test_full_file_windows_are_views_and_skip_the_six_gaps(btc_frame: pd.DataFrame) -> None:
    bars = load_bars(btc_frame, ("close",))
    assert len(bars) == 65_741 and bars.step == 300
    segs = segments(bars.times, bars.step)
    assert len(segs) == 7  # six real gaps
    assert sorted(int(n) for n in (np.diff(bars.times) // 300 - 1) if n > 0) == [12, 15, 18, 30, 46, 56]
    samples = window_set(bars, 256, 16)
    expected = sum(max(0, int(b - a) - 272 + 1) for a, b in segs)
    assert len(samples) == expected
    view = window_view(bars.values, 272)
    assert np.shares_memory(view, bars.values)  # no copy of the windows
    raw, future = samples.batch(np.arange(0, len(samples), 997))
    assert raw.shape[1:] == (256, 1) and future.shape[1:] == (16,)
    # every sample's bars are consecutive 5-minute bars: no window straddles a gap
    spans = bars.times[samples.origins[:, None] + np.arange(-255, 17)]
    assert np.all(np.diff(spans, axis=1) == 300)


def test_window_contents_match_the_materialised_copy(small_frame: pd.DataFrame) -> None:
    bars = load_bars(small_frame, ("open", "close", "volume"))
    inputs, outputs = materialised_windows(bars.values, 64, 8)
    samples = window_set(bars, 64, 8)
    raw, future = samples.batch(np.arange(len(samples)))
    np.testing.assert_array_equal(raw, inputs)
    np.testing.assert_array_equal(future, outputs[:, :, 1])


def test_fill_short_gaps_fills_only_gaps_up_to_n(gap_frame: pd.DataFrame) -> None:
    bars = load_bars(gap_frame, ("close", "volume"))
    assert len(segments(bars.times, bars.step)) == 3  # the 46-bar and 12-bar gaps
    filled = fill_short_gaps(bars, 12)
    assert len(filled) == len(bars) + 12
    assert len(segments(filled.times, filled.step)) == 2
    gap_at = int(np.flatnonzero(np.diff(bars.times) == 13 * 300)[0])
    inserted = filled.values[gap_at + 1 : gap_at + 13]
    assert np.all(inserted[:, 0] == bars.values[gap_at, 0]) and np.all(inserted[:, 1] == 0)
    assert fill_short_gaps(bars, 11) is bars
    assert len(segments(fill_short_gaps(bars, 46).times, 300)) == 1


@settings(max_examples=60, deadline=None)
@given(
    missing=st.lists(st.integers(0, 3), min_size=5, max_size=60),
    window=st.integers(1, 6),
    horizon=st.integers(0, 4),
)
def test_origins_are_exactly_the_gap_free_spans(missing: list[int], window: int, horizon: int) -> None:
    times = np.cumsum([60 * (1 + m) for m in missing]).astype(np.int64)
    origins = valid_origins(times, 60, window, horizon)
    want = [
        o
        for o in range(window - 1, len(times) - horizon)
        if np.all(np.diff(times[o - window + 1 : o + horizon + 1]) == 60)
    ]
    assert origins.tolist() == want


def test_bar_array_slice_is_a_view(small_frame: pd.DataFrame) -> None:
    bars = load_bars(small_frame, ("close",))
    part = bars.slice(10, 20)
    assert isinstance(part, BarArray) and np.shares_memory(part.values, bars.values) and len(part) == 10
