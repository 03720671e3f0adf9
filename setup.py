"""`pip install .` also compiles the feed hot path with mypyc (the modules in daemon/compiled.py).

Everything else about the package is in pyproject.toml. The compile is all or nothing and never
fails the install: without a C compiler or the Python headers, or when any step fails, the
package installs as pure Python (the same behaviour, slower) and the build log says why.
Editable installs (development, the test suite) are always pure Python, so an edited source is
never shadowed by a stale build; `tests/daemon/test_compiled.py` runs the hot path's tests
against a compiled build. `BARCAST_PURE_PYTHON=1` skips the compile.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
#: read without importing the package (its dependencies are not in the build environment)
MODULES: tuple[str, ...] = runpy.run_path(str(ROOT / "daemon" / "compiled.py"))["MODULES"]


def _say(text: str) -> None:
    print(f"barcast build: {text}", file=sys.stderr, flush=True)


class BuildHotPath(build_ext):
    """Builds the mypyc extensions in place of the stand-in, decided when the build runs: not at
    every `setup.py` call pip makes for metadata (those finalize this command too, before an
    editable build says it is one); an editable build builds none."""

    command_name = "build_ext"  # its options are build_ext's (not this class's name)

    def run(self) -> None:
        self._remove_stale()
        exts = self._compiled()
        if not exts:
            self.extensions = []
            return
        self.distribution.ext_modules = exts
        self.distribution.reinitialize_command(self)  # this command again, its options as given, for these
        self.ensure_finalized()
        try:
            super().run()
        except Exception as exc:  # a compile or link error: no half-compiled package
            self._remove_built()
            self.extensions = []
            _say(f"compiling the hot path failed ({type(exc).__name__}: {exc}); installing it as pure Python")
            return
        _say(f"hot path compiled with mypyc: {', '.join(MODULES)}")

    def _compiled(self) -> list[Extension]:
        if self.editable_mode:
            _say("editable install: the hot path runs as pure Python")
            return []
        if os.environ.get("BARCAST_PURE_PYTHON", "") not in ("", "0"):
            _say("BARCAST_PURE_PYTHON is set: the hot path runs as pure Python")
            return []
        try:
            from mypyc.build import mypycify

            return list(mypycify(list(MODULES), opt_level="3", group_name="barcast_hot_path"))
        except BaseException as exc:  # mypy exits on a type error; a missing mypyc raises
            if isinstance(exc, KeyboardInterrupt):
                raise
            _say(f"mypyc could not translate the hot path ({type(exc).__name__}: {exc}); pure Python")
            return []

    def _remove_stale(self) -> None:
        """Extensions an earlier build left in the build directory (setuptools reuses it): in a
        pure build, or one of other modules, they would be installed and shadow the sources."""
        base = Path(self.build_lib)
        stale = list(base.glob("*__mypyc.*"))
        for module in MODULES:
            path = base / module
            stale += [p for p in path.parent.glob(path.stem + ".*") if p.suffix in (".so", ".pyd")]
        for p in stale:
            p.unlink()

    def _remove_built(self) -> None:
        for ext in self.extensions:
            for where in (self.build_lib, "."):
                path = Path(where, self.get_ext_filename(self.get_ext_fullname(ext.name)))
                path.unlink(missing_ok=True)

    def get_outputs(self) -> list[str]:
        return [] if self.editable_mode else super().get_outputs()

    def get_output_mapping(self) -> dict[str, str]:
        return {} if self.editable_mode else super().get_output_mapping()


# A stand-in, so setuptools runs `build_ext` (and tags the wheel for this platform); `BuildHotPath`
# replaces it with the real extensions, or none.
_STAND_IN: Any = Extension("daemon._hot_path", sources=["daemon/compiled.py"])

setup(ext_modules=[_STAND_IN], cmdclass={"build_ext": BuildHotPath})
