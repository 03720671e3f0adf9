"""Retraining as queued jobs (db/jobs.py) run in a child process each.

The child is a `spawn`ed process, never a thread of the daemon: TensorFlow training must not
stall ingestion. It has a time limit; past it the child is terminated and the attempt counted as
failed. Several daemons sharing one database never train a group twice: a group has one live
job, claimed by the daemon owning the group's first series, and the promotion is fenced.
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
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon import metrics
from daemon.config import Config
from db import jobs, registry
from db.cluster import Fence
from db.engine import Database
from db.errors import BarcastError, InputError
from trainer.retrain_job import BASELINE_ID, RetrainOutcome, RetrainRequest, history_bars

log = logging.getLogger("barcast.retrain")

Promoted = Callable[[str, RetrainOutcome], Awaitable[None]]
#: What a retrain request got: the run's outcome, or why there is none (for the operator).
Result = RetrainOutcome | str


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
                    raise self._died() from None
                self.process.join(10)
                if kind == "ok":
                    return value  # type: ignore[no-any-return]
                raise BarcastError(f"training failed: {value}")
            if not self.process.is_alive() and not self._recv.poll():
                raise self._died()

    def _died(self) -> BarcastError:
        """The child ended without an answer; its exit code once it is reaped (the pipe closes a
        moment before, when the code would still read None)."""
        self.process.join(10)
        code = self.process.exitcode
        how = f" ({signal.Signals(-code).name})" if code is not None and -code in signal.valid_signals() else ""
        return BarcastError(f"training process died (exit code {code}{how})")

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
    """Retraining through the job queue (db/jobs.py): a schedule, a first model or a manual request
    queues a job per model group; a dispatcher claims due jobs of the groups this daemon owns
    (their first series) within the caps and runs each in a child process, renewing the job's
    lease meanwhile; a failure is retried with backoff by whichever daemon owns the group then."""

    def __init__(self, config: Config, database: Database, on_promoted: Promoted, *,
                 fence: Callable[[], Fence | None] | None = None, instance: str | None = None,
                 poll_s: float = 5.0, only: Collection[str] | None = None) -> None:
        self.config = config
        self.database = database
        self.on_promoted = on_promoted
        #: The fencing tokens of this daemon (None: unfenced): a group is retrained here only while
        #: this daemon owns its first series, and the promotion re-checks that lease.
        self.fence: Callable[[], Fence | None] = fence or (lambda: None)
        self.owner = instance or f"{socket.gethostname()}:{os.getpid()}"
        self.poll_s = poll_s
        #: Claim only jobs of these groups (`barcast retrain --standalone --series`: never another
        #: group's job, which the command would abandon when it exits); None: every group it may.
        self.only = None if only is None else {str(self.config.group_series(g)[0]) for g in only}
        self.running: dict[str, ChildRun] = {}
        self.history: list[RunRecord] = []
        self._scheduler: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._waiters: dict[int, list[asyncio.Future[Result]]] = {}
        #: Jobs this retrainer runs now (their waiters get the result from `_run`).
        self._here: set[int] = set()
        self._kick: asyncio.Event | None = None

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(self.config.model_group(k) for k in self.config.series_keys))

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
        sched.add_job(self.retrain_all, trigger, id="retrain", name="queue retraining of every model group",
                      max_instances=1, coalesce=True, misfire_grace_time=3600)
        sched.start()
        self._scheduler = sched
        self._spawn(self._dispatch_loop(), "retrain-dispatch")
        for group in initial_groups:
            self._spawn(self._initial(group), f"initial-{group}")

    async def _initial(self, group: str, poll_s: float = 30.0) -> None:
        """Queue a group's first model as soon as enough history is stored (backfill runs
        meanwhile; persistence serves until then) and this daemon owns the group; a failed one
        is retried by the queue."""
        req = make_request(self.config, group)
        key = self.config.group_series(group)[0]
        waited = False
        while True:
            have, need = await asyncio.to_thread(history_bars, self.database, req)
            if have >= need and self.owns(group):
                break
            if not self.owns(group):  # another daemon trains it; stop once it has
                champ = await asyncio.to_thread(registry.champion, self.database, key)
                if champ is not None and champ.id != BASELINE_ID:
                    return
            if not waited:
                log.info("initial model waits for history", extra={"group": group, "bars": have, "needed": need})
                waited = True
            await asyncio.sleep(poll_s)
        await self.retrain(group, reason="initial model")

    def owns(self, group: str) -> bool:
        fence = self.fence()
        return fence is None or self.config.group_series(group)[0] in fence.tokens

    def next_run(self) -> datetime | None:
        if self._scheduler is None:
            return None
        job = self._scheduler.get_job("retrain")
        return job.next_run_time if job else None

    def trigger(self, group: str, *, reason: str, hurry: bool = False) -> asyncio.Task[Any]:
        return self._spawn(self.retrain(group, reason=reason, hurry=hurry), f"retrain-{group}")

    async def retrain_all(self) -> None:
        """The schedule: queue every group this daemon owns (the dispatcher runs them), except a
        group still short of history: its job could only fail (an ERROR and a retry with backoff
        at every tick of a young series); the initial model follows once the history is there."""
        for g in self.groups:
            if not self.owns(g):
                continue
            have, need = await asyncio.to_thread(history_bars, self.database, make_request(self.config, g))
            if have < need:
                log.info("scheduled retrain skipped: not enough history yet",
                         extra={"group": g, "bars": have, "needed": need})
                metrics.TRAINING_RUNS.labels(g, "skipped_history").inc()
                continue
            await self.enqueue(g, "schedule")

    async def enqueue(self, group: str, reason: str) -> int | None:
        series = str(self.config.group_series(group)[0])
        job_id = await asyncio.to_thread(jobs.enqueue, self.database, group, series, reason)
        if job_id is None:
            log.info("retrain already queued or running; not queueing another", extra={"group": group})
            metrics.TRAINING_RUNS.labels(group, "skipped_active").inc()
        else:
            log.info("retrain queued", extra={"group": group, "reason": reason, "job": job_id})
            if self._kick is not None:
                self._kick.set()
        return job_id

    async def retrain(self, group: str, *, reason: str, hurry: bool = False) -> Result:
        """Queue a job for `group` and wait for its next attempt: its outcome, or why there is none
        (the attempt failed, the group belongs to another daemon, a job is already live).
        `hurry` (an operator's request): a live job of the group is joined instead, and one
        waiting out a retry's backoff is made due now."""
        if not self.owns(group):
            log.info("retrain skipped: another daemon owns the group's first series", extra={"group": group})
            metrics.TRAINING_RUNS.labels(group, "skipped_not_owner").inc()
            return f"{group}: another daemon owns the group's first series and retrains it"
        job_id = await self.enqueue(group, reason)
        attempts = 0  # of the job when this request joined it
        if job_id is None:
            live = await asyncio.to_thread(jobs.hurry, self.database, group) if hurry else None
            if live is None or (live.status == "running" and live.claimed_by != self.owner):
                where = f" (job {live.id}, running in {live.claimed_by})" if live is not None else ""
                return f"{group}: a retrain is already queued or running{where}"
            job_id, attempts = live.id, live.attempts
            log.info("retrain requested: joining the group's live job", extra={
                "group": group, "job": job_id, "status": live.status, "attempts": live.attempts})
            if self._kick is not None:
                self._kick.set()
        done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(done)
        while not done.done():
            await self.dispatch()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(done), self.poll_s)
            if not done.done():  # another process (a daemon beside `barcast retrain`) may run it
                job = await asyncio.to_thread(jobs.get, self.database, job_id)
                ended = job_result(job, group, since_attempt=attempts)
                if ended is not None and not done.done() and job_id not in self._here:
                    self._waiters.get(job_id, []).remove(done)
                    return ended
        return done.result()

    async def dispatch(self) -> int:
        """Claim the due jobs this daemon may run now and start them; returns how many."""
        r = self.config.retrain
        fence = self.fence()
        series = None if fence is None else {str(k) for k in fence.tokens}
        if self.only is not None:
            series = self.only if series is None else series & self.only
        claimed = await asyncio.to_thread(
            jobs.claim, self.database, self.owner, series=series, per_daemon=r.max_concurrent,
            global_cap=r.max_concurrent_global, lease=timedelta(seconds=r.job_lease_s))
        for job in claimed:
            self._spawn(self._run(job), f"retrain-{job.group}")
        return len(claimed)

    async def _dispatch_loop(self) -> None:
        self._kick = asyncio.Event()
        while True:
            try:
                await self.dispatch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: try again next round
                log.warning("claiming training jobs failed", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.poll_s)
            self._kick.clear()

    async def _renew(self, job: jobs.TrainingJob, child: ChildRun) -> None:
        lease = timedelta(seconds=self.config.retrain.job_lease_s)
        while True:
            await asyncio.sleep(lease.total_seconds() / 3)
            try:
                mine = await asyncio.to_thread(jobs.renew, self.database, job.id, self.owner, lease)
            except Exception as exc:
                log.warning("renewing a training job's lease failed", extra={"job": job.id, "error": str(exc)})
                continue
            if not mine:  # expired and claimed elsewhere: never train one group twice
                log.error("training job taken over by another daemon; child stopped", extra={"job": job.id})
                child.terminate()
                return

    async def _run(self, job: jobs.TrainingJob) -> None:
        group = job.group
        outcome: Result = f"{group}: training job {job.id} was abandoned"
        self._here.add(job.id)
        try:
            outcome = await self._train(job)
        finally:
            for waiter in self._waiters.pop(job.id, []):
                if not waiter.done():
                    waiter.set_result(outcome)
            self._here.discard(job.id)
            if self._kick is not None:
                self._kick.set()  # a slot is free
        if isinstance(outcome, RetrainOutcome) and outcome.promoted:
            await self.on_promoted(group, outcome)

    async def _train(self, job: jobs.TrainingJob) -> Result:
        group = job.group
        r = self.config.retrain
        limit = r.time_limit_minutes * 60
        record = RunRecord(group, datetime.now(UTC))
        self.history = [*self.history[-49:], record]
        overrides: dict[str, Any] = {}
        fence = self.fence()
        primary = self.config.group_series(group)[0]
        error = ""
        if fence is not None and primary not in fence.tokens:
            error = "this daemon no longer owns the group's first series"
        else:
            if fence is not None:
                overrides = {"fence_owner": fence.owner, "fence_token": fence.tokens[primary]}
            req = make_request(self.config, group, overrides=overrides)
            log.info("retrain started", extra={"group": group, "reason": job.reason, "arch": req.arch,
                                               "job": job.id, "attempt": job.attempts,
                                               "history_days": req.history_days})
            t0 = time.monotonic()
            child = ChildRun(req, log_format=self.config.logging.format)
            self.running[group] = child
            renewer = asyncio.create_task(self._renew(job, child), name=f"renew-{job.id}")
            outcome: RetrainOutcome | None = None
            try:
                outcome = await asyncio.to_thread(child.wait, limit)
            except TimeoutError:
                child.terminate()
                record.outcome, error = "timeout", f"timed out after {limit:.0f} s"
                log.error("retrain timed out; child terminated", extra={"group": group, "limit_s": limit})
            except BarcastError as exc:
                record.outcome, error = "error", str(exc)
                log.error("retrain failed", extra={"group": group, "error": str(exc)})
            except asyncio.CancelledError:  # shutdown: the job's lease runs out, another daemon retries
                child.terminate()
                record.outcome = "abandoned"
                raise
            finally:
                renewer.cancel()
                self.running.pop(group, None)
                record.finished = datetime.now(UTC)
                metrics.TRAINING_SECONDS.observe(time.monotonic() - t0)
            if outcome is not None:
                await asyncio.to_thread(jobs.finish, self.database, job.id, self.owner, outcome.as_dict())
                record.outcome = "promoted" if outcome.promoted else "kept_champion"
                record.model_id, record.promoted, record.reason = outcome.model_id, outcome.promoted, outcome.reason
                record.pid = outcome.pid
                metrics.TRAINING_RUNS.labels(group, record.outcome).inc()
                log.info("retrain finished", extra={
                    "group": group, "model": outcome.model_id, "promoted": outcome.promoted,
                    "reason": outcome.reason, "seconds": round(outcome.seconds, 1)})
                return outcome
        record.finished = record.finished or datetime.now(UTC)
        record.outcome = record.outcome or "error"
        record.reason = error
        metrics.TRAINING_RUNS.labels(group, record.outcome).inc()
        retried = await asyncio.to_thread(jobs.fail, self.database, job.id, self.owner, error,
                                          max_attempts=r.max_attempts,
                                          backoff=timedelta(minutes=r.retry_backoff_minutes))
        log.warning("training job failed", extra={"group": group, "job": job.id, "attempt": job.attempts,
                                                  "retried": retried, "error": error})
        if retried:
            wait = r.retry_backoff_minutes * 2 ** (job.attempts - 1)
            after = f"retried in {wait:g} min"
        else:
            after = "not retried" if job.attempts >= r.max_attempts else "the job is no longer this daemon's"
        return f"{group}: training job {job.id} failed (attempt {job.attempts} of {r.max_attempts}, {after}): {error}"

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


def job_result(job: jobs.TrainingJob, group: str, *, since_attempt: int) -> Result | None:
    """The result of a job as the queue has it (another process may have run it): its outcome
    once done, the error once it failed for good or failed again after `since_attempt`; None
    while it is still to run or running."""
    if job.status == "done" and job.outcome is not None:
        return RetrainOutcome(**job.outcome)
    if job.status == "failed" or (job.status == "queued" and job.attempts > since_attempt and job.error):
        after = "not retried" if job.status == "failed" else f"retried after {job.not_before:%Y-%m-%d %H:%M:%S} UTC"
        return f"{group}: training job {job.id} failed (attempt {job.attempts}, {after}): {job.error}"
    return None


def retrain_answer(results: list[Result]) -> dict[str, Any]:
    """The answer to a waited-for retrain (control socket, `barcast retrain --now`): each group's
    outcome, or `{"error": why}` where there is none; `ok` only when every group has an outcome."""
    errors = [r for r in results if isinstance(r, str)]
    answer: dict[str, Any] = {"ok": not errors,
                              "outcomes": [r.as_dict() if isinstance(r, RetrainOutcome) else {"error": r}
                                           for r in results]}
    if errors:
        answer["error"] = "; ".join(errors)
    return answer


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
