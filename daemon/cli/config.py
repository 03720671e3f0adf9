"""`barcast config show|check`."""

from __future__ import annotations

import click

from daemon.cli.common import AppContext, pass_app
from daemon.config import config_as_toml


@click.group("config")
def config_group() -> None:
    """The effective configuration."""


@config_group.command("show")
@pass_app
def show_cmd(app: AppContext) -> None:
    """Print the effective config (file + BARCAST_* environment + flags) as TOML."""
    click.echo(config_as_toml(app.config), nl=False)


@config_group.command("check")
@pass_app
def check_cmd(app: AppContext) -> None:
    """Validate the config and exit 0 if it is good (2 with the reason if not)."""
    cfg = app.config
    click.echo(f"config OK ({cfg.source})")


commands = [config_group]
