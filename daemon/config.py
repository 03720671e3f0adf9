"""The one typed config tree: TOML file, then BARCAST_* environment overrides, then CLI flags.

File search order (first found wins; `--config FILE` or BARCAST_CONFIG picks one explicitly):
`./barcast.toml`, the user's config dir (`~/.config/barcast/barcast.toml`), `/etc/barcast/barcast.toml`.
Environment: `BARCAST_<SECTION>__<KEY>=value` (value read as a TOML value, else as a string), e.g.
`BARCAST_DATABASE__URL=postgresql://…`, `BARCAST_API__PORT=8081`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import platformdirs

from daemon.configtree import build, to_plain
from db.errors import ConfigError, InputError
from db.records import INTERVALS, SeriesKey
from trainer.params import DataParams, ModelParams, TrainParams

SYSTEM_CONFIG = Path("/etc/barcast/barcast.toml")
ENV_PREFIX = "BARCAST_"


#: The longest path a Unix socket binds to on Linux (`sun_path` is 108 bytes with its NUL).
UNIX_SOCKET_PATH_MAX = 107


def socket_path(wanted: Path) -> Path:
    """`wanted`, or where it is too long for a Unix socket (a deep data directory: binding failed
    with "AF_UNIX path too long") a short one in a private per-user directory (under
    $XDG_RUNTIME_DIR, else the temp directory) named after `wanted`, so daemon and CLI meet there."""
    if len(os.fsencode(str(wanted))) <= UNIX_SOCKET_PATH_MAX:
        return wanted
    import hashlib
    import tempfile

    tag = hashlib.sha256(os.fsencode(str(wanted.resolve()))).hexdigest()[:16]
    for runtime in (os.environ.get("XDG_RUNTIME_DIR"), tempfile.gettempdir(), "/tmp"):
        path = Path(runtime or "/tmp") / f"barcast-{os.getuid()}" / f"{tag}.sock"
        if runtime and len(os.fsencode(str(path))) <= UNIX_SOCKET_PATH_MAX:
            break
    return path


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    #: SQLAlchemy URL. Empty: SQLite file `barcast.db` in `paths.data_dir`.
    url: str = ""

    def __post_init__(self) -> None:
        if self.url:  # `config check` must refuse what every command would (mysql://, a bad URL)
            from db.engine import normalise_url

            try:
                normalise_url(self.url)
            except InputError as exc:
                raise ValueError(f"url: {exc}") from None


@dataclass(frozen=True, slots=True)
class PathsConfig:
    #: Database, model artifacts. Empty: $STATE_DIRECTORY (systemd) or the user's data dir.
    data_dir: str = ""
    #: Forecast log and other logs. Empty: $LOGS_DIRECTORY (systemd) or `<data_dir>/logs`.
    log_dir: str = ""
    #: Model artifacts. Empty: `<data_dir>/models`.
    artifacts_dir: str = ""


@dataclass(frozen=True, slots=True)
class SeriesConfig:
    exchange: str
    symbol: str
    interval: str = "5m"
    #: Models are per series by default; series naming the same group share one model.
    model_group: str = ""

    def __post_init__(self) -> None:
        from daemon.feeds import PROTOCOLS

        _check(self.interval in INTERVALS, f"interval: {self.interval!r} is not one of {', '.join(INTERVALS)}")
        # checked here, not first when a feed starts: `config check` must refuse what `run` would
        _check(self.exchange.lower() in PROTOCOLS,
               f"exchange: {self.exchange!r} is not one of {', '.join(sorted(PROTOCOLS))}")
        try:
            SeriesKey(self.exchange.lower(), self.symbol.upper(), self.interval)
        except InputError as exc:
            raise ValueError(f"symbol: {exc}") from None

    @property
    def key(self) -> SeriesKey:
        return SeriesKey(self.exchange.lower(), self.symbol.upper(), self.interval)


@dataclass(frozen=True, slots=True)
class ExchangeConfig:
    #: Override the exchange's websocket URL (e.g. point it at `barcast exchange-sim`).
    ws_url: str = ""
    #: Override the exchange's REST base URL used for backfill.
    rest_url: str = ""

    def __post_init__(self) -> None:
        # a URL the feed cannot use would only show as a reconnect (or backfill) failing forever
        _check(_url_ok(self.ws_url, ("ws", "wss")), f"ws_url: {self.ws_url!r} is not a valid ws:// or wss:// URL")
        _check(
            _url_ok(self.rest_url, ("http", "https")),
            f"rest_url: {self.rest_url!r} is not a valid http:// or https:// URL",
        )


def _url_ok(url: str, schemes: tuple[str, ...]) -> bool:
    """Empty (the exchange's own URL) or SCHEME://HOST… with one of `schemes`."""
    if not url:
        return True
    try:
        parts = urlsplit(url)
        return parts.scheme in schemes and bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:  # a port that is not a number or out of range
        return False


@dataclass(frozen=True, slots=True)
class FeedsConfig:
    """Ingest: websocket behaviour, bar closing rules and REST backfill (daemon/feeds, daemon/ingest)."""

    #: Seconds after a bar's end (exchange clock) before it closes without a later trade.
    grace_s: float = 2.0
    #: A trade at most this many seconds behind the newest time seen amends its closed bar.
    late_allowance_s: float = 300.0
    #: No message at all (heartbeats included) for this long: the stream is stalled, reconnect.
    stall_timeout_s: float = 30.0
    #: Reconnect backoff: first delay, cap, and how long a connection must stay up to reset it.
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    backoff_reset_after_s: float = 60.0
    #: Websocket ping interval and timeout (protocol-level keep-alive).
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    #: Messages buffered between the socket and the aggregator; when full the feed resyncs.
    queue_size: int = 10000
    #: Start-up backfill: days of history (at least the 256 bars the forecaster needs).
    backfill_days: float = 30.0
    #: Seconds to wait for one REST request.
    rest_timeout_s: float = 15.0
    #: What says a bar is over: the wall clock (live) or only times the feed itself carries.
    clock: Literal["wall", "feed"] = "wall"
    #: Trades stamped further than this ahead of the clock are counted and dropped.
    max_future_s: float = 60.0
    #: No subscription acknowledgement this long after connecting: treat the feed as subscribed.
    ack_timeout_s: float = 10.0
    #: A symbol the exchange refuses is asked for again after this long, doubling up to the cap.
    refused_retry_s: float = 60.0
    refused_retry_max_s: float = 1800.0

    def __post_init__(self) -> None:
        _check(self.grace_s >= 0, "grace_s: must be >= 0")
        _check(self.late_allowance_s >= 0, "late_allowance_s: must be >= 0")
        _check(self.stall_timeout_s > 0, "stall_timeout_s: must be > 0")
        _check(self.ack_timeout_s > 0, "ack_timeout_s: must be > 0")
        _check(0 < self.refused_retry_s <= self.refused_retry_max_s,
               "refused_retry_s: must be > 0 and <= refused_retry_max_s")
        _check(0 < self.backoff_initial_s <= self.backoff_max_s, "backoff_initial_s: must be > 0 and <= backoff_max_s")
        _check(self.queue_size >= 10, "queue_size: must be >= 10")
        _check(self.backfill_days >= 0, "backfill_days: must be >= 0")
        _check(self.backoff_reset_after_s >= 0, "backoff_reset_after_s: must be >= 0")
        _check(self.ping_interval_s > 0, "ping_interval_s: must be > 0")
        _check(self.ping_timeout_s > 0, "ping_timeout_s: must be > 0")
        _check(self.rest_timeout_s > 0, "rest_timeout_s: must be > 0")
        _check(self.max_future_s >= 0, "max_future_s: must be >= 0 (below 0 every live trade is 'future')")


@dataclass(frozen=True, slots=True)
class ForecastConfig:
    """The live forecaster (window, horizon and features come from the [data] section)."""

    enabled: bool = True
    #: auto: the GPU when the Keras backend sees one; gpu: refuse to start without one.
    device: Literal["auto", "cpu", "gpu"] = "auto"
    #: Architecture trained for the live models (see `barcast evaluate` for the options). `har`,
    #: the volatility model, has the best calibrated fan on held-out BTC bars and fits in seconds.
    arch: str = "har"
    #: Longest wait for the other series closing at the same boundary before one batch runs.
    coalesce_ms: int = 500
    #: Backfilled bars (after an outage) within this many bars of the backfill's newest bar (the
    #: whole range, not one REST page) get forecasts too, so a restart leaves no hole; older
    #: backfilled history (most of a fresh install's) gets none.
    backfill_forecast_bars: int = 288
    #: Forecast log (JSON lines). Empty: `<log_dir>/forecasts.jsonl`.
    log_file: str = ""
    log_max_bytes: int = 50_000_000
    log_max_age_hours: float = 24.0
    log_backups: int = 7

    def __post_init__(self) -> None:
        from trainer.models import ARCHS

        _check(self.arch in ARCHS, f"arch: {self.arch!r} is not one of {', '.join(ARCHS)}")
        _check(self.coalesce_ms >= 0, "coalesce_ms: must be >= 0")
        _check(self.backfill_forecast_bars >= 0, "backfill_forecast_bars: must be >= 0")
        _check(self.log_max_bytes >= 0, "log_max_bytes: must be >= 0 (0: no size limit)")
        _check(self.log_max_age_hours >= 0, "log_max_age_hours: must be >= 0 (0: no age limit)")
        _check(self.log_backups >= 0, "log_backups: must be >= 0")


#: Metrics promotion can decide by (averaged over the horizon on the held-out bars).
PROMOTION_METRICS: tuple[str, ...] = (
    "pinball", "wis", "prob_skill", "mae", "rmse", "mape", "mase", "skill", "directional",
)


@dataclass(frozen=True, slots=True)
class RetrainConfig:
    """Periodic retraining with champion/challenger promotion."""

    enabled: bool = True
    #: interval: every `every_hours`; cron: the crontab expression in `cron` (UTC).
    schedule: Literal["interval", "cron"] = "interval"
    every_hours: float = 24.0
    cron: str = ""
    #: Train a first model in the background when a series has none (persistence serves meanwhile).
    initial: bool = True
    history_days: float = 30.0
    #: The most recent bars held out to judge challenger vs champion vs persistence.
    holdout_bars: int = 288
    #: Metric averaged over the horizon (pinball, wis, prob_skill, mae, rmse, mape, mase, skill,
    #: directional) and the relative margin the challenger must win by.
    metric: str = "pinball"
    margin: float = 0.0
    #: A challenger whose central-interval coverage (mean over the horizon, held-out bars) is
    #: outside [coverage_min, coverage_max] is never promoted.
    coverage_min: float = 0.70
    coverage_max: float = 0.90
    time_limit_minutes: float = 60.0
    keep_artifacts: int = 5
    #: Training children running at once in this daemon, and in all daemons sharing the
    #: database (0: no global cap); further jobs wait in the queue (`training_jobs`).
    max_concurrent: int = 1
    max_concurrent_global: int = 2
    #: A failed job is retried after retry_backoff_minutes x 2^(attempt - 1), at most max_attempts times.
    max_attempts: int = 3
    retry_backoff_minutes: float = 5.0
    #: A running job's lease, renewed every third of it; a job whose daemon died is claimable again after it.
    job_lease_s: float = 120.0

    def __post_init__(self) -> None:
        _check(self.every_hours > 0, "every_hours: must be > 0")
        _check(self.schedule != "cron" or bool(self.cron.strip()), "cron: needed when schedule = 'cron'")
        if self.cron.strip():
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.cron, timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"cron: {self.cron!r} is not a crontab expression ({exc})") from None
        _check(self.history_days > 0, "history_days: must be > 0")
        _check(self.holdout_bars > 0, "holdout_bars: must be > 0")
        _check(self.max_concurrent >= 1, "max_concurrent: must be >= 1")
        _check(self.max_concurrent_global >= 0, "max_concurrent_global: must be >= 0 (0: no cap)")
        _check(self.max_attempts >= 1, "max_attempts: must be >= 1")
        _check(self.retry_backoff_minutes >= 0, "retry_backoff_minutes: must be >= 0")
        _check(self.job_lease_s >= 3, "job_lease_s: must be >= 3")
        _check(self.metric in PROMOTION_METRICS,
               f"metric: {self.metric!r} is not one of {', '.join(PROMOTION_METRICS)}")
        _check(0 <= self.margin < 1, "margin: must be in [0, 1)")
        _check(0 <= self.coverage_min < self.coverage_max <= 1,
               "coverage_min, coverage_max: need 0 <= coverage_min < coverage_max <= 1")
        _check(self.time_limit_minutes > 0, "time_limit_minutes: must be > 0")
        _check(self.keep_artifacts >= 1, "keep_artifacts: must be >= 1")


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    """Online scoring and drift flags."""

    #: Scored steps in the rolling live MAE per (series, model).
    window_steps: int = 16 * 288
    #: Flag a model whose live MAE exceeds persistence's by this relative margin …
    drift_margin: float = 0.1
    #: … for this many consecutive bar closes.
    drift_period: int = 12

    def __post_init__(self) -> None:
        _check(self.window_steps > 0, "window_steps: must be > 0")
        _check(self.drift_margin >= 0, "drift_margin: must be >= 0")
        _check(self.drift_period > 0, "drift_period: must be > 0")


