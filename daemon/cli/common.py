"""What every CLI command shares: the app context (config, database), output formats, errors."""

from __future__ import annotations

import csv
import functools
import io
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from daemon.config import Config, load_config
from daemon.ops.durations import duration_seconds
from db.engine import Database, open_database
from db.errors import InputError
from db.records import SeriesKey, iso

F = TypeVar("F", bound=Callable[..., Any])

FORMATS = ("table", "csv", "json")


class AppContext:
    """Lazily loaded config and database, shared by the subcommands of one invocation."""

    def __init__(self, config_path: str | None, db_url: str | None, log_level: str | None) -> None:
        self.config_path = config_path
        self.db_url = db_url
        self.log_level = log_level
        self._config: Config | None = None
        self._database: Database | None = None
        self.console = make_console(stderr=True)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path, db_url=self.db_url)
        return self._config

    def database(self, *, upgrade: bool = False, create: bool = False) -> Database:
        """The database; read commands refuse one that does not exist (a typo in --db must not
        create a file), commands that store data pass `create=True`."""
        if self._database is None:
            self._database = open_database(self.config.database_url, upgrade=upgrade, create=create)
        return self._database

    def close(self) -> None:
        if self._database is not None:
            self._database.close()
            self._database = None


def pass_app(fn: F) -> F:
    @click.pass_context
    @functools.wraps(fn)
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        return ctx.invoke(fn, ctx.ensure_object(AppContext), *args, **kwargs)

    return wrapper  # type: ignore[return-value]


#: Formats read by people; the others (csv, json) are for programs.
_FOR_PEOPLE = ("table", "pretty")


def format_option(default: str = "table", choices: Sequence[str] = FORMATS) -> Callable[[F], F]:
    people = "/".join(c for c in choices if c in _FOR_PEOPLE)
    programs = "/".join(c for c in choices if c not in _FOR_PEOPLE)
    return click.option(
        "--format", "fmt", type=click.Choice(list(choices)), default=default, show_default=True,
        help=f"Output format: {people} for people, {programs} for programs.",
    )


def _plain(v: Any) -> Any:
    if isinstance(v, datetime):
        return iso(v)
    if isinstance(v, Decimal):
        return format(v, "f")
    return v


def emit_rows(rows: Iterable[dict[str, Any]], columns: Sequence[str], fmt: str, *, title: str | None = None) -> None:
    """Print rows as a rich table, CSV with a header, or a JSON array of objects."""
    rows = [{c: _plain(r.get(c)) for c in columns} for r in rows]
    if fmt == "json":
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if r[c] is None else r[c] for c in columns])
        sys.stdout.write(buf.getvalue())
    else:
        from rich.table import Table

        table = Table(title=title)
        for c in columns:
            table.add_column(c)
        for r in rows:
            table.add_row(*(_cell(r[c]) for c in columns))
        out_console().print(table)


def _cell(v: Any) -> str:
    """A table cell for people: floats (model outputs and scores, never money from an exchange,
    which is Decimal) to six significant digits; csv and json keep every digit."""
    if v is None:
        return ""
    if type(v) is float:
        return f"{v:.6g}" if abs(v) < 1e6 else f"{v:.0f}"
    return str(v)


