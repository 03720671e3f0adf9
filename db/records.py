"""Plain domain records shared by every layer.

Prices and sizes are `Decimal` built from the exchange's or file's text, never from floats,
so what is stored is exactly what the exchange said. Times are timezone-aware UTC datetimes;
a bar is stamped with its open time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any, Literal, overload

from db.errors import InputError

#: Prices must be below this, volumes and sizes below MAX_SIZE, and neither may be non-zero below
#: MIN_MAGNITUDE: beyond them no market trades, so a number is a garbled field (feeds and files).
MAX_PRICE = Decimal(10) ** 15
MAX_SIZE = Decimal(10) ** 18
MIN_MAGNITUDE = Decimal(1).scaleb(-30)

#: Bar intervals barcast knows, in seconds. 5m is the default everywhere.
INTERVALS: dict[str, int] = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600}
DEFAULT_INTERVAL = "5m"

BarSource = Literal["live", "backfill", "import", "resample"]
ModelStatus = Literal["candidate", "champion", "retired"]

_SYMBOL_RE = re.compile(r"^[A-Z0-9]+-[A-Z0-9]+$")
_EXCHANGE_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def interval_seconds(interval: str) -> int:
    """Seconds in a named interval; a name barcast does not know is an input error."""
    try:
        return INTERVALS[interval]
    except KeyError:
        raise InputError(
            f"unknown interval {interval!r}; valid: {', '.join(INTERVALS)}"
        ) from None


def floor_time(t: datetime, interval: str) -> datetime:
    """Open time of the UTC-aligned interval that contains `t` (left-closed buckets)."""
    step = interval_seconds(interval)
    ts = int(t.timestamp() // step) * step
    return datetime.fromtimestamp(ts, UTC)


def utc_from_unix(seconds: float | int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def to_unix(t: datetime) -> int:
    """Whole Unix seconds of an aware datetime (bar times are whole seconds)."""
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t!r}: barcast times must be timezone-aware UTC")
    return int(t.timestamp())


@overload
def iso(t: datetime) -> str: ...
@overload
def iso(t: None) -> None: ...
def iso(t: datetime | None) -> str | None:
    """ISO-8601 UTC with a Z: the one time format of every output (CLI, API, forecast log)."""
    if t is None:
        return None
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def decimal_text(d: Decimal) -> str:
    """Plain positional text of a decimal (never exponent notation), keeping its scale."""
    return format(d, "f")


@dataclass(frozen=True, slots=True, order=True)
class SeriesKey:
    """One bar series: an exchange, a normalised symbol (BASE-QUOTE) and an interval."""

    exchange: str
    symbol: str
    interval: str = DEFAULT_INTERVAL

    def __post_init__(self) -> None:
        if not _EXCHANGE_RE.match(self.exchange):
            raise InputError(f"bad exchange name {self.exchange!r}: expected lower-case like 'coinbase'")
        if not _SYMBOL_RE.match(self.symbol):
            raise InputError(f"bad symbol {self.symbol!r}: expected BASE-QUOTE like 'BTC-USD'")
        interval_seconds(self.interval)

    @classmethod
    def parse(cls, text: str, interval: str | None = None) -> SeriesKey:
        """Parse `EXCHANGE:SYMBOL` or `EXCHANGE:SYMBOL:INTERVAL` (the CLI's `--series`)."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise InputError(f"bad series {text!r}: expected EXCHANGE:SYMBOL[:INTERVAL], e.g. coinbase:BTC-USD")
        if len(parts) == 3:
            return cls(parts[0].lower(), parts[1].upper(), parts[2])
        return cls(parts[0].lower(), parts[1].upper(), interval or DEFAULT_INTERVAL)

    @property
    def step(self) -> timedelta:
        return timedelta(seconds=interval_seconds(self.interval))

    def __str__(self) -> str:
        return f"{self.exchange}:{self.symbol}:{self.interval}"


@dataclass(frozen=True, slots=True)
class Bar:
    """A closed OHLCV bar `[open_time, open_time + interval)`.

    `trade_count` is None where the source did not say (imported candles, REST backfill).
    """

    exchange: str
    symbol: str
    interval: str
    open_time: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trade_count: int | None = None
    source: BarSource = "live"

    @property
    def series(self) -> SeriesKey:
        return SeriesKey(self.exchange, self.symbol, self.interval)

    def same_values(self, other: Bar) -> bool:
        """True when OHLCV and trade count match (numerically), ignoring source."""
        return (
            self.open == other.open
            and self.high == other.high
            and self.low == other.low
            and self.close == other.close
            and self.volume == other.volume
            and self.trade_count == other.trade_count
        )


@dataclass(frozen=True, slots=True)
class Forecast:
    """One model's forecast of the next `len(closes)` bar closes of a series.

    `issued_at` is the open time of the last closed bar the model saw; the forecast is
    identified by (series, issued_at, model_id), so storing it twice changes nothing.
    Predicted closes are floats: they come out of a model, not off an exchange.
    `quantiles` holds, per step, the served (calibrated) quantiles at `levels` (ascending);
    both are None for point-only forecasts stored before quantiles existed.
    """

    series: SeriesKey
    issued_at: datetime
    model_id: str
    target_times: tuple[datetime, ...]
    closes: tuple[float, ...]
    lower: tuple[float, ...] | None = None
    upper: tuple[float, ...] | None = None
    last_close: Decimal | None = None
    latency_ms: float | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: The daemon instance that issued it (several daemons share a database); None if unknown.
    issued_by: str | None = None
    levels: tuple[float, ...] | None = None
    quantiles: tuple[tuple[float, ...], ...] | None = None
    #: Its position in the forecast stream (`forecast_seq`), once stored; not part of its identity.
    seq: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if len(self.target_times) != len(self.closes):
            raise ValueError("forecast target_times and closes differ in length")
        if (self.levels is None) != (self.quantiles is None):
            raise ValueError("forecast levels and quantiles come together")
        if self.quantiles is not None and self.levels is not None:
            if len(self.quantiles) != len(self.closes):
                raise ValueError("forecast quantiles and closes differ in length")
            if any(len(q) != len(self.levels) for q in self.quantiles):
                raise ValueError(f"forecast quantiles must have {len(self.levels)} values per step")
            if any(b < a for q in self.quantiles for a, b in pairwise(q)):
                raise ValueError("forecast quantiles must be ascending at every step")


@dataclass(frozen=True, slots=True)
class ForecastScore:
    """Realised error of one forecast step once its target bar has closed."""

    series: SeriesKey
    issued_at: datetime
    model_id: str
    step: int
    target_time: datetime
    predicted: float
    actual: Decimal
    error: float  # predicted - actual
    persistence_error: float  # last_close - actual, the baseline on the same bars
    scored_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: Probabilistic scores (None for a point-only forecast): pinball loss per level of
    #: `levels`, whether the actual fell inside [lowest, highest] quantile, that width.
    levels: tuple[float, ...] | None = None
    pinball: tuple[float, ...] | None = None
    inside: bool | None = None
    width: float | None = None
    #: Mean pinball loss of climatology's fan on the same step (None without a reference).
    climatology_pinball: float | None = None

    @property
    def pinball_mean(self) -> float | None:
        return None if not self.pinball else sum(self.pinball) / len(self.pinball)


@dataclass(frozen=True, slots=True)
class CalibrationState:
    """Persisted online-calibration state of one (series, model); `state` is the calibrator's
    own JSON document (trainer.calibration.Calibrator.to_dict)."""

    series: SeriesKey
    model_id: str
    state: dict[str, Any]
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A registry entry: one trained model and where its artifact lives."""

    id: str
    arch: str
    series: tuple[SeriesKey, ...]
    train_start: datetime | None
    train_end: datetime | None
    params: dict[str, Any]
    metrics: dict[str, Any]
    artifact_path: str | None
    status: ModelStatus = "candidate"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
