"""Which daemon owns which series: rendezvous (highest-random-weight) hashing, pure.

Every daemon computes the same assignment from the same inputs (the live instance ids and the
series), so they agree without talking: a series belongs to the instance with the highest
weight hash(instance, series). When an instance joins or leaves, only the series whose winner
changes move (about 1/N of them), and they spread evenly over the others.

`plan()` turns that into this daemon's next step: which held series to release (their winner
is another live daemon) and which to try to claim (their winner is us). A claim only succeeds
once the previous owner released the lease or it expired (db.cluster.claim), so a series is
never owned twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from db.records import SeriesKey


def weight(instance: str, series: SeriesKey) -> int:
    digest = hashlib.blake2b(f"{instance}\x00{series}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner_of(series: SeriesKey, instances: Collection[str]) -> str:
    """The winner for one series (ties, which need equal 64-bit hashes, go to the smaller id)."""
    return max(sorted(instances), key=lambda i: weight(i, series))


def assign(series: Iterable[SeriesKey], instances: Collection[str]) -> dict[SeriesKey, str]:
    if not instances:
        return {}
    return {k: owner_of(k, instances) for k in series}


@dataclass(frozen=True, slots=True)
class Plan:
    release: tuple[SeriesKey, ...]
    claim: tuple[SeriesKey, ...]


def plan(me: str, series: Iterable[SeriesKey], live: Collection[str], held: Collection[SeriesKey], *,
         solo: bool = False) -> Plan:
    """This daemon's next step. `live` are the instances heartbeating now (with `me`); `held`
    the series whose lease we hold. `solo`: one daemon owns everything (SQLite)."""
    keys = list(series)
    if solo:
        return Plan((), tuple(k for k in keys if k not in held))
    winners = assign(keys, {*live, me})
    release = tuple(k for k in keys if k in held and winners[k] != me)
    claim = tuple(k for k in keys if k not in held and winners[k] == me)
    return Plan(release, claim)


def balance(owners: Mapping[SeriesKey, str]) -> dict[str, int]:
    """Series per owner (for logs and status)."""
    out: dict[str, int] = {}
    for o in owners.values():
        out[o] = out.get(o, 0) + 1
    return dict(sorted(out.items()))
