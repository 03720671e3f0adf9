"""Derived network inputs: causal, identical in training, evaluation and the daemon's live path."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from daemon.live.inference import Job, ServingModel, forecast_batch
from daemon.live.window import RollingWindow
from db.csvbars import read_bars_csv
from db.errors import ConfigError
from db.records import to_unix
from trainer.artifacts import load_artifact, save_artifact
from trainer.datasets import load_bars
from trainer.features import fit_featurizer, input_columns, input_width
from trainer.forecaster import Forecaster, timed_batches
from trainer.models import build_model, model_features
from trainer.params import INPUT_COLUMNS, DataParams, ModelParams, TrainParams
from trainer.splits import Splits
from trainer.training import fit_on_splits, make_splits
from trainer.windows import WindowSet

ALL = ("log_range", "log_abs_return", "log_volume", "time_of_day", "day_of_week")
DATA = DataParams(window=64, horizon=4, inputs=ALL)


@pytest.fixture(scope="module")
def splits(small_frame: pd.DataFrame) -> Splits:
    return make_splits(load_bars(small_frame, model_features("gru", DATA)), DATA)


@pytest.fixture(scope="module")
def gru(splits: Splits) -> Forecaster:
    model, _ = fit_on_splits(
        "gru", splits, model_params=ModelParams(units=8), data=DATA,
        train=TrainParams(epochs=2, batch_size=64, patience=2),
    )
    return model


def test_model_features_is_the_one_place_for_columns() -> None:
    assert model_features("gru", DataParams()) == ("close",)
    assert model_features("gru", DATA) == ("close", "open", "high", "low", "volume")
    assert model_features("linear", DataParams(inputs=("log_trades",))) == ("close", "trade_count")
    assert model_features("persistence", DATA) == ("close",)
    assert build_model("cnn2", data=DATA).features == model_features("cnn2", DATA)
    assert input_width(("close",), ALL) == 1 + 3 + 2 * 2
    with pytest.raises(ConfigError, match=r"data\.inputs"):
        DataParams(inputs=("log_range",), target="price")
    with pytest.raises(ConfigError, match=r"data\.inputs"):
        DataParams(inputs=("moon_phase",))


def test_no_look_ahead(splits: Splits) -> None:
    """Every input row of bar t is unchanged when all bars after t are replaced."""
    bars = splits.train.bars
    cols = input_columns(DATA.features, ALL)
    f = fit_featurizer(timed_batches(splits.train, True), features=cols, target="log_return", scaler="minmax",
                       window=DATA.window, horizon=DATA.horizon, base=DATA.features, inputs=ALL, step=bars.step)
    x = f.bar_inputs(bars.values, bars.times)
    rng = np.random.default_rng(3)
    for t in (1, 200, len(bars) - 2):
        changed = bars.values.copy()
        changed[t + 1 :] *= rng.uniform(0.5, 2.0, size=changed[t + 1 :].shape)
        y = f.bar_inputs(changed, bars.times)
        np.testing.assert_array_equal(y[:t], x[:t])  # row t-1 is bar t
        assert not np.allclose(y[t:], x[t:])
    # a window's inputs are the rows of its bars: the window never reads past its last bar
    raw, _ = splits.val.batch(np.arange(5))
    o = splits.val.origins[:5]
    live = f.inputs(raw, splits.val.origin_times()[:5])
    for i in range(5):
        np.testing.assert_array_equal(live[i], x[o[i] - DATA.window + 1 : o[i]])


def test_training_batches_equal_live_inputs(gru: Forecaster, splits: Splits) -> None:
    """The fast training feeder, the walk-forward path and predict_batch see the same numbers."""
    from trainer.batches import WindowBatches

    assert gru.featurizer is not None and gru.needs_times
    val = splits.val
    assert isinstance(val, WindowSet)
    batches = WindowBatches(val, gru.featurizer, 32)
    x, y = batches[1]
    raw, future = val.batch(np.arange(32, 64))
    np.testing.assert_array_equal(x, gru.featurizer.inputs(raw, val.origin_times()[32:64]))
    np.testing.assert_array_equal(y, gru.featurizer.targets(raw, future))


def test_daemon_window_serves_the_training_input(gru: Forecaster, splits: Splits, shared_dir: Path) -> None:
    """Bars pushed through the daemon's rolling window give the forecast of the same training window."""
    test = splits.test
    bars = read_bars_csv(shared_dir / "data" / "btcusdt_binance_5m_2020-12_2021-07.csv",
                         exchange="binance", symbol="BTC-USDT", interval="5m")
    origin = int(test.origin_times()[10])
    window = RollingWindow(DATA.window, "5m")
    window.extend(b for b in bars if origin - 2 * DATA.window * 300 < to_unix(b.open_time) <= origin)
    last = next(b for b in bars if to_unix(b.open_time) == origin)
    serving = ServingModel.of("m1", gru)
    job = Job(last.series, serving, window.values(), last.open_time, last.close, 0.0)
    (served,) = forecast_batch([job], lambda _: timedelta(minutes=5))
    raw, _ = test.batch(np.arange(10, 11))
    want = gru.predict_batch(raw, test.origin_times()[10:11])
    np.testing.assert_allclose(served.closes, want.point[0], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(served.quantiles), want.quantiles[0], rtol=1e-12)