#: Longest retention a setting may ask for (100 years): beyond it cut-offs leave what datetime holds.
_MAX_DAYS = 36500.0


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """What retention deletes so the database stays bounded (db/retention.py); bars never."""

    #: Prune in the background of `barcast run` every `every_hours` (false: only `barcast db prune`).
    enabled: bool = True
    #: Forecasts and their scores issued more than this many days before their series' newest bar
    #: (never one still waiting for its bar, never a series' newest). 0: keep every forecast.
    forecasts_days: float = 90.0
    #: Finished (done or failed) training jobs, this many days after they finished. 0: keep all.
    jobs_days: float = 30.0
    #: Retired models created this many days ago, beyond the newest `retrain.keep_artifacts` of
    #: each series and with no champion term left (with their stored artifacts); champion terms
    #: ended this long ago (never the open one); calibration states of models not champion now,
    #: unchanged this long. 0: keep all.
    models_days: float = 90.0
    #: Feed gaps (`barcast gaps`, the outage record) detected this many days ago. 0: keep all.
    gaps_days: float = 90.0
    #: Hours between background prunes (the first comes this long after start, at most 5 minutes).
    every_hours: float = 6.0
    #: Most rows one delete transaction removes (SQLite's write lock is held for one batch only).
    batch_rows: int = 5000

    def __post_init__(self) -> None:
        for name in ("forecasts_days", "jobs_days", "models_days", "gaps_days"):
            days = getattr(self, name)
            _check(0 <= days <= _MAX_DAYS, f"{name}: must be 0 (keep all) to {_MAX_DAYS:g} days")
        _check(self.forecasts_days == 0 or self.forecasts_days >= 1,
               "forecasts_days: must be 0 (keep all) or at least 1 day")
        _check(0 < self.every_hours <= 24 * 366, "every_hours: must be > 0 and at most a year (8784)")
        _check(1 <= self.batch_rows <= 1_000_000, "batch_rows: must be 1..1000000")


