"""Asking a running daemon over its HTTP API (what `barcast status` does before it falls back
to the database)."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import orjson

from daemon.config import ApiConfig
from db.errors import InputError


def api_base(cfg: ApiConfig, api: str | None = None) -> str | None:
    """`api` checked, else the config's address as a client reaches it (None: API disabled)."""
    if api:
        base = api.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise InputError(f"--api: {api!r} is not a URL like http://127.0.0.1:8787")
        return base
    if not cfg.enabled:
        return None
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(cfg.host, cfg.host)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{cfg.port}"


def daemon_status(
    base: str, *, token: str = "", timeout: float = 2.0, quiet_unreachable: bool = True
) -> tuple[dict[str, Any] | None, str | None]:
    """(the daemon's /status, None) or (None, why not) when no daemon answers usefully at `base`.

    Nothing listening is no news at the configured address (no daemon runs), but it is worth a
    word at an address the operator named (`quiet_unreachable=False`): a typo must not pass for
    "the daemon has nothing to add". No answer in time is news at any address: a daemon that
    hangs must not pass for one that is not running."""
    req = urllib.request.Request(f"{base}/status", headers={"Accept": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            doc = orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return None, f"daemon at {base} answered {exc.code}"
    except ValueError:
        return None, f"{base}/status answered something that is not JSON (is it barcast's API?)"
    except OSError as exc:
        reason = getattr(exc, "reason", None) or exc
        if isinstance(reason, TimeoutError):  # something is there, and busy or hung: always news
            return None, f"the daemon at {base} did not answer within {timeout:g} s (--timeout)"
        return None, None if quiet_unreachable else f"no daemon answered at {base} ({reason})"
    return (doc, None) if isinstance(doc, dict) else (None, f"daemon at {base} answered no status object")
