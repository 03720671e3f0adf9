"""Quantile scores, non-crossing, and adaptive conformal calibration (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from db.errors import ConfigError
from trainer.calibration import Calibrator, calibrate_walk_forward
from trainer.quantiles import Prediction, check_levels, level_name, non_crossing, pinball, quantile_scores


def test_pinball_by_hand_and_wis_is_bracher_interval_score() -> None:
    y = np.array([[10.0], [13.0], [7.0]])  # (n=3, H=1)
    q = np.array([[[9.0, 10.0, 12.0]], [[9.0, 10.0, 12.0]], [[9.0, 10.0, 12.0]]])
    levels = (0.1, 0.5, 0.9)
    loss = pinball(q, y, levels)
    # y=10: 0.1*(10-9), 0, 0.1*(12-10); y=13: 0.1*4, 0.5*3, 0.9*1; y=7: 0.9*2, 0.5*3, 0.1*5
    np.testing.assert_allclose(loss[:, 0], [[0.1, 0.0, 0.2], [0.4, 1.5, 0.9], [1.8, 1.5, 0.5]])
    s = quantile_scores(q, y, levels)

    # Bracher et al. (2021): WIS = (0.5|y-m| + alpha/2 * IS_alpha) / (K + 1/2), K = 1, alpha = 0.2
    def interval_score(yv: float, lo: float, hi: float, a: float) -> float:
        return (hi - lo) + 2 / a * max(lo - yv, 0) + 2 / a * max(yv - hi, 0)

    wis = np.mean([(0.5 * abs(v - 10.0) + 0.1 * interval_score(v, 9.0, 12.0, 0.2)) / 1.5 for v in (10.0, 13.0, 7.0)])
    assert s.wis[0] == pytest.approx(wis)
    assert s.coverage[0] == pytest.approx(1 / 3) and s.width[0] == pytest.approx(3.0)
    assert s.nominal_coverage == pytest.approx(0.8)


def test_quantiles_never_cross_and_levels_are_checked() -> None:
    rng = np.random.default_rng(1)
    q = non_crossing(rng.normal(size=(50, 4, 5)))
    assert np.all(np.diff(q, axis=-1) >= 0)
    p = Prediction.from_log_returns(
        np.full(2, 100.0), np.full((2, 1), 100.0), np.array([[[0.1, -0.1, 0.0]]] * 2), (0.1, 0.5, 0.9)
    )
    assert np.all(np.diff(p.quantiles, axis=-1) >= 0) and p.quantiles[0, 0, 0] == pytest.approx(100 * np.exp(-0.1))
    assert [level_name(x) for x in (0.1, 0.5, 0.9, 0.025)] == ["q10", "q50", "q90", "q2.5"]
    with pytest.raises(ConfigError, match="strictly increasing"):
        check_levels([0.5, 0.1])
    with pytest.raises(ConfigError, match="at least two"):
        check_levels([0.5])
    with pytest.raises(ConfigError, match="inside"):
        check_levels([0.0, 0.5])


def test_adaptive_conformal_fixes_a_too_narrow_fan() -> None:
    rng = np.random.default_rng(0)
    n, horizon = 30_000, 2
    last = np.full(n, 100.0)
    actual = 100 * np.exp(rng.normal(0, 0.01, (n, horizon)))
    z = np.array([-1.2816, 0.0, 1.2816])
    quantiles = 100 * np.exp(0.004 * z)[None, None, :] * np.ones((n, horizon, 1))  # 40 % of the right width
    raw_cov = ((actual >= quantiles[..., 0]) & (actual <= quantiles[..., 2])).mean(axis=0)
    cal = Calibrator((0.1, 0.5, 0.9), horizon, gamma=0.01)
    served = calibrate_walk_forward(cal, np.arange(n) * 300, 300, last, quantiles, actual)
    cov = ((actual >= served[..., 0]) & (actual <= served[..., 2])).mean(axis=0)
    assert np.all(raw_cov < 0.4)
    assert np.all(np.abs(cov - 0.8) < 0.02)
    assert np.all(np.diff(served, axis=-1) >= 0)
    back = Calibrator.from_dict(cal.to_dict())
    np.testing.assert_array_equal(back.theta, cal.theta)
    assert back.updates.tolist() == [n, n]


def test_walk_forward_calibration_never_uses_an_outcome_before_it_closed() -> None:
    rng = np.random.default_rng(3)
    n, horizon = 400, 3
    times = np.arange(n) * 300
    last = np.full(n, 100.0)
    actual = 100 * np.exp(rng.normal(0, 0.01, (n, horizon)))
    quantiles = 100 * np.exp(np.array([-0.01, 0.0, 0.01]))[None, None, :] * np.ones((n, horizon, 1))
    base = calibrate_walk_forward(Calibrator((0.1, 0.5, 0.9), horizon, 0.05), times, 300, last, quantiles, actual)
    j, h = 200, 3
    changed = actual.copy()
    changed[j, h - 1] *= 1.5  # an outcome that closes 3 bars after origin 200
    again = calibrate_walk_forward(Calibrator((0.1, 0.5, 0.9), horizon, 0.05), times, 300, last, quantiles, changed)
    np.testing.assert_array_equal(again[: j + h], base[: j + h])  # nobody served before it closed saw it
    assert not np.array_equal(again[j + h :, h - 1], base[j + h :, h - 1])
    np.testing.assert_array_equal(again[:, :2], base[:, :2])  # other steps have their own state


def test_climatology_quantiles_use_only_spans_without_a_missing_bar() -> None:
    from trainer.baselines import climatology_quantiles, horizon_log_returns

    times = np.array([0, 300, 600, 1200, 1500])  # the bar at 900 is missing
    closes = np.array([100.0, 101.0, 99.0, 105.0, 104.0])
    one, two = horizon_log_returns(times, closes, 2, 300)
    assert one == pytest.approx(np.log([101 / 100, 99 / 101, 104 / 105]))
    assert two == pytest.approx(np.log([99 / 100]))  # 600 -> 1200 and 1200 -> 1500+ are not 2-bar spans
    q = climatology_quantiles(times, closes, 2, 300, (0.1, 0.5, 0.9))
    assert q is not None and q.shape == (2, 3)
    assert q[0] == pytest.approx(np.quantile(one, (0.1, 0.5, 0.9))) and q[1] == pytest.approx([np.log(0.99)] * 3)
    assert climatology_quantiles(times, closes, 3, 300, (0.1, 0.5, 0.9)) is None  # no 3-bar span at all
