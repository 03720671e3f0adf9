"""A PostgreSQL that is not refused but never answers (a lost host or network) is an error after
a bounded time, never a hang: barcast's connections carry libpq's connect timeout, TCP keepalives
and a TCP user timeout (`db.engine.PG_CONNECT_DEFAULTS`), unless the URL sets its own."""

from __future__ import annotations

import socket
import threading

import pytest

from db.engine import open_database
from db.errors import DatabaseError


def test_a_server_that_never_answers_is_a_named_error_not_a_hang() -> None:
    """Found with two daemons behind a proxy that stopped forwarding: no log line, `/health` and
    `barcast status` hung for as long as the outage (a lost host: minutes per connect)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nothing ever answers libpq
    port = silent.getsockname()[1]
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            open_database(f"postgresql://u:secret@127.0.0.1:{port}/barcast", create=False).close()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=connect, daemon=True)
    try:
        worker.start()
        worker.join(120)  # a hang detector, far above the 10 s connect timeout
    finally:
        silent.close()
    assert outcome, "open_database still waiting on a server that never answers"
    (exc,) = outcome
    assert isinstance(exc, DatabaseError) and f"127.0.0.1:{port}/barcast" in str(exc), exc
    assert "timeout" in str(exc).lower() and "secret" not in str(exc), exc


@pytest.mark.postgres
def test_connections_carry_the_timeouts_and_the_url_can_override_them(pg_db_url: str) -> None:
    for url, timeout in ((pg_db_url, "10"), (f"{pg_db_url}?connect_timeout=3", "3")):
        database = open_database(url)
        try:
            with database.engine.connect() as conn:
                dsn = conn.connection.dbapi_connection.info.dsn  # type: ignore[union-attr]
        finally:
            database.close()
        params = dict(p.split("=", 1) for p in dsn.split())
        assert params["connect_timeout"] == timeout, dsn
        assert (params["keepalives"], params["tcp_user_timeout"]) == ("1", "30000"), dsn