def min_forecasts_days(data: DataParams, forecast: ForecastConfig, scoring: ScoringConfig,
                       intervals: Iterable[str]) -> float:
    """Fewest days of forecasts the live service reads back for series of `intervals`: a window
    restore looks for unforecast bars over `data.window + forecast.backfill_forecast_bars` bars,
    live gauges score over `scoring.window_steps`; retention must not cut inside either."""
    bars = max(data.window + forecast.backfill_forecast_bars, scoring.window_steps // data.horizon) + data.horizon
    longest = max((INTERVALS[i] for i in intervals), default=INTERVALS["5m"])
    return bars * longest / 86400


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """How the process runs."""

    #: Unix socket for `barcast retrain` and friends. Empty: $RUNTIME_DIRECTORY/barcast.sock or
    #: `<data_dir>/barcast.sock`.
    control_socket: str = ""
    #: SIGTERM: seconds to close bars, finish writes and exit before giving up on the rest.
    shutdown_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        _check(self.shutdown_timeout_s > 0, "shutdown_timeout_s: must be > 0")
        size = len(os.fsencode(os.path.expanduser(self.control_socket)))
        _check(size <= UNIX_SOCKET_PATH_MAX,
               f"control_socket: {self.control_socket!r} is {size} bytes, longer than the {UNIX_SOCKET_PATH_MAX} a "
               "Unix socket path may have; give a shorter path (e.g. /run/barcast/barcast.sock)")


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Several daemons on one PostgreSQL database share the series (daemon/live/membership.py)."""

    #: This daemon's id (heartbeat row, lease owner, `forecasts.issued_by`). Empty: host-pid;
    #: `barcast run --instance` and the `barcast@.service` template (`%i`) set it.
    instance: str = ""
    #: shared: series split by rendezvous hashing over live daemons; solo: this daemon owns every
    #: configured series; auto: shared on PostgreSQL, solo on SQLite.
    mode: Literal["auto", "solo", "shared"] = "auto"
    #: Seconds between heartbeats (each renews this daemon's leases).
    heartbeat_s: float = 10.0
    #: A daemon silent for this long loses its series to the others (within TTL + one bar).
    lease_ttl_s: float = 60.0

    def __post_init__(self) -> None:
        _check(self.heartbeat_s > 0, "heartbeat_s: must be > 0")
        _check(self.lease_ttl_s >= 2 * self.heartbeat_s, "lease_ttl_s: must be at least 2 x heartbeat_s")
        _check(len(self.instance) <= 200 and self.instance == self.instance.strip(),
               "instance: at most 200 characters, no surrounding spaces")


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The read-only HTTP API and `/metrics`, served inside the daemon's event loop (daemon/ops/api.py)."""

    enabled: bool = True
    #: Address to bind. Anything beyond loopback needs `token` (or `allow_insecure_remote`).
    host: str = "127.0.0.1"
    port: int = 8787
    #: Bearer token required on every endpoint but /health and the docs (/openapi.json, /docs, /redoc). Empty: no token.
    token: str = ""
    #: Allow a non-loopback bind without a token (only behind a trusted proxy or firewall).
    allow_insecure_remote: bool = False
    #: Most rows one request may return; larger `limit`s are capped to this.
    max_limit: int = 1000

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, "port: must be 0..65535")
        _check(bool(self.host.strip()), "host: must not be empty")
        _check(1 <= self.max_limit <= 100_000, "max_limit: must be 1..100000")


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: json: one JSON object per line (for journald/log shippers); text: for people.
    format: Literal["json", "text"] = "text"


