from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from db.errors import ArtifactError
from trainer.artifacts import MANIFEST, load_artifact, read_manifest, save_artifact
from trainer.datasets import load_bars
from trainer.evaluation import model_samples
from trainer.forecaster import Forecaster
from trainer.models import ARCHS
from trainer.params import FEATURE_COLUMNS, DataParams, ModelParams, TrainParams
from trainer.training import fit_on_splits, make_splits

DATA = DataParams(window=96, horizon=4, features=("close", "volume"))
ALL_BARS = DataParams(window=96, horizon=4, features=FEATURE_COLUMNS[:5])


def _splits(frame: pd.DataFrame):  # type: ignore[no-untyped-def]
    return make_splits(load_bars(frame, ALL_BARS.features), ALL_BARS)


def _windows(model: Forecaster, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    test = model_samples(_splits(frame).test, model)
    return test.batch(np.arange(9))[0], test.origin_times()[:9]


def _fit(arch: str, frame: pd.DataFrame) -> Forecaster:
    model, _ = fit_on_splits(
        arch, _splits(frame), model_params=ModelParams(units=6, cnn_filters=4), data=DATA,
        train=TrainParams(epochs=1, stride=4),
    )
    return model


def save(model: Forecaster, path: Path) -> Path:
    return save_artifact(model, path)


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip_gives_identical_predictions(arch: str, small_frame: pd.DataFrame, tmp_path: Path) -> None:
    model = _fit(arch, small_frame)
    windows, times = _windows(model, small_frame)
    before = model.predict_batch(windows, times)
    save(model, tmp_path / "m")
    loaded = load_artifact(tmp_path / "m")
    after = loaded.predict_batch(windows, times)
    np.testing.assert_array_equal(after.point, before.point)
    np.testing.assert_array_equal(after.quantiles, before.quantiles)
    assert after.levels == before.levels == (0.1, 0.5, 0.9)
    assert np.all(np.diff(after.quantiles, axis=-1) >= 0)  # never crossing
    manifest = read_manifest(tmp_path / "m")
    assert manifest["arch"] == arch and manifest["window"] == 96 and manifest["quantiles"] == [0.1, 0.5, 0.9]
    assert manifest["features"] == (["high", "low", "close", "volume"] if arch == "har" else ["close", "volume"])
    assert manifest["training"]["fingerprint"] and "numpy" in manifest["libraries"]
    assert loaded.meta["training"]["start"] == manifest["training"]["start"]


def test_corrupt_or_mismatched_artifacts_are_refused(small_frame: pd.DataFrame, tmp_path: Path) -> None:
    model = _fit("cnn2", small_frame)
    path = save(model, tmp_path / "m")
    with pytest.raises(ArtifactError, match="expected 256"):
        load_artifact(path, window=256)
    with pytest.raises(ArtifactError, match="features"):
        load_artifact(path, features=("close",))
    blob = path / "model.keras"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.keras is corrupt"):
        load_artifact(path)
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["files"]["model.keras"] = __import__("hashlib").sha256(bytes(data)).hexdigest()
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="cannot be loaded"):
        load_artifact(path)  # checksum agrees, but the zip itself is damaged
    (path / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt manifest"):
        load_artifact(path)
    (path / MANIFEST).unlink()
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        load_artifact(path)
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "nowhere")


def test_manifest_with_other_shapes_is_refused(small_frame: pd.DataFrame, tmp_path: Path) -> None:
    model = _fit("linear", small_frame)
    path = save(model, tmp_path / "m")
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["data"]["window"] = 32
    manifest["featurizer"]["window"] = 32
    manifest["window"] = 32
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"linear\.npz has coefficients"):
        load_artifact(path)


def _rewrite(path: Path, name: str, **arrays: np.ndarray) -> None:
    """Replace one file of an artifact as an older (or broken) writer would have, digest kept valid."""
    import hashlib

    np.savez(path / name, **arrays)  # type: ignore[arg-type]
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["files"][name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    (path / MANIFEST).write_text(json.dumps(manifest))


def test_har_fitted_before_the_quarticity_components_still_loads_and_forecasts_the_same(
    small_frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer import volatility

    with monkeypatch.context() as m:
        m.setattr(volatility, "QUARTICITY_SPANS", ())
        old = _fit("har", small_frame)
    assert isinstance(old, volatility.Har) and old.beta is not None and old.beta.shape[1] == 10
    windows, times = _windows(old, small_frame)
    before = old.predict_batch(windows, times)
    path = save(old, tmp_path / "old")
    with np.load(path / "har.npz") as f:
        kept = {k: f[k] for k in f.files if k != "quarticity_spans"}  # the old writer had no such key
    _rewrite(path, "har.npz", **kept)
    loaded = load_artifact(path)
    assert isinstance(loaded, volatility.Har) and loaded.quarticity_spans == ()
    after = loaded.predict_batch(windows, times)
    np.testing.assert_array_equal(after.quantiles, before.quantiles)

    new = _fit("har", small_frame)
    assert isinstance(new, volatility.Har) and new.beta is not None
    assert new.beta.shape[1] == 10 + len(volatility.QUARTICITY_SPANS)
    path = save(new, tmp_path / "new")
    np.testing.assert_array_equal(
        load_artifact(path).predict_batch(windows, times).quantiles, new.predict_batch(windows, times).quantiles
    )
    spans = np.asarray(volatility.QUARTICITY_SPANS)
    _rewrite(path, "har.npz", **kept, quarticity_spans=spans)  # coefficients of the wrong width: refused

    with pytest.raises(ArtifactError, match="shapes do not match"):
        load_artifact(path)
