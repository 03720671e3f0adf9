"""The probabilistic forecasts on real BTC bars: har beats climatology with an honest fan,
no point forecast loses to persistence, and the exported predictions reproduce the report."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from daemon.cli import main

LEVELS = (0.1, 0.5, 0.9)


@pytest.fixture(scope="module")
def evaluated(btc_frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict[str, str]]]:
    """`barcast evaluate` on 2021-03-01 .. 2021-04-14 (about 12,900 real bars), default split."""
    tmp = tmp_path_factory.mktemp("prob")
    frame = btc_frame.loc["2021-03-01":"2021-04-14"].drop(columns=["trade_count"]).copy()
    frame.insert(0, "timestamp", frame.index.as_unit("s").asi8)
    path = tmp / "btc.csv"
    frame.to_csv(path, index=False)
    preds = tmp / "pred.csv"
    result = CliRunner().invoke(
        main,
        [
            "--db",
            f"sqlite:///{tmp / 'x.db'}",
            "evaluate",
            "--csv",
            str(path),
            "--models",
            "har,drift,linear",
            "--format",
            "json",
            "--predictions",
            str(preds),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    with preds.open() as fh:
        rows = list(csv.DictReader(fh))
    return report, rows


def test_har_is_calibrated_and_beats_climatology_at_every_step(evaluated: tuple[dict, list[dict[str, str]]]) -> None:
    report, _ = evaluated
    har = report["models"]["har"]
    # chosen on the validation split alone: a calibrated model, never the reference itself
    assert report["selected"] in ("har", "drift", "linear", "persistence")
    chosen = report["selection"]["models"][report["selected"]]
    assert 0.70 <= chosen["mean"]["coverage"] <= 0.90
    assert chosen["mean"]["pinball"] < report["selection"]["models"]["climatology"]["mean"]["pinball"]
    assert min(har["prob_skill"]) > 0 and np.mean(har["prob_skill"][8:]) > 0.01
    assert all(0.74 <= c <= 0.86 for c in har["coverage"])
    assert min(har["skill"]) >= -0.001
    clim = report["models"]["climatology"]
    assert clim["prob_skill"] == [0.0] * 16


def test_no_point_forecast_loses_more_than_a_tenth_of_a_percent_to_persistence(
    evaluated: tuple[dict, list[dict[str, str]]],
) -> None:
    """Point shrinkage on the validation split: drift and linear may tie persistence, not lose to it."""
    report, _ = evaluated
    for name in ("drift", "linear", "har"):
        assert max(report["models"][name]["mase"]) <= 1.01, name  # held-out test bars: loose bound


def test_prediction_rows_reproduce_the_json_metrics(evaluated: tuple[dict, list[dict[str, str]]]) -> None:
    report, rows = evaluated
    assert list(rows[0]) == [
        "model",
        "origin_time",
        "step",
        "target_time",
        "last_close",
        "actual",
        "point",
        "q10",
        "q50",
        "q90",
    ]
    for name in ("har", "climatology", "linear"):
        m = report["models"][name]
        mine = [r for r in rows if r["model"] == name]
        assert len(mine) == report["origins"] * 16
        for step in (1, 9, 16):
            sel = [r for r in mine if int(r["step"]) == step]
            y = np.array([float(r["actual"]) for r in sel])
            pt = np.array([float(r["point"]) for r in sel])
            q = np.array([[float(r[c]) for c in ("q10", "q50", "q90")] for r in sel])
            assert np.all(q[:, 0] <= q[:, 1]) and np.all(q[:, 1] <= q[:, 2])
            pin = np.mean(
                [np.mean(np.maximum(t * (y - q[:, i]), (t - 1) * (y - q[:, i]))) for i, t in enumerate(LEVELS)]
            )
            assert np.mean(np.abs(pt - y)) == pytest.approx(m["mae"][step - 1], rel=1e-9)
            assert pin == pytest.approx(m["pinball"][step - 1], rel=1e-9)
            assert np.mean((y >= q[:, 0]) & (y <= q[:, 2])) == pytest.approx(m["coverage"][step - 1], rel=1e-9)
        t0 = pd.Timestamp(mine[0]["origin_time"])
        assert pd.Timestamp(mine[15]["target_time"]) == t0 + pd.Timedelta(minutes=80)


def test_evaluation_plot_has_coverage_and_skill_panels(
    btc_frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.datasets import load_bars
    from trainer.evaluation import evaluate_splits, plot_backtest
    from trainer.params import DataParams
    from trainer.training import fit_on_splits, make_splits

    data = DataParams(window=64, horizon=4, features=("high", "low", "close", "volume"))
    bars = load_bars(btc_frame.loc["2021-02-01":"2021-02-10"], data.features)
    splits = make_splits(bars, data)
    models = {a: fit_on_splits(a, splits, data=data)[0] for a in ("har", "climatology")}
    ev = evaluate_splits(models, splits)
    assert ev.validation is not None and ev.selected in models
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    figures: list[Any] = []  # matplotlib Figures (its stubs type axes' contents loosely)
    close = plt.close

    def keep(fig: Any) -> None:
        figures.append(fig)
        close(fig)

    monkeypatch.setattr(plt, "close", keep)
    png = plot_backtest(ev.test, bars, tmp_path / "e.png", fan_model="har")
    assert png.stat().st_size > 20_000
    # one colour per model in every panel, the fan in its model's colour
    (fig,) = figures
    seen: dict[str, tuple[float, ...]] = {}
    for ax in fig.axes[:3]:
        for line in ax.get_lines():
            if line.get_label() in models or line.get_label() == "persistence":
                rgba = mcolors.to_rgba(line.get_color())
                assert seen.setdefault(str(line.get_label()), rgba) == rgba, line.get_label()
    assert {"har", "climatology", "persistence"} <= seen.keys() and len(set(seen.values())) == len(seen)
    band = fig.axes[3].collections[0]
    assert tuple(band.get_facecolor()[0][:3]) == seen["har"][:3]
