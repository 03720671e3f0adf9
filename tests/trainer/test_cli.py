from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from daemon.cli import main
from tests.daemon.clirun import barcast


def _csv(frame: pd.DataFrame, path: Path) -> Path:
    out = frame.drop(columns=["trade_count"]).copy()
    out.insert(0, "timestamp", out.index.as_unit("s").asi8)
    out.to_csv(path, index=False)
    return path


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_evaluate_json_and_plot(gap_frame: pd.DataFrame, tmp_path: Path) -> None:
    csv = _csv(gap_frame, tmp_path / "btc.csv")
    out = _run([
        "--db", f"sqlite:///{tmp_path / 'x.db'}", "evaluate", "--csv", str(csv), "--models",
        "persistence,drift,linear,cnn3", "--window", "96", "--horizon", "4", "--epochs", "1",
        "--format", "json", "--plot", str(tmp_path / "e.png"),
    ])
    report = json.loads(out)
    assert set(report["models"]) == {"persistence", "drift", "linear", "cnn3", "climatology"}
    assert report["selected"] in report["models"] and report["selection"]["split"] == "validation"
    assert report["models"]["climatology"]["prob_skill"] == [0.0] * 4
    assert len(report["models"]["linear"]["mae"]) == 4 and report["models"]["persistence"]["mase"] == [1.0] * 4
    assert (tmp_path / "e.png").stat().st_size > 1000
    table = _run(["--db", f"sqlite:///{tmp_path / 'x.db'}", "evaluate", "--csv", str(csv), "--models",
                  "persistence,drift", "--window", "96", "--horizon", "4"])
    assert "persistence" in table and "drift" in table


def test_train_register_promote_retire(small_frame: pd.DataFrame, tmp_path: Path) -> None:
    csv = _csv(small_frame, tmp_path / "btc.csv")
    db = ["--db", f"sqlite:///{tmp_path / 'r.db'}"]
    out = _run([*db, "train", "--csv", str(csv), "--series", "binance:BTC-USDT", "--arch", "linear",
                "--window", "64", "--horizon", "4", "--artifacts", str(tmp_path / "art"), "--format", "json"])
    row = json.loads(out)[0]
    assert row["registered"] and Path(row["artifact"]).is_dir() and row["test_mae"] > 0
    listed = json.loads(_run([*db, "models", "list", "--format", "json"]))
    assert [m["id"] for m in listed] == [row["id"]] and listed[0]["status"] == "candidate"
    # what promotion judges is listed beside the point error
    assert listed[0]["test_pinball"] > 0 and listed[0]["persistence_pinball"] > 0
    assert 0 <= listed[0]["test_coverage"] <= 1
    shown = json.loads(_run([*db, "models", "show", row["id"]]))
    assert shown["params"]["data"]["window"] == 64 and shown["manifest"]["format"] == "barcast-model/2"
    # a model the daemon would refuse to serve (trained on 64-bar windows; the config serves 256)
    res = CliRunner().invoke(main, [*db, "models", "promote", row["id"]])
    assert res.exception.exit_code == 2  # type: ignore[union-attr]
    assert "cannot be served with this config (data.window 256" in str(res.exception)
    assert "artifact has window 64, expected 256" in str(res.exception)
    assert json.loads(_run([*db, "models", "list", "--format", "json"]))[0]["status"] == "candidate"
    cfg = tmp_path / "barcast.toml"
    cfg.write_text("[data]\nwindow = 64\nhorizon = 4\n")
    db = ["--config", str(cfg), *db]
    _run([*db, "models", "promote", row["id"]])
    assert json.loads(_run([*db, "models", "list", "--status", "champion", "--format", "json"]))[0]["id"] == row["id"]
    retired = _run([*db, "models", "retire", row["id"]])
    assert "persistence is now champion of binance:BTC-USDT:5m" in retired
    listed = {m["id"]: m["status"] for m in json.loads(_run([*db, "models", "list", "--format", "json"]))}
    assert listed == {row["id"]: "retired", "persistence": "champion"}
    # and back to the baseline by promotion (it needs no artifact; before: "has no artifact to serve")
    _run([*db, "models", "promote", row["id"]])
    assert "persistence is now champion of binance:BTC-USDT:5m" in _run([*db, "models", "promote", "persistence"])
    listed = {m["id"]: m["status"] for m in json.loads(_run([*db, "models", "list", "--format", "json"]))}
    assert listed == {row["id"]: "retired", "persistence": "champion"}
    h5 = tmp_path / "d.h5"
    assert "windows of 64" in _run([*db, "dataset", "export", "--csv", str(csv), "--window", "64",
                                    "--horizon", "4", "--out", str(h5)])
    assert h5.stat().st_size > 0
    from_h5 = json.loads(
        _run([*db, "train", "--h5", str(h5), "--arch", "linear", "--no-register", "--artifacts",
              str(tmp_path / "art"), "--format", "json"])
    )[0]
    assert not from_h5["registered"] and Path(from_h5["artifact"]).is_dir() and from_h5["test_mae"] > 0
    # a second source beside --h5 was silently ignored
    res = CliRunner().invoke(main, [*db, "train", "--h5", str(h5), "--csv", str(csv), "--since", "3d",
                                    "--arch", "linear", "--no-register"])
    assert "give it without --csv, --since" in str(res.exception) and res.exception.exit_code == 2  # type: ignore[union-attr]
    assert len(json.loads(_run([*db, "models", "list", "--format", "json"]))) == 2


