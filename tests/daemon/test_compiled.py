"""The compiled hot path (setup.py, `daemon.compiled`): what `pip install .` runs behaves as the
sources the rest of the suite tests, and the build is all or nothing."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from daemon.compiled import MODULES, compiled_modules, hot_path_build
from tests.daemon.clirun import barcast

REPO = Path(__file__).resolve().parents[2]

#: The tests of the compiled modules (bars, field checks, the session) and of the ingest path
#: around them, end to end with a database; not the end-to-end restart tests (`SKIP`: about a
#: third of the run's time, for what a restart adds in the ingest shell, which is not compiled;
#: the session's own restart tests run).
HOT_PATH_TESTS = (
    "tests/daemon/test_bars_aggregator.py",
    "tests/daemon/test_bars_golden.py",
    "tests/daemon/test_bars_golden_hot.py",
    "tests/daemon/test_bars_hotpath.py",
    "tests/daemon/test_bars_stateful.py",
    "tests/daemon/test_feeds_blocks.py",
    "tests/daemon/test_feeds_fastpath.py",
    "tests/daemon/test_feeds_hot_fuzz.py",
    "tests/daemon/test_feeds_session.py",
    "tests/daemon/test_feeds_refused.py",
    "tests/daemon/test_ingest_e2e.py",
)
SKIP = "not (test_ingest_e2e and restart)"


def _hotpath() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hotpath", REPO / "bench" / "hotpath.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


hotpath = _hotpath()
needs_cc = pytest.mark.skipif(hotpath.compiler() is None, reason="no C compiler: installs here are pure Python")


def test_the_suite_tests_the_sources_not_a_build() -> None:
    """The editable install the README's test command makes runs the hot path from its sources,
    so an edited module is what the tests run (a compiled one would shadow it)."""
    assert compiled_modules() == []
    assert hot_path_build() == "pure"
    assert all((REPO / m).is_file() for m in MODULES)


def test_version_says_which_build_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    res = barcast(capsys, "--version")
    assert res.code == 0, res.err
    assert res.out == f"barcast, version {version('barcast')} (feed hot path: pure)\n"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if hotpath.compiler() is None:
        pytest.skip("no C compiler: installs here are pure Python")
    dest = tmp_path_factory.mktemp("compiled") / "barcast"
    log = hotpath.build(dest)
    assert "hot path compiled with mypyc" in log, log
    return dest


@needs_cc
def test_the_hot_path_tests_pass_against_the_compiled_build(tree: Path) -> None:
    shared = os.environ.get("BARCAST_SHARED_DIR", str(REPO.parent / "shared"))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2", "-k", SKIP, *HOT_PATH_TESTS],
        cwd=tree, env={**os.environ, "PYTHONPATH": str(tree), "BARCAST_SHARED_DIR": shared},
        capture_output=True, text=True, check=False, timeout=540,
    )
    summary = done.stdout.strip().splitlines()[-1:]
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert summary and " passed" in summary[0] and "failed" not in summary[0], summary


@needs_cc
@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"CC": "false"}, "compiling the hot path failed"),  # a compiler that fails: no half build
        ({"BARCAST_PURE_PYTHON": "1"}, "BARCAST_PURE_PYTHON is set"),
    ],
)
def test_a_build_that_cannot_compile_installs_pure_python(tmp_path: Path, env: dict[str, str], says: str) -> None:
    with pytest.raises(hotpath.BuildFailed, match="built 'pure'") as failed:
        hotpath.build(tmp_path / "barcast", env=env)
    assert says in str(failed.value)
    assert not list((tmp_path / "barcast").rglob("*.so"))


@needs_cc
def test_a_pure_build_after_a_compiled_one_installs_no_extension(tree: Path) -> None:
    """setuptools reuses its build directory: the compiled build's extensions are still there
    when a later build compiles nothing, and would go into the wheel, shadowing the sources."""

    def built() -> list[str]:
        return sorted(p.name for p in (tree / "build").glob("lib.*/**/*.so"))

    assert len(built()) == len(MODULES) + 1  # the fixture's build: each module and the shared runtime
    done = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext"], cwd=tree, env={**os.environ, "BARCAST_PURE_PYTHON": "1"},
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert built() == []
