"""`barcast forecasts|accuracy|status|plot` on a database filled by the real import path."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from db.bars import read_bars
from db.engine import open_database
from tests.daemon.clirun import barcast
from tests.daemon.opsdata import (
    BTC,
    DRIFT,
    ETH,
    FORECAST_BARS,
    HORIZON,
    LEVELS,
    PERSISTENCE,
    ops_db_url,
    reference_bars,
)


@pytest.fixture(autouse=True)
def _wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich tables are 80 wide off a terminal


@pytest.fixture
def db_url(tmp_path: Path, shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return ops_db_url(tmp_path, shared_dir, tmp_path_factory.getbasetemp())


def test_forecasts_json_has_outcomes_where_targets_closed(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    res = barcast(capsys, "--db", db_url, "forecasts", "--series", "binance:BTC-USDT", "--last", "40",
                  "--format", "json")
    assert res.code == 0, res.err
    docs = json.loads(res.out)
    assert len(docs) == 40
    assert [d["issued_at"] for d in docs] == sorted((d["issued_at"] for d in docs), reverse=True)
    database = open_database(db_url)
    try:
        bars = {b.open_time.strftime("%Y-%m-%dT%H:%M:%SZ"): b for b in read_bars(database, BTC)[-FORECAST_BARS:]}
    finally:
        database.close()
    for d in docs:
        assert d["series"] == "binance:BTC-USDT:5m" and d["model_id"] in (PERSISTENCE, DRIFT)
        assert len(d["targets"]) == len(d["closes"]) == len(d["actuals"]) == len(d["errors"]) == HORIZON
        assert d["last_close"] == str(bars[d["issued_at"]].close)  # exact decimal text of the import
        for t, c, a, e in zip(d["targets"], d["closes"], d["actuals"], d["errors"], strict=True):
            if t in bars:
                assert a == str(bars[t].close)
                assert e == pytest.approx(c - float(bars[t].close))
            else:
                assert a is None and e is None
        assert d["realised"] == sum(a is not None for a in d["actuals"])
    newest = docs[0]
    assert newest["realised"] == 0 and newest["mae"] is None  # issued on the last stored bar
    persistence = next(d for d in docs if d["model_id"] == PERSISTENCE and d["realised"] == HORIZON)
    assert set(persistence["closes"]) == {float(persistence["last_close"])}


def test_forecasts_csv_is_one_row_per_step_and_table_is_readable(
    db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    res = barcast(capsys, "--db", db_url, "forecasts", "--series", "binance:ETH-USDT", "--last", "3",
                  "--model", DRIFT, "--format", "csv")
    assert res.code == 0, res.err
    rows = list(csv.DictReader(io.StringIO(res.out)))
    assert len(rows) == 3 * HORIZON
    assert list(rows[0]) == ["series", "issued_at", "model_id", "step", "target_time", "predicted", "actual",
                             "error", "last_close", "latency_ms", "created_at"]
    assert {r["model_id"] for r in rows} == {DRIFT}
    assert [int(r["step"]) for r in rows[:HORIZON]] == list(range(1, HORIZON + 1))
    res = barcast(capsys, "--db", db_url, "forecasts", "--last", "4")
    assert res.code == 0 and "issued_at" in res.out and "+16" in res.out and "drift-16" in res.out


def test_forecasts_carry_quantiles_in_json_csv_and_table(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Quantile forecasts show their levels and fan everywhere; point-only ones (old rows) read with nulls."""
    res = barcast(capsys, "--db", db_url, "forecasts", "--series", str(BTC), "--last", "6", "--format", "json")
    docs = json.loads(res.out)
    by_model = {d["model_id"]: d for d in reversed(docs)}  # the newest of each
    fan, point = by_model[PERSISTENCE], by_model[DRIFT]
    assert point["levels"] is None and point["quantiles"] is None
    assert fan["levels"] == list(LEVELS) and len(fan["quantiles"]) == HORIZON
    for c, q in zip(fan["closes"], fan["quantiles"], strict=True):
        assert q[0] < q[1] < q[2] and q[1] == pytest.approx(c)
    widths = [q[2] - q[0] for q in fan["quantiles"]]
    assert widths == sorted(widths)  # a random-walk fan widens with the horizon
    res = barcast(capsys, "--db", db_url, "forecasts", "--series", str(BTC), "--last", "6", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(res.out)))
    assert list(rows[0])[:9] == ["series", "issued_at", "model_id", "step", "target_time", "predicted",
                                 "q10", "q50", "q90"]
    fan_rows = [r for r in rows if r["model_id"] == PERSISTENCE and r["issued_at"] == fan["issued_at"]]
    assert [[float(r["q10"]), float(r["q50"]), float(r["q90"])] for r in fan_rows] == fan["quantiles"]
    assert all(r["q10"] == r["q50"] == r["q90"] == "" for r in rows if r["model_id"] == DRIFT)
    res = barcast(capsys, "--db", db_url, "forecasts", "--series", str(BTC), "--last", "2")
    assert res.code == 0 and "+1 q10..q90" in res.out and "+16 q10..q90" in res.out
    q16 = fan["quantiles"][15]
    assert f"{q16[0]:.2f}..{q16[2]:.2f}" in res.out


