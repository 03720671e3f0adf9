from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from db.errors import InputError
from trainer.datasets import load_bars
from trainer.models import ARCHS, KERAS_ARCHS, build_model, build_network
from trainer.params import DataParams, ModelParams, TrainParams
from trainer.splits import Splits
from trainer.training import fit_on_splits, make_splits

TINY = ModelParams(units=8, cnn_filters=4)
DATA = DataParams(window=96, horizon=4, target="price")  # the study's setting: loss falls from random init


@pytest.fixture(scope="module")
def price_splits(small_frame: pd.DataFrame) -> Splits:
    return make_splits(load_bars(small_frame, DATA.features), DATA)


@pytest.mark.slow
@pytest.mark.parametrize("arch", KERAS_ARCHS)
def test_each_network_trains_and_reduces_loss(arch: str, price_splits: Splits) -> None:
    model, report = fit_on_splits(
        arch,
        price_splits,
        model_params=TINY,
        data=DATA,
        train=TrainParams(epochs=4, batch_size=32, stride=2, patience=4, learning_rate=3e-3),
    )
    assert report.epochs == 4 and len(report.val_loss) == 4
    assert report.loss[-1] < report.loss[0]
    raw, _ = price_splits.test.batch(np.arange(7))
    out = model.predict_batch(raw)
    assert out.point.shape == (7, 4) and out.quantiles.shape == (7, 4, 3) and np.all(np.isfinite(out.quantiles))
    assert np.all(np.diff(out.quantiles, axis=-1) >= 0)


def test_linear_and_baselines_share_the_interface(price_splits: Splits) -> None:
    raw, _ = price_splits.test.batch(np.arange(20))
    last = raw[:, -1, 0]
    for arch in ("linear", "persistence", "drift", "climatology"):
        model, _ = fit_on_splits(arch, price_splits, data=DATA)
        out = model.predict_batch(raw)
        assert out.point.shape == (20, 4) and out.quantiles.shape == (20, 4, 3)
        # all of them forecast within a few percent of the last close on 5-minute bars
        assert np.all(np.abs(out.point / last[:, None] - 1) < 0.05)
        assert np.all(out.quantiles[..., 0] < out.quantiles[..., 2])
    drift = build_model("drift", data=DATA).predict_batch(raw).point
    slope = (raw[:, -1, 0] - raw[:, 0, 0]) / 95
    np.testing.assert_allclose(drift[:, 3], raw[:, -1, 0] + 4 * slope)


def test_predict_batch_refuses_wrong_shapes_and_unfitted() -> None:
    with pytest.raises(InputError, match=r"takes \(n, 96, 1\)"):
        build_model("persistence", data=DATA).predict_batch(np.ones((2, 95, 1)))
    with pytest.raises(InputError, match="not fitted"):
        build_model("lstm", data=DATA).predict_batch(np.ones((2, 96, 1)))
    with pytest.raises(InputError, match="unknown architecture"):
        build_model("transformer")


def test_recurrent_layers_keep_cudnn_defaults() -> None:
    for arch in ("lstm", "gru"):
        net = build_network(arch, TINY, DataParams())
        rnn = net.layers[1]
        cfg = rnn.get_config()
        assert (cfg["activation"], cfg["recurrent_activation"]) == ("tanh", "sigmoid")
        assert cfg["recurrent_dropout"] == 0 and cfg["unroll"] is False and cfg["use_bias"] is True
        assert net.output_shape == (None, 16, 4)  # point + q10, q50, q90 per step
    for arch in ("cnn2", "cnn3"):  # the study's stacks land on 16 steps from 256 bars in price mode
        net = build_network(arch, TINY, DataParams(target="price"))
        assert not any(layer.__class__.__name__ == "Dense" for layer in net.layers)
    assert set(ARCHS) == {*KERAS_ARCHS, "linear", "har", "persistence", "drift", "climatology"}


def test_predict_batch_is_the_compiled_batch_path(small_frame: pd.DataFrame) -> None:
    data = DataParams(window=32, horizon=4)
    splits = make_splits(load_bars(small_frame, data.features), data)
    model, _ = fit_on_splits("cnn4", splits, model_params=TINY, data=data, train=TrainParams(epochs=1, stride=4))
    net = model.net  # type: ignore[attr-defined]

    def forbidden(*a: object, **k: object) -> None:
        raise AssertionError("predict_batch must not call model.predict")

    net.predict = forbidden
    raw, _ = splits.test.batch(np.arange(5))
    one = model.predict_batch(raw)
    three = model.predict_batch(raw[:3])
    np.testing.assert_allclose(three.point, one.point[:3], rtol=1e-6)  # padding changes nothing
    np.testing.assert_allclose(three.quantiles, one.quantiles[:3], rtol=1e-6)  # padding changes nothing


def test_same_seed_same_weights(small_frame: pd.DataFrame) -> None:
    data = DataParams(window=32, horizon=4)
    splits = make_splits(load_bars(small_frame, data.features), data)
    tp = TrainParams(epochs=2, batch_size=32, stride=3, seed=7)
    a, _ = fit_on_splits("gru", splits, model_params=TINY, data=data, train=tp)
    b, _ = fit_on_splits("gru", splits, model_params=TINY, data=data, train=tp)
    for wa, wb in zip(a.net.get_weights(), b.net.get_weights(), strict=True):  # type: ignore[attr-defined]
        np.testing.assert_array_equal(wa, wb)
    c, _ = fit_on_splits("gru", splits, model_params=TINY, data=data, train=TrainParams(epochs=2, stride=3, seed=8))
    assert not np.array_equal(a.net.get_weights()[0], c.net.get_weights()[0])  # type: ignore[attr-defined]
