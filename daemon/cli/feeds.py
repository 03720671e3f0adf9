"""Feed commands (issue: live exchange feeds). Placeholders until that work lands."""

from daemon.cli.common import not_implemented

commands = [not_implemented(n, "live exchange feeds") for n in ("record", "parse", "exchange-sim", "demo", "ingest")]
