from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainer.challenger import decide
from trainer.datasets import load_bars
from trainer.evaluation import evaluate_holdout, metrics_rows, plot_backtest, walk_forward
from trainer.params import DataParams, ModelParams, TrainParams
from trainer.splits import strided
from trainer.training import fit_on_splits, make_splits, train_from_frame

DATA = DataParams(window=48, horizon=4, features=("close", "volume"))


def test_walk_forward_scores_every_model_on_the_same_origins(gap_frame: pd.DataFrame, tmp_path: Path) -> None:
    bars = load_bars(gap_frame, DATA.features)
    splits = make_splits(bars, DATA)
    models = {a: fit_on_splits(a, splits, data=DATA)[0] for a in ("linear", "drift")}
    bt = walk_forward(models, splits.test, batch_size=100)
    assert set(bt.metrics) == {"linear", "drift", "persistence"}
    assert bt.n == len(splits.test) and bt.actual.shape == (bt.n, 4)
    # the persistence reference is the last observed close, scored on the same bars
    np.testing.assert_array_equal(bt.predictions["persistence"].point[:, 0], bt.last_close)
    d = bt.to_dict()
    rows = {r["model"]: r for r in metrics_rows(bt)}
    for name, m in d["models"].items():
        assert len(m["mae"]) == 4 and m["n"] == bt.n
        assert rows[name]["mae"] == pytest.approx(np.mean(m["mae"]))
        assert rows[name]["mae@4"] == pytest.approx(m["mae"][3])
        assert rows[name]["mase"] == pytest.approx(m["mean"]["mase"])
    assert metrics_rows(bt)[0]["model"] == "persistence"
    png = plot_backtest(bt, bars, tmp_path / "bt.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_refit_every_k_bars_retrains_without_seeing_the_future(gap_frame: pd.DataFrame) -> None:
    bars = load_bars(gap_frame, DATA.features)
    splits = make_splits(bars, DATA)
    model = fit_on_splits("linear", splits, data=DATA)[0]
    coef_before = model._coef.copy()  # type: ignore[attr-defined]
    test = strided(splits.test, 2)
    seen: list[tuple[int, int]] = []
    real_fit = model.fit

    def spy(train, val, params, **kw):  # type: ignore[no-untyped-def]
        seen.append((int(train.origins[-1]) + train.horizon, int(val.origins[-1]) + val.horizon))
        return real_fit(train, val, params, **kw)

    model.fit = spy  # type: ignore[method-assign]
    bt = walk_forward({"linear": model}, test, refit_every=100, refit_params=TrainParams())
    block = (test.origins - test.origins[0]) // 100
    firsts = test.origins[np.flatnonzero(np.diff(block)) + 1]
    assert len(seen) == len(firsts) > 0
    for (train_last, val_last), first in zip(seen, firsts, strict=True):
        assert train_last < val_last <= first  # the newest target a refit sees is the block's first origin
    assert bt.n == len(test)
    assert not np.array_equal(model._coef, coef_before)  # type: ignore[attr-defined]


@pytest.mark.slow
def test_champion_challenger_on_held_out_bars(small_frame: pd.DataFrame) -> None:
    """The live loop's retraining flow: train a challenger on all but the last bars, score it,
    the champion and persistence on those bars, and decide."""
    data = DataParams(window=64, horizon=4)
    tiny = ModelParams(units=8)
    challenger = train_from_frame(
        small_frame, "gru", data=data, model_params=tiny, train=TrainParams(epochs=2, stride=2), holdout_bars=200
    )
    assert challenger.test is not None and challenger.model.meta["metrics"]["test"]["n"] == challenger.test.n
    champion = train_from_frame(small_frame, "linear", data=data, holdout_bars=200).model
    bars = load_bars(small_frame, data.features)
    bt = evaluate_holdout({"challenger": challenger.model, "champion": champion}, bars, holdout_bars=200)
    assert bt.n == 200 - 4 + 1  # every origin whose 4 targets lie in the last 200 bars
    decision = decide(bt.metrics["challenger"], bt.metrics["champion"], bt.metrics["persistence"], metric="mae")
    c, ch, p = (bt.metrics[k].average("mae") for k in ("challenger", "champion", "persistence"))
    assert decision.promote == (c < p and c < ch)  # type: ignore[operator]
    assert decision.reason


@pytest.mark.slow
def test_challenge_refuses_a_badly_trained_challenger(small_frame: pd.DataFrame) -> None:
    from trainer.retrain import challenge

    data = DataParams(window=64, horizon=4)
    champion = train_from_frame(small_frame, "linear", data=data, holdout_bars=150).model
    bad = challenge(
        small_frame, "lstm", champion, holdout_bars=150,
        data=DataParams(window=64, horizon=4, target="price"),  # scaled prices, one short epoch: a bad model
        model_params=ModelParams(units=2), train=TrainParams(epochs=1, stride=8), metric="mae", margin=0.01,
    )
    # refused: a collapsed fan fails the coverage band before its MAE is even compared
    assert not bad.decision.promote and ("does not beat" in bad.decision.reason or "coverage" in bad.decision.reason)
    assert set(bad.backtest.metrics) == {"challenger", "champion", "persistence"}
    assert bad.challenger.meta["metrics"]["decision"]["promote"] is False


def test_last_window_is_none_across_a_gap(gap_frame: pd.DataFrame) -> None:
    from trainer.windows import last_window

    bars = load_bars(gap_frame, ("close",))
    w = last_window(bars, 32)
    assert w is not None and w.shape == (32, 1)
    gap_end = int(np.flatnonzero(np.diff(bars.times) != 300)[-1]) + 1
    assert last_window(bars.slice(0, gap_end + 5), 32) is None