@dataclass(frozen=True, slots=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    series: tuple[SeriesConfig, ...] = (SeriesConfig("coinbase", "BTC-USD"),)
    exchanges: dict[str, ExchangeConfig] = field(default_factory=dict)
    feeds: FeedsConfig = field(default_factory=FeedsConfig)
    data: DataParams = field(default_factory=DataParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    #: Where this config came from (not a key).
    source: str = field(default="(defaults)", compare=False)

    def __post_init__(self) -> None:
        keys = [s.key for s in self.series]
        _check(len(keys) == len(set(keys)), "series: the same series is listed twice")
        from daemon.feeds import PROTOCOLS

        for name in self.exchanges:  # a misspelt [exchanges.X] table would be ignored silently
            _check(name in PROTOCOLS, f"exchanges.{name}: not an exchange barcast knows "
                                      f"(valid: {', '.join(sorted(PROTOCOLS))})")
        days = self.retention.forecasts_days
        least = self.min_forecasts_days()
        _check(days == 0 or days >= least,
               f"retention.forecasts_days: {days:g} is less than the {least:.2f} days of forecasts the live "
               "service reads back (data.window + forecast.backfill_forecast_bars, scoring.window_steps, "
               "at the longest configured interval); use at least that, or 0 to keep all")

    # Resolved paths -------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        if self.paths.data_dir:
            return Path(self.paths.data_dir).expanduser()
        if os.environ.get("STATE_DIRECTORY"):
            return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
        return Path(platformdirs.user_data_dir("barcast", appauthor=False))

    @property
    def log_dir(self) -> Path:
        if self.paths.log_dir:
            return Path(self.paths.log_dir).expanduser()
        if os.environ.get("LOGS_DIRECTORY"):
            return Path(os.environ["LOGS_DIRECTORY"].split(":")[0])
        return self.data_dir / "logs"

    @property
    def artifacts_dir(self) -> Path:
        return Path(self.paths.artifacts_dir).expanduser() if self.paths.artifacts_dir else self.data_dir / "models"

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'barcast.db'}"

    @property
    def forecast_log(self) -> Path:
        return Path(self.forecast.log_file).expanduser() if self.forecast.log_file else self.log_dir / "forecasts.jsonl"

    @property
    def control_socket(self) -> Path:
        """`service.control_socket`, else `$RUNTIME_DIRECTORY/barcast.sock`, else
        `<data_dir>/barcast.sock` (shortened by `socket_path` where too long for a Unix socket)."""
        if self.service.control_socket:
            return Path(self.service.control_socket).expanduser()
        if os.environ.get("RUNTIME_DIRECTORY"):
            return socket_path(Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0]) / "barcast.sock")
        return socket_path(self.data_dir / "barcast.sock")

    @property
    def instance_id(self) -> str:
        if self.cluster.instance:
            return self.cluster.instance
        import socket

        return f"{socket.gethostname()}-{os.getpid()}"

    @property
    def cluster_solo(self) -> bool:
        if self.cluster.mode == "auto":
            return not self.database_url.startswith(("postgresql", "postgres"))
        return self.cluster.mode == "solo"

    def min_forecasts_days(self, intervals: Iterable[str] = ()) -> float:
        """Fewest `retention.forecasts_days` for the configured series (and `intervals`)."""
        return min_forecasts_days(self.data, self.forecast, self.scoring,
                                  [*(s.interval for s in self.series), *intervals])

    def model_group(self, key: SeriesKey) -> str:
        """Series sharing a `model_group` share one model; by default each series has its own."""
        for s in self.series:
            if s.key == key and s.model_group:
                return s.model_group
        return str(key)

    def group_series(self, group: str) -> list[SeriesKey]:
        return [k for k in self.series_keys if self.model_group(k) == group]

    @property
    def series_keys(self) -> list[SeriesKey]:
        return [s.key for s in self.series]

    def exchange(self, name: str) -> ExchangeConfig:
        return self.exchanges.get(name, ExchangeConfig())


