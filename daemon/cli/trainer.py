"""Trainer commands: `dataset export`, `train`, `evaluate`, `models list|show|promote|retire`.

TensorFlow/Keras are imported only inside the commands that train or load models, so
`barcast --help` and the database commands never pay for them.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson

from daemon.cli.common import (
    AppContext,
    OutputPath,
    emit_rows,
    flat_series,
    format_option,
    iso,
    out_console,
    parse_range,
    pass_app,
    progress_bar,
    require_known_series,
    series_option,
)
from db.errors import InputError
from db.records import SeriesKey

#: Every architecture of `trainer.models.ARCHS` but climatology (evaluate's reference, always
#: added); spelt out so that `barcast --help` need not import the trainer (a test keeps it in step).
ALL_MODELS = "lstm,gru,cnn2,cnn3,cnn4,linear,har,persistence,drift"


def _trainer_params(app: AppContext) -> tuple[Any, Any, Any]:
    """(DataParams, ModelParams, TrainParams) from the config's [data], [model] and [train]."""
    cfg = app.config
    return cfg.data, cfg.model, cfg.train


def _replace(obj: Any, **changes: Any) -> Any:
    return dataclasses.replace(obj, **{k: v for k, v in changes.items() if v is not None})


def _features(text: str | None) -> tuple[str, ...] | None:
    return tuple(f.strip() for f in text.split(",") if f.strip()) if text else None


