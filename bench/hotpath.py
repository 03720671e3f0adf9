"""A copy of the source tree with the hot path compiled as `pip install .` compiles it (setup.py),
for the benchmarks and `tests/daemon/test_compiled.py`: editable installs and checkouts run the
hot path as pure Python, the installed service runs it compiled.

    python bench/hotpath.py DEST     # build one, print where
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: What a built tree holds: the packages, the tests and benchmarks that run against it, the build.
PARTS = ("daemon", "db", "trainer", "tests", "bench", "setup.py", "pyproject.toml")


class BuildFailed(RuntimeError):
    """The compile did not happen (no C compiler, a failed build): the message says why."""


def compiler() -> str | None:
    """The C compiler setuptools would use, when this machine has one."""
    cc = os.environ.get("CC") or str(sysconfig.get_config_var("CC") or "cc")
    return shutil.which(cc.split()[0]) if cc.strip() else None


def fingerprint(root: Path = ROOT) -> str:
    """A hash of every source a built tree copies: a tree built from other sources is stale."""
    h = hashlib.sha256()
    for part in PARTS:
        base = root / part
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if _copied(p))
        for p in files:
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def _copied(p: Path) -> bool:
    return p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".so", ".pyd", ".pyc")


def build(dest: Path, root: Path = ROOT, env: dict[str, str] | None = None) -> str:
    """Copy the tree to `dest` and compile its hot path in place there (`setup.py build_ext
    --inplace`, the same extensions as an install). Returns the build's log; raises
    `BuildFailed` when the tree came out anything but compiled (`daemon.compiled`)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", "*.pyc")
    for part in PARTS:
        src = root / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=ignore)
        else:
            shutil.copy2(src, dest / part)
    run_env = {**os.environ, **(env or {})}
    done = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=dest, env=run_env, capture_output=True, text=True, check=False,
    )
    log = done.stdout + done.stderr
    state = built_state(dest)
    if done.returncode != 0 or state != "compiled":
        tail = "\n".join(log.splitlines()[-15:])
        raise BuildFailed(f"the hot path built {state!r} (setup.py exit {done.returncode}):\n{tail}")
    return log


def built_state(tree: Path) -> str:
    """`daemon.compiled.hot_path_build()` as a process importing from `tree` sees it."""
    probe = "from daemon.compiled import hot_path_build; print(hot_path_build())"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True, text=True, check=False,
    )
    return out.stdout.strip() or f"unimportable: {out.stderr.strip().splitlines()[-1:]}"


def cached(root: Path = ROOT) -> Path:
    """A compiled tree of the current sources under `build/hot-path/`, built once per change."""
    dest = root / "build" / "hot-path" / fingerprint(root)
    if not (dest / ".built").exists():
        build(dest, root)
        (dest / ".built").touch()
        for old in dest.parent.iterdir():
            if old != dest:
                shutil.rmtree(old, ignore_errors=True)
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(build(Path(sys.argv[1]).resolve()))
    print(sys.argv[1])
