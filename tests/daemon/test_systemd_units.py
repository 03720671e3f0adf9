"""The shipped systemd units pass `systemd-analyze verify` and keep their security exposure score.

Skipped only where systemd-analyze is missing outside CI; in CI (env CI set) it must run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from daemon.config import Config, load_config
from daemon.configtree import to_plain
from tests.unprivileged import as_user

REPO = Path(__file__).resolve().parents[2]


def _keys(node: object, prefix: str = "") -> set[str]:
    if isinstance(node, dict):
        out = set()
        for k, v in node.items():
            out |= {f"{prefix}{k}"} | _keys(v, f"{prefix}{k}.")
        return out
    if isinstance(node, list) and node and isinstance(node[0], dict):
        return set().union(*(_keys(v, prefix) for v in node))
    return set()


def test_systemd_check_passes() -> None:
    if shutil.which("systemd-analyze") is None and not os.environ.get("CI"):
        pytest.skip("systemd-analyze is not installed (CI installs it)")
    res = subprocess.run([str(REPO / ".ci" / "systemd-check")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verify OK" in res.stdout and "Overall exposure level for barcast.service" in res.stdout
    assert "barcast@a.service" in res.stdout and "Overall exposure level for barcast@a.service" in res.stdout


def test_instance_template_runs_one_daemon_per_instance_id() -> None:
    """barcast@.service: `--instance %i`, its own state, runtime and log directories, otherwise the
    same unit (hardening included) as barcast.service."""
    single = (REPO / "systemd" / "barcast.service").read_text()
    template = (REPO / "systemd" / "barcast@.service").read_text()
    assert "ExecStart=/usr/local/bin/barcast run --instance %i" in template
    for d in ("StateDirectory", "LogsDirectory", "RuntimeDirectory"):
        assert f"{d}=barcast/%i" in template
    hardening = [line for line in single.splitlines() if line.startswith(("Protect", "Private", "Restrict", "System"))]
    assert hardening and all(line in template.splitlines() for line in hardening)


def test_shipped_unit_points_at_the_documented_binary() -> None:
    text = (REPO / "systemd" / "barcast.service").read_text()
    assert "ExecStart=/usr/local/bin/barcast run" in text and "Type=notify" in text and "WatchdogSec=" in text


def test_example_config_documents_every_option_and_loads(tmp_path: Path) -> None:
    example = REPO / "systemd" / "barcast.toml.example"
    cfg = load_config(example, env={})
    assert cfg.api.host == "127.0.0.1"
    documented = _keys(tomllib.loads(example.read_text()))
    plain = to_plain(Config())
    plain.pop("source", None)
    missing = _keys(plain) - documented
    assert not missing, f"systemd/barcast.toml.example lacks {sorted(missing)}"


def test_documented_config_install_is_readable_by_a_dynamic_user() -> None:
    """The README's install line for the config, run for real (into a scratch root): an
    unprivileged uid, as `DynamicUser=` gets, can read the installed file."""
    import re
    import tempfile

    readme = (REPO / "README.md").read_text()
    line = re.search(r"^install -D -m (\d{4}) systemd/barcast\.toml\.example /etc/barcast/barcast\.toml", readme,
                     re.MULTILINE)
    assert line, "README has no install line for the config"
    header = (REPO / "systemd" / "barcast.toml.example").read_text()
    assert f"install -D -m {line.group(1)} systemd/barcast.toml.example" in header
    root = Path(tempfile.mkdtemp(prefix="barcast-etc-", dir="/tmp"))
    root.chmod(0o755)
    target = root / "etc" / "barcast" / "barcast.toml"
    subprocess.run(["install", "-D", "-m", line.group(1), str(REPO / "systemd" / "barcast.toml.example"),
                    str(target)], check=True)
    load_config(REPO / "systemd" / "barcast.toml.example", env={})  # imports done here, not as the user

    def check() -> str:
        load_config(target, env={})
        return "read"

    msg = as_user(check, uid=61999)  # a uid that owns nothing, like a dynamic user
    shutil.rmtree(root)
    assert msg == "read", msg
