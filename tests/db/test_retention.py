"""Retention (db/retention.py) on real SQLite files and PostgreSQL: what goes, what stays, in
bounded batches, dry runs, idempotence, and one pruner at a time."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, insert, select, text

from db import leases, registry
from db.engine import Database, normalise_url, open_database
from db.gaps import list_gaps, mark_gap_filled, record_gap
from db.records import ModelInfo
from db.retention import LEASE, PRUNED_TABLES, Busy, Policy, PruneResult, prune, prune_with_lease, vacuum
from db.schema import (
    calibration,
    champion_history,
    feed_gaps,
    forecast_scores,
    forecast_seq,
    model_artifacts,
    models,
    training_jobs,
)
from tests.conftest import drop_database
from tests.db.retentiondata import (
    BTC,
    CUTOFF,
    ETH,
    FORECAST_DAYS,
    GAPS,
    KEEP_MODELS,
    LATE,
    NOW,
    PRUNABLE_MODELS,
    Seeded,
    expected_sets,
    seed,
    stored_sets,
)

POLICY = Policy(forecasts_days=FORECAST_DAYS, jobs_days=30, models_days=90, keep_models=KEEP_MODELS,
                batch_rows=5000, horizon=16)


class _Templates:
    """The seeded database, built once per engine and copied for each test (seeding takes
    seconds: on PostgreSQL ~7 s a test): a file copy on SQLite, `CREATE DATABASE … TEMPLATE` on
    PostgreSQL."""

    def __init__(self, tmp: Path, shared: Path) -> None:
        self.tmp, self.shared = tmp, shared
        self.sqlite: tuple[Path, Seeded] | None = None
        self.pg: tuple[str, str, Seeded] | None = None  # server URL, template name, what it holds

    def sqlite_copy(self, to: Path) -> tuple[str, Seeded]:
        if self.sqlite is None:
            path = self.tmp / "template.db"
            database = open_database(f"sqlite:///{path}")
            held = seed(database, self.shared)
            database.close()
            self.sqlite = path, held
        path, held = self.sqlite
        shutil.copyfile(path, to)
        return f"sqlite:///{to}", held

    def pg_copy(self, server: str) -> tuple[str, str, Seeded]:
        """A new database copied from the template: (its URL, its name, what it holds)."""
        admin = create_engine(normalise_url(server), isolation_level="AUTOCOMMIT")
        try:
            if self.pg is None:
                name = f"barcast_tpl_{uuid.uuid4().hex[:12]}"
                with admin.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
                database = open_database(normalise_url(server).set(database=name).render_as_string(hide_password=False))
                held = seed(database, self.shared)
                database.close()  # a template may have no session open
                self.pg = server, name, held
            _, template, held = self.pg
            name = f"barcast_t_{uuid.uuid4().hex[:12]}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        finally:
            admin.dispose()
        return normalise_url(server).set(database=name).render_as_string(hide_password=False), name, held

    def close(self) -> None:
        if self.pg is not None:
            server, template, _ = self.pg
            admin = create_engine(normalise_url(server), isolation_level="AUTOCOMMIT")
            drop_database(admin, template)
            admin.dispose()


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Iterator[_Templates]:
    made = _Templates(tmp_path_factory.mktemp("retention"), shared_dir)
    yield made
    made.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path, templates: _Templates) -> Iterator[str]:
    """Both engines, each test on its own copy of the seeded database."""
    if request.param == "sqlite":
        yield templates.sqlite_copy(tmp_path / "barcast.db")[0]
        return
    url, name, _ = templates.pg_copy(request.getfixturevalue("pg_url"))
    try:
        yield url
    finally:
        admin = create_engine(normalise_url(request.getfixturevalue("pg_url")), isolation_level="AUTOCOMMIT")
        drop_database(admin, name)
        admin.dispose()


@pytest.fixture
def seeded(any_db_url: str, templates: _Templates) -> Seeded:
    made = templates.sqlite if any_db_url.startswith("sqlite") else templates.pg
    assert made is not None
    return made[-1]


def _count(database: Database, table: object, *where: object) -> int:
    with database.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())  # type: ignore[arg-type]


def _ids(database: Database, table: object, column: str) -> set[object]:
    with database.engine.connect() as conn:
        return set(conn.execute(select(getattr(table.c, column))).scalars())  # type: ignore[attr-defined]


def test_prune_keeps_what_the_service_needs(any_db: Database, seeded: Seeded) -> None:
    before = stored_sets(any_db)
    keep = expected_sets(any_db, seeded)
    assert len(keep) < len(before) / 2, "the set-up must have old forecasts to prune"
    result = prune(any_db, POLICY, now=NOW)
    after = stored_sets(any_db)
    assert set(after) == keep
    assert set(after.values()) == {16}, "a forecast goes whole or not at all"
    assert result.rows["forecasts"] == 16 * (len(before) - len(keep))
    # every score left belongs to a forecast left, and those of pruned forecasts are gone
    assert result.rows["forecast_scores"] > 0
    with any_db.engine.connect() as conn:
        left = {(r[0], r[1], r[2]) for r in conn.execute(
            select(forecast_scores.c.symbol, forecast_scores.c.issued_at, forecast_scores.c.model_id))}
    assert left <= {(k[0].symbol, k[1], k[2]) for k in after}
    # the stream positions (forecast_seq) go with their forecasts: one per forecast left
    with any_db.engine.connect() as conn:
        positions = {(r[0], r[1], r[2]) for r in conn.execute(
            select(forecast_seq.c.symbol, forecast_seq.c.issued_at, forecast_seq.c.model_id))}
    assert positions == {(k[0].symbol, k[1], k[2]) for k in after}
    # young forecasts all stay; old ones stay only while a step still waits, or as a newest
    young = {k for k in before if k[1] >= CUTOFF}
    assert young <= set(after)
    late = [k for k in after if k[2] == LATE]
    assert late and late[0][1] < CUTOFF, "unscored with its bars stored: the scorer may still score it"
    waiting = [k for k in after if k[1] < CUTOFF and k[2] != LATE and k[0] == BTC]
    assert waiting and all(k[1] + timedelta(minutes=80) >= GAPS[1][0] for k in waiting), \
        "kept old BTC forecasts are those whose steps wait in the gap across the cut-off"
    old_gap = [k for k in before if k[0] == BTC and GAPS[0][0] - timedelta(minutes=80) <= k[1] < GAPS[0][0]]
    assert old_gap and not set(old_gap) & set(after), "old steps whose bars never came do not keep a forecast"
    eth = [k for k in after if k[0] == ETH]
    assert len(eth) == 1 and eth[0][1] == max(k[1] for k in before if k[0] == ETH), "a series' newest stays"
    # models: only the unreferenced old retired ones beyond the newest of their series go, artifacts with them
    assert _ids(any_db, models, "id") == {m for m in _all_models(seeded)} - PRUNABLE_MODELS
    assert result.rows["models"] == len(PRUNABLE_MODELS)
    assert result.rows["model_artifacts"] == 2 and _count(any_db, model_artifacts) == 0
    # calibration: the stale state of a model no longer champion goes; the champion's and a fresh one stay
    assert _ids(any_db, calibration, "model_id") == {"persistence", "loser-cal"}
    assert result.rows["calibration"] == 1
    # jobs: finished long ago go; recent, queued and running stay
    assert _ids(any_db, training_jobs, "model_group") == {"g-young-done", "g-queued", "g-running"}
    assert result.rows["training_jobs"] == 2
    assert result.complete
    # idempotent: a second prune finds nothing
    again = prune(any_db, POLICY, now=NOW)
    assert again.total == 0 and stored_sets(any_db) == after


def _all_models(seeded: Seeded) -> set[str]:
    return {"old-champ", "persistence", "young", "loser-1", "loser-2", "loser-3", "loser-4", "loser-art",
            "loser-fc", "loser-cal", LATE, "old-fc", "eth-a", "eth-b", "eth-c"}


def test_dry_run_counts_exactly_and_deletes_nothing(any_db: Database, seeded: Seeded) -> None:
    before = stored_sets(any_db)
    scores = _count(any_db, forecast_scores)
    dry = prune(any_db, POLICY, dry_run=True, now=NOW)
    assert stored_sets(any_db) == before and _count(any_db, forecast_scores) == scores
    assert len(_ids(any_db, models, "id")) == len(_all_models(seeded))
    assert dry.dry_run and dry.batches == 0 and dry.total > 0
    real = prune(any_db, POLICY, now=NOW)
    assert real.rows == dry.rows


def test_batches_are_bounded_and_give_the_same_result(any_db: Database, seeded: Seeded) -> None:
    keep = expected_sets(any_db, seeded)
    whole = prune(any_db, POLICY, dry_run=True, now=NOW)
    small = Policy(forecasts_days=FORECAST_DAYS, jobs_days=30, models_days=90, keep_models=KEEP_MODELS,
                   batch_rows=32, horizon=16)  # 2 forecast sets, or 32 other rows, a transaction
    sizes: list[int] = []
    seen = [0]

    def each_batch() -> bool:  # called before every batch: what the previous one deleted
        sizes.append(_count(any_db, forecast_scores) - seen[0])
        seen[0] = _count(any_db, forecast_scores)
        return True

    seen[0] = _count(any_db, forecast_scores)
    result = prune(any_db, small, now=NOW, go_on=each_batch)
    assert result.rows == whole.rows
    assert set(stored_sets(any_db)) == keep
    sets_pruned = whole.rows["forecasts"] // 16
    assert result.batches >= sets_pruned // 2
    assert max(-s for s in sizes) <= 32, "no batch deletes more than two forecast sets' scores"


def test_stopping_between_batches_leaves_whole_forecasts(any_db: Database, seeded: Seeded) -> None:
    small = Policy(forecasts_days=FORECAST_DAYS, jobs_days=0, models_days=0, batch_rows=32, horizon=16)
    keep = expected_sets(any_db, seeded)
    calls = [0]

    def three() -> bool:
        calls[0] += 1
        return calls[0] <= 3

    result = prune(any_db, small, now=NOW, go_on=three)
    assert not result.complete and result.batches == 3
    assert 0 < result.rows["forecasts"] <= 3 * 2 * 16 and result.rows["forecasts"] % 16 == 0
    assert set(stored_sets(any_db).values()) == {16}
    rest = prune(any_db, small, now=NOW)
    assert set(stored_sets(any_db)) == keep
    assert rest.complete and rest.rows["forecasts"] > 0


def test_zero_days_keep_everything(any_db: Database, seeded: Seeded) -> None:
    before = stored_sets(any_db)
    off = Policy(forecasts_days=0, jobs_days=0, models_days=0)
    assert not off.active
    assert prune(any_db, off, now=NOW).total == 0
    assert stored_sets(any_db) == before and len(_ids(any_db, models, "id")) == len(_all_models(seeded))


def test_vacuum_after_a_prune_keeps_what_was_kept(any_db: Database, seeded: Seeded) -> None:
    """VACUUM of every table a prune deletes from (the stream positions too) on both engines."""
    assert set(PRUNED_TABLES) >= {"forecasts", "forecast_scores", "forecast_seq", "models", "training_jobs"}
    prune(any_db, POLICY, now=NOW)
    after = stored_sets(any_db)
    vacuum(any_db)
    assert stored_sets(any_db) == after and _count(any_db, forecast_seq) == len(after)


def test_the_lease_lets_one_process_prune_at_a_time(any_db: Database, seeded: Seeded) -> None:
    keep = expected_sets(any_db, seeded)
    assert leases.acquire(any_db, LEASE, "daemon-a", timedelta(minutes=5))
    busy = prune_with_lease(any_db, POLICY, "cli-b", now=NOW)
    assert isinstance(busy, Busy) and busy.owner == "daemon-a"
    dry = prune_with_lease(any_db, POLICY, "cli-b", dry_run=True, now=NOW)
    assert isinstance(dry, PruneResult) and dry.total > 0  # reading needs no lease
    assert _count(any_db, forecast_scores) > 0 and len(stored_sets(any_db)) > len(keep)
    leases.release(any_db, LEASE, "daemon-a")
    done = prune_with_lease(any_db, POLICY, "cli-b", now=NOW)
    assert isinstance(done, PruneResult) and done.total > 0
    assert leases.holder(any_db, LEASE) is None, "released after the prune"


def test_two_pruners_at_once_delete_each_row_once(any_db: Database, seeded: Seeded) -> None:
    expected = prune(any_db, POLICY, dry_run=True, now=NOW)
    keep = expected_sets(any_db, seeded)
    out: dict[str, PruneResult | Busy] = {}
    errors: list[BaseException] = []

    def run(owner: str) -> None:
        try:
            out[owner] = prune_with_lease(any_db, POLICY, owner, now=NOW)
        except BaseException as exc:  # pragma: no cover - the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"daemon-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    done = [r for r in out.values() if isinstance(r, PruneResult)]
    totals = {t: sum(r.rows[t] for r in done) for t in expected.rows}
    assert totals == expected.rows
    assert set(stored_sets(any_db)) == keep


# --- champion terms and feed gaps ----------------------------------------------------------------


def _term(database: Database, model_id: str, ended_days_ago: float | None, started_days_ago: float = 400) -> None:
    with database.begin() as conn:
        conn.execute(insert(champion_history).values(
            exchange=BTC.exchange, symbol=BTC.symbol, interval=BTC.interval, model_id=model_id,
            started_at=NOW - timedelta(days=started_days_ago),
            ended_at=None if ended_days_ago is None else NOW - timedelta(days=ended_days_ago), reason="test"))


def test_ended_champion_terms_go_with_models_days_and_free_their_models(any_db: Database, seeded: Seeded) -> None:
    """A term ended more than models_days ago goes (dry run counts it), and the retired model it
    alone kept goes with it; a recent term, a model with one recent term among old ones, and every
    open term stay."""
    for model_id, age in (("past-champ", 400), ("recent-champ", 300), ("twice", 350)):
        registry.register_model(any_db, ModelInfo(model_id, "linear", (BTC,), None, None, {}, {}, None,
                                                  status="retired", created_at=NOW - timedelta(days=age)))
    _term(any_db, "past-champ", 150)
    _term(any_db, "recent-champ", 30)
    _term(any_db, "twice", 200)
    _term(any_db, "twice", 20, started_days_ago=25)
    open_before = registry.champions(any_db, [BTC, ETH])
    terms_before = _count(any_db, champion_history)
    dry = prune(any_db, POLICY, dry_run=True, now=NOW)
    assert dry.rows["champion_history"] == 2 and dry.rows["models"] == len(PRUNABLE_MODELS) + 1
    assert _count(any_db, champion_history) == terms_before, "a dry run deletes nothing"
    real = prune(any_db, POLICY, now=NOW)
    assert real.rows == dry.rows
    assert _ids(any_db, models, "id") == (_all_models(seeded) | {"recent-champ", "twice"}) - PRUNABLE_MODELS
    assert registry.champions(any_db, [BTC, ETH]) == open_before, "every open term stays"
    left = {(m, e is None) for m, _, e, _ in registry.history(any_db, BTC)}
    assert ("past-champ", False) not in left and ("recent-champ", False) in left and ("twice", False) in left
    assert _count(any_db, champion_history) == terms_before - 2
    assert prune(any_db, POLICY, now=NOW).total == 0
    assert prune(any_db, Policy(forecasts_days=0, jobs_days=0, models_days=0, gaps_days=0), now=NOW).total == 0


def test_feed_gaps_go_gaps_days_after_detection(any_db: Database, seeded: Seeded) -> None:
    """Filled or not, a gap detected more than gaps_days ago goes; a younger one stays; without
    gaps_days (0) none goes."""
    for start_days, detected_days, filled in ((120, 100, True), (96, 95, False), (11, 10, True)):
        start = NOW - timedelta(days=start_days)
        record_gap(any_db, BTC, start, start + timedelta(hours=1), detected_at=NOW - timedelta(days=detected_days))
        if filled:
            mark_gap_filled(any_db, BTC, start, start + timedelta(hours=1))
    assert prune(any_db, POLICY, dry_run=True, now=NOW).rows["feed_gaps"] == 0, "gaps_days 0 keeps them"
    policy = replace(POLICY, gaps_days=90)
    assert policy.active and replace(policy, forecasts_days=0, jobs_days=0, models_days=0).active
    dry = prune(any_db, policy, dry_run=True, now=NOW)
    assert dry.rows["feed_gaps"] == 2 and len(list_gaps(any_db)) == 3
    real = prune(any_db, policy, now=NOW)
    assert real.rows == dry.rows
    left = list_gaps(any_db)
    assert [g.detected_at for g in left] == [NOW - timedelta(days=10)]
    assert prune(any_db, policy, now=NOW).rows["feed_gaps"] == 0


def test_the_largest_batch_rows_prunes_tables_of_many_rows(any_db: Database, seeded: Seeded) -> None:
    """`batch_rows` may be up to 1,000,000, but one statement may not name that many keys:
    PostgreSQL takes at most 65,535 parameters a statement and overflows its stack on a few
    thousand row values (`(exchange, symbol, interval, model_id) IN (...)`). A batch of that
    size deletes its keys in bounded IN lists, in the same transaction."""
    old = NOW - timedelta(days=200)
    gaps = [{"exchange": "binance", "symbol": f"S{i}", "interval": "5m", "gap_start": old,
             "gap_end": old + timedelta(minutes=5), "detected_at": old} for i in range(70_000)]
    states = [{"exchange": "binance", "symbol": f"S{i}", "interval": "5m", "model_id": "gone",
               "state": {}, "updated_at": old} for i in range(9_000)]
    with any_db.begin() as conn:
        conn.execute(insert(feed_gaps), gaps)
        conn.execute(insert(calibration), states)
    policy = replace(POLICY, gaps_days=90, batch_rows=1_000_000)
    old_gaps = _count(any_db, feed_gaps, feed_gaps.c.detected_at < NOW - timedelta(days=90))
    result = prune(any_db, policy, now=NOW)
    assert old_gaps >= 70_000 and result.rows["feed_gaps"] == old_gaps
    assert _count(any_db, feed_gaps, feed_gaps.c.detected_at < NOW - timedelta(days=90)) == 0
    assert result.rows["calibration"] >= 9_000
    assert _count(any_db, calibration, calibration.c.model_id == "gone") == 0
