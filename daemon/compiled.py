"""Which build of the feed hot path this process runs: compiled by mypyc, or pure Python.

`pip install .` compiles `MODULES` with mypyc when a C compiler and the Python headers are
there (setup.py); without them, and in editable installs (development, tests), the same
sources run as pure Python. Both behave the same (`tests/daemon/test_compiled.py` runs the hot
path's tests against a compiled build); the compiled one ingests 5-65 % more messages a second
(`bench/ingest_rate.py`). This module imports only the standard library, so setup.py reads
`MODULES` from it without importing the package.
"""

from __future__ import annotations

import importlib
import sys

#: The modules mypyc compiles, as paths from the project root: the per-frame and per-trade
#: code (session state machine, field checks, bar aggregation). Protocol modules stay Python:
#: msgspec's tagged `Struct` schemas do not work inside a compiled module.
MODULES = ("daemon/bars.py", "daemon/feeds/fields.py", "daemon/feeds/session.py")


def module_names() -> list[str]:
    return [m.removesuffix(".py").replace("/", ".") for m in MODULES]


def compiled_modules() -> list[str]:
    """The hot-path modules loaded from a compiled extension in this process (imports them)."""
    out = []
    for name in module_names():
        mod = sys.modules.get(name) or importlib.import_module(name)
        if not str(getattr(mod, "__file__", "")).endswith(".py"):
            out.append(name)
    return out


def hot_path_build() -> str:
    """'compiled' (every hot-path module is a mypyc extension), 'pure' (none is), or
    'partial: ...' (a broken install: some are; setup.py builds all or none)."""
    done = compiled_modules()
    if not done:
        return "pure"
    if len(done) == len(MODULES):
        return "compiled"
    return "partial: " + ", ".join(done)
