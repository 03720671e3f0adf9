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
