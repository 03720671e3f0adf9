"""`barcast run` (the service) and `barcast retrain` (ask the daemon, or train standalone)."""

from __future__ import annotations

import asyncio
import json

import click

from daemon.cli.common import AppContext, pass_app, series_option
from db.errors import BarcastError, InputError
from db.records import SeriesKey


@click.command("run")
@click.option("--instance", default=None, metavar="ID",
              help="This daemon's id among daemons sharing a database (cluster.instance; "
                   "barcast@.service passes %i). Default: host-pid.")
@pass_app
def run_cmd(app: AppContext, instance: str | None) -> None:
    """Run the forecaster service in the foreground (what systemd starts).

    Feeds -> bars -> a 16-step forecast per series at every bar close -> database + forecast log;
    retraining on its schedule; HTTP API and control socket. Stops cleanly on SIGTERM/SIGINT.
    """
    import dataclasses

    from daemon.config import ClusterConfig
    from daemon.runner import run_service

    config = app.config
    if instance is not None:
        try:
            cluster = ClusterConfig(**{**dataclasses.asdict(config.cluster), "instance": instance})
        except ValueError as exc:
            raise InputError(f"--instance: {exc}") from None
        config = dataclasses.replace(config, cluster=cluster)
    if not config.series:
        raise InputError("no [[series]] configured: nothing to forecast")
    run_service(config)


@click.command("retrain")
@series_option("The configured series (model group) to retrain.")
@click.option("--all", "all_series", is_flag=True, help="Every configured series (model group).")
@click.option("--now", is_flag=True,
              help="Wait for the run and print its outcome (default: a running daemon starts it and returns).")
@click.option("--standalone", is_flag=True, help="Do not ask a running daemon; train in this process's child.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override train.epochs (standalone only).")
@pass_app
def retrain_cmd(app: AppContext, series: SeriesKey | None, all_series: bool, now: bool, standalone: bool,
                epochs: int | None) -> None:
    """Train a challenger and promote it only if it beats the champion and persistence.

    Asks the running daemon through its control socket; with no daemon running (or
    --standalone), runs the same job here, in a child process, under the same per-series lease.
    """
    if bool(series) == all_series:
        raise InputError("give --series EXCHANGE:SYMBOL or --all")
    config = app.config
    key = series
    if key is not None and key not in config.series_keys:
        raise InputError(f"series {key} is not in the config (configured: "
                         f"{', '.join(str(k) for k in config.series_keys)})")
    from daemon.live.control import request

    daemon_up = False
    if not standalone and epochs is None:
        try:
            resp = asyncio.run(request(config.control_socket,
                                       {"cmd": "retrain", "series": str(key) if key else None, "wait": now},
                                       timeout=None if now else 30))
        except ConnectionError:
            click.echo(f"no daemon listening on {config.control_socket}; training standalone", err=True)
        else:
            daemon_up = True
            if "outcomes" in resp:  # waited for: each group's outcome, or why it has none
                click.echo(json.dumps(resp, indent=2, default=str))
                if not resp.get("ok"):
                    raise BarcastError(f"retrain failed: {resp.get('error')}")
                return
            if resp.get("ok"):
                click.echo(json.dumps(resp, indent=2, default=str))
                return
            if not resp.get("disabled"):
                raise BarcastError(f"daemon refused: {resp.get('error')}")
            click.echo("the daemon does not retrain (retrain.enabled = false); training here", err=True)
    from daemon.live.retrainer import retrain_answer
    from daemon.runner import retrain_standalone

    results = asyncio.run(retrain_standalone(config, app.database(), key, epochs=epochs))
    answer = retrain_answer(results)
    click.echo(json.dumps(answer["outcomes"], indent=2, default=str))
    outcomes = [r for r in results if not isinstance(r, str)]
    if any(o.promoted for o in outcomes) and (daemon_up or config.control_socket.exists()):
        # the daemon serves the new champion at once (timer-driven retraining)
        try:
            resp = asyncio.run(request(config.control_socket, {"cmd": "reload"}))
            click.echo(f"daemon now serves: {', '.join(resp.get('serving', []))}", err=True)
            if not resp.get("ok"):
                raise BarcastError(f"the daemon did not load the new champion: {resp.get('error')}")
        except ConnectionError:
            pass
    if not answer["ok"]:
        raise BarcastError(f"retrain failed: {answer['error']}")


commands = [run_cmd, retrain_cmd]
