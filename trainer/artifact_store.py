"""Where a model's artifact lives: a local directory (SQLite, one machine) or the database
(PostgreSQL, any machine). `publish` after saving; `local_path` before loading, which on
PostgreSQL materialises the stored files into `<artifacts_dir>/<model id>` once (atomically, by
rename) and then loads from there; `load_artifact` verifies every file's sha256 as always."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from db import artifacts
from db.engine import Database

#: `models.artifact_path` of an artifact stored in the database.
DB_PREFIX = "db:"


def in_database(database: Database) -> bool:
    return database.dialect == "postgresql"


def publish(database: Database, model_id: str, directory: Path) -> str:
    """The `artifact_path` to register for an artifact just saved in `directory`."""
    if not in_database(database):
        return str(directory.resolve())
    artifacts.put(database, model_id, {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()})
    return DB_PREFIX + model_id


def local_path(database: Database, artifact_path: str, artifacts_dir: str | Path) -> Path:
    """A local directory holding the artifact `artifact_path` names."""
    if not artifact_path.startswith(DB_PREFIX):
        return Path(artifact_path)
    model_id = artifact_path[len(DB_PREFIX):]
    target = Path(artifacts_dir) / model_id
    if (target / "manifest.json").is_file():
        return target
    files = artifacts.get(database, model_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model_id}.", dir=target.parent))
    for name, data in files.items():
        (tmp / Path(name).name).write_bytes(data)
    try:
        tmp.rename(target)
    except OSError:  # another process materialised it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def forget(database: Database, artifact_path: str) -> None:
    """Delete a pruned artifact's stored files (the local copy is removed by the caller)."""
    if artifact_path.startswith(DB_PREFIX):
        artifacts.remove(database, [artifact_path[len(DB_PREFIX):]])
