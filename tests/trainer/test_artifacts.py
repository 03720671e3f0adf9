from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from db.errors import ArtifactError
from trainer.artifacts import MANIFEST, load_artifact, read_manifest
from trainer.datasets import load_bars
from trainer.models import Forecaster
from trainer.params import DataParams, ModelParams, TrainParams
from trainer.training import fit_on_splits, make_splits

DATA = DataParams(window=96, horizon=4, features=("close", "volume"))


@pytest.fixture(scope="module")
def windows(small_frame: pd.DataFrame) -> np.ndarray:
    splits = make_splits(load_bars(small_frame, DATA.features), DATA)
    return splits.test.batch(np.arange(9))[0]


def _fit(arch: str, frame: pd.DataFrame) -> Forecaster:
    splits = make_splits(load_bars(frame, DATA.features), DATA)
    model, _ = fit_on_splits(
        arch, splits, model_params=ModelParams(units=6, cnn_filters=4), data=DATA, train=TrainParams(epochs=1, stride=4)
    )
    return model


@pytest.mark.parametrize("arch", ["lstm", "gru", "cnn2", "cnn3", "cnn4", "linear", "persistence", "drift"])
def test_save_load_round_trip_gives_identical_predictions(
    arch: str, small_frame: pd.DataFrame, windows: np.ndarray, tmp_path: Path
) -> None:
    model = _fit(arch, small_frame)
    before = model.predict_batch(windows)
    model.save(tmp_path / "m")
    loaded = Forecaster.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_batch(windows), before)
    manifest = read_manifest(tmp_path / "m")
    assert manifest["arch"] == arch and manifest["window"] == 96 and manifest["features"] == ["close", "volume"]
    assert manifest["training"]["fingerprint"] and "numpy" in manifest["libraries"]
    assert loaded.meta["training"]["start"] == manifest["training"]["start"]


def test_corrupt_or_mismatched_artifacts_are_refused(small_frame: pd.DataFrame, tmp_path: Path) -> None:
    model = _fit("cnn2", small_frame)
    path = model.save(tmp_path / "m")
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
    path = model.save(tmp_path / "m")
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["data"]["window"] = 32
    manifest["featurizer"]["window"] = 32
    manifest["window"] = 32
    (path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"linear\.npz has coefficients"):
        load_artifact(path)
