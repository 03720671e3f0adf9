"""Operator commands (issue: operating barcast). Placeholders until that work lands."""

from daemon.cli.common import not_implemented

commands = [not_implemented(n, "operations") for n in ("forecasts", "accuracy", "status", "tail", "plot")]