def test_a_window_the_model_cannot_read_is_served_by_persistence(gru: Forecaster, splits: Splits) -> None:
    """A NaN input (a bar without the column a derived input needs) never becomes a NaN forecast:
    that series gets persistence's forecast, stored under persistence's id; the others keep the model."""
    from daemon.live.window import COLUMNS
    from db.records import SeriesKey, utc_from_unix

    raw, _ = splits.test.batch(np.arange(2))
    times = splits.test.origin_times()[:2]
    full = np.zeros((2, DATA.window, len(COLUMNS)))
    for j, f in enumerate(gru.features):
        full[:, :, COLUMNS.index(f)] = raw[:, :, j]
    full[1, -1, COLUMNS.index("volume")] = np.nan
    serving = ServingModel.of("m1", gru)
    keys = (SeriesKey("binance", "BTC-USDT"), SeriesKey("binance", "ETH-USDT"))
    close = gru.features.index("close")
    jobs = [Job(k, serving, full[i], utc_from_unix(int(times[i])), Decimal(str(float(raw[i, -1, close]))), 0.0)
            for i, k in enumerate(keys)]
    good, fallback = forecast_batch(jobs, lambda _: timedelta(minutes=5))
    want = gru.predict_batch(raw[:1], times[:1])
    assert good.model_id == "m1"
    # float32 model, a batch of two against a batch of one: the CPU kernels may differ in the last
    # bits by batch size (seen on an AMD EPYC: 1e-10 relative); persistence would be off by far more
    np.testing.assert_allclose(good.closes, want.point[0], rtol=1e-6)
    assert fallback.model_id == "persistence" and fallback.series == keys[1]
    q = np.asarray(fallback.quantiles)
    assert np.all(np.isfinite(q)) and np.all(np.diff(q, axis=-1) >= 0) and np.all(q[:, 2] > q[:, 0])
    assert fallback.last_close is not None
    assert fallback.closes == pytest.approx([float(fallback.last_close)] * DATA.horizon)


def test_small_training_gives_sorted_quantiles_and_round_trips(gru: Forecaster, splits: Splits, tmp_path: Path) -> None:
    raw, _ = splits.test.batch(np.arange(50))
    times = splits.test.origin_times()[:50]
    out = gru.predict_batch(raw, times)
    assert out.quantiles.shape == (50, 4, 3) and np.all(np.isfinite(out.quantiles))
    assert np.all(np.diff(out.quantiles, axis=-1) >= 0) and np.all(out.quantiles[..., 2] > out.quantiles[..., 0])
    loaded = load_artifact(save_artifact(gru, tmp_path / "m"))
    assert loaded.data.inputs == ALL and loaded.needs_times
    np.testing.assert_allclose(loaded.predict_batch(raw, times).quantiles, out.quantiles, rtol=1e-6)


def test_every_input_is_named_with_its_columns() -> None:
    for name, cols in INPUT_COLUMNS.items():
        assert set(input_columns(("close",), (name,))) == {"close", *cols}
