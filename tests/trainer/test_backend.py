"""The model code is Keras 3 only: one small model trains, predicts and round-trips on a second
backend (PyTorch or JAX) in a subprocess, since the backend is fixed per process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import sys, numpy as np, keras
from trainer.datasets import read_csv_frame, load_bars
from trainer.artifacts import load_artifact, save_artifact
from trainer.params import DataParams, ModelParams, TrainParams
from trainer.training import fit_on_splits, make_splits
assert keras.config.backend() == sys.argv[2], keras.config.backend()
frame = read_csv_frame(sys.argv[1]).loc["2021-01-10":"2021-01-12"]
data = DataParams(window=96, horizon=4)
splits = make_splits(load_bars(frame, data.features), data)
for arch in ("gru", "cnn2"):
    model, report = fit_on_splits(arch, splits, model_params=ModelParams(units=6, cnn_filters=4), data=data,
                                  train=TrainParams(epochs=2, batch_size=32, stride=3))
    raw, _ = splits.test.batch(np.arange(5))
    out = model.predict_batch(raw)
    assert out.point.shape == (5, 4) and out.quantiles.shape == (5, 4, 3) and np.isfinite(out.quantiles).all()
    save_artifact(model, sys.argv[3] + "/" + arch)
    again = load_artifact(sys.argv[3] + "/" + arch).predict_batch(raw)
    np.testing.assert_allclose(again.point, out.point, rtol=1e-5)
    np.testing.assert_allclose(again.quantiles, out.quantiles, rtol=1e-5)
print("ok", keras.config.backend())
"""


def _second_backend() -> str | None:
    for name in ("torch", "jax"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


@pytest.mark.slow
def test_models_run_on_a_second_keras_backend(btc_csv: Path, tmp_path: Path) -> None:
    backend = _second_backend()
    if backend is None:
        pytest.skip("no second Keras backend installed (pip install torch or jax)")
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(btc_csv), backend, str(tmp_path)],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith(f"ok {backend}")