def data_options(fn: Any) -> Any:
    opts = [
        click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="OHLCV CSV file (shared-data format)."),
        series_option("Stored series, e.g. binance:BTC-USDT (with --csv: the name to give it).", name="series_text"),
        click.option("--since", help="First bar time (ISO-8601, Unix seconds or an age like 30d)."),
        click.option("--until", help="End time, exclusive."),
        click.option("--window", type=int, help="Input bars per window [256]."),
        click.option("--horizon", type=int, help="Bars forecast [16]."),
        click.option("--features", help="Comma-separated from open,high,low,close,volume,trade_count [close]."),
        click.option(
            "--inputs",
            help="Derived network inputs, comma-separated from log_range,log_abs_return,log_volume,"
            "log_trades,time_of_day,day_of_week ('none' for none) [config data.inputs].",
        ),
        click.option("--target", type=click.Choice(["log_return", "price"]), help="Target form [log_return]."),
        click.option("--scaler", type=click.Choice(["minmax", "standard"]), help="Input scaler [minmax]."),
        click.option("--fill-gaps", type=int, help="Forward-fill gaps of up to N missing bars [0]."),
        click.option("--train-frac", type=float, help="Training share of the bars [0.7]."),
        click.option("--val-frac", type=float, help="Validation share of the bars [0.1]."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _load_frame(
    app: AppContext, csv_path: str | None, series: SeriesKey | None, since: str | None, until: str | None
) -> tuple[Any, str, SeriesKey | None]:
    """(bars frame, name for messages, series key) from --csv or --series."""
    if not csv_path and not series:
        raise InputError("give a data source: --csv FILE or --series EXCHANGE:SYMBOL (with --csv, --series names it)")
    t0, t1 = parse_range(since, until)
    if csv_path:
        from trainer.datasets import read_csv_frame

        frame = read_csv_frame(csv_path)
        if t0 is not None:
            frame = frame[frame.index >= t0]
        if t1 is not None:
            frame = frame[frame.index < t1]
        return frame, csv_path, series
    from db.bars import bars_frame

    assert series is not None
    require_known_series(app, [series])
    frame = bars_frame(app.database(), series, t0, t1)
    if frame.empty:
        raise InputError(f"no stored bars for {series} in that range (see `barcast db stats`)")
    return frame, str(series), series


def _data_params(app: AppContext, **kw: Any) -> Any:
    data, _, _ = _trainer_params(app)
    kw["features"] = _features(kw.get("features"))
    inputs = kw.get("inputs")
    kw["inputs"] = () if inputs is not None and inputs.strip().lower() == "none" else _features(inputs)
    return _replace(data, **kw)


@click.group("dataset")
def dataset() -> None:
    """Training data sets."""


@dataset.command("export")
@data_options
@click.option("--out", "out", required=True, type=OutputPath(), help="HDF5 file to write.")
@pass_app
def dataset_export(
    app: AppContext,
    csv_path: str | None,
    series_text: SeriesKey | None,
    since: str | None,
    until: str | None,
    out: Path,
    **kw: Any,
) -> None:
    """Write `inputs` (n, window, f) / `outputs` (n, horizon, f) windows and metadata to HDF5."""
    from trainer.datasets import load_bars
    from trainer.export import export_h5

    frame, name, series = _load_frame(app, csv_path, series_text, since, until)
    data = _data_params(app, **kw)
    bars = load_bars(frame, data.features, fill_gaps=data.fill_gaps, source=name)
    with progress_bar(app.console) as progress:
        task = progress.add_task(f"writing {out}", total=None)
        n = export_h5(bars, out, data, series=str(series) if series else name,
                      on_rows=lambda done, total: progress.update(task, completed=done, total=total))
    click.echo(f"{out}: {n:,} windows of {data.window} → {data.horizon} bars, features {','.join(data.features)}")


def _train_params(app: AppContext, **kw: Any) -> Any:
    _, _, train = _trainer_params(app)
    return _replace(train, **kw)


@click.command("train")
@data_options
@click.option("--h5", "h5_path", type=click.Path(dir_okay=False), help="Train from an HDF5 export instead.")
@click.option("--arch", required=True, type=click.Choice(ALL_MODELS.split(",")), help="Architecture.")
@click.option("--epochs", type=int, help="Maximum epochs [100].")
@click.option("--batch-size", type=int, help="Batch size [512].")
@click.option("--patience", type=int, help="Early-stopping patience in epochs [10].")
@click.option("--stride", type=int, help="Use every N-th training window [1].")
@click.option("--seed", type=int, help="Random seed [42].")
@click.option("--units", type=int, help="Recurrent units [50].")
@click.option("--holdout-bars", type=int, help="Test on the last N bars instead of the fractions.")
@click.option("--log-csv", type=OutputPath(), help="CSV log of epochs.")
@click.option("--artifacts", type=OutputPath(directory=True), help="Artifact root [config paths.artifacts_dir].")
@click.option("--register/--no-register", default=True, show_default=True, help="Add to the models table.")
@format_option()
@pass_app
def train(
    app: AppContext,
    csv_path: str | None,
    series_text: SeriesKey | None,
    since: str | None,
    until: str | None,
    h5_path: str | None,
    arch: str,
    epochs: int | None,
    batch_size: int | None,
    patience: int | None,
    stride: int | None,
    seed: int | None,
    units: int | None,
    holdout_bars: int | None,
    log_csv: Path | None,
    artifacts: Path | None,
    register: bool,
    fmt: str,
    **kw: Any,
) -> None:
    """Train one model, store its artifact and register it as a candidate with its test metrics."""
    from trainer.registry import model_info, new_model_id, save_and_register
    from trainer.training import train_from_frame, train_from_h5

    _, model_params, _ = _trainer_params(app)
    model_params = _replace(model_params, units=units)
    tp = _train_params(app, epochs=epochs, batch_size=batch_size, patience=patience, stride=stride, seed=seed)
    data = _data_params(app, **kw)
    series: SeriesKey | None = series_text
    progress = fmt == "table"
    ignored = [name for name, value in (("--csv", csv_path), ("--since", since), ("--until", until)) if value]
    if h5_path and ignored:  # the export's windows are fixed: these would be silently ignored
        raise InputError(f"--h5 takes its windows from the file: give it without {', '.join(ignored)}")
    if h5_path:
        result = train_from_h5(
            h5_path,
            arch,
            data=data,
            model_params=model_params,
            train=tp,
            log_csv=Path(log_csv) if log_csv else None,
            progress=progress,
        )
    else:
        frame, name, series = _load_frame(app, csv_path, series_text, since, until)
        result = train_from_frame(
            frame,
            arch,
            data=data,
            model_params=model_params,
            train=tp,
            holdout_bars=holdout_bars,
            log_csv=Path(log_csv) if log_csv else None,
            progress=progress,
            series=str(series) if series else name,
        )
    model = result.model
    root = Path(artifacts) if artifacts else app.config.artifacts_dir
    keys = (series,) if series else ()
    if register:
        info = save_and_register(app.database(create=True), model, root, keys)
    else:
        model_id = new_model_id(arch, series)
        from trainer.artifacts import save_artifact

        info = model_info(model, model_id, save_artifact(model, root / model_id).resolve(), keys)
    test = (model.meta.get("metrics") or {}).get("test", {}).get("mean", {})
    persist = (model.meta.get("metrics") or {}).get("persistence", {}).get("mean", {})
    row = {
        "id": info.id,
        "arch": arch,
        "epochs": result.report.epochs,
        "best_epoch": result.report.best_epoch,
        "test_mae": test.get("mae"),
        "persistence_mae": persist.get("mae"),
        "mase": test.get("mase"),
        "artifact": info.artifact_path,
        "registered": register,
    }
    emit_rows([row], list(row), fmt)


@click.command("evaluate")
@data_options
@click.option("--models", "model_list", default=ALL_MODELS, show_default=True, help="Comma-separated models.")
@click.option("--epochs", type=int, default=10, show_default=True, help="Maximum epochs per network.")
@click.option("--patience", type=int, default=3, show_default=True, help="Early-stopping patience.")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option(
    "--train-stride",
    type=int,
    default=2,
    show_default=True,
    help="Train on every N-th window (bounds CPU time; 1 = all).",
)
@click.option("--test-stride", type=int, default=1, show_default=True, help="Forecast at every N-th test origin.")
@click.option("--refit-every", type=int, help="Re-train the networks every K bars of the test period.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--plot", "plot_path", type=OutputPath(), help="Write a PNG of errors and forecasts.")
@click.option(
    "--predictions",
    "predictions_path",
    type=OutputPath(),
    help="Write every test forecast of every model as CSV "
    "(model, origin_time, step, target_time, last_close, actual, point, q10, q50, q90).",
)
@format_option(choices=("table", "json"))
@pass_app
def evaluate(
    app: AppContext,
    csv_path: str | None,
    series_text: SeriesKey | None,
    since: str | None,
    until: str | None,
    model_list: str,
    epochs: int,
    patience: int,
    batch_size: int,
    train_stride: int,
    test_stride: int,
    refit_every: int | None,
    seed: int,
    plot_path: Path | None,
    predictions_path: Path | None,
    fmt: str,
    **kw: Any,
) -> None:
    """Train each model on the training split and compare them walk-forward on the test split.

    The defaults are sized for a CPU: at most 10 epochs (patience 3), every 2nd training window,
    batch 128, every test origin; the full 65k-bar 5-minute file runs all nine models in about
    4 minutes on 2 cores. Errors are in price units per horizon step; `mase` < 1 and `skill` > 0 beat persistence.
    """
    from trainer.datasets import load_bars
    from trainer.evaluation import evaluate_splits, metrics_rows, plot_backtest, prediction_rows
    from trainer.models import ARCHS, CLIMATOLOGY, PERSISTENCE, model_features
    from trainer.params import FEATURE_COLUMNS
    from trainer.training import fit_on_splits, make_splits

    names = [m.strip() for m in model_list.split(",") if m.strip()]
    unknown = [m for m in names if m not in ARCHS]
    if unknown or not names:
        raise InputError(f"--models: unknown {', '.join(unknown) or '(none)'}; known: {', '.join(ARCHS)}")
    for reference in (PERSISTENCE, CLIMATOLOGY):  # the point and the probabilistic reference
        if reference not in names:
            names.append(reference)
    frame, name, _ = _load_frame(app, csv_path, series_text, since, until)
    data = _data_params(app, **kw)
    _, model_params, base_train = _trainer_params(app)
    tp = dataclasses.replace(
        base_train, epochs=epochs, patience=patience, batch_size=batch_size, stride=train_stride, seed=seed
    )
    wanted = {f for arch in names for f in model_features(arch, data)}
    bars = load_bars(frame, tuple(f for f in FEATURE_COLUMNS if f in wanted), fill_gaps=data.fill_gaps, source=name)
    splits = make_splits(bars, data)
    app.console.print(
        f"{name}: {len(bars):,} bars; windows train {len(splits.train):,} (using every {train_stride}), "
        f"validation {len(splits.val):,}, test {len(splits.test):,} (every {test_stride})"
    )
    models = {}
    fit_seconds: dict[str, float] = {}
    with progress_bar(app.console) as progress:
        task = progress.add_task("training", total=len(names) + 1)
        for i, arch in enumerate(names):
            progress.update(task, description=f"training {arch} ({i + 1}/{len(names)})")
            t0 = time.perf_counter()
            models[arch], _ = fit_on_splits(
                arch,
                splits,
                model_params=model_params,
                data=data,
                train=tp,
                progress=False,  # one bar: this one
            )
            fit_seconds[arch] = time.perf_counter() - t0
            progress.advance(task)
            progress.console.print(f"trained {arch} in {fit_seconds[arch]:.1f}s")
        progress.update(
            task, description=f"walk-forward over {len(splits.val):,} validation + {len(splits.test):,} test windows"
        )
        ev = evaluate_splits(
            models, splits, test_stride=test_stride, refit_every=refit_every, refit_params=tp if refit_every else None
        )
        progress.advance(task)
    bt = ev.test
    app.console.print(
        f"selected on the validation split (mean {ev.metric}, coverage in {list(ev.band)}): {ev.selected}"
    )
    if plot_path:
        plot_backtest(bt, bars, plot_path, fan_model=ev.selected if ev.selected != CLIMATOLOGY else None)
        app.console.print(f"wrote {plot_path}")
    if predictions_path:
        import csv

        header, csv_rows = prediction_rows(bt)
        predictions_path.parent.mkdir(parents=True, exist_ok=True)
        with predictions_path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(csv_rows)
        app.console.print(f"wrote {len(csv_rows):,} forecast rows to {predictions_path}")
    if fmt == "json":
        out = {
            "source": name,
            "bars": len(bars),
            "window": data.window,
            "horizon": data.horizon,
            "features": list(data.features),
            "target": data.target,
            "train": dataclasses.asdict(tp),
            "test_start": iso(_utc(int(bt.origin_times[0]))),
            "test_end": iso(_utc(int(bt.origin_times[-1]))),
            "fit_seconds": fit_seconds,
            "selected": ev.selected,
            "selection": {
                "split": "validation",
                "metric": ev.metric,
                "coverage_band": list(ev.band),
                "models": {k: m.to_dict() for k, m in ev.validation.metrics.items()} if ev.validation else {},
            },
            **bt.to_dict(),
        }
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
        return
    rows = metrics_rows(bt)
    for r in rows:
        for k, v in r.items():
            if isinstance(v, float):
                r[k] = f"{v:.2f}" if k in ("mae", "rmse", "width") or k.startswith("mae@") else f"{v:.4f}"
    from rich.table import Table

    table = Table(
        title=f"walk-forward on {bt.n:,} test origins, {iso(_utc(int(bt.origin_times[0])))} → "
        f"{iso(_utc(int(bt.origin_times[-1])))} (price units; mean over {data.horizon} steps unless @k)"
    )
    for c in rows[0]:
        table.add_column(c, justify="left" if c == "model" else "right")
    for r in rows:
        table.add_row(*("-" if r[c] is None else str(r[c]) for c in rows[0]))
    out_console().print(table)


def _utc(unix: int) -> Any:
    from db.records import utc_from_unix

    return utc_from_unix(unix)


@click.group("models")
def models_group() -> None:
    """The model registry."""


MODEL_COLUMNS = [
    "id",
    "arch",
    "status",
    "series",
    "train_start",
    "train_end",
    "test_mae",
    "persistence_mae",
    "test_pinball",
    "persistence_pinball",
    "test_coverage",
    "created_at",
]


def _model_row(info: Any) -> dict[str, Any]:
    metrics = info.metrics or {}
    test = (metrics.get("test") or {}).get("mean") or {}
    persistence = (metrics.get("persistence") or {}).get("mean") or {}
    return {
        "id": info.id,
        "arch": info.arch,
        "status": info.status,
        "series": ",".join(str(s) for s in info.series),
        "train_start": info.train_start,
        "train_end": info.train_end,
        "test_mae": test.get("mae"),
        "persistence_mae": persistence.get("mae"),
        # what promotion judges: mean pinball over the levels, and the central interval's coverage
        "test_pinball": test.get("pinball"),
        "persistence_pinball": persistence.get("pinball"),
        "test_coverage": test.get("coverage"),
        "created_at": info.created_at,
        "artifact_path": info.artifact_path,
    }


@models_group.command("list")
@series_option("Only models of this series.", name="series_text")
@click.option("--status", type=click.Choice(["candidate", "champion", "retired"]))
@format_option()
@pass_app
def models_list(app: AppContext, series_text: SeriesKey | None, status: str | None, fmt: str) -> None:
    """Registered models, newest first."""
    from db.registry import list_models

    series = series_text
    require_known_series(app, [series] if series else [])
    infos = list_models(app.database(), series=series, status=status)  # type: ignore[arg-type]
    emit_rows([_model_row(i) for i in infos], MODEL_COLUMNS, fmt)


@models_group.command("show")
@click.argument("model_id")
@pass_app
def models_show(app: AppContext, model_id: str) -> None:
    """Everything recorded about one model (JSON), with its artifact manifest when readable."""
    from db.registry import get_model

    info = get_model(app.database(), model_id)
    out: dict[str, Any] = {**_model_row(info), "params": info.params, "metrics": info.metrics}
    if info.artifact_path:
        from db.errors import ArtifactError
        from trainer.artifact_store import local_path
        from trainer.artifacts import read_manifest

        try:
            manifest = read_manifest(local_path(app.database(), info.artifact_path, app.config.artifacts_dir))
            out["manifest"] = {k: manifest.get(k) for k in ("format", "created_at", "libraries", "files", "training")}
        except ArtifactError as e:
            out["manifest_error"] = str(e)
    out = {k: iso(v) if hasattr(v, "tzinfo") else v for k, v in out.items()}
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")


@models_group.command("promote")
@click.argument("model_id")
@series_option("Series to champion (default: the model's own).", name="series_text", many=True)
@pass_app
def models_promote(app: AppContext, model_id: str, series_text: tuple[list[SeriesKey], ...]) -> None:
    """Make a model the champion of its series (after checking its artifact loads); a series
    in a model group brings the whole group."""
    from db.registry import get_model, promote
    from trainer.artifacts import load_artifact
    from trainer.retrain_job import BASELINE_ID

    database = app.database()
    info = get_model(database, model_id)
    targets = tuple(flat_series(series_text)) or info.series
    # a typo must not become a champion of nothing; the model's own series are known to it
    require_known_series(app, [k for k in flat_series(series_text) if k not in info.series])
    if not targets:
        raise InputError(f"model {model_id} names no series; give --series EXCHANGE:SYMBOL")
    if model_id != BASELINE_ID:  # the baseline needs no artifact: an operator may go back to it
        if not info.artifact_path:
            raise InputError(f"model {model_id} has no artifact to serve")
        from db.errors import ArtifactError
        from trainer.artifact_store import local_path

        data = app.config.data
        path = local_path(database, info.artifact_path, app.config.artifacts_dir)
        load_artifact(path)  # a corrupt artifact is refused as such
        try:  # ... and one the daemon would refuse to serve (it loads the champion with these)
            load_artifact(path, window=data.window, horizon=data.horizon)
        except ArtifactError as exc:
            raise InputError(f"model {model_id} cannot be served with this config (data.window {data.window}, "
                             f"data.horizon {data.horizon}): {exc}") from None
    # series sharing a `model_group` share one champion (the daemon serves the group's first
    # series' champion): promoting one of them promotes the group, in one transaction
    config = app.config
    for s in dict.fromkeys(targets):
        group = config.group_series(config.model_group(s)) or [s]
        promote(database, model_id, group, reason="manual promote (barcast models promote)")
        for k in group:
            click.echo(f"{model_id} is now champion of {k}")
        if len(group) > 1:
            click.echo(f"(model group {config.model_group(s)!r}: its series share one champion)")


@models_group.command("retire")
@click.argument("model_id")
@pass_app
def models_retire(app: AppContext, model_id: str) -> None:
    """Retire a model; the persistence baseline becomes champion of the series it was champion
    of (a running daemon switches within cluster.heartbeat_s)."""
    from trainer.retrain_job import retire_model

    held = retire_model(app.database(), model_id)
    click.echo(f"{model_id} retired")
    for key in held:
        click.echo(f"persistence is now champion of {key}")


commands: list[click.Command] = [dataset, train, evaluate, models_group]
