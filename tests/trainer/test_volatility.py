"""The har model's quarticity components: bounded whatever the bars, flat bars included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trainer.params import FEATURE_COLUMNS, DataParams, ModelParams
from trainer.volatility import QUARTICITY_SPANS, Har

WINDOW = 64


def _har() -> Har:
    return Har("har", ModelParams(), DataParams(window=WINDOW, horizon=4))


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float64, (3, WINDOW - 1), elements=st.floats(0.0, 1e3, allow_nan=False)),
    st.integers(0, WINDOW - 1),
)
def test_quarticity_lies_between_even_spread_and_one_bar_holding_it_all(v: np.ndarray, flat: int) -> None:
    v[:, WINDOW - 1 - flat :] = 0.0  # the last `flat` bars had no trade
    q = _har()._quarticity(v)
    assert q.shape == (3, len(QUARTICITY_SPANS)) and np.all(np.isfinite(q))
    for j, span in enumerate(QUARTICITY_SPANS):
        m = span or WINDOW - 1
        assert np.all(q[:, j] >= 0.0) and np.all(q[:, j] <= np.log(m) + 1e-9)


def test_quarticity_of_known_spreads() -> None:
    v = np.ones((3, WINDOW - 1))
    v[1, -1] = 13.0  # one big bar among the last 12
    v[2, :] = 0.0  # a market with no trade at all
    q = _har()._quarticity(v)
    np.testing.assert_allclose(q[0], 0.0, atol=1e-12)  # spread evenly
    expected = np.log(np.mean(v[1, -12:] ** 2) / np.mean(v[1, -12:]) ** 2)
    assert QUARTICITY_SPANS[0] == 12 and np.isclose(q[1, 0], expected) and q[1, 0] > 0.5
    np.testing.assert_array_equal(q[2], 0.0)  # flat: no outlier of the fit


def test_a_window_unlike_any_in_training_cannot_blow_up_the_fan(small_frame: pd.DataFrame, tmp_path: Path) -> None:
    """A fit on little history (a new series) may have large, nearly cancelling coefficients; the
    forecast scale stays within 3× of the scales fitted in training, through save and load."""
    from trainer.artifacts import load_artifact, save_artifact
    from trainer.datasets import load_bars
    from trainer.evaluation import model_samples
    from trainer.training import fit_on_splits, make_splits

    data = DataParams(window=96, horizon=4, features=FEATURE_COLUMNS[:5])
    splits = make_splits(load_bars(small_frame, data.features), data)
    model, _ = fit_on_splits("har", splits, data=data)
    assert isinstance(model, Har) and model.log_scale_range is not None
    test = model_samples(splits.test, model)
    raw, times = test.batch(np.arange(4))[0].copy(), test.origin_times()[:4]
    raw[:, -12:, 0] *= 50.0  # a burst no training window had: highs 50× the close,
    raw[:, -12:, 3] *= 1e6  # and a million times the volume
    bound = np.exp(model.log_scale_range[:, 1])
    assert np.all(model._scale(model._design(raw, times)) <= bound * (1 + 1e-12))
    loaded = load_artifact(save_artifact(model, tmp_path / "m"))
    assert isinstance(loaded, Har) and loaded.log_scale_range is not None
    np.testing.assert_array_equal(loaded.log_scale_range, model.log_scale_range)
    pred = loaded.predict_batch(raw, times)
    assert np.all(np.isfinite(pred.quantiles)) and np.all(np.diff(pred.quantiles, axis=-1) >= 0)
    spread = np.abs(np.log(pred.quantiles / raw[:, -1, 2][:, None, None]))
    assert model.z is not None
    assert np.all(spread <= bound[None, :, None] * np.abs(model.z).max() * 1.01)
    model.log_scale_range = None  # without the bound the same windows reach past it
    assert np.any(model._scale(model._design(raw, times)) > bound)