def colour_allowed(stream: Any) -> bool:
    """ANSI colours only on a terminal, never under journald (JOURNAL_STREAM) or with NO_COLOR."""
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("NO_COLOR"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def make_console(*, stderr: bool = False) -> Console:
    """A rich console for people: colours and progress bars only on a terminal (see colour_allowed)."""
    stream = sys.stderr if stderr else sys.stdout
    if colour_allowed(stream):
        return Console(stderr=stderr)
    return Console(stderr=stderr, no_color=True, color_system=None, highlight=False)


def progress_bar(console: Console) -> Progress:
    """The progress bar of every long command: on stderr, only on a terminal, gone when done."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal,
    )


def out_console() -> Console:
    """stdout for tables: the terminal's width, or unlimited when piped (never cut a column)."""
    if sys.stdout.isatty():
        return make_console()
    return Console(width=100_000, no_color=True, color_system=None, highlight=False)


#: Longest duration or age taken (100 years): beyond it times leave what datetime can hold.
_MAX_SECONDS = 100 * 366 * 86400


def parse_time(text: str | None, name: str) -> datetime | None:
    """ISO-8601 (naive means UTC), Unix seconds, or a relative age like `3d`, `12h`, `30m` ago."""
    if text is None:
        return None
    t = text.strip()
    age = duration_seconds(t)
    if age is not None:
        if age > _MAX_SECONDS:
            raise InputError(f"{name}: {text!r} is more than 100 years ago")
        return datetime.now(UTC) - timedelta(seconds=age)
    try:
        if t.isascii() and t.isdigit():
            return datetime.fromtimestamp(int(t), UTC)
        parsed = datetime.fromisoformat(t.replace("Z", "+00:00"))
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (OverflowError, OSError):  # Unix seconds beyond year 9999, or its offset pushing it past
        raise InputError(f"{name}: {text!r} is out of range (years 1 to 9999)") from None
    except ValueError as exc:
        if "out of range" in str(exc):  # year 10000 and on, from fromtimestamp
            raise InputError(f"{name}: {text!r} is out of range (years 1 to 9999)") from None
        raise InputError(f"{name}: {text!r} is not a time (ISO-8601, Unix seconds, or an age like 3d)") from None


def parse_range(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """`--since` and `--until` parsed; a range that ends before it starts is a mistake, not an
    empty answer (as in `forecasts` and the API)."""
    t0, t1 = parse_time(since, "--since"), parse_time(until, "--until")
    if t0 is not None and t1 is not None and t0 >= t1:
        raise InputError(f"--since {since} is not before --until {until}")
    return t0, t1


def parse_duration(text: str, name: str) -> timedelta:
    seconds = duration_seconds(text.strip())
    if seconds is None:
        raise InputError(f"{name}: {text!r} is not a duration like 90s, 30m, 12h, 7d")
    if seconds > _MAX_SECONDS:
        raise InputError(f"{name}: {text!r} is longer than 100 years")
    return timedelta(seconds=seconds)


def not_implemented(name: str, issue: str) -> click.Command:
    """An honest placeholder: says what is missing and exits 1."""

    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                   help=f"[not implemented yet: {issue}]")
    def cmd() -> None:
        click.echo(f"barcast {name}: not implemented yet ({issue})", err=True)
        sys.exit(1)

    return cmd


def existing_file(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    return p


# --- one series selector, checked names ------------------------------------------------------

SERIES_METAVAR = "E:S[:I]"


class OutputPath(click.ParamType):
    """A file (or, `directory=True`, a directory) a command will write, checked before it starts:
    an evaluation or a training run must not spend minutes and then fail on where to put its
    result. Missing parent directories are fine (they are created); the nearest existing one must
    be a directory this process can write in, and an existing path of the wrong kind is refused."""

    name = "path"

    def __init__(self, *, directory: bool = False) -> None:
        self.directory = directory

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = Path(value).expanduser()
        if path.exists():
            if path.is_dir() != self.directory:
                self.fail(f"{path} is {'not ' if self.directory else ''}a directory", param, ctx)
            if not os.access(path, os.W_OK):
                self.fail(f"{path} is not writable", param, ctx)
            return path
        probe = path.absolute().parent
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            self.fail(f"{path}: {probe} is not a directory", param, ctx)
        if not os.access(probe, os.W_OK | os.X_OK):
            self.fail(f"{path}: cannot write in {probe}", param, ctx)
        return path


class SeriesParam(click.ParamType):
    """`--series EXCHANGE:SYMBOL[:INTERVAL]`: one, or (many=True) repeated or comma-separated.

    A bad form, an unknown exchange or interval is a usage error (exit 2) naming the valid choices.
    """

    name = "series"

    def __init__(self, many: bool = False) -> None:
        self.many = many

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, SeriesKey | list):
            return value
        texts = [t for t in re.split(r"[,\s]+", str(value)) if t]
        if not texts:
            self.fail("give EXCHANGE:SYMBOL[:INTERVAL], e.g. binance:BTC-USDT", param, ctx)
        if len(texts) > 1 and not self.many:
            self.fail(f"takes one series, got {len(texts)} in {value!r}", param, ctx)
        from daemon.feeds import series_key

        keys = []
        for t in texts:
            try:
                keys.append(series_key(t))
            except InputError as exc:
                self.fail(str(exc), param, ctx)
        return keys if self.many else keys[0]


def series_option(help: str, *, many: bool = False, name: str = "series") -> Callable[[F], F]:
    """The one `--series` option every command shares."""
    return click.option(
        "--series", name, type=SeriesParam(many), multiple=many, metavar=SERIES_METAVAR,
        help=help + (" Repeat or comma-separate." if many else ""),
    )


def flat_series(values: Iterable[list[SeriesKey]] | None) -> list[SeriesKey]:
    return list(dict.fromkeys(k for v in values or () for k in v))


def require_known_series(app: AppContext, keys: Iterable[SeriesKey]) -> None:
    """A series that is neither configured nor stored is a typo: exit 2 listing the known ones."""
    keys = list(keys)
    if not keys:
        return
    from daemon.ops.reports import require_known

    require_known(app.database(), app.config.series_keys, keys)


def require_model(app: AppContext, model_id: str | None) -> None:
    """An unknown model id (neither registered nor in stored forecasts) exits 2 listing the valid ones."""
    from daemon.ops.reports import require_model as require

    require(app.database(), model_id)
