"""Live daemon commands (issue: live daemon). Placeholders until that work lands."""

from daemon.cli.common import not_implemented

commands = [not_implemented(n, "live daemon") for n in ("run", "retrain")]
