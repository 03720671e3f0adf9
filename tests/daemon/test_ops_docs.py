"""/docs and /redoc work offline: every asset they load is served by barcast itself.

One test fetches the pages and each asset they reference over a real server; another renders
/docs in a real headless Chromium whose resolver refuses every host but 127.0.0.1.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from db.engine import open_database
from tests.daemon.test_ops_api import Running

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']|(?:url|openapi_url):\s*'([^']+)'""")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    db = open_database(f"sqlite:///{tmp_path / 'docs.db'}")
    running = Running(db, token="s3cret")
    yield running
    running.stop()
    db.close()


def _assets(html: str) -> list[str]:
    return [a or b for a, b in ASSET.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_doc_pages_load_every_asset_locally(server: Running, page: str) -> None:
    resp = httpx.get(server.url + page, timeout=10)
    assert resp.status_code == 200
    assets = _assets(resp.text)
    assert any(a.endswith(".js") for a in assets), assets
    remote = [a for a in assets if re.match(r"(https?:)?//", a)]
    assert not remote, f"{page} loads from the network: {remote}"
    for asset in assets:
        if asset == "/openapi.json":
            continue  # behind the token like every endpoint but /health; the browser test reads it
        got = httpx.get(server.url + asset, timeout=10)
        assert got.status_code == 200, asset
        assert len(got.content) > 1000, asset


def test_docs_render_in_a_headless_browser_offline(tmp_path: Path) -> None:
    browser = next((b for p in BROWSERS if (b := shutil.which(p))), None)
    if browser is None:
        pytest.skip("no headless Chromium installed (.ci/run installs chromium-headless-shell from apt)")
    db = open_database(f"sqlite:///{tmp_path / 'docs.db'}")
    running = Running(db)
    try:
        out = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", "--virtual-time-budget=15000",
             f"--user-data-dir={tmp_path / 'profile'}",
             "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", running.url + "/docs"],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        running.stop()
        db.close()
    assert out.returncode == 0, out.stderr[-2000:]
    # Swagger UI drew the operations from /openapi.json: its JavaScript and the spec both loaded.
    paths = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', out.stdout))
    assert {"/health", "/forecasts", "/forecasts/latest", "/bars", "/status"} <= paths, paths


def test_anyio_lazy_modules_are_loaded_when_the_api_is_imported() -> None:
    """A lazy import from a server thread once raced another thread's `ast` parse (CPython 3.11)
    and cut a /docs asset off mid-response: the API resolves anyio's lazy names at import."""
    code = ("import sys; import daemon.ops.api; "
            "missing = [m for m in ('anyio._core._fileio', 'anyio.to_thread', 'anyio.abc._streams') "
            "if m not in sys.modules]; assert not missing, missing")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
