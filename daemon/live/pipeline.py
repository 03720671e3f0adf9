"""bars -> rolling windows -> one batched forecast per boundary -> store + log + broadcast -> scores.

Runs on the event loop but never blocks it: model work goes to the inference thread, database
work to the single writer thread. Between the bar hook and the batch runner sits a bounded
queue; when it is full the bar hook waits (back-pressure on the feed), and says so unless the
pipeline is catching up (`catchup`: bars that did not arrive live, where the full queue paces
the backlog; one line when a catch-up starts and one when it ends instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from daemon import metrics
from daemon.config import Config
from daemon.live.batcher import BoundaryBatcher, closes_at
from daemon.live.broadcast import Broadcast
from daemon.live.calibration import CalibrationBook
from daemon.live.catchup import CatchUp
from daemon.live.dbretry import retrying
from daemon.live.forecastlog import ForecastLog, forecast_line
from daemon.live.frontier import replay_start
from daemon.live.inference import Installed, Job, ModelBook, ModelInstaller, ServingModel, Worker, forecast_batch
from daemon.live.scorer import Scorer
from daemon.live.window import RollingWindow
from db.bars import last_bars
from db.calibration import load_states
from db.cluster import Fence
from db.engine import Database
from db.forecasts import issued_times, latest_forecast, latest_issued, query_forecasts, store_new_forecasts
from db.records import Bar, Forecast, ForecastScore, SeriesKey, iso

log = logging.getLogger("barcast.live")

BATCH_QUEUE = 64
#: The per-bar scoring pass looks at steps whose target bar is among a series' newest few (the
#: bars of this batch and any that came a little late); a start or a takeover scores everything.
SCORE_LOOKBACK_BARS = 8


@dataclass
class SeriesState:
    window: RollingWindow
    last_close: Decimal | None = None
    last_bar: datetime | None = None
    forecasts: int = 0
    last_forecast: datetime | None = None


@dataclass
class PipelineStats:
    batches: int = 0
    forecasts: int = 0
    duplicates_skipped: int = 0
    resyncs: int = 0
    scores: int = 0
    queue_full: int = 0
    last_batch_ms: float | None = None
    started: float = field(default_factory=time.monotonic)


class Pipeline:
    def __init__(self, config: Config, database: Database, *, book: ModelBook, forecast_log: ForecastLog,
                 broadcast: Broadcast | None = None, fence: Callable[[], Fence | None] | None = None,
                 owned: Iterable[SeriesKey] | None = None) -> None:
        self.config = config
        self.database = database
        self.book = book
        self.forecast_log = forecast_log
        self.broadcast = broadcast or Broadcast()
        self.inference = Worker("inference")
        self.writer = Worker("db-writer")
        self.series: dict[SeriesKey, SeriesState] = {
            k: SeriesState(RollingWindow(config.data.window, k.interval, fill_gaps=config.data.fill_gaps))
            for k in config.series_keys
        }
        #: Series this daemon owns now (default: every configured one); the others' bars are
        #: ignored and never forecast here.
        self.owned: set[SeriesKey] = set(self.series if owned is None else owned)
        #: The fencing tokens every write carries (None: unfenced, e.g. tests and benches).
        self.fence: Callable[[], Fence | None] = fence or (lambda: None)
        self.stats = PipelineStats()
        self._replay: dict[SeriesKey, list[tuple[Bar, bool]]] = {}
        self.calibration = CalibrationBook(horizon=config.data.horizon, gamma=config.model.aci_gamma)
        self.scorer = Scorer(config, database, self.calibration, fence=lambda: self.fence(),
                             last_bar=lambda k: self.series[k].last_bar if k in self.series else None)
        self._batcher: BoundaryBatcher[Job] = BoundaryBatcher()
        self.models = ModelInstaller(config, database, book, self.inference)
        self._timers: dict[datetime, asyncio.TimerHandle] = {}
        #: Each batch with whether it was queued while catching up (see `catchup`).
        self._queue: asyncio.Queue[tuple[list[Job], bool] | None] = asyncio.Queue(BATCH_QUEUE)
        self.catchup = CatchUp()
        self._runner: asyncio.Task[None] | None = None
        self.busy_since: float | None = None

    # ---- start-up ------------------------------------------------------------------------
    def restore(self, keys: Iterable[SeriesKey] | None = None, *, calibration: bool = True) -> None:
        """Fill windows from stored bars and load the calibration state (call in a thread): every
        series' at start, those of series this daemon just took over (another daemon stored
        their newest bars), or one whose bars arrived out of order. Stored bars without a
        forecast set (within `forecast.backfill_forecast_bars`: a crash, a previous owner that
        fell behind or died, a backfill page that came late; see `frontier`) are kept back for
        `replay` to forecast one by one, so no bar is left unforecast."""
        todo = list(self.series) if keys is None else list(keys)
        if calibration:
            loaded = self.calibration.load(load_states(self.database, todo))
            if loaded:
                log.info("calibration state restored", extra={"models": loaded})
        reach = self.config.forecast.backfill_forecast_bars
        newest = latest_issued(self.database, todo)
        stored = {key: last_bars(self.database, key, self.series[key].window.size + reach) for key in todo}
        firsts = [b[0].open_time for b in stored.values() if b]
        done = issued_times(self.database, todo, min(firsts)) if firsts else {}
        for key in todo:
            st = self.series[key]
            bars = stored[key]
            forecast = done.get(key, set())
            cut = replay_start([b.open_time for b in bars], forecast, newest.get(key))
            st.window.clear()
            st.window.extend(bars[:cut])
            self._replay[key] = [(b, b.open_time not in forecast) for b in bars[cut:]]
            if cut:
                st.last_close, st.last_bar = bars[cut - 1].close, bars[cut - 1].open_time
            log.info("window restored", extra={"series": str(key), "bars": len(st.window),
                                                "ready": st.window.ready, "last_bar": st.last_bar,
                                                "to_forecast": sum(n for _, n in self._replay[key])})

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run_batches(), name="forecast-batches")

    async def adopt(self, keys: Iterable[SeriesKey]) -> None:
        """Start serving series (at start, or taken over from another daemon): windows from the
        database, their groups' models loaded if not yet serving."""
        new = [k for k in keys if k in self.series]
        if not new:
            return
        await self.writer.run(self.restore, new)
        served = {self.config.model_group(k) for k in self.owned}
        for group in dict.fromkeys(self.config.model_group(k) for k in new):
            if self.book.get(group) is None or group not in served:  # not served meanwhile: maybe promoted
                await self.install(group)
        self.owned.update(new)

    def drop(self, keys: Iterable[SeriesKey]) -> None:
        """Stop serving series (given to another daemon): pending jobs for them are dropped."""
        gone = set(keys)
        self.owned -= gone
        self._batcher.drop(gone)
        self._settle()

    async def catch_up(self, keys: Iterable[SeriesKey] | None = None) -> None:
        """Score whatever became scorable while the daemon was down; forecast the stored bars
        nothing has forecast yet (kept back by `restore`), or the newest stored bar if the series
        was never forecast (a crash between a bar close and its forecast loses nothing). `keys`:
        only those (series just taken over); default: all owned."""
        todo = [k for k in (self.owned if keys is None else keys) if k in self.owned]
        self.scorer.watch(await self.writer.run(self._score, todo, None))
        with self.catching_up(self._to_replay(todo), "stored", todo):
            for key in todo:
                pending = await self._replay_stored(key)
                st = self.series[key]
                if pending or not st.window.ready or st.last_bar is None:
                    continue
                latest = await self.writer.run(latest_forecast, self.database, key)
                if latest is None or latest.issued_at < st.last_bar:
                    self._behind(1, "stored", [key])
                    await self._enqueue(key, st.last_bar, time.monotonic())

    def _to_replay(self, keys: Iterable[SeriesKey]) -> int:
        """Bars `restore` kept back for `keys` that need a forecast."""
        return sum(needed for k in keys for _, needed in self._replay.get(k, ()))

    async def _replay_stored(self, key: SeriesKey) -> int:
        """Push the bars `restore` kept back, forecasting those without a forecast set."""
        pending = self._replay.pop(key, [])
        for bar, needed in pending:
            await self._push(bar, forecast=needed)
        return len(pending)

    async def resync(self, key: SeriesKey) -> None:
        """Rebuild one series' window from the database and forecast its stored bars that have no
        forecast yet (a bar arrived out of order, or after a gap another daemon may have filled)."""
        self.stats.resyncs += 1
        metrics.WINDOW_RESYNCS.labels(str(key)).inc()
        await self.writer.run(lambda: self.restore([key], calibration=False))
        with self.catching_up(self._to_replay([key]), "stored", [key]):
            await self._replay_stored(key)

    # ---- catch-up (see daemon/live/catchup.py) ------------------------------------------------
    @contextlib.contextmanager
    def catching_up(self, bars: int, source: str, keys: Collection[SeriesKey]) -> Iterator[None]:
        """Around handing over `bars` bars of `keys` that did not arrive live (`source`: "stored"
        bars replayed, "backfill"ed ones): the pipeline is catching up until their batches, and
        every batch queued meanwhile, are stored. Nests; 0 bars opens nothing."""
        self._behind(bars, source, keys)
        self.catchup.hold()
        try:
            yield
        finally:
            self.catchup.release()
            self._settle()

    def _behind(self, bars: int, source: str, keys: Collection[SeriesKey]) -> None:
        names = [str(k) for k in keys]
        before = self.catchup.current
        was_routine = before is not None and before.routine
        news = self.catchup.behind(bars, source, time.monotonic(), datetime.now(UTC), names)
        ep = self.catchup.current
        if ep is None:
            return
        metrics.CATCHING_UP.set(1)
        if was_routine and not ep.routine:
            news = "opened"  # told at debug so far: now it is worth the info line that opens it
        if news is None:
            return
        level = logging.DEBUG if ep.routine else logging.INFO
        extra = {"bars": bars, "source": source, "series": names[0] if len(names) == 1 else f"{len(names)} series"}
        if news == "opened":
            log.log(level, "catching up: forecasting bars that did not arrive live (a full forecast queue is "
                    "expected until caught up)", extra=extra)
        else:
            log.log(level, "catching up: more bars that did not arrive live", extra=extra)

    def _settle(self) -> None:
        """End the catch-up once nothing of it is left, with its one line."""
        ep = self.catchup.finish(time.monotonic(), datetime.now(UTC), idle=not self._batcher.open_boundaries())
        if ep is not None:
            metrics.CATCHING_UP.set(0)
            log.log(logging.DEBUG if ep.routine else logging.INFO, "caught up", extra={
                "bars": ep.bars, "forecasts": ep.forecasts, "batches": ep.batches, "sources": ",".join(ep.sources),
                "seconds": round(time.monotonic() - ep.started, 2)})

    def reconcile_log(self, others: Collection[str] = frozenset()) -> int:
        """Write stored forecasts that a crash kept out of the log (stored, then killed before the
        line was written). Call in a thread at start. Returns lines written. `others`: daemons
        alive beside this one (cluster mode); what they issued is in their own logs, even for a
        series this log had lines of before it changed hands."""
        logged = self.forecast_log.tail_keys()
        missing: list[Forecast] = []
        for key in self.series:
            newest, seen = logged.get(str(key), ("", set()))
            if not newest:
                continue  # nothing logged for it: a new log file; don't replay history into it
            since = datetime.fromisoformat(newest.replace("Z", "+00:00"))
            for f in reversed(query_forecasts(self.database, key, since=since, limit=1000)):
                if (iso(f.issued_at), f.model_id) not in seen and f.issued_by not in others:
                    missing.append(f)
        self.forecast_log.write(missing)
        if missing:
            log.info("forecast log caught up after an unclean stop", extra={"lines": len(missing)})
        return len(missing)

    # ---- the bar hook --------------------------------------------------------------------
    async def on_bar(self, bar: Bar, *, forecast: bool = True) -> None:
        """A closed (or backfilled, or amended) bar. New bars extend the window and, when
        `forecast`, ask for a forecast at their boundary."""
        st = self.series.get(bar.series)
        if st is None or bar.series not in self.owned:
            return
        if st.window.fits(bar) in ("gap", "missing"):
            await self.resync(bar.series)  # the bar is stored: the database has it in order
            return
        await self._push(bar, forecast=forecast)

    async def _push(self, bar: Bar, *, forecast: bool) -> None:
        st = self.series[bar.series]
        seen = time.monotonic()
        extended = st.window.push(bar)
        if not extended:
            return
        st.last_close, st.last_bar = bar.close, bar.open_time
        end = bar.open_time + bar.series.step
        metrics.BAR_LAG.labels(str(bar.series)).set(max(0.0, (datetime.now(UTC) - end).total_seconds()))
        if forecast and st.window.ready:
            await self._enqueue(bar.series, bar.open_time, seen)

    async def _enqueue(self, key: SeriesKey, t: datetime, seen: float) -> None:
        st = self.series[key]
        serving = self.book.get(self.config.model_group(key))
        if serving is None or st.last_close is None:
            return
        job = Job(key, serving, st.window.values(), t, st.last_close, seen)
        end = t + key.step  # the boundary: where bars of every interval closing together meet

        def expected() -> int:
            return sum(1 for k in self.owned if self.series[k].window.ready and closes_at(end, k))

        if self._batcher.add(end, key, job, expected):
            await self._flush(end)
        elif end not in self._timers:
            loop = asyncio.get_running_loop()
            self._timers[end] = loop.call_later(
                self.config.forecast.coalesce_ms / 1000, lambda: asyncio.ensure_future(self._flush(end))
            )

    async def _flush(self, t: datetime) -> None:
        """Send boundary `t`'s requests (bar ends, see `_enqueue`) to the batch runner."""
        timer = self._timers.pop(t, None)
        if timer is not None:
            timer.cancel()
        jobs = self._batcher.take(t)
        if not jobs:
            self._settle()
            return
        behind = self.catchup.active  # this batch is part of the backlog or waits behind it
        if self._queue.full() and not behind:  # while catching up, a full queue paces the backlog
            self.stats.queue_full += 1
            metrics.QUEUE_FULL.labels("forecast_batches").inc()
            if self.stats.queue_full % 1000 == 1:  # first time and every 1000th, not every bar
                log.warning("forecast queue full: the model is slower than bars arrive; feed waits",
                            extra={"queued": self._queue.qsize(), "times_full": self.stats.queue_full})
        if behind:
            self.catchup.queued()
        await self._queue.put((jobs, behind))
        metrics.QUEUE_DEPTH.labels("forecast_batches").set(self._queue.qsize())

    # ---- batches -------------------------------------------------------------------------
    async def _run_batches(self) -> None:
        while True:
            item = await self._queue.get()
            metrics.QUEUE_DEPTH.labels("forecast_batches").set(self._queue.qsize())
            if item is None:
                return
            jobs, behind = item
            stored = 0
            try:
                stored = await self._run_batch(jobs, behind=behind)
            except Exception:
                log.exception("forecast batch failed", extra={"series": [str(j.series) for j in jobs]})
            finally:
                self._queue.task_done()
                if behind:
                    self.catchup.stored(stored)
                    self._settle()

    async def _run_batch(self, jobs: list[Job], *, behind: bool = False) -> int:
        """Forecast, store, log, publish and score one batch; returns the forecasts stored.
        `behind`: queued while catching up (its latency is not a live one)."""
        t0 = time.monotonic()
        self.busy_since = t0
        try:
            forecasts = await self.inference.run(forecast_batch, jobs, lambda k: k.step, self.calibration)
            new = await retrying(lambda: self.writer.run(self._store, forecasts), what="forecasts")
        finally:
            self.busy_since = None
        elapsed = time.monotonic() - min(j.closed_at for j in jobs)
        (metrics.CATCHUP_LATENCY if behind else metrics.FORECAST_LATENCY).observe(elapsed)
        self.stats.batches += 1
        self.stats.last_batch_ms = (time.monotonic() - t0) * 1000
        self.stats.duplicates_skipped += len(forecasts) - len(new)
        for f in new:
            st = self.series[f.series]
            st.forecasts += 1
            st.last_forecast = f.issued_at
            self.stats.forecasts += 1
            metrics.FORECASTS.labels(str(f.series), f.model_id).inc()
            assert f.seq is not None  # stored: it has its stream position
            self.broadcast.publish(f.seq, forecast_line(f))
        since = min(j.issued_at - j.series.step * SCORE_LOOKBACK_BARS for j in jobs)
        scored = await retrying(lambda: self.writer.run(self._score, [j.series for j in jobs], since), what="scores")
        self.scorer.watch(scored)
        return len(new)

    def _store(self, forecasts: list[Forecast]) -> list[Forecast]:
        new = store_new_forecasts(self.database, forecasts, fence=self.fence(), once_per_bar=True)
        self.forecast_log.write(new)
        return new

    def _score(self, keys: list[SeriesKey], target_since: datetime | None) -> list[ForecastScore]:
        """The scoring pass over the owned ones of `keys` (writer thread; see `Scorer.run`)."""
        out = self.scorer.run([k for k in keys if k in self.owned], target_since)
        self.stats.scores += len(out)
        return out

    # ---- models --------------------------------------------------------------------------
    async def install(self, group: str) -> ServingModel:
        return await self.models.install(group)

    async def reload(self, group: str) -> Installed:
        return await self.models.reload(group)

    async def idle(self) -> None:
        """Wait until every batch queued so far is forecast, stored and scored."""
        await self._queue.join()

    # ---- shutdown ------------------------------------------------------------------------
    async def drain(self) -> None:
        for t in self._batcher.open_boundaries():
            await self._flush(t)
        if self._runner is not None and not self._runner.done():
            await self._queue.put(None)
            await self._runner

    def close(self) -> None:
        self.inference.shutdown()
        self.writer.shutdown()

    def status(self) -> dict[str, Any]:
        out = {}
        for key, st in self.series.items():
            serving = self.book.get(self.config.model_group(key))
            out[str(key)] = {
                "window_bars": len(st.window),
                "window_ready": st.window.ready,
                "last_bar": st.last_bar,
                "last_close": st.last_close,
                "forecasts_issued": st.forecasts,
                "last_forecast": st.last_forecast,
                "model": serving.model_id if serving else None,
            }
        return out
