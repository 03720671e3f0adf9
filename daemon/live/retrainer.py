"""Retraining on a schedule (APScheduler) in a child process, with a per-group database lease.

The child is a `spawn`ed process, never a thread of the daemon: TensorFlow training must not
stall ingestion. It has a time limit; past it the child is terminated and the run counted as
timed out. Several daemons sharing one PostgreSQL database take the lease `retrain:<group>`
first, so no group is retrained or promoted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon import metrics
from daemon.config import Config
from db import leases
from db.engine import Database
from db.errors import BarcastError, InputError
from trainer.retrain_job import BASELINE_ID, RetrainOutcome, RetrainRequest

log = logging.getLogger("barcast.retrain")

Promoted = Callable[[str, RetrainOutcome], Awaitable[None]]


def make_request(config: Config, group: str, *, overrides: dict[str, Any] | None = None) -> RetrainRequest:
    keys = config.group_series(group)
    if not keys:
        raise InputError(f"no configured series belongs to model group {group!r}")
    r = config.retrain
    fields: dict[str, Any] = dict(
        db_url=config.database_url,
        series=tuple(str(k) for k in keys),
        arch=config.forecast.arch,
        data=config.data,
        model=config.model,
        train=config.train,
        history_days=r.history_days,
        holdout_bars=r.holdout_bars,
        metric=r.metric,
        margin=r.margin,
        coverage_band=(r.coverage_min, r.coverage_max),
        artifacts_dir=str(config.artifacts_dir),
        keep_artifacts=r.keep_artifacts,
        log_level=config.logging.level,
    )
    fields.update(overrides or {})
    return RetrainRequest(**fields)


def _guarded(parent_pid: int, target: Callable[..., None], *args: Any) -> None:
    """The child's entry point: tie it to the daemon before any work (see `childguard`)."""
    from daemon.live.childguard import bind_to_parent

    bind_to_parent(parent_pid)
    target(*args)


def _child(req: RetrainRequest, conn: Any, log_format: str = "text") -> None:
    from daemon import logs, quiet
    from trainer.retrain_job import child_main

    # the child logs like the daemon (one format in the journal) and is as quiet about TensorFlow
    quiet.configure(debug=req.log_level == "debug")
    logs.configure(req.log_level, log_format)

    try:
        conn.send(("ok", child_main(req)))
    except BarcastError as exc:
        conn.send(("error", str(exc)))
    except BaseException as exc:  # report, don't hang the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


class ChildRun:
    """One training child process in its own process group, which dies with this process;
    `wait` in a thread, `terminate` (the whole group) from anywhere. Create it on a thread that
    outlives it (the event loop's): Linux sends the death signal when the creating *thread* ends."""

    def __init__(self, req: RetrainRequest, *, log_format: str = "text",
                 target: Callable[..., None] = _child) -> None:
        ctx = mp.get_context("spawn")
        self._recv, send = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_guarded, args=(os.getpid(), target, req, send, log_format),
                                   name="barcast-retrain", daemon=True)
        self.process.start()
        send.close()

    def wait(self, timeout: float) -> RetrainOutcome:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if self._recv.poll(min(left, 0.5)):
                try:
                    kind, value = self._recv.recv()
                except EOFError:
                    raise BarcastError(f"training process died (exit code {self.process.exitcode})") from None
                self.process.join(10)
                if kind == "ok":
                    return value  # type: ignore[no-any-return]
                raise BarcastError(f"training failed: {value}")
            if not self.process.is_alive() and not self._recv.poll():
                raise BarcastError(f"training process died (exit code {self.process.exitcode})")

    def terminate(self) -> None:
        """SIGTERM the child's process group, then SIGKILL it: nothing it started survives."""
        from daemon.live.childguard import kill_group

        pid = self.process.pid
        if pid is None:
            return
        if self.process.is_alive():
            kill_group(pid, signal.SIGTERM)
            self.process.terminate()  # before the child made its group, the group does not exist yet
            self.process.join(5)
        kill_group(pid, signal.SIGKILL)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


@dataclass
class RunRecord:
    group: str
    started: datetime
    finished: datetime | None = None
    outcome: str | None = None
    model_id: str | None = None
    promoted: bool | None = None
    reason: str | None = None
    #: The child process that trained (never the daemon's own pid).
    pid: int | None = None


