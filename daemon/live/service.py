"""`barcast run`: the long-running service, wiring ingest, pipeline, retraining, API and systemd.

Start-up order: device and database, persistence baseline registered, windows restored, models
loaded (EXTEND_TIMEOUT while TensorFlow loads), control socket and HTTP API bound, then the feeds;
READY=1 once all of that stands. SIGTERM/SIGINT stop it: feeds stop (bars that ended are closed
and stored), queued forecasts drain, a training child is abandoned, logs are flushed; exit 0
within `service.shutdown_timeout_s`. SIGHUP reopens the forecast log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from daemon import metrics
from daemon.bars import BarUpdate
from daemon.compiled import hot_path_build
from daemon.config import Config
from daemon.live.broadcast import Broadcast, Subscription
from daemon.live.champions import ChampionWatch, first_series
from daemon.live.control import ControlServer
from daemon.live.dbretry import retrying
from daemon.live.device import DeviceInfo, current, select_device
from daemon.live.forecastlog import ForecastLog
from daemon.live.inference import ModelBook
from daemon.live.membership import Membership
from daemon.live.notify import Notifier, watchdog_interval
from daemon.live.pipeline import Pipeline
from daemon.live.pruner import Pruner
from daemon.live.retrainer import Retrainer, needs_initial_model, retrain_answer
from db import registry
from db.engine import Database, open_database
from db.errors import InputError
from db.records import Bar, SeriesKey
from db.stats import database_size_bytes
from trainer.retrain_job import RetrainOutcome, ensure_baseline

log = logging.getLogger("barcast.service")

#: Seconds a shutdown that timed out still spends handing its series on (`Membership.leave`).
LEAVE_TIMEOUT_S = 5.0
#: /health is not ready while a feed has been silent this many `feeds.stall_timeout_s`.
FEED_SILENCE_FACTOR = 3


class Service:
    def __init__(self, config: Config, *, clock: Callable[[], float] | str | None = "config",
                 notifier: Notifier | None = None,
                 on_bars: Callable[[list[BarUpdate]], Awaitable[None]] | None = None) -> None:
        self.config = config
        self.clock = clock
        self.extra_on_bars = on_bars
        self.notifier = notifier or Notifier()
        self.stop_event = asyncio.Event()
        self.database: Database | None = None
        self.pipeline: Pipeline | None = None
        self.retrainer: Retrainer | None = None
        self.pruner: Pruner | None = None
        self.ingest: Any = None
        self.api: Any = None
        self.control: ControlServer | None = None
        self.device: DeviceInfo | None = None
        self.broadcast = Broadcast()
        self.started_at = datetime.now(UTC)
        self._started_mono = time.monotonic()
        self.ready = False
        self._tasks: list[asyncio.Task[Any]] = []
        self.membership: Membership | None = None
        self.champions: ChampionWatch | None = None
        self._ingest_task: asyncio.Task[None] | None = None
        self._ownership_lock = asyncio.Lock()
        #: The model each series' champion-age gauge is labelled with (one label set per series).
        self._age_model: dict[SeriesKey, str] = {}

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        self.notifier.extend_timeout(180)
        self.notifier.status("starting: database")
        self.device = select_device(cfg.forecast.device)
        self.database = db = await asyncio.to_thread(open_database, cfg.database_url)
        log.info("database open", extra={"url": db.display_url})
        await asyncio.to_thread(ensure_baseline, db, cfg.series_keys)
        flog = ForecastLog(cfg.forecast_log, max_bytes=cfg.forecast.log_max_bytes,
                           max_age_s=cfg.forecast.log_max_age_hours * 3600, backups=cfg.forecast.log_backups)
        self.membership = member = Membership(
            db, cfg.instance_id, cfg.series_keys, solo=cfg.cluster_solo, heartbeat_s=cfg.cluster.heartbeat_s,
            ttl_s=cfg.cluster.lease_ttl_s)
        metrics.INSTANCE.labels(member.id, "solo" if member.solo else "shared").set(1)
        self.pipeline = pipe = Pipeline(cfg, db, book=ModelBook(), forecast_log=flog, broadcast=self.broadcast,
                                        fence=lambda: member.fence, owned=())
        await asyncio.to_thread(lambda: pipe.reconcile_log(member.others_alive()))
        pipe.start()
        self.control = ControlServer(cfg.control_socket, self._control)
        await self.control.start()
        if cfg.api.enabled:
            from daemon.ops.api import ApiServer, check_bind, create_app

            check_bind(cfg.api)
            app = create_app(db, live=self, token=cfg.api.token or None, max_limit=cfg.api.max_limit,
                             series=tuple(cfg.series_keys))
            self.api = ApiServer(app, cfg.api.host, cfg.api.port)
            self.api.bind()
            self._spawn(self.api.serve(), "api")
            member.set_info(api=self.api.url)
        self.notifier.status("starting: loading models")
        self.notifier.extend_timeout(300)
        member.on_change = self._ownership_changed
        await member.round()  # solo: every series is ours now; shared: heartbeat, claims next round
        await member.idle()
        self._spawn(member.run(), "membership")
        self.champions = ChampionWatch(
            db, lambda: first_series({cfg.model_group(k) for k in pipe.owned}, cfg.group_series),
            lambda g: (m.model_id if (m := pipe.book.get(g)) else None), self._reload,
            every_s=cfg.cluster.heartbeat_s)
        self._spawn(self.champions.run(), "champions")
        if cfg.retrain.enabled:
            self.retrainer = Retrainer(cfg, db, self._promoted, fence=lambda: member.fence, instance=member.id)
            initial = await asyncio.to_thread(needs_initial_model, db, cfg) if cfg.retrain.initial else []
            self.retrainer.start(initial_groups=initial)
        if cfg.retention.enabled:
            self.pruner = Pruner(cfg, db, owner=member.id)
            self.pruner.start()
        self._spawn(self._watchdog(), "watchdog")
        self.ready = True
        self.notifier.ready(self._status_line())
        log.info("barcast running", extra={"series": [str(k) for k in cfg.series_keys],
                                           "device": self._device().describe(), "forecast_log": str(cfg.forecast_log),
                                           "api": self.api.url if self.api else None,
                                           "control": str(cfg.control_socket), "hot_path": hot_path_build()})

    def _device(self) -> DeviceInfo:
        """The serving device, detected once a network model has loaded the backend (`auto`)."""
        assert self.device is not None
        self.device = current(self.device)
        return self.device

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def _run_ingest(self, ingest: Any) -> None:
        try:
            await ingest.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ingest failed; stopping the service so systemd restarts it")
            self.stop_event.set()

    async def _ownership_changed(self, gained: set[SeriesKey], lost: set[SeriesKey]) -> None:
        """Series taken over or handed on: the pipeline serves the owned ones, the ingest runs
        exactly their feeds (a series gained resumes after its newest stored bar, so a series
        handed over loses no bar), and what the previous owner left is caught up.

        The database briefly away (a PostgreSQL restart) is waited out, step by step: nothing
        else would apply the change again, and the series gained would get no bars and no
        forecasts from anyone while their leases stay ours. Each step is safe to repeat (adopt
        restores the windows afresh and marks them owned last; a catch-up repeated scores and
        forecasts nothing twice: stored once per bar). Changes handed out meanwhile queue behind
        the lock, in order; a series lost meanwhile (no longer in the fence) is not adopted; a
        stop gives up the wait."""
        assert self.pipeline is not None and self.membership is not None
        member = self.membership
        async with self._ownership_lock:
            pipe = self.pipeline
            pipe.drop(lost)

            def ours() -> set[SeriesKey]:
                return gained & member.owned

            async def step(call: Callable[[], Awaitable[None]], what: str) -> None:
                await retrying(call, what=what, until=self.stop_event)

            t0 = time.monotonic()
            await step(lambda: pipe.adopt(ours()), "adopt")
            if gained:
                log.info("series adopted", extra={"series": len(ours()), "owned": len(pipe.owned),
                                                  "seconds": round(time.monotonic() - t0, 2)})
            await step(lambda: pipe.catch_up(ours()), "catch_up")  # before the feeds: stored bars first, in order
            await self._retarget_ingest(set(pipe.owned))

    async def _retarget_ingest(self, owned: set[SeriesKey]) -> None:
        """The ingest runs exactly the `owned` series' feeds, changing only what changed: a
        series handed on leaves its connection (one left with none closes), the series gained
        start on a new connection per exchange, restored from the database as at a start. The
        series kept keep their connection and bar in progress: a daemon joining or leaving the
        cluster costs them no gap (a restart of every feed cost every series a 1-bar gap)."""
        from daemon.ingest import Ingest, specs_from_config

        running = owned and not self.stop_event.is_set()
        if self.ingest is not None and running:
            have = set(self.ingest.series)
            await self.ingest.drop(have - owned)
            await self.ingest.add(specs_from_config(self.config, owned - have))
            return
        if self.ingest is not None:
            self.ingest.stop()
            if self._ingest_task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(self._ingest_task, 10)
            self.ingest = None
        if not running:
            return
        assert self.pipeline is not None and self.database is not None and self.membership is not None
        member = self.membership
        self.ingest = ingest = Ingest.from_config(
            self.config, database=self.database, clock=self.clock, on_bars=self._on_bars,
            db_call=self.pipeline.writer.run, fence=lambda: member.fence, only=owned)
        self._ingest_task = asyncio.create_task(self._run_ingest(ingest), name="ingest")

    async def run(self) -> None:
        """Start, serve until a stop signal, shut down cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        loop.add_signal_handler(signal.SIGHUP, self._reopen)
        try:
            await self.start()
            await self.stop_event.wait()
        finally:
            await self.shutdown()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    def _reopen(self) -> None:
        if self.pipeline is not None:
            self.pipeline.forecast_log.reopen()
            log.info("SIGHUP: forecast log reopened")

    async def shutdown(self) -> None:
        self.notifier.stopping()
        log.info("stopping")
        timeout = self.config.service.shutdown_timeout_s
        try:
            await asyncio.wait_for(self._shutdown(), timeout)
        except TimeoutError:
            log.error("shutdown timed out; abandoning what is left", extra={"timeout_s": timeout})
            await self._leave_now()
        finally:
            if self.pipeline is not None:
                self.pipeline.forecast_log.close()
            if self.database is not None:
                self.database.close()
            self.notifier.close()
        log.info("stopped")

    async def _leave_now(self) -> None:
        """After an abandoned shutdown, still hand the series on at once rather than after the
        lease TTL; whatever was abandoned can no longer write (its fence is gone with the lease)."""
        if self.membership is None:
            return
        try:
            await asyncio.wait_for(self.membership.leave(), LEAVE_TIMEOUT_S)
        except Exception as exc:  # the database is away too: the leases run out on their own
            log.warning("could not release series leases", extra={"error": str(exc) or type(exc).__name__})

    async def _shutdown(self) -> None:
        if self.ingest is not None:
            self.ingest.stop()
        if self.retrainer is not None:
            await self.retrainer.stop()
        if self.pruner is not None:
            await self.pruner.stop()
        if self.api is not None:
            self.api.stop()
        for t in self._tasks:
            if t.get_name() == "membership":
                t.cancel()
        async with self._ownership_lock:  # no ingest restarted behind our back
            if self._ingest_task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(self._ingest_task, 10)
        if self.pipeline is not None:
            await self.pipeline.drain()
            await asyncio.to_thread(self.pipeline.close)
        if self.membership is not None:  # hand every series on at once, not after the TTL
            try:
                await self.membership.leave()
            except Exception as exc:
                log.warning("could not release series leases", extra={"error": str(exc)})
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.control is not None:
            await self.control.stop()

    # ---- data path -----------------------------------------------------------------------
    async def _on_bars(self, updates: list[BarUpdate]) -> None:
        """Stored bars from the ingest. A bar entering a window as its newest bar gets a forecast,
        except backfilled history older than `forecast.backfill_forecast_bars` before the newest
        bar of its backfill: the range's last bar, not this page's (measured per page, a 30-day
        backfill of 300-candle pages forecast nearly every bar of history). Backfilled bars to
        forecast did not arrive live: the pipeline catches up on them (`catching_up`)."""
        assert self.pipeline is not None
        reach = self.config.forecast.backfill_forecast_bars
        newest: dict[SeriesKey, datetime] = {}
        for u in updates:
            k = u.bar.series
            t = u.bar.open_time if u.range_end is None else max(u.bar.open_time, u.range_end - k.step)
            if k not in newest or t > newest[k]:
                newest[k] = t
        todo: list[tuple[Bar, bool]] = []
        behind: list[SeriesKey] = []
        for u in updates:
            b = u.bar
            recent = u.kind != "backfilled" or b.open_time > newest[b.series] - b.series.step * reach
            todo.append((b, recent))
            if recent and u.kind == "backfilled":
                behind.append(b.series)
        with self.pipeline.catching_up(len(behind), "backfill", set(behind)):
            for b, recent in todo:
                await self.pipeline.on_bar(b, forecast=recent)
        if self.extra_on_bars is not None:
            await self.extra_on_bars(updates)

    async def _promoted(self, group: str, outcome: RetrainOutcome) -> None:
        await self._reload(group)

    async def _reload(self, group: str) -> None:
        assert self.pipeline is not None
        await self.pipeline.install(group)
        self.notifier.status(self._status_line())

    # ---- control channel -----------------------------------------------------------------
    async def _control(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd == "reload":
            assert self.pipeline is not None
            done = [await self.pipeline.reload(g) for g in self._groups_for(None)]
            self.notifier.status(self._status_line())
            failed = [d for d in done if d.error is not None]
            answer: dict[str, Any] = {"ok": not failed, "serving": [d.serving.model_id for d in done],
                                      "groups": [d.as_dict() for d in done]}
            if failed:
                answer["error"] = "; ".join(f"{d.group}: {d.error} (still serving {d.serving.model_id})"
                                            for d in failed)
            return answer
        if cmd == "retrain":
            if self.retrainer is None:
                return {"ok": False, "disabled": True,
                        "error": "retraining is disabled in this daemon's config (retrain.enabled)"}
            groups = self._groups_for(req.get("series"))
            if req.get("wait"):
                return retrain_answer([await self.retrainer.retrain(g, reason="manual", hurry=True) for g in groups])
            started = [g for g in groups if self.retrainer.owns(g)]
            for g in started:
                self.retrainer.trigger(g, reason="manual", hurry=True)
            answer = {"ok": len(started) == len(groups), "started": started}
            if not answer["ok"]:  # nothing would run here: say so rather than "started"
                answer["error"] = "; ".join(f"{g}: another daemon owns the group's first series and retrains it"
                                            for g in groups if g not in started)
            return answer
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _groups_for(self, series: str | None) -> list[str]:
        cfg = self.config
        if not series:
            return list(dict.fromkeys(cfg.model_group(k) for k in cfg.series_keys))
        key = SeriesKey.parse(series)
        if key not in cfg.series_keys:
            raise InputError(f"series {key} is not served by this daemon (configured: "
                             f"{', '.join(str(k) for k in cfg.series_keys)})")
        return [cfg.model_group(key)]

    # ---- status, health --------------------------------------------------------------------
    def subscribe(self) -> Subscription:
        return self.broadcast.subscribe()

    def stream_issuer(self) -> str | None:
        """Whose stored forecasts a resumed stream replays: this daemon's where daemons share the
        database (its stream carries only what it issues), every one where it is alone."""
        member = self.membership
        return None if member is None or member.solo else member.id

    def _silence(self, feed: Any) -> float:
        """Seconds since the feed's last message (since the service started if none yet)."""
        last = feed.session.last_message_mono
        return time.monotonic() - (self._started_mono if last is None else last)

    def _silent_feeds(self) -> list[str]:
        """Readiness: a feed with no message (heartbeats count) for FEED_SILENCE_FACTOR stall
        timeouts cannot be feeding bars; it is named in /health's reasons."""
        if self.ingest is None:
            return []
        limit = FEED_SILENCE_FACTOR * self.config.feeds.stall_timeout_s
        return [f"feed {f.spec.exchange}: no message for {self._silence(f):.0f} s (limit {limit:g} s)"
                for f in self.ingest.feeds if self._silence(f) > limit]

    def _feeds(self) -> dict[str, Any]:
        """Per exchange. Series taken over while running have a connection of their own: an
        exchange with several is connected only while all are, silent as long as the most
        silent one, and its counters are their sums."""
        if self.ingest is None:
            return {}
        out: dict[str, Any] = {}
        for f in self.ingest.feeds:
            conn = f.connection
            row = {
                "connected": bool(getattr(conn, "connected", False)),
                "last_message_age_s": round(self._silence(f), 1),
                "reconnects": conn.reconnects,
                "malformed": sum(f.stats.malformed.values()),
                "malformed_by_reason": dict(f.stats.malformed),
                "trades": f.stats.trades,
                "backfilled_bars": f.stats.backfilled_bars,
                "refused": {str(s.key): r for s in f.series if (r := f.session.refused_reason(s.key)) is not None},
            }
            prev = out.setdefault(f.spec.exchange, row)
            if prev is not row:
                prev["connected"] = prev["connected"] and row["connected"]
                prev["last_message_age_s"] = max(prev["last_message_age_s"], row["last_message_age_s"])
                for k in ("reconnects", "malformed", "trades", "backfilled_bars"):
                    prev[k] += row[k]
                for reason, n in row["malformed_by_reason"].items():
                    prev["malformed_by_reason"][reason] = prev["malformed_by_reason"].get(reason, 0) + n
                prev["refused"].update(row["refused"])
        return out

    def _connected(self) -> dict[SeriesKey, bool]:
        """Whether each ingested series' own connection is open."""
        if self.ingest is None:
            return {}
        return {s.key: bool(getattr(f.connection, "connected", False)) for f in self.ingest.feeds for s in f.series}

    def _refused_series(self) -> list[str]:
        """Readiness: a series whose symbol the exchange refuses gets no bars; named with the
        exchange's reason in /health's reasons (the rest of its feed goes on)."""
        if self.ingest is None:
            return []
        return [f"series {s.key}: subscription refused by {f.spec.exchange}: {r}"
                for f in self.ingest.feeds for s in f.series if (r := f.session.refused_reason(s.key)) is not None]

    @staticmethod
    def _feed_state(key: SeriesKey, feeds: dict[str, Any], connected: dict[SeriesKey, bool]) -> str:
        """A series' feed: connected, disconnected (its own connection), or refused (with the
        exchange's reason)."""
        feed = feeds.get(key.exchange, {})
        refused = feed.get("refused", {}).get(str(key))
        if refused is not None:
            return f"refused: {refused}"
        return "connected" if connected.get(key, feed.get("connected")) else "disconnected"

    def status(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        feeds = self._feeds()
        connected = self._connected()
        rows = []
        pipe = self.pipeline
        pipe_status = pipe.status() if pipe else {}
        owned = pipe.owned if pipe else set()
        for key in self.config.series_keys:
            row: dict[str, Any] = {"series": str(key), **(self.membership.lease_of(key) if self.membership else {})}
            # Only what this daemon serves is its to tell; another daemon's series (or one it
            # handed on, whose window froze then) keep the database's values (`merge_status`).
            if key in owned:
                st = pipe_status.get(str(key), {})
                last = st.get("last_bar")
                row.update({
                    "last_bar": last,
                    "last_bar_age_s": (now - (last + key.step)).total_seconds() if last else None,
                    "feed": self._feed_state(key, feeds, connected),
                    "champion": st.get("model"),
                    "window_ready": st.get("window_ready"),
                    "forecasts_issued": st.get("forecasts_issued"),
                    "last_forecast": st.get("last_forecast"),
                })
            rows.append(row)
        reasons = []
        if not self.ready:
            reasons.append("starting")
        if pipe is not None and pipe.busy_since and time.monotonic() - pipe.busy_since > 120:
            reasons.append("forecast batch running for more than 120 s")
        reasons += self._silent_feeds()
        reasons += self._refused_series()
        next_run = self.retrainer.next_run() if self.retrainer else None
        return {
            "ready": not reasons,
            "reasons": reasons,
            "started_at": self.started_at,
            "device": self._device().describe() if self.device else None,
            "series": rows,
            "feeds": feeds,
            "next_retrain": next_run,
            "retention": self._retention(),
            "training": sorted(self.retrainer.running) if self.retrainer else [],
            "retrain_history": [vars(r) for r in self.retrainer.history[-10:]] if self.retrainer else [],
            "forecasts_issued": pipe.stats.forecasts if pipe else 0,
            "catch_up": pipe.catchup.status(time.monotonic()) if pipe else None,
            "pid": os.getpid(),
            "cluster": self.membership.status() if self.membership else None,
        }

    def _retention(self) -> dict[str, Any]:
        """Retention as `status` shows it: on or off, the next prune and what the last one deleted."""
        r = self.config.retention
        return {"enabled": r.enabled, "forecasts_days": r.forecasts_days, "jobs_days": r.jobs_days,
                "models_days": r.models_days, "gaps_days": r.gaps_days,
                "next_prune": self.pruner.next_run() if self.pruner else None,
                "last_prune": self.pruner.last if self.pruner else None}

    def _status_line(self) -> str:
        parts = []
        if self.pipeline is not None:
            for key, st in self.pipeline.series.items():
                serving = self.pipeline.book.get(self.config.model_group(key))
                last = st.last_bar.strftime("%H:%M") if st.last_bar else "-"
                parts.append(f"{key.exchange}:{key.symbol} last {last} model {serving.model_id if serving else '-'}")
        return "; ".join(parts) or "no series"

    async def _watchdog(self) -> None:
        """WATCHDOG=1 at half WATCHDOG_USEC, only while the loop and the forecaster are healthy;
        STATUS= refreshed on the way. Also refreshes gauges that age (champion age, RSS)."""
        every = watchdog_interval() or 15.0
        while True:
            healthy = not (self.pipeline and self.pipeline.busy_since
                           and time.monotonic() - self.pipeline.busy_since > max(60.0, every * 4))
            if healthy:
                self.notifier.watchdog()
            self.notifier.status(self._status_line())
            await asyncio.to_thread(self._refresh_gauges)
            await asyncio.sleep(every)

    def _refresh_gauges(self) -> None:
        if self.database is None or self.pipeline is None:
            return
        now = datetime.now(UTC)
        for key in self.config.series_keys:
            since = registry.champion_since(self.database, key)
            serving = self.pipeline.book.get(self.config.model_group(key))
            if since is not None and serving is not None:
                metrics.CHAMPION_AGE.labels(str(key), serving.model_id).set((now - since).total_seconds())
                before = self._age_model.get(key)
                if before is not None and before != serving.model_id:
                    metrics.CHAMPION_AGE.remove(str(key), before)  # the old champion's age stopped counting
                self._age_model[key] = serving.model_id
        size = database_size_bytes(self.database)
        if size is not None:
            metrics.DB_SIZE.set(size)


async def run_service(config: Config, **kwargs: Any) -> None:
    await Service(config, **kwargs).run()