def test_accuracy_reports_pinball_wis_and_coverage(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The live probabilistic scores agree with a recomputation from the stored forecasts and bars."""
    from db.forecasts import query_forecasts
    from trainer.quantiles import quantile_scores

    res = barcast(capsys, "--db", db_url, "accuracy", "--series", str(BTC), "--window", "all", "--format", "json")
    docs = {(d["model_id"], d["step"]): d for d in json.loads(res.out)}
    database = open_database(db_url)
    try:
        closes = {b.open_time: float(b.close) for b in read_bars(database, BTC)[-FORECAST_BARS - 20 :]}
        fcs = [f for f in query_forecasts(database, BTC, model_id=PERSISTENCE, limit=FORECAST_BARS)
               if f.target_times[-1] in closes]
        # climatology, recomputed here: quantiles of the k-step log-returns of the reference bars
        first = read_bars(database, BTC)[-FORECAST_BARS]
        history = {b.open_time: float(b.close) for b in reference_bars(database, first)}
    finally:
        database.close()
    q = np.array([f.quantiles for f in fcs])
    y = np.array([[closes[t] for t in f.target_times] for f in fcs])
    ref = quantile_scores(q, y, LEVELS)
    step16 = [math.log(history[t + BTC.step * 16] / c) for t, c in history.items() if t + BTC.step * 16 in history]
    assert all(f.last_close is not None for f in fcs)
    clim = np.array([[float(f.last_close or 0) * math.exp(v) for v in np.quantile(step16, LEVELS)] for f in fcs])
    clim_ref = quantile_scores(np.repeat(clim[:, None, :], 16, axis=1), y, LEVELS)
    for step in (1, 8, 16):
        d = docs[(PERSISTENCE, step)]
        assert d["n_quantile"] == d["n"] and d["nominal_coverage"] == pytest.approx(0.8)
        assert 0.5 < d["coverage"] < 1.0 and d["wis"] == pytest.approx(2 * d["pinball_mean"])
        assert set(d["pinball"]) == {"q10", "q50", "q90"}
        assert d["pinball_mean"] == pytest.approx(sum(d["pinball"].values()) / 3)
        if step == 16:  # every forecast of the last 200 bars with all targets stored
            assert d["n"] == len(fcs)
            assert d["coverage"] == pytest.approx(ref.coverage[15])
            assert d["pinball_mean"] == pytest.approx(ref.pinball_mean[15])
            assert d["width"] == pytest.approx(ref.width[15])
            assert d["pinball"]["q90"] == pytest.approx(ref.pinball[2][15])
            assert d["prob_skill"] == pytest.approx(1 - ref.pinball_mean[15] / clim_ref.pinball_mean[15])
        assert d["prob_skill"] is not None and -0.5 < d["prob_skill"] < 0.5
        drift = docs[(DRIFT, step)]
        assert drift["n_quantile"] == 0 and drift["coverage"] is None and drift["pinball"] is None
        assert drift["prob_skill"] is None
    res = barcast(capsys, "--db", db_url, "accuracy", "--series", str(BTC), "--window", "all", "--format", "csv")
    header = next(csv.reader(io.StringIO(res.out)))
    assert {"pinball_q10", "pinball_q50", "pinball_q90", "wis", "coverage", "width", "prob_skill"} <= set(header)
    res = barcast(capsys, "--db", db_url, "accuracy", "--window", "all")
    assert res.code == 0 and "coverage" in res.out and "pinball_q90" in res.out


def test_forecasts_latest_and_time_range(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    res = barcast(capsys, "--db", db_url, "forecasts", "--latest", "--model", PERSISTENCE, "--format", "json")
    docs = json.loads(res.out)
    assert sorted(d["series"] for d in docs) == [str(BTC), str(ETH)]
    assert {d["issued_at"] for d in docs} == {"2021-07-17T21:05:00Z", "2021-07-17T21:10:00Z"}
    res = barcast(capsys, "--db", db_url, "forecasts", "--series", str(BTC), "--since", "2021-07-17T20:00:00Z",
                  "--until", "2021-07-17T21:00", "--format", "json")
    issued = {d["issued_at"] for d in json.loads(res.out)}
    assert min(issued) == "2021-07-17T20:00:00Z" and max(issued) == "2021-07-17T20:55:00Z" and len(issued) == 12


@pytest.mark.parametrize(
    "argv",
    [
        ["forecasts", "--series", "binance"],
        ["forecasts", "--series", "binance:BTC-USDT:7m"],
        ["forecasts", "--since", "yesterday"],
        ["forecasts", "--since", "2021-07-18", "--until", "2021-07-17"],
        ["forecasts", "--series", "x'; DROP TABLE forecasts; --:BTC-USD"],
        ["accuracy", "--window", "forever"],
        ["forecasts", "--latest", "--last", "3"],
        # times beyond what a datetime holds: named, not an OverflowError traceback
        ["forecasts", "--since", "99999999d"],
        ["forecasts", "--since", "99999999999999999999"],
        ["forecasts", "--until", "9999-12-31T23:00:00-05:00"],
        ["bars", "--series", "binance:BTC-USDT", "--since", "0001-01-01T00:00:00+05:00"],
        ["plot", "--series", "binance:BTC-USDT", "--last", "99999999999d", "--out", "never.png"],
    ],
)
def test_bad_input_is_one_line_exit_2(db_url: str, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    res = barcast(capsys, "--db", db_url, *argv)
    assert res.code == 2, (res.out, res.err)
    assert "Traceback" not in res.err and res.err.strip()


def test_an_accuracy_window_longer_than_history_is_all_of_it(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    everything = barcast(capsys, "--db", db_url, "accuracy", "--window", "all", "--format", "json")
    for window in ("999999d", "99999999999d"):
        res = barcast(capsys, "--db", db_url, "accuracy", "--window", window, "--format", "json")
        assert res.code == 0 and "Traceback" not in res.err, res.err
        assert json.loads(res.out) == json.loads(everything.out) != []


def test_accuracy_formats(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    res = barcast(capsys, "--db", db_url, "accuracy", "--window", "all", "--format", "json")
    docs = json.loads(res.out)
    assert {(d["series"], d["model_id"]) for d in docs} == {
        (str(k), m) for k in (BTC, ETH) for m in (PERSISTENCE, DRIFT)
    }
    for d in docs:
        assert d["horizon_minutes"] == 5 * d["step"]
        assert d["n"] == FORECAST_BARS - d["step"]  # the last `step` forecasts' targets are not stored yet
        if d["model_id"] == PERSISTENCE:  # persistence scored against itself
            assert d["mae"] == pytest.approx(d["persistence_mae"]) and d["skill"] == pytest.approx(0.0, abs=1e-9)
    res = barcast(capsys, "--db", db_url, "accuracy", "--series", str(ETH), "--model", DRIFT, "--window", "all",
                  "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(res.out)))
    assert len(rows) == HORIZON and rows[0]["series"] == str(ETH)
    # a window counts back from the newest scored target bar (the data here is years old)
    res = barcast(capsys, "--db", db_url, "accuracy", "--window", "30m", "--format", "json")
    recent = json.loads(res.out)
    assert 0 < sum(d["n"] for d in recent) < sum(d["n"] for d in docs)
    res = barcast(capsys, "--db", db_url, "accuracy", "--model", "no-such-model")
    assert res.code == 2 and "no such model" in res.err and DRIFT in res.err
    res = barcast(capsys, "--db", db_url, "accuracy", "--window", "all")
    assert res.code == 0 and "skill" in res.out


def test_status_from_the_database(db_url: str, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BARCAST_API__PORT", "1")  # nothing listens there: the database answers
    res = barcast(capsys, "--db", db_url, "status", "--format", "json")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert doc["source"] == "database" and doc["database"]["size_bytes"] > 0
    assert res.err == ""  # nothing at the configured address: no daemon runs, no news
    rows = {r["series"]: r for r in doc["series"]}
    btc = rows[str(BTC)]
    assert btc["bars"] == 65741 and btc["last_bar"] == "2021-07-17T21:05:00Z"
    assert btc["champion"] == "drift-16-btc-usdt" and btc["champion_age_s"] > 0
    assert btc["last_forecast"] == "2021-07-17T21:05:00Z"
    assert rows["coinbase:BTC-USD:5m"]["configured"] is True and rows["coinbase:BTC-USD:5m"]["bars"] == 0
    res = barcast(capsys, "--db", db_url, "status", "--offline")
    assert res.code == 0 and "drift-16-btc-usdt" in res.out and "next retrain" in res.out


def test_status_says_why_a_named_api_did_not_answer(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    res = barcast(capsys, "--db", db_url, "status", "--api", "http://127.0.0.1:1", "--format", "json")
    assert res.code == 0 and json.loads(res.out)["source"] == "database"
    assert "no daemon answered at http://127.0.0.1:1" in res.err and "reading the database" in res.err

    class NotBarcast(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>a web server, not barcast</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotBarcast)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        for named in (("--api", url), ()):
            env = {} if named else {"BARCAST_API__PORT": str(server.server_address[1])}
            with pytest.MonkeyPatch.context() as mp:
                for k, v in env.items():
                    mp.setenv(k, v)
                res = barcast(capsys, "--db", db_url, "status", *named, "--format", "json")
            assert res.code == 0 and json.loads(res.out)["source"] == "database"
            assert "answered something that is not JSON" in res.err  # named or configured alike
    finally:
        server.shutdown()
        server.server_close()


def test_status_says_a_daemon_that_does_not_answer_in_time_is_not_absent(
    db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon that accepts the connection and never answers (hung, or busy past --timeout) at
    the configured address read as no daemon at all, without a word."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))  # accepts (the backlog), never answers
    try:
        monkeypatch.setenv("BARCAST_API__PORT", str(listener.getsockname()[1]))
        res = barcast(capsys, "--db", db_url, "status", "--timeout", "0.5", "--format", "json")
    finally:
        listener.close()
    assert res.code == 0 and json.loads(res.out)["source"] == "database"
    assert "did not answer within 0.5 s (--timeout); reading the database" in res.err, res.err


def _check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 20_000
    img = imread(path)
    assert img.shape[0] > 400 and img.shape[1] > 800
    assert float(np.var(img[..., :3])) > 0.01  # not a blank canvas


def test_plots_are_non_trivial_pngs(db_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "btc.png"
    res = barcast(capsys, "--db", db_url, "plot", "--series", "binance:BTC-USDT", "--last", "1d", "--out", str(out))
    assert res.code == 0, res.err
    assert "288 bars" in res.out and "latest issued 2021-07-17T21:05:00Z" in res.out
    # the served fan where the forecast has quantiles; a point-only model shows its live error
    assert "  band persistence: q10–q90 fan" in res.out and "  band drift-16: ± live MAE per step" in res.out
    _check_png(out)
    everything = tmp_path / "all.png"  # a span reaching before 1970 plots every stored bar
    res = barcast(capsys, "--db", db_url, "plot", "--series", str(BTC), "--last", "36500d", "--out", str(everything))
    database = open_database(db_url)
    stored = len(read_bars(database, BTC))
    database.close()
    assert res.code == 0 and f"({stored} bars" in res.out, res.err
    acc = tmp_path / "accuracy.png"
    res = barcast(capsys, "--db", db_url, "plot", "accuracy", "--window", "all", "--out", str(acc))
    assert res.code == 0, res.err
    _check_png(acc)
    res = barcast(capsys, "--db", db_url, "plot", "--series", "kraken:BTC-USD", "--out", str(tmp_path / "x.png"))
    assert res.code == 2 and "no such series" in res.err and str(BTC) in res.err
    res = barcast(capsys, "--db", db_url, "plot", "--series", str(BTC), "--model", "nosuch", "--out", str(out))
    assert res.code == 2 and "no such model" in res.err


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, None), (0, "0s"), (59.4, "59s"), (90, "1.5m"), (5400, "1.5h"), (172800, "2.0d"),
     (-6120, "1.7h ahead"), (-30, "30s ahead")],
)
def test_status_ages_read_for_people(seconds: float | None, shown: str | None) -> None:
    from daemon.cli.ops import _age

    assert _age(seconds) == shown


def test_the_fan_is_drawn_from_the_served_quantiles() -> None:
    from daemon.ops.plots import bands_of, median_of
    from db.records import Forecast, SeriesKey

    t0 = datetime(2021, 7, 1, tzinfo=UTC)
    targets = tuple(t0 + timedelta(minutes=5 * k) for k in range(1, 3))
    f = Forecast(SeriesKey("binance", "BTC-USDT", "5m"), t0, "m", targets, (100.0, 101.0),
                 levels=(0.05, 0.25, 0.5, 0.75, 0.95), quantiles=((90, 95, 100, 105, 110), (89, 96, 101, 106, 112)))
    outer, inner = bands_of(None, f.series, f)  # type: ignore[arg-type]  # quantiles need no database
    assert (outer.label, outer.low, outer.high) == ("q5–q95 fan", [90, 89], [110, 112])
    assert (inner.label, inner.low, inner.high) == ("q25–q75 fan", [95, 96], [105, 106])
    assert inner.alpha > outer.alpha  # the inner band darker
    assert median_of(f) == [100, 101]
    assert median_of(Forecast(f.series, t0, "m", targets, (100.0, 101.0), levels=(0.1, 0.9),
                              quantiles=((90, 110), (89, 112)))) is None


def test_accuracy_plot_shows_the_fan_coverage_and_probabilistic_skill(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemon.ops import plots

    figures: list[Any] = []  # matplotlib Figures (its stubs type axes' contents loosely)
    close = plots.plt.close

    def keep(fig: Any) -> None:
        figures.append(fig)
        close(fig)

    monkeypatch.setattr(plots.plt, "close", keep)
    plots.accuracy_plot(open_database(db_url), out=tmp_path / "acc.png")
    (fig,) = figures
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 4 and "coverage" in titles[2] and "Probabilistic skill" in titles[3], titles
    cov, skill = fig.axes[2], fig.axes[3]
    fans = [line for line in cov.get_lines() if line.get_label().startswith("persistence on ")]
    assert fans and all(0 <= y <= 100 for y in fans[0].get_ydata())  # the fan model, in percent
    assert any(line.get_label() == "nominal 80%" for line in cov.get_lines())
    assert [line.get_label() for line in skill.get_lines() if "drift" in str(line.get_label())] == []  # no fan
    # persistence's own MAE line is its reference: no dashed copy beside it; the others have one
    dashed = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"]
    others = {str(line.get_label()) for line in fig.axes[0].get_lines()} - {str(d.get_label()) for d in dashed}
    assert len(dashed) == len([o for o in others if not o.startswith("persistence on ")])
