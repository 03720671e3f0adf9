"""REST candle backfill: paged, rate-limited, retried, exact.

Uses urllib in a worker thread (no extra dependency; one request at a time per exchange anyway).
Pages are windows of the exchange's maximum candle count; each window's candles are kept only
inside [start, end), so exchanges that return more (Kraken pages by `since` only) or include the
end candle (Coinbase) give the same result.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable

from daemon import metrics
from daemon.feeds.base import BadMessage, Candle, ExchangeProtocol
from daemon.feeds.fields import us
from db.errors import BarcastError
from db.records import Bar, SeriesKey, utc_from_unix

log = logging.getLogger("barcast.backfill")


class BackfillError(BarcastError):
    """The exchange's REST endpoint failed or answered something that is not candles.
    `refused`: it said the symbol is not listed (its reason; `ExchangeProtocol.rest_refusal`)."""

    def __init__(self, message: str, refused: str | None = None) -> None:
        super().__init__(message)
        self.refused = refused


class RestClient:
    """One exchange's REST base URL with a minimum interval between requests and retries."""

    def __init__(
        self,
        protocol: ExchangeProtocol,
        base_url: str | None = None,
        *,
        timeout_s: float = 15.0,
        min_interval_s: float | None = None,
        attempts: int = 4,
        retry_base_s: float = 0.5,
    ) -> None:
        self.protocol = protocol
        self.base_url = (base_url or protocol.rest_url).rstrip("/")
        self.timeout_s = timeout_s
        self.min_interval_s = protocol.rest_min_interval_s if min_interval_s is None else min_interval_s
        self.attempts = attempts
        self.retry_base_s = retry_base_s
        self.requests = 0
        self._lock = asyncio.Lock()
        self._last = 0.0

    def _get_sync(self, url: str) -> bytes:
        req = urllib.request.Request(url, headers={"User-Agent": "barcast/0.1", "Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            body: bytes = resp.read()
            return body

    async def get(self, path: str) -> bytes:
        url = self.base_url + path
        last_error = ""
        for attempt in range(self.attempts):
            async with self._lock:
                wait = self._last + self.min_interval_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._last = time.monotonic()
                self.requests += 1
                try:
                    return await asyncio.to_thread(self._get_sync, url)
                except urllib.error.HTTPError as exc:
                    last_error = f"HTTP {exc.code}"
                    if exc.code not in (408, 418, 425, 429, 500, 502, 503, 504):
                        refused = self.protocol.rest_refusal(exc.code, _body(exc))
                        if refused is not None:
                            raise BackfillError(f"{self.protocol.name} REST {url}: {refused}", refused) from None
                        break
                except (urllib.error.URLError, OSError, TimeoutError) as exc:
                    last_error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            await asyncio.sleep(self.retry_base_s * 2**attempt)
        raise BackfillError(f"{self.protocol.name} REST {url}: {last_error}")


def _body(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read(4096) or b""
    except (OSError, ValueError):
        return b""


async def candle_pages(
    client: RestClient, native: str, interval_s: int, start: int, end: int
) -> AsyncIterator[tuple[int, list[Candle]]]:
    """Candles opening in [start, end) one REST page at a time: (page end in Unix s, candles)."""
    proto = client.protocol
    window = proto.max_candles * interval_s
    s = start
    while s < end:
        e = min(s + window, end)
        body = await client.get(proto.candles_path(native, interval_s, s, e))
        try:
            page = proto.parse_candles(body, interval_s)
        except BadMessage as exc:
            raise BackfillError(f"{proto.name} candles for {native}: {exc.reason} in {body[:200]!r}",
                                proto.rest_refusal(200, body)) from None
        kept = {c.open_time: c for c in page if s <= c.open_time < e and c.open_time % interval_s == 0}
        yield e, [kept[k] for k in sorted(kept)]
        s = e


async def fetch_candles(
    client: RestClient,
    native: str,
    interval_s: int,
    start: int,
    end: int,
    *,
    on_page: Callable[[int], None] | None = None,
) -> list[Candle]:
    """Candles opening in [start, end) (Unix seconds, aligned), oldest first."""
    out: list[Candle] = []
    async for _, page in candle_pages(client, native, interval_s, start, end):
        out.extend(page)
        if on_page is not None:
            on_page(len(out))
    return out


def candle_bar(series: SeriesKey, c: Candle) -> Bar:
    return Bar(
        series.exchange,
        series.symbol,
        series.interval,
        utc_from_unix(c.open_time),
        c.open,
        c.high,
        c.low,
        c.close,
        c.volume,
        c.trade_count,
        "backfill",
    )


async def backfill_pages(
    client: RestClient, series: SeriesKey, native: str, start: int, end: int
) -> AsyncIterator[tuple[int, list[Bar], bool]]:
    """Backfilled bars of [start, end) page by page: (page end in µs, bars, last page?), so the
    caller can store each page in its own transaction and a failure keeps what was stored."""
    from db.records import interval_seconds

    if end <= start:
        yield us(end), [], True
        return
    step = interval_seconds(series.interval)
    async for page_end, candles in candle_pages(client, native, step, start, end):
        bars = [candle_bar(series, c) for c in candles]
        metrics.BACKFILLED.labels(series.exchange, series.symbol).inc(len(bars))
        if bars:  # the caller logs the whole range once it is stored
            log.debug(
                "backfilled page",
                extra={"series": str(series), "start": bars[0].open_time.isoformat(),
                       "end": bars[-1].open_time.isoformat(), "bars": len(bars)},
            )
        yield us(page_end), bars, page_end >= end


async def backfill_bars(client: RestClient, series: SeriesKey, native: str, start: int, end: int) -> list[Bar]:
    """Backfilled bars of a series for [start, end); counted in metrics and logged."""
    from db.records import interval_seconds

    if end <= start:
        return []
    candles = await fetch_candles(client, native, interval_seconds(series.interval), start, end)
    bars = [candle_bar(series, c) for c in candles]
    metrics.BACKFILLED.labels(series.exchange, series.symbol).inc(len(bars))
    log.info(
        "backfilled",
        extra={
            "series": str(series),
            "start": utc_from_unix(start).isoformat(),
            "end": utc_from_unix(end).isoformat(),
            "bars": len(bars),
        },
    )
    return bars
