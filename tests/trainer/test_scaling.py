from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from db.errors import ArtifactError, InputError
from trainer.datasets import load_bars, read_csv_frame
from trainer.features import Featurizer, fit_featurizer, raw_inputs
from trainer.models import build_model
from trainer.params import DataParams, TrainParams
from trainer.scaling import Scaler, ScalerFitter, fit_scaler
from trainer.training import make_splits


def _featurizer(frame: pd.DataFrame, data: DataParams) -> Featurizer:
    splits = make_splits(load_bars(frame, data.features), data)
    model = build_model("linear", data=data)
    model.fit(splits.train, splits.val, TrainParams())
    assert model.featurizer is not None
    return model.featurizer


@pytest.mark.parametrize("target", ["log_return", "price"])
def test_scaler_depends_only_on_the_training_split(gap_frame: pd.DataFrame, target: str) -> None:
    data = DataParams(window=48, horizon=4, features=("close", "volume"), target=target)
    f1 = _featurizer(gap_frame, data)
    # Change every bar after the first cut: the fitted scalers must not move.
    cut = gap_frame.index[int(len(gap_frame) * data.train_frac)]
    doctored = gap_frame.copy()
    doctored.loc[doctored.index >= cut, ["close", "volume"]] *= 3.0
    f2 = _featurizer(doctored, data)
    assert f1.to_dict() == f2.to_dict()
    # and they are exactly the statistics of the training samples' inputs
    splits = make_splits(load_bars(gap_frame, data.features), data)
    raw, _ = splits.train.batch(np.arange(len(splits.train)))
    direct = fit_scaler("minmax", raw_inputs(raw, data.features, target))
    assert f1.input_scaler == direct
    last_train_bar = splits.train.origins[-1] + data.horizon
    assert splits.train.bars.times[last_train_bar] < pd.Timestamp(cut).timestamp()


@settings(max_examples=40, deadline=None)
@given(
    x=arrays(np.float64, st.tuples(st.integers(2, 40), st.integers(1, 3)), elements=st.floats(-1e6, 1e6)),
    cut=st.integers(1, 39),
    kind=st.sampled_from(["minmax", "standard", "rms"]),
)
def test_streaming_fit_equals_one_shot(x: np.ndarray, cut: int, kind: str) -> None:
    f = ScalerFitter(kind)
    f.update(x[:cut])
    f.update(x[cut:])
    a, b = f.finish(), fit_scaler(kind, x)
    np.testing.assert_allclose(a.offset, b.offset, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(a.scale, b.scale, rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(a.inverse(a.transform(x)), x, rtol=1e-9, atol=1e-6)


def test_scaler_round_trip_and_refusal() -> None:
    s = fit_scaler("standard", np.array([[1.0, 5.0], [3.0, 5.0]]))
    assert s.scale[1] == 1.0  # a constant column passes through
    assert Scaler.from_dict(s.to_dict()) == s
    with pytest.raises(ArtifactError):
        Scaler.from_dict({"kind": "minmax", "offset": [0.0], "scale": [0.0]})
    with pytest.raises(ArtifactError):
        Scaler.from_dict({"kind": "weird", "offset": [0.0], "scale": [1.0]})


def test_log_return_prices_invert_targets(small_frame: pd.DataFrame) -> None:
    data = DataParams(window=32, horizon=4)
    splits = make_splits(load_bars(small_frame, data.features), data)
    raw, future = splits.train.batch(np.arange(100))
    f = fit_featurizer(
        [(raw, future)], features=data.features, target=data.target, scaler="minmax", window=32, horizon=4
    )
    np.testing.assert_allclose(f.prices(f.targets(raw, future), raw), future, rtol=1e-5)
    assert f.inputs(raw).shape == (100, 31, 1) and f.inputs(raw).dtype == np.float32


def test_csv_reader_names_the_bad_line(tmp_path, btc_csv) -> None:
    lines = btc_csv.read_text().splitlines()[:6]
    lines[3] = lines[3].replace(lines[3].split(",")[4], "abc", 1)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"bad.csv:4: close 'abc'"):
        read_csv_frame(bad)
    for text in ("inf", "-Infinity", "1e999"):  # parsed as floats, they reached the models (a traceback)
        inf = tmp_path / "inf.csv"
        inf.write_text("\n".join([*lines[:3], lines[3].replace(lines[3].split(",")[4], text, 1)]) + "\n")
        with pytest.raises(InputError, match=rf"inf.csv:4: close '{text}' is not a finite number"):
            read_csv_frame(inf)
    order = tmp_path / "order.csv"
    order.write_text("\n".join([lines[0], lines[2], lines[1]]) + "\n")
    with pytest.raises(InputError, match=r"order.csv:3: timestamp .* does not ascend"):
        read_csv_frame(order)
