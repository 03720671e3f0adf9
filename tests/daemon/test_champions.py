"""Every daemon serving a series reloads a promotion made elsewhere: NOTIFY on PostgreSQL, the
registry poll on SQLite (daemon/live/champions.py), on a real database."""

from __future__ import annotations

from db.engine import Database
from tests.db.test_cluster import A, _model


def test_every_daemon_reloads_a_promotion_made_elsewhere(any_db: Database) -> None:
    """Two daemons' champion watches on one database: a promotion made by neither (the CLI) is
    installed by both. On PostgreSQL the NOTIFY wakes them (their poll period is an hour here);
    on SQLite the poll finds it."""
    import asyncio

    from daemon.live.champions import ChampionWatch
    from db import registry

    _model(any_db, "m1", (A,))
    _model(any_db, "m2", (A,))
    registry.promote(any_db, "m1", A)
    pg = any_db.engine.dialect.name == "postgresql"

    async def main() -> tuple[dict[str, str], dict[str, str], int]:
        serving = {"d1": "m1", "d2": "m1"}

        def watch(name: str) -> ChampionWatch:
            async def install(group: str) -> None:
                serving[name] = registry.champions(any_db, [A])[A]

            return ChampionWatch(any_db, lambda: {"g": A}, lambda g: serving[name], install,
                                 every_s=3600 if pg else 0.05)

        watches = [watch("d1"), watch("d2")]
        tasks = [asyncio.create_task(w.run()) for w in watches]
        while pg and not all(w.notifications for w in watches):  # listening (the first wake-up)
            await asyncio.sleep(0.05)
        before = dict(serving)
        await asyncio.to_thread(registry.promote, any_db, "m2", A)
        for _ in range(600):
            if set(serving.values()) == {"m2"}:
                break
            await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return before, serving, sum(w.reloads for w in watches)

    before, after, reloads = asyncio.run(main())
    assert before == {"d1": "m1", "d2": "m1"}
    assert after == {"d1": "m2", "d2": "m2"} and reloads == 2


def test_retiring_the_champion_hands_its_series_to_persistence(any_db: Database) -> None:
    """`barcast models retire` of the serving champion: the baseline becomes champion in the same
    transaction (a term, with the reason) and a daemon's watch reloads; before, the series was
    left without a champion and the daemon served the retired model until its restart."""
    import asyncio

    import pytest

    from daemon.live.champions import ChampionWatch
    from db import registry
    from db.errors import InputError
    from trainer.retrain_job import BASELINE_ID, ensure_baseline, retire_model

    ensure_baseline(any_db, [A])
    _model(any_db, "m1", (A,))
    registry.promote(any_db, "m1", A)
    serving = {"g": "m1"}

    async def install(group: str) -> None:
        serving[group] = registry.champions(any_db, [A])[A]

    watch = ChampionWatch(any_db, lambda: {"g": A}, lambda g: serving[g], install, every_s=3600)
    assert retire_model(any_db, "m1") == [A]
    assert asyncio.run(watch.check()) == ["g"] and serving == {"g": BASELINE_ID}
    assert registry.get_model(any_db, "m1").status == "retired"
    assert registry.get_model(any_db, BASELINE_ID).status == "champion"
    last = registry.history(any_db, A)[-1]
    assert last[0] == BASELINE_ID and last[2] is None and "m1 retired" in (last[3] or "")
    with pytest.raises(InputError, match="promote another model"):
        retire_model(any_db, BASELINE_ID)
    assert registry.champions(any_db, [A]) == {A: BASELINE_ID}


def test_a_series_left_without_a_champion_is_served_by_persistence(any_db: Database) -> None:
    """A champion's terms ended with no successor (a retirement by an older barcast): the watch
    reloads, which installs the baseline, instead of serving the retired model on."""
    import asyncio

    from daemon.live.champions import ChampionWatch
    from db import registry
    from trainer.retrain_job import BASELINE_ID

    _model(any_db, "m1", (A,))
    registry.promote(any_db, "m1", A)
    registry.set_status(any_db, "m1", "retired")
    installed: list[str] = []

    async def install(group: str) -> None:
        installed.append(group)

    watch = ChampionWatch(any_db, lambda: {"g": A}, lambda g: "m1", install, every_s=3600)
    assert asyncio.run(watch.check()) == ["g"] and installed == ["g"] and watch.tried == {"g": BASELINE_ID}
