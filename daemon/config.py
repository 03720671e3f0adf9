"""The one typed config tree: TOML file, then BARCAST_* environment overrides, then CLI flags.

File search order (first found wins; `--config FILE` or BARCAST_CONFIG picks one explicitly):
`./barcast.toml`, the user's config dir (`~/.config/barcast/barcast.toml`), `/etc/barcast/barcast.toml`.
Environment: `BARCAST_<SECTION>__<KEY>=value` (value read as a TOML value, else as a string), e.g.
`BARCAST_DATABASE__URL=postgresql://…`, `BARCAST_API__PORT=8081`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import platformdirs

from daemon.configtree import build, to_plain
from db.errors import ConfigError
from db.records import INTERVALS, SeriesKey

SYSTEM_CONFIG = Path("/etc/barcast/barcast.toml")
ENV_PREFIX = "BARCAST_"


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    #: SQLAlchemy URL. Empty: SQLite file `barcast.db` in `paths.data_dir`.
    url: str = ""


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
        _check(self.interval in INTERVALS, f"interval: {self.interval!r} is not one of {', '.join(INTERVALS)}")

    @property
    def key(self) -> SeriesKey:
        return SeriesKey(self.exchange.lower(), self.symbol.upper(), self.interval)


@dataclass(frozen=True, slots=True)
class ExchangeConfig:
    #: Override the exchange's websocket URL (e.g. point it at `barcast exchange-sim`).
    ws_url: str = ""
    #: Override the exchange's REST base URL used for backfill.
    rest_url: str = ""


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
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    #: Where this config came from (not a key).
    source: str = field(default="(defaults)", compare=False)

    def __post_init__(self) -> None:
        keys = [s.key for s in self.series]
        _check(len(keys) == len(set(keys)), "series: the same series is listed twice")

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
            raise ConfigError(f"config file {path} does not exist")
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
        except OSError as exc:
            raise ConfigError(f"config file {file}: {exc.strerror}") from None
    for key in _TOP_KEYS & data.keys():
        raise ConfigError(f"unknown config key {key!r}")
    data = _merge(data, env_overrides(env))
    try:
        cfg: Config = build(Config, data)
    except ConfigError as exc:
        where = f" (in {file})" if file else ""
        raise ConfigError(f"{exc}{where}") from None
    cfg = replace(cfg, source=str(file) if file else "(defaults)")
    if db_url:
        cfg = replace(cfg, database=replace(cfg.database, url=db_url))
    return cfg


def config_as_toml(cfg: Config) -> str:
    import tomli_w

    plain = to_plain(cfg)
    plain.pop("source", None)
    plain.setdefault("database", {})["url"] = cfg.database_url
    plain.setdefault("paths", {}).update(
        data_dir=str(cfg.data_dir), log_dir=str(cfg.log_dir), artifacts_dir=str(cfg.artifacts_dir)
    )
    return f"# effective config; loaded from {cfg.source}\n" + tomli_w.dumps(plain)
