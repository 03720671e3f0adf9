"""One retraining run end to end: load recent bars, challenge the champion (trainer.retrain),
save and register the challenger, promote it only if it won, prune old artifacts.

Runs in a child process (`spawn`) started by the daemon's scheduler or by `barcast retrain`;
everything it needs travels in a picklable `RetrainRequest`, everything it decided comes back
in a `RetrainOutcome`. The registry records the outcome either way.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from db import registry
from db.bars import bars_frame, count_bars, latest_bar
from db.cluster import Fence
from db.engine import Database, open_database
from db.errors import ArtifactError, FencedOut, InputError
from db.records import ModelInfo, SeriesKey
from trainer.artifact_store import DB_PREFIX, forget, local_path
from trainer.challenger import COVERAGE_BAND
from trainer.params import DataParams, ModelParams, TrainParams

log = logging.getLogger("barcast.retrain")

#: Registry id of the persistence baseline served before any trained model exists.
BASELINE_ID = "persistence"


@dataclass(frozen=True, slots=True)
class RetrainRequest:
    db_url: str
    #: Series the model serves, "exchange:SYMBOL:interval"; trained and judged on the first.
    series: tuple[str, ...]
    arch: str = "lstm"
    data: DataParams = field(default_factory=DataParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    history_days: float = 30.0
    holdout_bars: int = 288
    metric: str = "pinball"
    margin: float = 0.0
    #: Central-interval coverage a challenger must have on the held-out bars to be promoted.
    coverage_band: tuple[float, float] = COVERAGE_BAND
    artifacts_dir: str = "models"
    keep_artifacts: int = 5
    log_level: str = "info"
    #: The daemon's instance id and its fencing token of the first series' lease (daemons sharing
    #: a database): the promotion is refused if the lease moved on meanwhile. Empty: unfenced.
    fence_owner: str = ""
    fence_token: int = 0


@dataclass(frozen=True, slots=True)
class RetrainOutcome:
    model_id: str
    series: tuple[str, ...]
    promoted: bool
    reason: str
    metric: str
    challenger: float | None
    champion: float | None
    persistence: float | None
    champion_id: str | None
    artifact_path: str
    seconds: float
    origins: int
    #: Process that trained it (the daemon's child, never the daemon itself).
    pid: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ensure_baseline(database: Database, series: list[SeriesKey]) -> ModelInfo:
    """Register the persistence baseline and make it champion of every series that has none
    (once, whichever daemons sharing the database start at the same time)."""
    info = ModelInfo(BASELINE_ID, "persistence", tuple(series), None, None, {}, {}, None, status="candidate")
    registry.ensure_default(database, info, series, reason="baseline until a trained model beats it")
    return registry.get_model(database, BASELINE_ID)


def retire_model(database: Database, model_id: str) -> list[SeriesKey]:
    """Retire a model (`barcast models retire`); the persistence baseline becomes champion of the
    series it was champion of, so those are served by persistence, as they are before a first
    model. Returns those series."""
    info = registry.get_model(database, model_id)
    ensure_baseline(database, list(info.series))
    return registry.retire(database, model_id, fallback=BASELINE_ID,
                           reason=f"champion {model_id} retired (barcast models retire)")


def load_champion(database: Database, series: SeriesKey, data: DataParams, artifacts_dir: str | Path
                  ) -> tuple[str | None, Any]:
    """The champion of `series` as a loaded model (None for the baseline or an unusable artifact)."""
    from trainer.artifacts import load_artifact

    info = registry.champion(database, series)
    if info is None or info.id == BASELINE_ID or not info.artifact_path:
        return (info.id if info else None), None
    try:
        path = local_path(database, info.artifact_path, artifacts_dir)
        return info.id, load_artifact(path, window=data.window, horizon=data.horizon)
    except ArtifactError as exc:
        log.warning("champion artifact unusable; judging against persistence only",
                    extra={"model": info.id, "error": str(exc)})
        return info.id, None


def local_path_of(artifact_path: str, artifacts_dir: Path) -> Path:
    """The local directory of an artifact (a database one's local copy), without fetching it."""
    if artifact_path.startswith(DB_PREFIX):
        return artifacts_dir / artifact_path[len(DB_PREFIX):]
    return Path(artifact_path)


def prune_artifacts(database: Database, artifacts_dir: Path, keep: int) -> list[str]:
    """Delete artifacts of retired models beyond the newest `keep` of each series.

    Never one of a champion or of any live (candidate or champion) registry row, never one among
    the newest `keep` of any series it serves, never a path outside `artifacts_dir`."""
    models = [m for m in registry.list_models(database) if m.artifact_path]  # newest first
    protected = {
        str(local_path_of(m.artifact_path or "", artifacts_dir).resolve()) for m in models if m.status != "retired"
    }
    per_series: dict[SeriesKey | None, int] = {}
    removed = []
    for m in models:
        newest = False
        keys: tuple[SeriesKey | None, ...] = m.series or (None,)
        for key in keys:
            seen = per_series.get(key, 0)
            per_series[key] = seen + 1
            newest = newest or seen < keep
        path = local_path_of(m.artifact_path or "", artifacts_dir)
        if newest or m.status != "retired" or str(path.resolve()) in protected:
            continue
        forget(database, m.artifact_path or "")
        if path.is_dir() and path.resolve().parent == artifacts_dir.resolve():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(m.id)
    return removed


def history_start(database: Database, primary: SeriesKey, history_days: float) -> datetime:
    """Where a retrain's history starts: `history_days` back from the newest stored bar
    (exchange time), not the wall clock, so replays of old data and a daemon that was down a
    while train on what they have."""
    newest = latest_bar(database, primary)
    return (newest.open_time if newest else datetime.now(UTC)) - timedelta(days=history_days)


def bars_needed(req: RetrainRequest) -> int:
    """Fewest bars of history a retrain takes: two windows plus the held-out bars."""
    return 2 * (req.data.window + req.data.horizon) + req.holdout_bars


def history_bars(database: Database, req: RetrainRequest) -> tuple[int, int]:
    """(bars a retrain of `req` would train on, bars it needs): the daemon waits, rather than
    fails a job, while the first is short."""
    primary = SeriesKey.parse(req.series[0])
    have = count_bars(database, primary, since=history_start(database, primary, req.history_days))
    return have, bars_needed(req)


def run_retrain(req: RetrainRequest) -> RetrainOutcome:
    """Train, judge and (maybe) promote. Safe to run in a fresh process."""
    from trainer.registry import new_model_id, save_and_register
    from trainer.retrain import challenge

    t0 = time.perf_counter()
    keys = [SeriesKey.parse(s) for s in req.series]
    primary = keys[0]
    database = open_database(req.db_url)
    try:
        frame = bars_frame(database, primary, since=history_start(database, primary, req.history_days))
        need = bars_needed(req)
        if len(frame) < need:
            raise InputError(
                f"{primary}: {len(frame)} bars in the {req.history_days:g} days before its newest bar; retraining "
                f"needs at least {need} (two windows plus {req.holdout_bars} held-out bars)"
            )
        champion_id, champion = load_champion(database, primary, req.data, req.artifacts_dir)
        result = challenge(
            frame, req.arch, champion, holdout_bars=req.holdout_bars, data=req.data, model_params=req.model,
            train=req.train, metric=req.metric, margin=req.margin, band=req.coverage_band, series=str(primary),
        )
        decision = result.decision
        model = result.challenger
        model.meta.setdefault("metrics", {})["decision_against"] = champion_id
        model_id = new_model_id(req.arch, primary)
        info = save_and_register(database, model, req.artifacts_dir, tuple(keys), model_id=model_id)
        promoted, reason = decision.promote, decision.reason
        if promoted:
            fence = Fence(req.fence_owner, {primary: req.fence_token}) if req.fence_owner else None
            try:
                registry.promote(database, model_id, keys, reason=reason, fence=fence)
            except FencedOut as exc:
                promoted, reason = False, str(exc)
                log.warning("challenger won but was not promoted: this daemon's lease moved on",
                            extra={"model": model_id, "series": str(primary)})
                # the registry row says why it was retired, not that it was to be promoted
                won = info.metrics.get("decision") or {}
                registry.update_metrics(database, model_id, {
                    **info.metrics, "decision": {**won, "promote": False, "reason": reason, "won": decision.reason}})
        if not promoted:
            registry.set_status(database, model_id, "retired")
        prune_artifacts(database, Path(req.artifacts_dir), req.keep_artifacts)
        return RetrainOutcome(
            model_id=model_id, series=req.series, promoted=promoted, reason=reason,
            metric=decision.metric, challenger=decision.challenger, champion=decision.champion,
            persistence=decision.persistence, champion_id=champion_id, artifact_path=info.artifact_path or "",
            seconds=time.perf_counter() - t0, origins=result.backtest.n, pid=os.getpid(),
        )
    finally:
        database.close()


def child_main(req: RetrainRequest) -> RetrainOutcome:
    """Entry point in the spawned child: quiet TensorFlow, log like the daemon, then run."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=req.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return run_retrain(req)
