"""Glue between trained models and the `models` table (db.registry): ids, artifact paths
and what is recorded about a model."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from db.records import ModelInfo, SeriesKey
from trainer.artifacts import _jsonable, save_artifact
from trainer.models import Forecaster, params_dict


def new_model_id(arch: str, series: SeriesKey | None = None, now: datetime | None = None) -> str:
    """`arch-exchange-SYMBOL-interval-YYYYmmddTHHMMSSffffff`: sortable by time, readable in logs."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%f")
    where = f"{series.exchange}-{series.symbol}-{series.interval}-" if series else ""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{arch}-{where}{stamp}")


def _time(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) else None


def model_info(
    model: Forecaster, model_id: str, artifact: Path | str | None, series: tuple[SeriesKey, ...]
) -> ModelInfo:
    training = model.meta.get("training") or {}
    return ModelInfo(
        id=model_id,
        arch=model.arch,
        series=series,
        train_start=_time(training.get("start")),
        train_end=_time(training.get("end")),
        params=_jsonable({**params_dict(model), "train": model.meta.get("train")}),
        metrics=_jsonable(model.meta.get("metrics") or {}),  # NaN is not JSON (PostgreSQL refuses it)
        artifact_path=str(artifact) if artifact is not None else None,
        status="candidate",
    )


def save_and_register(
    database: Any,
    model: Forecaster,
    artifacts_dir: str | Path,
    series: tuple[SeriesKey, ...] = (),
    *,
    model_id: str | None = None,
) -> ModelInfo:
    """Save the artifact under `artifacts_dir/<id>` (and, on PostgreSQL, into the database, so
    every daemon can load it: trainer.artifact_store) and register it as a candidate."""
    from db.registry import register_model
    from trainer.artifact_store import publish

    model_id = model_id or new_model_id(model.arch, series[0] if series else None)
    path = save_artifact(model, Path(artifacts_dir) / model_id)
    info = model_info(model, model_id, publish(database, model_id, path), series)
    register_model(database, info)
    return info