class Retrainer:
    def __init__(self, config: Config, database: Database, on_promoted: Promoted) -> None:
        self.config = config
        self.database = database
        self.on_promoted = on_promoted
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.running: dict[str, ChildRun] = {}
        self.history: list[RunRecord] = []
        self._scheduler: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(self.config.model_group(k) for k in self.config.series_keys))

    def start(self, *, initial_groups: list[str]) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        r = self.config.retrain
        sched = AsyncIOScheduler(timezone=UTC)
        trigger: Any
        if r.schedule == "cron":
            trigger = CronTrigger.from_crontab(r.cron, timezone="UTC")
        else:
            trigger = IntervalTrigger(hours=r.every_hours, timezone=UTC)
        sched.add_job(self.retrain_all, trigger, id="retrain", name="retrain all model groups",
                      max_instances=1, coalesce=True, misfire_grace_time=3600)
        sched.start()
        self._scheduler = sched
        for group in initial_groups:
            task = asyncio.create_task(self._initial(group), name=f"initial-{group}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _initial(self, group: str, poll_s: float = 30.0) -> None:
        """Train a group's first model as soon as enough history is stored (backfill runs
        meanwhile; persistence serves until then)."""
        from db.bars import count_bars

        req = make_request(self.config, group)
        need = 2 * (req.data.window + req.data.horizon) + req.holdout_bars
        key = self.config.group_series(group)[0]
        waited = False
        while True:
            have = await asyncio.to_thread(count_bars, self.database, key)
            if have >= need:
                break
            if not waited:
                log.info("initial model waits for history", extra={"group": group, "bars": have, "needed": need})
                waited = True
            await asyncio.sleep(poll_s)
        await self.retrain(group, reason="initial model")

    def next_run(self) -> datetime | None:
        if self._scheduler is None:
            return None
        job = self._scheduler.get_job("retrain")
        return job.next_run_time if job else None

    def trigger(self, group: str, *, reason: str, overrides: dict[str, Any] | None = None) -> asyncio.Task[Any]:
        task = asyncio.create_task(self.retrain(group, reason=reason, overrides=overrides), name=f"retrain-{group}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def retrain_all(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # shutdown abandons a scheduled run
            await asyncio.gather(*(self.retrain(g, reason="schedule") for g in self.groups))

    async def retrain(self, group: str, *, reason: str, overrides: dict[str, Any] | None = None
                      ) -> RetrainOutcome | None:
        if group in self.running:
            log.info("retrain already running; not starting another", extra={"group": group})
            return None
        limit = self.config.retrain.time_limit_minutes * 60
        lease = f"retrain:{group}"
        took = await asyncio.to_thread(leases.acquire, self.database, lease, self.owner,
                                       timedelta(seconds=limit + 300))
        if not took:
            held = await asyncio.to_thread(leases.holder, self.database, lease)
            log.info("retrain skipped: another daemon holds the lease", extra={"group": group, "holder": held})
            metrics.TRAINING_RUNS.labels(group, "skipped_lease").inc()
            return None
        record = RunRecord(group, datetime.now(UTC))
        self.history = [*self.history[-49:], record]
        req = make_request(self.config, group, overrides=overrides)
        log.info("retrain started", extra={"group": group, "reason": reason, "arch": req.arch,
                                           "history_days": req.history_days})
        t0 = time.monotonic()
        child = ChildRun(req, log_format=self.config.logging.format)
        self.running[group] = child
        outcome: RetrainOutcome | None = None
        try:
            outcome = await asyncio.to_thread(child.wait, limit)
        except TimeoutError:
            child.terminate()
            record.outcome = "timeout"
            log.error("retrain timed out; child terminated", extra={"group": group, "limit_s": limit})
        except BarcastError as exc:
            record.outcome = "error"
            record.reason = str(exc)
            log.error("retrain failed", extra={"group": group, "error": str(exc)})
        except asyncio.CancelledError:
            child.terminate()
            record.outcome = "abandoned"
            raise
        finally:
            self.running.pop(group, None)
            record.finished = datetime.now(UTC)
            metrics.TRAINING_SECONDS.observe(time.monotonic() - t0)
            await asyncio.to_thread(leases.release, self.database, lease, self.owner)
        if outcome is None:
            metrics.TRAINING_RUNS.labels(group, record.outcome or "error").inc()
            return None
        record.outcome = "promoted" if outcome.promoted else "kept_champion"
        record.model_id, record.promoted, record.reason = outcome.model_id, outcome.promoted, outcome.reason
        record.pid = outcome.pid
        metrics.TRAINING_RUNS.labels(group, record.outcome).inc()
        log.info("retrain finished", extra={"group": group, "model": outcome.model_id, "promoted": outcome.promoted,
                                            "reason": outcome.reason, "seconds": round(outcome.seconds, 1)})
        if outcome.promoted:
            await self.on_promoted(group, outcome)
        return outcome

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        for child in list(self.running.values()):
            child.terminate()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def needs_initial_model(database: Database, config: Config) -> list[str]:
    """Groups whose champion is still the persistence baseline (or none)."""
    from db import registry

    out = []
    for group in dict.fromkeys(config.model_group(k) for k in config.series_keys):
        keys = config.group_series(group)
        champ = registry.champion(database, keys[0]) if keys else None
        if champ is None or champ.id == BASELINE_ID:
            out.append(group)
    return out