def test_bad_input_is_a_clean_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--db", f"sqlite:///{tmp_path / 'x.db'}", "evaluate", "--models", "nope",
                                       "--csv", str(tmp_path / "missing.csv")])
    assert result.exit_code != 0


def test_every_arch_trains_from_the_cli_and_promote_checks_series(
    small_frame: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`har` (the live default, `forecast.arch`) was missing from `train --arch` and from
    evaluate's default models; `models promote --series` took any typo as a champion's series."""
    from daemon.cli.trainer import ALL_MODELS
    from trainer.models import ARCHS, CLIMATOLOGY

    assert set(ALL_MODELS.split(",")) == set(ARCHS) - {CLIMATOLOGY}
    csv = _csv(small_frame, tmp_path / "btc.csv")
    db = ["--db", f"sqlite:///{tmp_path / 'r.db'}"]
    res = barcast(capsys, *db, "train", "--csv", str(csv), "--series", "binance:BTC-USDT", "--arch", "har",
                  "--artifacts", str(tmp_path / "art"), "--format", "json")
    assert res.code == 0, res.err
    model_id = json.loads(res.out)[0]["id"]
    res = barcast(capsys, *db, "models", "promote", model_id, "--series", "binance:BTC-USDTT")
    assert res.code == 2 and "--series binance:BTC-USDTT:5m: no such series" in res.err, res.err
    assert json.loads(barcast(capsys, *db, "models", "list", "--format", "json").out)[0]["status"] == "candidate"
    res = barcast(capsys, *db, "models", "promote", model_id, "--series", "binance:BTC-USDT")  # its own
    assert res.code == 0 and "is now champion of binance:BTC-USDT:5m" in res.out, res.err


def test_unwritable_output_is_one_line(small_frame: pd.DataFrame, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """An output path that cannot be written (here: below a plain file, or a directory where a file
    goes) used to end in a traceback after the whole run; it is refused before the run starts (a
    usage error, exit 2, names the option), and missing directories are created."""
    csv = _csv(small_frame, tmp_path / "btc.csv")
    blocker = tmp_path / "file"
    blocker.write_text("")
    db = ["--db", f"sqlite:///{tmp_path / 'r.db'}"]
    res = barcast(capsys, *db, "train", "--csv", str(csv), "--arch", "persistence", "--window", "64",
                  "--artifacts", str(blocker / "art"))
    assert res.code == 2 and "--artifacts" in res.err and f"{blocker} is not a directory" in res.err, res.err
    assert not (tmp_path / "r.db").exists()  # nothing ran
    evaluate = ("evaluate", "--csv", str(csv), "--models", "persistence", "--window", "64")
    for option, path, why in (("--predictions", blocker / "p.csv", f"{blocker} is not a directory"),
                              ("--plot", tmp_path, f"{tmp_path} is a directory"),
                              ("--log-csv", blocker / "sub" / "e.csv", f"{blocker} is not a directory")):
        cmd = evaluate if option != "--log-csv" else ("train", "--csv", str(csv), "--arch", "persistence")
        res = barcast(capsys, *db, *cmd, option, str(path))
        assert res.code == 2 and option in res.err and why in res.err and "Traceback" not in res.err, res.err
    res = barcast(capsys, *db, *evaluate, "--predictions", str(tmp_path / "new" / "dir" / "p.csv"))
    assert res.code == 0 and (tmp_path / "new" / "dir" / "p.csv").stat().st_size > 0, res.err


def test_promoting_one_series_of_a_model_group_promotes_the_group(
    small_frame: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The daemon serves a group's first series' champion: a promotion for the second series
    alone was ignored by the daemon while `status` showed it as champion."""
    from db import registry
    from db.engine import open_database
    from db.records import SeriesKey

    btc, eth, sol = (SeriesKey("binance", s) for s in ("BTC-USDT", "ETH-USDT", "SOL-USDT"))
    cfg = tmp_path / "barcast.toml"
    cfg.write_text("".join(
        f'[[series]]\nexchange = "binance"\nsymbol = "{s}"\ninterval = "5m"\nmodel_group = "{g}"\n'
        for s, g in (("BTC-USDT", "majors"), ("ETH-USDT", "majors"), ("SOL-USDT", ""))
    ))
    csv = _csv(small_frame, tmp_path / "btc.csv")
    db = ["--config", str(cfg), "--db", f"sqlite:///{tmp_path / 'g.db'}"]
    res = barcast(capsys, *db, "train", "--csv", str(csv), "--series", "binance:BTC-USDT", "--arch", "har",
                  "--artifacts", str(tmp_path / "art"), "--format", "json")
    assert res.code == 0, res.err
    model_id = json.loads(res.out)[0]["id"]
    res = barcast(capsys, *db, "models", "promote", model_id, "--series", "binance:ETH-USDT")
    assert res.code == 0, res.err
    assert f"{model_id} is now champion of {btc}" in res.out and f"is now champion of {eth}" in res.out
    assert "model group 'majors'" in res.out
    database = open_database(f"sqlite:///{tmp_path / 'g.db'}")
    assert registry.champions(database, [btc, eth, sol]) == {btc: model_id, eth: model_id}
    database.close()
    res = barcast(capsys, *db, "models", "promote", model_id, "--series", "binance:SOL-USDT")  # a group of one
    assert res.code == 0 and "model group" not in res.out and f"is now champion of {sol}" in res.out, res.err
