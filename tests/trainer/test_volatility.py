"""The har model's quarticity components: bounded whatever the bars, flat bars included."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trainer.params import DataParams, ModelParams
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
