"""Reload validates a champion before it serves and says what happened; artifact retention is
per series and never deletes what a live registry row needs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from daemon.config import Config, SeriesConfig
from daemon.feeds.randomwalk import random_walk_bars
from daemon.live.forecastlog import ForecastLog
from daemon.live.inference import ModelBook
from daemon.live.pipeline import Pipeline
from daemon.live.service import Service
from db import registry
from db.bars import bars_frame, upsert_bars
from db.engine import Database
from db.records import ModelInfo, SeriesKey
from trainer.artifacts import MANIFEST, _sha256
from trainer.datasets import load_bars
from trainer.params import DataParams
from trainer.registry import save_and_register
from trainer.retrain_job import prune_artifacts
from trainer.training import fit_on_splits, make_splits

S = SeriesKey("binance", "BTC-USDT")
DATA = DataParams(window=16, horizon=4)


def _train(db: Database, root: Path, model_id: str) -> ModelInfo:
    frame = bars_frame(db, S)
    model, _ = fit_on_splits("linear", make_splits(load_bars(frame, DATA.features), DATA), data=DATA)
    return save_and_register(db, model, root, (S,), model_id=model_id)


def _poison(directory: Path) -> None:
    """NaN coefficients with a matching manifest: loads fine, predicts garbage."""
    manifest = json.loads((directory / MANIFEST).read_text())
    for name in manifest["files"]:
        p = directory / name
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v for k, v in z.items()}
            with p.open("wb") as fh:
                np.savez(fh, **arrays)  # type: ignore[arg-type]
            manifest["files"][name] = _sha256(p)
    (directory / MANIFEST).write_text(json.dumps(manifest))


def test_reload_of_a_bad_champion_keeps_serving_and_says_so(tmp_db: Database, tmp_path: Path) -> None:
    upsert_bars(tmp_db, [dataclasses.replace(b, exchange=S.exchange, symbol=S.symbol)
                         for b in random_walk_bars(S.symbol, 400, start=datetime(2024, 1, 1, tzinfo=UTC))])
    root = tmp_path / "models"
    good = _train(tmp_db, root, "linear-good")
    registry.promote(tmp_db, good.id, S)
    config = Config(series=(SeriesConfig(S.exchange, S.symbol),), data=DATA)
    config = dataclasses.replace(config, paths=dataclasses.replace(config.paths, data_dir=str(tmp_path)))
    service = Service(config)
    pipe = Pipeline(config, tmp_db, book=ModelBook(), forecast_log=ForecastLog(tmp_path / "f.jsonl"))
    service.pipeline = pipe

    bad = _train(tmp_db, root, "linear-nan")
    _poison(Path(bad.artifact_path or ""))
    broken = _train(tmp_db, root, "linear-corrupt")
    (Path(broken.artifact_path or "") / "linear.npz").write_bytes(b"garbage")

    async def main() -> list[dict[str, object]]:
        answers = [await service._control({"cmd": "reload"})]
        for model in (bad, broken):
            registry.promote(tmp_db, model.id, S)
            answers.append(await service._control({"cmd": "reload"}))
            answers.append({"serving_now": pipe.book.get(config.model_group(S)).model_id})  # type: ignore[union-attr]
        return answers

    try:
        first, nan_answer, after_nan, corrupt_answer, after_corrupt = asyncio.run(main())
    finally:
        pipe.close()
    assert first["ok"] is True and first["serving"] == ["linear-good"]
    assert nan_answer["ok"] is False and "test prediction is not finite" in str(nan_answer["error"])
    assert "still serving linear-good" in str(nan_answer["error"])
    assert nan_answer["groups"] == [{"group": config.model_group(S), "serving": "linear-good", "loaded": False,
                                     "error": nan_answer["groups"][0]["error"]}]  # type: ignore[index]
    assert after_nan == {"serving_now": "linear-good"}
    assert corrupt_answer["ok"] is False and "corrupt" in str(corrupt_answer["error"])
    assert after_corrupt == {"serving_now": "linear-good"}


def _model(db: Database, root: Path, model_id: str, series: tuple[SeriesKey, ...], status: str) -> Path:
    path = root / model_id
    path.mkdir(parents=True)
    (path / "x").write_text(model_id)
    registry.register_model(db, ModelInfo(model_id, "linear", series, None, None, {}, {}, str(path),
                                          created_at=datetime.now(UTC)))
    if status != "candidate":
        registry.set_status(db, model_id, status)  # type: ignore[arg-type]
    return path


def test_retention_is_per_series_and_keeps_live_artifacts(tmp_db: Database, tmp_path: Path) -> None:
    root = tmp_path / "models"
    eth = SeriesKey("binance", "ETH-USDT")
    # ETH's only model is old; BTC then gets many newer retired ones.
    eth_champion = _model(tmp_db, root, "eth-0", (eth,), "candidate")
    registry.promote(tmp_db, "eth-0", eth)
    eth_old = _model(tmp_db, root, "eth-retired", (eth,), "retired")
    btc_candidate = _model(tmp_db, root, "btc-candidate", (S,), "candidate")
    btc = [_model(tmp_db, root, f"btc-{i}", (S,), "retired") for i in range(6)]
    removed = prune_artifacts(tmp_db, root, keep=2)
    assert eth_champion.exists() and eth_old.exists(), "another series' newest models are kept"
    assert btc_candidate.exists(), "a live (candidate) row keeps its artifact"
    assert [p.exists() for p in btc] == [False, False, False, False, True, True]
    assert sorted(removed) == [f"btc-{i}" for i in range(4)]
