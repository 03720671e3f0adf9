"""Retention in the running daemon: a prune every `retention.every_hours`, off the event loop.

The prune itself (db/retention.py) runs in a worker thread in short batches, pausing between
them so the live writer gets SQLite's write lock; the event loop only awaits it. Of several
daemons on one database, the one holding the `retention` lease prunes; the others skip that
round. One log line per prune with the rows deleted per table; `barcast_pruned_rows_total{table}`
counts them.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon import metrics
from daemon.config import Config
from db.engine import Database
from db.retention import Busy, Policy, PruneResult, prune_with_lease

log = logging.getLogger("barcast.retention")

#: The first prune comes this long after start at most (not amid the start-up catch-up).
FIRST_AFTER = timedelta(minutes=5)
#: Pause between two delete batches, for the live writer.
PAUSE_S = 0.05


def policy_of(config: Config, **overrides: Any) -> Policy:
    """The retention policy of a config, with `overrides` (the CLI's flags) where not None."""
    r = config.retention
    values: dict[str, Any] = dict(forecasts_days=r.forecasts_days, jobs_days=r.jobs_days, models_days=r.models_days,
                                  gaps_days=r.gaps_days,
                                  keep_models=config.retrain.keep_artifacts, batch_rows=r.batch_rows,
                                  horizon=config.data.horizon)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Policy(**values)


def counts_doc(result: PruneResult) -> dict[str, Any]:
    """What one prune did, for its log line and the daemon's status."""
    return {**result.rows, "total": result.total, "batches": result.batches, "seconds": round(result.seconds, 3),
            "complete": result.complete}


class Pruner:
    """The background prune of one daemon (an APScheduler interval job, as retraining is)."""

    def __init__(self, config: Config, database: Database, owner: str) -> None:
        self.config = config
        self.database = database
        self.owner = owner
        self.policy = policy_of(config)
        self.last: dict[str, Any] | None = None
        self._scheduler: Any = None
        self._stopping = False
        self._running: asyncio.Task[Any] | None = None

    def start(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        every = timedelta(hours=self.config.retention.every_hours)
        sched = AsyncIOScheduler(timezone=UTC)
        sched.add_job(self._job, IntervalTrigger(seconds=every.total_seconds(), timezone=UTC), id="prune",
                      name="prune old rows (retention)", max_instances=1, coalesce=True,
                      misfire_grace_time=int(every.total_seconds()) + 1,
                      next_run_time=datetime.now(UTC) + min(every, FIRST_AFTER))
        sched.start()
        self._scheduler = sched

    def next_run(self) -> datetime | None:
        job = self._scheduler.get_job("prune") if self._scheduler is not None else None
        return job.next_run_time if job else None

    async def _job(self) -> None:
        self._running = asyncio.current_task()
        try:
            await self.prune_once()
        finally:
            self._running = None

    async def prune_once(self) -> PruneResult | Busy | None:
        """One prune in a worker thread; None when it failed (logged; the next round retries)."""
        if not self.policy.active or self._stopping:
            return None
        try:
            done = await asyncio.to_thread(prune_with_lease, self.database, self.policy, self.owner,
                                           pause_s=PAUSE_S, go_on=lambda: not self._stopping)
        except Exception as exc:  # the database is away or busy: the next round tries again
            log.warning("prune failed; retried next round", extra={"error": str(exc)})
            return None
        if isinstance(done, Busy):
            log.info("prune skipped: another process is pruning",
                     extra={"holder": done.owner, "until": done.until.isoformat()})
            return done
        for table, n in done.rows.items():
            if n:
                metrics.PRUNED_ROWS.labels(table).inc(n)
        self.last = {"at": datetime.now(UTC), **counts_doc(done)}
        log.info("pruned", extra={**counts_doc(done), "forecasts_days": self.policy.forecasts_days,
                                  "jobs_days": self.policy.jobs_days, "models_days": self.policy.models_days,
                                  "gaps_days": self.policy.gaps_days})
        return done

    async def stop(self) -> None:
        """No new prune; one under way stops after its current batch."""
        self._stopping = True
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)
