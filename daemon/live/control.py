"""The daemon's control channel: a unix socket speaking one JSON object per line.

Requests: {"cmd": "status"} and {"cmd": "retrain", "series": "E:S[:I]" | null, "wait": bool}.
The socket file is created with mode 0600: only the daemon's user (and root) may steer it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from db.errors import BarcastError

log = logging.getLogger("barcast.control")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_REQUEST = 64 * 1024


class ControlServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _check_private(self.path.parent)
        if self.path.exists():
            if await _alive(self.path):
                raise BarcastError(f"another barcast daemon is already running (control socket {self.path})")
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_REQUEST)
        finally:
            os.umask(old)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                req = orjson.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("request is not a JSON object")
                resp = await self.handler(req)
            except (ValueError, orjson.JSONDecodeError) as exc:
                resp = {"ok": False, "error": f"bad request: {exc}"}
            except BarcastError as exc:
                resp = {"ok": False, "error": str(exc)}
            except Exception as exc:  # the database away, a bug: answer, don't drop the caller
                log.exception("control request failed", extra={"request": req})
                resp = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            writer.write(orjson.dumps(resp, default=str) + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


async def _alive(path: Path) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def request(path: Path, req: dict[str, Any], *, timeout: float | None = 10) -> dict[str, Any]:
    """Send one request to a running daemon. Raises ConnectionError if none listens there, and
    BarcastError if one took the request but closed without answering (it stopped meanwhile):
    a caller must not take that for "no daemon" (`barcast retrain` would train a second time)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 5)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise ConnectionError(str(exc)) from None
    try:
        writer.write(orjson.dumps(req) + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    except ConnectionError as exc:
        line = b""
        log.debug("control connection lost", extra={"error": str(exc)})
    writer.close()
    if not line:
        raise BarcastError(f"the daemon on {path} closed the control connection without answering "
                           f"(it stopped or failed meanwhile; see its log)")
    result: dict[str, Any] = orjson.loads(line)
    return result


def _check_private(directory: Path) -> None:
    """A socket's directory under a shared one (the short fallback under /tmp: see
    `Config.control_socket`) must be this user's alone, or another user could take its place."""
    if not directory.name.startswith("barcast-") or directory.parent.stat().st_mode & 0o002 == 0:
        return  # not a world-writable parent: the directory is where the operator put it
    st = directory.lstat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077 or not directory.is_dir() or directory.is_symlink():
        raise BarcastError(f"control socket directory {directory} is not private to this user "
                           "(owner, mode 0700); remove it, or set service.control_socket")