_TOP_KEYS = {"source"}


def search_path() -> list[Path]:
    return [
        Path.cwd() / "barcast.toml",
        Path(platformdirs.user_config_dir("barcast", appauthor=False)) / "barcast.toml",
        SYSTEM_CONFIG,
    ]


def find_config_file(explicit: str | Path | None, env: Mapping[str, str]) -> Path | None:
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} {'is not a file' if path.exists() else 'does not exist'}")
        return path
    if env.get("BARCAST_CONFIG"):
        return find_config_file(env["BARCAST_CONFIG"], {})
    return next((p for p in search_path() if p.is_file()), None)


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """`BARCAST_A__B=v` as {'a': {'b': v}}; single-word names (BARCAST_CONFIG…) are not config keys."""
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if not all(path):
            raise ConfigError(f"environment variable {name}: empty key part")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name}: {part} is not a table")
        node[path[-1]] = _parse_env_value(raw)
    return out


#: The key a config error is about: its leading key (`config key api.port: …`, `unknown config
#: key 'bogus' …`, `data.window = 0: …`).
_LEADING_KEY = re.compile(r"(?:unknown config key '|config key |config table )?([a-z_][\w.\[\]]*)")


def _env_names_in(msg: str, env: Mapping[str, str]) -> list[str]:
    """The BARCAST_* variables a config error is about: one naming a key the message names, one
    setting something inside the message's key (`BARCAST_API__PORT__X` for `api.port`,
    `BARCAST_BOGUS__X` for `bogus`), or one setting the table that holds it."""
    head = msg.split(" (valid keys here:")[0]  # the list of valid keys names keys nobody set
    lead = _LEADING_KEY.match(head)
    key = lead.group(1).rstrip(".") if lead else ""
    out = []
    for name in env:
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = name[len(ENV_PREFIX):].lower().replace("__", ".")
        if (re.search(rf"(?<![\w.]){re.escape(path)}(?![\w.])", head)
                or (key and (path.startswith(f"{key}.") or key.startswith(f"{path}.")))):
            out.append(name)
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    db_url: str | None = None,
) -> Config:
    """Load and validate the effective config: file, then environment, then `--db`."""
    env = os.environ if env is None else env
    file = find_config_file(path, env)
    data: dict[str, Any] = {}
    if file is not None:
        try:
            with file.open("rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file}: not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except OSError as exc:
            raise ConfigError(f"config file {file}: {exc.strerror}") from None
    for key in _TOP_KEYS & data.keys():
        raise ConfigError(f"unknown config key {key!r}")
    data = _merge(data, env_overrides(env))
    try:
        cfg: Config = build(Config, data)
    except ConfigError as exc:
        msg = str(exc)
        from_env = _env_names_in(msg, env)
        if from_env:
            raise ConfigError(f"{msg} (set by environment variable {from_env[0]})") from None
        where = f" (in {file})" if file else ""
        raise ConfigError(f"{msg}{where}") from None
    cfg = replace(cfg, source=str(file) if file else "(defaults)")
    if db_url:
        try:
            cfg = replace(cfg, database=replace(cfg.database, url=db_url))
        except ValueError as exc:
            raise InputError(f"--db: {str(exc).removeprefix('url: ')}") from None
    return cfg


def _hide_password(url: str) -> str:
    """The URL as every other output shows it: the password as `***`."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return url
    return parsed.render_as_string(hide_password=True) if parsed.password else url


def config_as_toml(cfg: Config) -> str:
    import tomli_w

    plain = to_plain(cfg)
    plain.pop("source", None)
    plain.setdefault("database", {})["url"] = _hide_password(cfg.database_url)
    if cfg.api.token:  # secrets live in an EnvironmentFile so that they are not shown about
        plain["api"]["token"] = "***"
    plain.setdefault("paths", {}).update(
        data_dir=str(cfg.data_dir), log_dir=str(cfg.log_dir), artifacts_dir=str(cfg.artifacts_dir)
    )
    return (f"# effective config; loaded from {cfg.source} (the database password and api.token shown as ***)\n"
            + tomli_w.dumps(plain))
