"""Model artifact files as rows (bytes + sha256), so daemons on several machines sharing one
PostgreSQL database load each other's models. Checked on the way out: a file whose bytes no
longer match its digest is refused, naming the model and file."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from datetime import UTC, datetime

from sqlalchemy import delete, select

from db.engine import Database
from db.errors import ArtifactError
from db.schema import model_artifacts as art_t


def put(database: Database, model_id: str, files: Mapping[str, bytes]) -> None:
    """Store (or replace) every file of one artifact in one transaction."""
    now = datetime.now(UTC)
    rows = [{"model_id": model_id, "name": name, "data": data, "sha256": hashlib.sha256(data).hexdigest(),
             "size": len(data), "created_at": now} for name, data in files.items()]
    with database.begin() as conn:
        conn.execute(delete(art_t).where(art_t.c.model_id == model_id))
        if rows:
            conn.execute(art_t.insert(), rows)


def get(database: Database, model_id: str) -> dict[str, bytes]:
    """Every file of one artifact, each checked against its stored sha256."""
    with database.engine.connect() as conn:
        rows = conn.execute(select(art_t.c.name, art_t.c.data, art_t.c.sha256).where(art_t.c.model_id == model_id)
                            ).all()
    if not rows:
        raise ArtifactError(f"model {model_id}: no artifact stored in the database")
    out = {}
    for name, data, digest in rows:
        data = bytes(data)
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactError(f"model {model_id}: stored file {name} does not match its sha256 (corrupt)")
        out[name] = data
    return out


def remove(database: Database, model_ids: Collection[str]) -> None:
    if not model_ids:
        return
    with database.begin() as conn:
        conn.execute(delete(art_t).where(art_t.c.model_id.in_(list(model_ids))))
