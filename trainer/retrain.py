"""The retraining job's core: train a challenger on everything but the newest bars, score it,
the champion and persistence walk-forward on those same held-out bars, and decide.

Runs in the retraining child process; the live loop only acts on the returned decision
(register, then promote or retire) so every forecast comes from exactly one model.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from trainer.challenger import COVERAGE_BAND, Decision, decide
from trainer.datasets import load_bars
from trainer.evaluation import Backtest, evaluate_holdout, union_features
from trainer.models import Forecaster
from trainer.params import DataParams, ModelParams, TrainParams
from trainer.training import train_from_frame


@dataclass(frozen=True, slots=True)
class Challenge:
    challenger: Forecaster
    backtest: Backtest
    decision: Decision


def challenge(
    frame: pd.DataFrame,
    arch: str,
    champion: Forecaster | None,
    *,
    holdout_bars: int,
    data: DataParams | None = None,
    model_params: ModelParams | None = None,
    train: TrainParams | None = None,
    metric: str = "pinball",
    margin: float = 0.0,
    band: tuple[float, float] = COVERAGE_BAND,
    series: str | None = None,
) -> Challenge:
    """Train `arch` on `frame` minus its last `holdout_bars` bars and compare on those bars
    (by `metric`; a challenger whose central-interval coverage is outside `band` is refused).

    Pick `holdout_bars` no larger than the bars that arrived since the champion's training
    ended, or the champion is scored on bars it was trained on.
    """
    data = data or DataParams()
    result = train_from_frame(
        frame, arch, data=data, model_params=model_params, train=train, holdout_bars=holdout_bars,
        evaluate=False, series=series,
    )
    models = {"challenger": result.model}
    if champion is not None:
        models["champion"] = champion
    bars = load_bars(frame, union_features(models), fill_gaps=data.fill_gaps, source=series or "bars")
    bt = evaluate_holdout(models, bars, holdout_bars=holdout_bars)
    decision = decide(
        bt.metrics["challenger"], bt.metrics.get("champion"), bt.metrics["persistence"], metric=metric,
        margin=margin, band=band,
    )
    result.model.meta["metrics"] = {
        "test": bt.metrics["challenger"].to_dict(),
        "persistence": bt.metrics["persistence"].to_dict(),
        **({"champion": bt.metrics["champion"].to_dict()} if champion is not None else {}),
        "decision": {"promote": decision.promote, "reason": decision.reason, "metric": metric, "margin": margin,
                     "coverage_band": list(band)},
    }
    return Challenge(result.model, bt, decision)
