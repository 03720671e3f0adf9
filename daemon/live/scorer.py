"""The online scoring pass: forecast steps whose target bar has closed -> scores, calibration
updates and live gauges (writer thread), and the drift watch over them (event loop).

The pure parts (`score`, `Reference`, `DriftWatch`) live in `daemon/live/scoring.py`; this is
their I/O shell, kept apart from the forecast pipeline so the per-bar path reads as bars ->
forecasts -> `Scorer.run`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from daemon import metrics
from daemon.config import Config
from daemon.live.calibration import CalibrationBook
from daemon.live.scoring import DriftWatch, Reference, score
from db.bars import bars_frame
from db.cluster import Fence
from db.engine import Database
from db.records import ForecastScore, SeriesKey
from db.scores import accuracy, insert_scores, unscored_steps

log = logging.getLogger("barcast.live")


class Scorer:
    """Set-based scoring of the due steps of many series, calibration fed back in the same
    transaction, climatology references per series, live gauges and drift flags."""

    def __init__(self, config: Config, database: Database, calibration: CalibrationBook, *,
                 fence: Callable[[], Fence | None], last_bar: Callable[[SeriesKey], datetime | None]) -> None:
        self.config = config
        self.database = database
        self.calibration = calibration
        self.fence = fence
        self.last_bar = last_bar
        self.drift: dict[tuple[SeriesKey, str], DriftWatch] = {}
        #: Climatology per series (live probabilistic skill), rebuilt once a day of bars.
        self.references: dict[SeriesKey, Reference] = {}
        self._reference_tried: dict[SeriesKey, datetime] = {}
        #: Per series, the (model, step) gauges last published and the models scored within the
        #: scoring window: a model that stopped serving leaves both once its scores age out of
        #: the window, so gauges and drift watches are bounded by the models in the window, not
        #: every model a long-running daemon ever served.
        self._gauges: dict[SeriesKey, set[tuple[str, str]]] = {}
        self._in_window: dict[SeriesKey, frozenset[str]] = {}

    def run(self, keys: list[SeriesKey], target_since: datetime | None) -> list[ForecastScore]:
        """Score what became scorable (writer thread): one query finds the due steps of every series
        of the batch, one bulk insert stores their scores with the calibration states they moved.
        `target_since` bounds the scan to recent target bars (the per-bar pass); None catches up
        after downtime (at start and on a takeover)."""
        if not keys:
            return []
        now = datetime.now(UTC)
        rows = unscored_steps(self.database, keys, target_since=target_since)
        out = score(rows, now, self.reference_of({r.series for r in rows})) if rows else []
        if out:
            moved = self.calibration.updated(rows)
            insert_scores(self.database, out, self.calibration.states(moved, now), fence=self.fence())
            self.calibration.commit(moved)
            self.publish_accuracy(sorted({s.series for s in out}))
        return out

    def reference_of(self, keys: Iterable[SeriesKey]) -> dict[SeriesKey, Reference]:
        """Climatology of each series, (re)built from the last `retrain.history_days` of stored bars
        when missing or a day of bars old; a series with too little history is retried once per
        horizon of bars."""
        horizon = self.config.data.horizon
        for key in keys:
            last = self.last_bar(key)
            if last is None:
                continue
            ref = self.references.get(key)
            if ref is not None and last - ref.through < timedelta(days=1):
                continue
            tried = self._reference_tried.get(key)
            if ref is None and tried is not None and last - tried < key.step * horizon:
                continue
            self._reference_tried[key] = last
            frame = bars_frame(self.database, key, since=last - timedelta(days=self.config.retrain.history_days),
                               until=last)
            times = frame.index.as_unit("s").asi8
            built = Reference.build(times, frame["close"].to_numpy(), through=last, horizon=horizon,
                                    step_s=int(key.step.total_seconds()), levels=self.config.model.quantiles)
            if built is not None:
                self.references[key] = built
        return self.references

    def publish_accuracy(self, keys: list[SeriesKey]) -> None:
        """Per-step live MAE, pinball, coverage and probabilistic-skill gauges over the scoring
        window, one query for all `keys`."""
        if not keys:
            return
        span = self.config.scoring.window_steps // max(1, self.config.data.horizon)
        # exchange time, so replays score too
        starts = [(self.last_bar(k) or datetime.now(UTC)) - k.step * span for k in keys]
        shown: dict[SeriesKey, set[tuple[str, str]]] = {k: set() for k in keys}
        for row in accuracy(self.database, series=keys, since=min(starts) if span else None, per_level=False):
            labels = (str(row.series), row.model_id, str(row.step))
            shown.setdefault(row.series, set()).add(labels[1:])
            metrics.LIVE_MAE.labels(*labels).set(row.mae)
            metrics.PERSISTENCE_MAE.labels(str(row.series), str(row.step)).set(row.persistence_mae)
            if row.pinball_mean is not None and row.coverage is not None:
                metrics.LIVE_PINBALL.labels(*labels).set(row.pinball_mean)
                metrics.LIVE_COVERAGE.labels(*labels).set(row.coverage)
            if row.prob_skill is not None:
                metrics.LIVE_PROB_SKILL.labels(*labels).set(row.prob_skill)
        for key, now in shown.items():
            for model, step in self._gauges.get(key, set()) - now:
                for gauge in (metrics.LIVE_MAE, metrics.LIVE_PINBALL, metrics.LIVE_COVERAGE, metrics.LIVE_PROB_SKILL):
                    with contextlib.suppress(KeyError):  # never set (a point-only model has no pinball)
                        gauge.remove(str(key), model, step)
            self._gauges[key] = now
            self._in_window[key] = frozenset(m for m, _ in now)

    def watch(self, scores: list[ForecastScore]) -> None:
        """Feed the drift watch of each (series, model) and flag a model whose live MAE stays above
        persistence's (event loop)."""
        by: dict[tuple[SeriesKey, str], list[ForecastScore]] = {}
        for s in scores:
            by.setdefault((s.series, s.model_id), []).append(s)
        cfg = self.config.scoring
        for k, group in by.items():
            watch = self.drift.setdefault(
                k, DriftWatch(window=cfg.window_steps, margin=cfg.drift_margin, period=cfg.drift_period)
            )
            was = watch.drifting
            watch.add(group)
            now = watch.check()
            metrics.DRIFT_FLAG.labels(str(k[0]), k[1]).set(1 if now else 0)
            if now and not was:
                log.warning("model drifting: live error above persistence", extra={
                    "series": str(k[0]), "model": k[1], "mae": watch.mae, "persistence_mae": watch.persistence_mae,
                    "margin": cfg.drift_margin})
            elif was and not now:
                log.info("model back within drift margin", extra={"series": str(k[0]), "model": k[1]})
        for series, model in [k for k in self.drift if k[1] not in self._in_window.get(k[0], frozenset([k[1]]))]:
            del self.drift[(series, model)]  # its scores left the window: it no longer serves
            metrics.DRIFT_FLAG.remove(str(series), model)
