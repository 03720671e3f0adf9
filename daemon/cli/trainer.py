"""Trainer commands (issue: trainer). Placeholders until that work lands."""

from daemon.cli.common import not_implemented

commands = [not_implemented(n, "trainer") for n in ("dataset", "train", "evaluate", "models")]
