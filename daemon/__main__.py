"""`python -m daemon` runs the `barcast` CLI."""

from daemon.cli import run

run()
