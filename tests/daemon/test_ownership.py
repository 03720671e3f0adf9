"""Rendezvous ownership (pure): every daemon computes the same owners; a daemon joining or
leaving moves only the series it wins or held; shares are even."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from daemon.live.ownership import assign, plan
from db.engine import Database
from db.records import SeriesKey

KEYS = [SeriesKey("binance", f"C{i:03d}-USDT") for i in range(300)]


def test_even_shares_and_minimal_moves() -> None:
    three = assign(KEYS, ["d1", "d2", "d3"])
    shares = Counter(three.values())
    assert set(shares) == {"d1", "d2", "d3"} and all(70 <= n <= 130 for n in shares.values()), shares
    two = assign(KEYS, ["d1", "d3"])
    moved = {k for k in KEYS if three[k] != two[k]}
    assert moved == {k for k in KEYS if three[k] == "d2"}  # only the leaver's series move


@given(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, unique=True))
def test_plans_never_overlap(live: list[str]) -> None:
    owners = assign(KEYS[:50], live)
    claims = [set(plan(me, KEYS[:50], live, set()).claim) for me in live]
    assert sum(len(c) for c in claims) == 50 and set().union(*claims) == set(KEYS[:50])
    for me in live:  # holding everything, each daemon releases exactly what others win
        p = plan(me, KEYS[:50], live, set(KEYS[:50]))
        assert set(p.release) == {k for k, o in owners.items() if o != me} and p.claim == ()


def test_solo_claims_everything() -> None:
    assert set(plan("x", KEYS[:5], ["x", "y"], set(), solo=True).claim) == set(KEYS[:5])


def test_status_shows_owner_lease_expiry_and_token_per_series(any_db: Database) -> None:
    from datetime import timedelta

    from daemon.ops.reports import status_from_database
    from db import cluster

    a, b = SeriesKey("binance", "AAA-USDT"), SeriesKey("binance", "BBB-USDT")
    won = cluster.claim(any_db, "d1", [a], timedelta(seconds=60))
    cluster.release(any_db, cluster.Fence("d1", won), [a])
    cluster.claim(any_db, "d2", [a], timedelta(seconds=60))
    rows = {r["series"]: r for r in status_from_database(any_db, [a, b])["series"]}
    assert (rows[str(a)]["owner"], rows[str(a)]["token"]) == ("d2", 2) and rows[str(a)]["lease_expires"]
    assert (rows[str(b)]["owner"], rows[str(b)]["token"], rows[str(b)]["lease_expires"]) == (None, None, None)


def test_a_daemons_status_names_no_owner_once_a_lease_ran_out(tmp_path: Path) -> None:
    """Seen from a daemon, a killed daemon's series kept it as `owner` after its lease had run out
    (until the next round took it over), where the database's status says null."""
    import dataclasses
    from datetime import UTC, datetime, timedelta

    from daemon.live.membership import Membership
    from db import cluster
    from db.engine import open_database

    a = SeriesKey("binance", "AAA-USDT")
    database = open_database(f"sqlite:///{tmp_path / 'b.db'}")
    try:
        cluster.claim(database, "d2", [a], timedelta(seconds=60))
        lease = cluster.series_leases(database)[a]
        member = Membership(database, "d1", [a], solo=False, heartbeat_s=10.0, ttl_s=60.0)
        member.leases = {a: lease}  # what the last round saw
        assert member.lease_of(a)["owner"] == "d2"
        member.leases = {a: dataclasses.replace(lease, expires_at=datetime.now(UTC) - timedelta(seconds=1))}
        assert member.lease_of(a) == {"owner": None, "lease_expires": member.leases[a].expires_at, "token": 1}
    finally:
        database.close()
