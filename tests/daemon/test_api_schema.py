"""Property-based tests of the HTTP API from its own OpenAPI schema (schemathesis): a real app on a
small real SQLite database answers every generated request without a 5xx and as its schema says;
injection strings in every parameter are inert; nothing over HTTP changes state; 127.0.0.1 by
default."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.result import Ok

from daemon.config import ApiConfig, Config
from daemon.feeds.randomwalk import random_walk_bars
from daemon.ops.api import ApiServer
from db.bars import upsert_bars
from db.engine import Database, open_database
from db.forecasts import insert_forecasts
from tests.daemon.opsdata import BTC, DRIFT, PERSISTENCE, forecasts_for
from tests.daemon.test_ops_api import Running

INJECTIONS = (
    "' OR '1'='1", "x'; DROP TABLE bars; --", "\" OR 1=1 --", "1; SELECT * FROM models",
    "../../etc/passwd", "%00", "${jndi:ldap://127.0.0.1/x}", "<script>alert(1)</script>", "binance:BTC-USDT' --",
)
TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Generated requests per operation: small for CI.
EXAMPLES = 8


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    path = tmp_path_factory.mktemp("api") / "small.db"
    db = open_database(f"sqlite:///{path}")
    bars = [dataclasses.replace(b, exchange=BTC.exchange, symbol=BTC.symbol)
            for b in random_walk_bars(BTC.symbol, 120, start=datetime(2024, 1, 1, tzinfo=UTC))]
    upsert_bars(db, bars)
    created = datetime(2024, 1, 2, tzinfo=UTC)
    insert_forecasts(db, [forecasts_for(bars, i, m, created) for i in range(60, 100) for m in (PERSISTENCE, DRIFT)])
    yield db
    db.close()


@pytest.fixture(scope="module")
def running(small_db: Database) -> Iterator[Running]:
    r = Running(small_db, token=TOKEN)
    yield r
    r.stop()


def test_no_5xx_and_responses_match_the_schema(running: Running) -> None:
    """Every operation of the schema (bar the endless SSE stream, covered in test_ops_api), a few
    generated requests each, with schemathesis' checks: no 5xx; status code, content type, headers
    and body as documented; invalid data and a wrong token refused. Not `positive_data_acceptance`:
    a schema-valid request may still be refused with a documented 400 for what a schema cannot
    say (since after until, an unknown series)."""
    schema = schemathesis.openapi.from_url(running.url + "/openapi.json")
    operations = []
    for r in schema.get_all_operations():
        assert isinstance(r, Ok), r.err()  # an operation the schema does not describe well
        operations.append(r.ok())
    tested = []
    for op in operations:
        if op.path == "/forecasts/stream":
            continue

        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])

        check()
        tested.append(op.path)
    assert {"/health", "/forecasts", "/bars", "/accuracy", "/models", "/status", "/metrics"} <= set(tested)


def _counts(db: Database) -> tuple[int, ...]:
    from sqlalchemy import text

    with db.engine.connect() as conn:
        return tuple(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                     for t in ("bars", "forecasts", "models", "forecast_scores"))


def test_injection_strings_in_every_parameter_are_inert(running: Running, small_db: Database) -> None:
    spec = httpx.get(running.url + "/openapi.json", timeout=10).json()
    before = _counts(small_db)
    tried = 0
    with httpx.Client(base_url=running.url, timeout=30, headers=AUTH) as client:
        for path, ops in spec["paths"].items():
            if path == "/forecasts/stream":
                continue
            names = [p["name"] for p in ops["get"].get("parameters", []) if p["in"] == "query"]
            for name in names:
                for bad in INJECTIONS:
                    r = client.get(path, params={name: bad})
                    tried += 1
                    assert r.status_code < 500, (path, name, bad, r.text)
                    if r.status_code >= 400:
                        assert isinstance(r.json().get("error"), str), (path, name, r.text)
    assert tried >= len(INJECTIONS) * 5
    assert _counts(small_db) == before  # nothing dropped, nothing added
    assert httpx.get(running.url + "/forecasts", params={"limit": 1}, headers=AUTH, timeout=10).json()["count"] == 1


def test_nothing_over_http_changes_state(running: Running) -> None:
    """Reload and retrain exist only on the control socket (mode 0600): no HTTP method but GET,
    and writing methods are refused on every path."""
    spec = httpx.get(running.url + "/openapi.json", timeout=10).json()
    assert all(set(ops) == {"get"} for ops in spec["paths"].values())
    for path in [*spec["paths"], "/reload", "/retrain", "/control"]:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            code = httpx.request(method, running.url + path, headers=AUTH, timeout=10).status_code
            assert code in (404, 405), (method, path)


def test_api_binds_loopback_by_default(small_db: Database) -> None:
    from daemon.config import load_config
    from daemon.ops.api import create_app

    example = Path(__file__).resolve().parents[2] / "systemd" / "barcast.toml.example"
    for cfg in (Config().api, load_config(example, env={}).api):
        assert cfg == ApiConfig() and cfg.host == "127.0.0.1"
        api = ApiServer(create_app(small_db, series=(BTC,)), cfg.host, 0)
        api.bind()
        assert api._sock is not None
        try:
            assert api._sock.getsockname()[0] == "127.0.0.1"
        finally:
            api._sock.close()
