"""`barcast`: the command-line face of the service.

Each command group lives in its own module exposing `commands`; heavy libraries (TensorFlow)
are imported inside the commands that need them, so `barcast --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from daemon.cli.common import AppContext
from db.errors import BarcastError

COMMAND_MODULES = ("db", "bars", "config", "feeds", "trainer", "live", "ops")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", envvar="BARCAST_CONFIG", metavar="FILE",
              help="Config file (default: ./barcast.toml, ~/.config/barcast/barcast.toml, /etc/barcast/barcast.toml).")
@click.option("--db", "db_url", envvar="BARCAST_DB", metavar="URL",
              help="Database URL (sqlite:///PATH or postgresql://USER@HOST/DB); overrides the config.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None,
              help="Log level (overrides the config).")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=lambda c, _p, v: _version(c, v),
              help="Show the version, and whether the feed hot path runs compiled or as pure Python, and exit.")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, db_url: str | None, log_level: str | None) -> None:
    """barcast: live crypto price forecaster (exchange feeds -> 5-minute bars -> 16-step forecasts)."""
    app = AppContext(config_path, db_url, log_level)
    ctx.obj = app
    ctx.call_on_close(app.close)
    from daemon import logs, quiet

    level = log_level
    fmt = "text"
    try:
        level = level or app.config.logging.level
        fmt = app.config.logging.format
    except BarcastError:
        level = level or "info"  # a bad config is reported by the command that needs it
    quiet.configure(debug=level == "debug")
    logs.configure(level, fmt)


def _version(ctx: click.Context, asked: bool) -> None:
    if not asked or ctx.resilient_parsing:
        return
    from importlib.metadata import version

    from daemon.compiled import hot_path_build

    click.echo(f"barcast, version {version('barcast')} (feed hot path: {hot_path_build()})")
    ctx.exit()


for _name in COMMAND_MODULES:
    for _cmd in importlib.import_module(f"daemon.cli.{_name}").commands:
        main.add_command(_cmd)


def run(argv: list[str] | None = None) -> Any:
    """Entry point: BarcastError becomes a one-line message and its exit code, no traceback."""
    try:
        return main.main(args=argv, prog_name="barcast", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except BarcastError as exc:
        click.echo(f"barcast: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a file the command writes or reads (--out, --artifacts, --plot …): name it
        if isinstance(exc, BrokenPipeError):
            sys.exit(1)
        where = "".join(f"{f}: " for f in (exc.filename, exc.filename2) if f)
        click.echo(f"barcast: error: {where}{exc.strerror or exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
