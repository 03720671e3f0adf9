"""The read-only HTTP API and `/metrics`, served by uvicorn inside the daemon's own event loop.

Endpoints are plain `def` functions, so FastAPI runs their synchronous SQLAlchemy calls in its
threadpool and the loop that reads the exchange sockets is never blocked. Only the health probe
and the server-sent-event stream run on the loop. Every SQL statement is built by `db/` with bound
parameters; query parameters are validated here and a bad one is a 4xx JSON error, never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

import anyio
import anyio.abc
import orjson
import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from typing_extensions import TypedDict

from daemon import metrics
from daemon.config import ApiConfig
from daemon.feeds import series_key
from daemon.live.forecastlog import forecast_line
from daemon.ops import reports
from db import bars as db_bars
from db.engine import Database
from db.errors import BarcastError, ConfigError, InputError, UnknownNameError
from db.forecasts import StreamPage, stream_after
from db.gaps import list_gaps
from db.records import SeriesKey


def _resolve_lazy_imports() -> None:
    """Import what anyio (>= 4.16) would import lazily, now, on the importing thread.

    anyio loads its submodules on first attribute access, e.g. when the server first streams a
    file (the /docs assets) from a worker thread. Loading a module can parse source with `ast`
    (anyio's own lazy map; pytest's assertion rewriter), and CPython 3.11's parser is not safe
    in two threads at once: it raised `SystemError: AST constructor recursion depth mismatch`
    and the response was cut off, while another thread (TensorFlow's autograph, a test) parsed
    too. Resolving every lazy name once at start removes the race."""
    for module in (anyio, anyio.abc):
        for name in dir(module):
            getattr(module, name, None)


_resolve_lazy_imports()

log = logging.getLogger("barcast.api")

#: Seconds between SSE keep-alive comments (proxies close idle streams).
SSE_KEEPALIVE_S = 15.0
#: What the stream asks an EventSource to wait before it reconnects (`retry:`, milliseconds).
SSE_RETRY_MS = 5000
#: A stream position is a positive 64-bit integer in decimal.
_POSITION_DIGITS = 18


class LiveHooks(Protocol):
    """What the running daemon lends the API; absent when the API serves a database alone.

    `status()` is called on the event loop and must not block: it returns the daemon's live view
    (keys as in the README's status document, e.g. `series` rows with `last_bar`, `last_bar_age_s`,
    `feed`, `champion`, `champion_age_s`; `feeds` per exchange with `connected`, `reconnects`,
    `malformed`; `next_retrain`), plus `ready` (bool) and `reasons` (list of str, why not ready).
    `subscribe()` is registered when called (not on first read) and yields (stream position,
    forecast log object (README "forecast log")) of each forecast as it is issued, positions
    growing; the API closes it (`aclose`) when the client goes away. `stream_issuer()` is whose
    stored forecasts a resumed stream replays (None: all; see `db.forecasts.stream_after`).
    """

    def status(self) -> dict[str, Any]: ...

    def subscribe(self) -> StreamSource: ...

    def stream_issuer(self) -> str | None: ...


class StreamSource(Protocol):
    """A subscription (`daemon.live.broadcast.Subscription`): items in position order; when its
    bounded queue overflowed it drops its oldest and `take_lost()` gives the lowest position
    dropped since the last call (None: nothing lost), which the stream refills from the database."""

    def __aiter__(self) -> AsyncIterator[tuple[int, dict[str, Any]]]: ...

    def take_lost(self) -> int | None: ...

    async def aclose(self) -> None: ...


class ErrorDoc(TypedDict):
    """Every error answer: one line naming what was wrong."""

    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorDoc, "description": "Bad input (a malformed series or event id, an unknown exchange, "
                                            "since after until, ...)"},
    401: {"model": ErrorDoc, "description": "Missing or wrong bearer token (when api.token is set)"},
    404: {"model": ErrorDoc, "description": "A series neither configured nor stored (named, with the known ones)"},
    503: {"model": ErrorDoc, "description": "The database or the daemon cannot answer now"},
}


class ForecastPage(TypedDict):
    limit: int
    count: int
    forecasts: list[reports.ForecastDoc]


class LatestForecasts(TypedDict):
    count: int
    forecasts: list[reports.ForecastDoc]


class GapsPage(TypedDict):
    limit: int
    count: int
    gaps: list[reports.GapDoc]


class AccuracyPage(TypedDict):
    window: str
    since: str | None
    accuracy: list[reports.AccuracyDoc]


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(cfg: ApiConfig) -> None:
    """Refuse to expose the API beyond this machine without a token, unless explicitly allowed."""
    if not is_loopback(cfg.host) and not cfg.token and not cfg.allow_insecure_remote:
        raise ConfigError(
            f"config key api.host: {cfg.host!r} is beyond loopback and api.token is empty; "
            "set api.token, bind 127.0.0.1, or set api.allow_insecure_remote = true"
        )


def _json(data: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


def _series(text_: str | None) -> SeriesKey | None:
    return None if text_ is None else series_key(text_)


EARLIEST = reports.EARLIEST
LATEST = datetime(9998, 12, 31, tzinfo=UTC)


def _aware(t: datetime | None, name: str) -> datetime | None:
    """UTC; any valid time is accepted (the schema allows it), clamped to 1970..9998: before
    1970 means from the beginning, after 9998 until the end."""
    del name
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    try:
        t = t.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 shifted by its offset beyond what datetime holds
        return EARLIEST if t.year < 5000 else LATEST
    return min(max(t, EARLIEST), LATEST)


def _range(since: datetime | None, until: datetime | None) -> tuple[datetime | None, datetime | None]:
    s, u = _aware(since, "since"), _aware(until, "until")
    if s is not None and u is not None and s >= u:
        raise InputError("since must be before until")
    return s, u


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


SeriesParam = Annotated[
    str | None, Query(max_length=64, description="EXCHANGE:SYMBOL[:INTERVAL], e.g. coinbase:BTC-USD")
]
ModelParam = Annotated[str | None, Query(max_length=128, description="Model id")]
SinceParam = Annotated[datetime | None, Query(description="ISO-8601 (naive means UTC) or Unix seconds; inclusive")]
LimitParam = Annotated[int, Query(ge=1, le=1_000_000_000, description="Rows to return (capped at api.max_limit)")]
UntilParam = Annotated[datetime | None, Query(description="ISO-8601 (naive means UTC) or Unix seconds; exclusive")]
LastEventIdParam = Annotated[str | None, Query(
    description="Resume after this event id, for clients that cannot send the Last-Event-ID header (the header wins)")]
LastEventIdHeader = Annotated[str | None, Header(
    alias="Last-Event-ID", description="Resume after this event id (an EventSource sends it when it reconnects)")]


def stream_position(header: str | None, query: str | None) -> int | None:
    """The position a stream resumes after: the Last-Event-ID header, else the `last_event_id`
    parameter (an EventSource reconnecting sends the header with its newest id while its URL
    keeps the old parameter); None (or empty, as the SSE spec resets it) for a fresh stream."""
    text_ = header if header else query
    if not text_:
        return None
    text_ = text_.strip()
    if not text_.isascii() or not text_.isdigit() or len(text_) > _POSITION_DIGITS:
        shown = text_ if len(text_) <= 40 else text_[:40] + "…"
        raise InputError(f"Last-Event-ID {shown!r} is not an event id of this stream "
                         "(a non-negative integer, as the stream's `id:` lines send)")
    return int(text_)


def create_app(
    database: Database,
    *,
    live: LiveHooks | None = None,
    token: str | None = None,
    max_limit: int = 1000,
    series: tuple[SeriesKey, ...] = (),
) -> FastAPI:
    """The API over `database`; with `live`, also the daemon's status, readiness and forecast stream.

    `token`: when set, every endpoint but /health needs `Authorization: Bearer <token>`; the API's
    description (/openapi.json, /docs, /redoc), which holds no data, stays open.
    `series`: the configured series, listed first by /status and /forecasts/latest.
    """
    # Swagger UI and ReDoc assets come from the fastapi-offline wheel (served under
    # /static-offline-docs), not a CDN: the service typically runs on a server without internet.
    app = FastAPIOffline(
        title="barcast",
        summary="Read-only API of the barcast forecaster: forecasts, bars, accuracy, models, status, metrics.",
        version=_version(),
        responses=ERRORS,
    )
    app.state.closing = asyncio.Event()
    configured_series = tuple(series)
    bearer = HTTPBearer(auto_error=False, description="api.token from the config")

    def authorise(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if not token:
            return
        if creds is None or not hmac.compare_digest(creds.credentials.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(authorise)]

    def capped(limit: int) -> int:
        return min(limit, max_limit)

    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError) -> Response:
        return _json({"error": str(exc)}, 400)

    @app.exception_handler(UnknownNameError)
    async def _unknown_name(_: Request, exc: UnknownNameError) -> Response:
        return _json({"error": str(exc)}, 404)

    def known_model(model_id: str | None) -> str | None:
        """A `model` parameter naming no registered or forecasting model is a 404, as the CLI's exit 2."""
        reports.require_model(database, model_id, "model")
        return model_id

    def known(text_: str | None) -> SeriesKey | None:
        """The series a `series` parameter names; one neither configured nor stored is a 404 (as
        the CLI's exit 2), one configured with nothing stored yet an empty answer."""
        key = _series(text_)
        if key is not None:
            reports.require_known(database, configured_series, [key], "series")
        return key

    @app.exception_handler(BarcastError)
    async def _barcast_error(_: Request, exc: BarcastError) -> Response:
        log.warning("API request failed: %s", exc)
        return _json({"error": str(exc)}, 503)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        where = ", ".join(f"{'.'.join(e['loc'][1:] or e['loc'])}: {e['msg']}" for e in errors)
        return _json({"error": f"invalid request: {where}", "detail": errors}, 422)

    # Starlette's class, not FastAPI's subclass: the router's own 404 and 405 are Starlette's, and
    # they too answer {"error": …} rather than {"detail": …}.
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    def database_reasons() -> list[str]:
        try:
            with database.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            return [f"database unreachable: {type(exc).__name__}"]
        return []

    @app.get("/health", tags=["service"],
             responses={503: {"description": "Alive but not ready (reasons in the body)"}})
    async def health() -> Response:
        """Liveness (the process answers) and readiness with the reasons it is not ready."""
        reasons = await run_in_threadpool(database_reasons)
        if live is not None:
            doc = live.status()  # on the loop, as LiveHooks promises
            if not doc.get("ready", True):
                reasons += [str(r) for r in doc.get("reasons", [])] or ["daemon not ready"]
        ready = not reasons
        body = {"live": True, "ready": ready, "reasons": reasons, "mode": "daemon" if live else "database"}
        return _json(body, 200 if ready else 503)

    @app.get("/forecasts", tags=["forecasts"], dependencies=auth)
    def forecasts(
        series: SeriesParam = None, model: ModelParam = None, since: SinceParam = None, until: UntilParam = None,
        limit: LimitParam = 100,
    ) -> ForecastPage:
        """Stored forecasts, newest issued first, with their served quantiles, and realised closes and
        errors where targets closed."""
        s, u = _range(since, until)
        lim = capped(limit)
        docs = reports.forecast_docs(database, known(series), since=s, until=u, model_id=known_model(model),
                                     limit=lim)
        return {"limit": lim, "count": len(docs), "forecasts": docs}

    @app.get("/forecasts/latest", tags=["forecasts"], dependencies=auth)
    def forecasts_latest(series: SeriesParam = None, model: ModelParam = None) -> LatestForecasts:
        """The newest forecast of each series (or of one)."""
        key = known(series)
        keys = [key] if key else reports.known_series(database, configured_series)
        docs = reports.latest_docs(database, keys, model_id=known_model(model))
        return {"count": len(docs), "forecasts": docs}

    @app.get("/forecasts/stream", tags=["forecasts"], dependencies=auth,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "One `forecast` event per forecast issued (id: its stream "
                                             "position; data: forecast log object: closes, levels and the "
                                             "served quantiles per step); after a Last-Event-ID, the stored "
                                             "forecasts after it first (at most api.max_limit, a `truncated` "
                                             "event when more were missed)"},
                        503: {"description": "No live daemon behind this API"}})
    async def forecasts_stream(request: Request, series: SeriesParam = None,
                               last_event_id: LastEventIdParam = None,
                               last_event_id_header: LastEventIdHeader = None) -> Response:
        """Server-sent events: each forecast as the daemon issues it (keep-alive comments in between);
        a client resuming with Last-Event-ID first gets the stored forecasts it missed."""
        key = _series(series)
        if live is None:
            return _json({"error": "no live daemon: the forecast stream needs `barcast run`"}, 503)
        key = await run_in_threadpool(known, series)
        after = stream_position(last_event_id_header, last_event_id)
        issuer = live.stream_issuer()

        async def replay(after: int) -> StreamPage:
            """The stored forecasts after `after` in this stream's scope: for a resume, and to
            refill what a slow client's subscription dropped (the same read and bound)."""
            return await run_in_threadpool(
                stream_after, database, after, series=key, issued_by=issuer, limit=max_limit)

        source = live.subscribe()  # before the database is read: nothing issued meanwhile falls between
        page = None
        if after is not None:
            try:
                page = await replay(after)
            except BaseException:
                await source.aclose()
                raise
        closing: asyncio.Event = request.app.state.closing
        return StreamingResponse(
            _sse(source, key, closing, replay, after, page), media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get("/bars", tags=["bars"], dependencies=auth)
    def bars(
        series: Annotated[str, Query(max_length=64, description="EXCHANGE:SYMBOL[:INTERVAL]")],
        since: SinceParam = None, until: UntilParam = None, limit: LimitParam = 288,
    ) -> dict[str, Any]:
        """Stored bars of one series; the newest `limit` unless `since` is given (then oldest first from it)."""
        key = known(series)
        assert key is not None  # required
        s, u = _range(since, until)
        lim = capped(limit)
        if s is None:
            found = list(reversed(db_bars.read_bars(database, key, until=u, limit=lim, newest_first=True)))
        else:
            found = db_bars.read_bars(database, key, since=s, until=u, limit=lim)
        return {"series": str(key), "limit": lim, "count": len(found), "bars": [reports.bar_doc(b) for b in found]}

    @app.get("/gaps", tags=["bars"], dependencies=auth)
    def gaps(
        series: SeriesParam = None,
        unfilled: Annotated[bool, Query(description="Only gaps no backfill has filled yet")] = False,
        limit: LimitParam = 100,
    ) -> GapsPage:
        """Recorded feed gaps, newest first: the bars a feed missed across a reconnect or restart,
        and how many the REST backfill stored (`bars_filled`, null until filled)."""
        key = known(series)
        lim = capped(limit)
        found = list_gaps(database, [key] if key else [], unfilled=unfilled, limit=lim)
        return {"limit": lim, "count": len(found), "gaps": [reports.gap_doc(g) for g in found]}

    @app.get("/accuracy", tags=["forecasts"], dependencies=auth)
    def accuracy(
        series: SeriesParam = None, model: ModelParam = None,
        window: Annotated[str, Query(max_length=16, description="30m, 12h, 7d … or all")] = "7d",
    ) -> AccuracyPage:
        """Live MAE per series, model and step against persistence on the same bars, with pinball loss
        per level, WIS, central-interval coverage and width."""
        span = reports.parse_window(window)
        key = known(series)
        known_model(model)
        since = reports.window_since(database, span, series=key, model_id=model)
        docs = reports.accuracy_docs(database, series=key, model_id=model, since=since)
        return {"window": window, "since": reports.iso(since), "accuracy": docs}

    @app.get("/models", tags=["models"], dependencies=auth)
    def models(
        series: SeriesParam = None,
        status: Annotated[str | None, Query(pattern="^(candidate|champion|retired)$")] = None,
    ) -> dict[str, Any]:
        """The model registry, newest first, with which series each model serves."""
        docs = reports.model_docs(database, series=known(series), status=status)
        return {"count": len(docs), "models": docs}

    @app.get("/status", tags=["service"], dependencies=auth)
    async def status() -> dict[str, Any]:
        """Per series last bar and age, feed state, champion and age, next retrain, database size."""
        doc = await run_in_threadpool(reports.status_from_database, database, configured_series)
        return reports.merge_status(doc, live.status()) if live is not None else doc

    @app.get("/metrics", tags=["service"], dependencies=auth,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text exposition"}})
    def prometheus() -> Response:
        """Prometheus metrics of this process."""
        rss = _rss_bytes()
        if rss is not None:
            metrics.RSS.set(rss)
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


def _matches(obj: dict[str, Any], key: SeriesKey | None) -> bool:
    return key is None or (obj.get("exchange"), obj.get("symbol"), obj.get("interval")) == (
        key.exchange, key.symbol, key.interval)


def _event(seq: int, obj: dict[str, Any]) -> bytes:
    return b"id: %d\nevent: forecast\ndata: " % seq + orjson.dumps(obj) + b"\n\n"


def _replayed(after: int, page: StreamPage) -> Iterator[bytes]:
    """The events of a replay after position `after`: `truncated` first when the bound left some out."""
    if page.skipped:
        first = page.forecasts[0].seq if page.forecasts else None
        note = {"last_event_id": after, "skipped": page.skipped, "replayed": len(page.forecasts),
                "resumed_at": first}
        yield b"event: truncated\ndata: " + orjson.dumps(note) + b"\n\n"
    for f in page.forecasts:
        assert f.seq is not None
        yield _event(f.seq, forecast_line(f))


async def _sse(
    source: StreamSource, key: SeriesKey | None, closing: asyncio.Event,
    replay: Callable[[int], Awaitable[StreamPage]], after: int | None = None, page: StreamPage | None = None,
) -> AsyncIterator[bytes]:
    """Relay forecast objects as SSE; the pending `__anext__` survives keep-alive timeouts.

    `floor` is the position the stream has accounted for: live items at or below it are dropped
    (sent already, or read with a replay, or left out by its bound). With `page` (a client resuming
    after position `after`) its stored forecasts go first. When the subscription lost items (a slow
    client), the stream replays after `floor` the same way before it goes on, so none is missing."""
    yield b"retry: %d\n: barcast forecast stream\n\n" % SSE_RETRY_MS
    floor: int | None = None
    if page is not None and after is not None:
        for chunk in _replayed(after, page):
            yield chunk
        floor = page.top
    it = aiter(source)
    stop: asyncio.Future[Any] = asyncio.ensure_future(closing.wait())
    nxt: asyncio.Future[Any] | None = None
    try:
        while True:
            if nxt is None:
                nxt = asyncio.ensure_future(anext(it))
            done, _ = await asyncio.wait({nxt, stop}, timeout=SSE_KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED)
            if stop in done:
                return
            if nxt not in done:
                yield b": keep-alive\n\n"
                continue
            try:
                seq, obj = nxt.result()
            except StopAsyncIteration:
                return
            nxt = None
            lost = source.take_lost()
            if floor is None:  # a fresh stream starts just before the first item it was handed or lost
                floor = min(seq, seq if lost is None else lost) - 1
            if lost is not None:
                metrics.STREAM_REFILLS.inc()
                try:
                    refill = await replay(floor)
                except Exception as exc:  # the client reconnects with its last id and resumes
                    log.warning("forecast stream: could not read the forecasts a slow client lost from "
                                "the database (%s); closing the stream, the client resumes", exc)
                    return
                for chunk in _replayed(floor, refill):
                    yield chunk
                floor = max(floor, refill.top)
            if seq <= floor:
                continue
            floor = seq
            if _matches(obj, key):
                yield _event(seq, obj)
    finally:
        stop.cancel()
        if nxt is not None and not nxt.done():
            nxt.cancel()
            with contextlib.suppress(BaseException):
                await nxt
        with contextlib.suppress(Exception):
            await source.aclose()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("barcast")
    except PackageNotFoundError:
        return "0"


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the daemon owns SIGTERM/SIGINT/SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ApiServer:
    """uvicorn serving `app` on the caller's event loop.

    `bind()` opens the listening socket up front (so a busy port is a clear BarcastError at
    start-up, and port 0 gets a free port: see `.port`); `serve()` runs until `stop()` or until its
    task is cancelled, and in both cases closes the socket and ends open streams (at most
    `grace_s` for in-flight requests) before returning.
    """

    def __init__(self, app: FastAPI, host: str, port: int, *, grace_s: int = 2) -> None:
        self.app = app
        self.host = host
        self.port = port
        config = uvicorn.Config(
            app, host=host, port=port, lifespan="off", access_log=False, log_config=None,
            timeout_graceful_shutdown=grace_s, server_header=False,
        )
        self.server: uvicorn.Server = _EmbeddedServer(config)
        self._sock: socket.socket | None = None

    def bind(self) -> None:
        if self._sock is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host.strip("[]"), self.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise BarcastError(f"HTTP API: cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        self._sock = sock
        self.port = sock.getsockname()[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True

    async def serve(self) -> None:
        self.bind()
        assert self._sock is not None
        closing: asyncio.Event = self.app.state.closing

        async def watch() -> None:
            while not self.server.should_exit:
                await asyncio.sleep(0.1)
            closing.set()

        watcher = asyncio.ensure_future(watch())
        task = asyncio.ensure_future(self.server.serve(sockets=[self._sock]))
        log.info("HTTP API listening", extra={"url": self.url})
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            self.stop()
            with contextlib.suppress(BaseException):
                await task
            raise
        except SystemExit:
            raise BarcastError(f"HTTP API on {self.url} failed to start") from None
        finally:
            watcher.cancel()
            closing.set()
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def api_server(
    cfg: ApiConfig, database: Database, *, live: LiveHooks | None = None, series: tuple[SeriesKey, ...] = ()
) -> ApiServer:
    """Check the config (loopback or token), build the app and bind: what `barcast run` calls."""
    check_bind(cfg)
    app = create_app(database, live=live, token=cfg.token or None, max_limit=cfg.max_limit, series=series)
    server = ApiServer(app, cfg.host, cfg.port)
    server.bind()
    return server


async def serve_api(app: FastAPI, host: str, port: int) -> None:
    """Serve `app` until cancelled (convenience around ApiServer for callers that need no handle)."""
    await ApiServer(app, host, port).serve()
