from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainer.challenger import decide
from trainer.datasets import load_bars
from trainer.metrics import HorizonMetrics, horizon_metrics
from trainer.models import build_model
from trainer.params import DataParams
from trainer.windows import window_set


def test_persistence_mae_by_hand(small_frame: pd.DataFrame) -> None:
    bars = load_bars(small_frame.iloc[:12], ("close",))
    c = bars.close.tolist()
    data = DataParams(window=3, horizon=2)
    samples = window_set(bars, 3, 2)
    model = build_model("persistence", data=data)
    raw, actual = samples.batch(np.arange(len(samples)))
    m = horizon_metrics(model.predict_batch(raw).point, actual, raw[:, -1, 0])
    origins = range(2, 10)  # last observed bar index; targets o+1, o+2 must exist in 12 bars
    by_hand_1 = sum(abs(c[o] - c[o + 1]) for o in origins) / 8
    by_hand_2 = sum(abs(c[o] - c[o + 2]) for o in origins) / 8
    assert m.n == 8
    assert m.mae == pytest.approx((by_hand_1, by_hand_2))
    assert m.mase == (1.0, 1.0) and m.skill == (0.0, 0.0)
    assert m.directional is None  # persistence never calls a direction


def test_metric_definitions_on_a_tiny_case() -> None:
    last = np.array([100.0, 100.0])
    actual = np.array([[101.0, 102.0], [99.0, 97.0]])
    pred = np.array([[100.5, 103.0], [100.5, 98.0]])
    m = horizon_metrics(pred, actual, last)
    assert m.mae == pytest.approx((1.0, 1.0))
    assert m.rmse == pytest.approx((np.sqrt(1.25), 1.0))
    assert m.mase == pytest.approx((1.0 / 1.0, 1.0 / 2.5))
    assert m.directional == pytest.approx((0.5, 1.0))
    assert m.mape[0] == pytest.approx((0.5 / 101 + 1.5 / 99) / 2 * 100)
    assert HorizonMetrics.from_dict(m.to_dict()) == m
    assert m.to_dict()["mean"]["mae"] == pytest.approx(1.0)


def _m(mae: float, n: int = 10) -> HorizonMetrics:
    return HorizonMetrics(n, (mae,), (mae,), (1.0,), (1.0,), (0.0,), (0.5,))


def test_challenger_decision() -> None:
    persistence = _m(10.0)
    assert decide(_m(9.0), _m(9.5), persistence, metric="mae").promote
    no = decide(_m(9.4), _m(9.5), persistence, metric="mae", margin=0.02)
    assert not no.promote and "champion" in no.reason
    worse = decide(_m(10.5), None, persistence, metric="mae")
    assert not worse.promote and "persistence" in worse.reason
    first = decide(_m(9.0), None, persistence, metric="mae")
    assert first.promote and first.reason == "challenger mae 9 beats no champion and persistence 10"
    with pytest.raises(ValueError, match="same bars"):
        decide(_m(9.0, n=5), _m(9.5), persistence)
    assert not decide(_m(9.0), _m(9.5), persistence, metric="directional").promote  # 0.5 vs 0.5
