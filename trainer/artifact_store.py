"""Where a model's artifact lives: a local directory (SQLite, one machine) or the database
(PostgreSQL, any machine). `publish` after saving; `local_path` before loading, which on
PostgreSQL materialises the stored files into `<artifacts_dir>/<model id>` once (atomically, by
rename) and then loads from there; `load_artifact` verifies every file's sha256 as always.
`rehome` moves every artifact of a copied database (`barcast db copy`) to where the target's
kind keeps them; `embed` puts a SQLite backup's artifact files inside it (`barcast db backup`);
`take_over` makes a restored backup's files win over a different local copy (`barcast db restore`)."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from db import artifacts, registry
from db.engine import Database
from db.errors import ArtifactError
from db.records import ModelInfo
from trainer.artifacts import MANIFEST

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


def _has_files(directory: Path) -> bool:
    return (directory / "manifest.json").is_file()


def unavailable(database: Database) -> dict[str, str]:
    """Models in use (champions, candidates) whose artifact is not where `artifact_path` says:
    model id -> why. A retired model's artifact may have been pruned (retention), which is fine."""
    out = {}
    for info in registry.list_models(database):
        path = info.artifact_path
        if not path or info.status == "retired":
            continue
        if path.startswith(DB_PREFIX):
            try:
                artifacts.get(database, path[len(DB_PREFIX):])
            except ArtifactError as exc:
                out[info.id] = str(exc)
        elif not _has_files(Path(path)):
            out[info.id] = f"artifact directory {path} has no manifest.json"
    return out


@dataclass
class Rehomed:
    """What `rehome` did: models whose files went into the database or out to files, and retired
    models whose artifact retention had already pruned (left as they were)."""

    to_database: list[str] = field(default_factory=list)
    to_files: list[str] = field(default_factory=list)
    files: int = 0
    pruned: list[str] = field(default_factory=list)


def rehome(database: Database, artifacts_dir: str | Path) -> Rehomed:
    """After a copy into `database`: every artifact where this kind of database keeps it. On
    PostgreSQL a model whose artifact is a local directory gets its files stored in the database
    (`publish`: any daemon on any machine loads it); on SQLite a model stored in the database gets
    its files written to `<artifacts_dir>/<model id>` (`local_path`, each file checked against its
    sha256), its registry path pointed there and its stored rows removed (the directory is then
    the only copy, as for every SQLite install). Idempotent."""
    done = Rehomed()
    for info in registry.list_models(database):
        path = info.artifact_path
        if not path or in_database(database) == path.startswith(DB_PREFIX):
            continue
        if in_database(database):
            directory = Path(path)
            if not _has_files(directory):
                done.pruned.append(info.id)
                continue
            registry.set_artifact_path(database, info.id, publish(database, info.id, directory))
            done.to_database.append(info.id)
        else:
            try:
                directory = local_path(database, path, artifacts_dir)
            except ArtifactError:
                if info.status != "retired":
                    raise
                done.pruned.append(info.id)
                continue
            registry.set_artifact_path(database, info.id, str(directory.resolve()))
            artifacts.remove(database, [info.id])
            done.to_files.append(info.id)
        done.files += sum(1 for p in directory.iterdir() if p.is_file())
    return done


def unloadable(database: Database, models: list[ModelInfo]) -> dict[str, str]:
    """Load each of `models` as a daemon on another machine would (a database artifact fetched
    into a scratch directory, not a local copy): model id -> why it failed."""
    from trainer.artifacts import load_artifact

    out = {}
    with tempfile.TemporaryDirectory(prefix="barcast-verify-") as scratch:
        for info in models:
            if not info.artifact_path:
                continue
            try:
                load_artifact(local_path(database, info.artifact_path, scratch))
            except ArtifactError as exc:
                out[info.id] = str(exc)
    return out


@dataclass
class Embedded:
    """What `embed` did: models whose files went inside the backup, models in use whose files
    could not be read (id -> why: the backup cannot serve them, nor can the source), retired
    models whose files retention had already pruned."""

    models: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    missing: dict[str, str] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)


def _read_checked(directory: Path) -> dict[str, bytes]:
    """Every file of an artifact directory, each listed one checked against the manifest's sha256
    (the bytes stored are the bytes checked: a file being replaced or removed is caught)."""
    try:
        files = {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
    except OSError as exc:
        raise ArtifactError(f"artifact directory {directory}: {exc.strerror}") from None
    if MANIFEST not in files:
        raise ArtifactError(f"artifact directory {directory} has no {MANIFEST}")
    try:
        listed = json.loads(files[MANIFEST])["files"]
        assert isinstance(listed, dict)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise ArtifactError(f"artifact directory {directory}: corrupt {MANIFEST}") from None
    for name, digest in listed.items():
        if name not in files:
            raise ArtifactError(f"artifact directory {directory}: file {name} listed in the manifest is missing")
        if hashlib.sha256(files[name]).hexdigest() != digest:
            raise ArtifactError(f"artifact directory {directory}: file {name} does not match its sha256")
    return files


def embed(database: Database) -> Embedded:
    """Store the files of every model whose artifact is a local directory in `database` itself
    (`model_artifacts`, `artifact_path` = `db:<model id>`): a SQLite backup becomes one file that
    restores on any machine and under any artifacts directory, since every loader (`local_path`)
    materialises a `db:` artifact into the local artifacts directory, checked file by file. Run on
    the backup's private copy only (the live database keeps its directories)."""
    done = Embedded()
    for info in registry.list_models(database):
        path = info.artifact_path
        if not path or path.startswith(DB_PREFIX):
            continue  # none, or already inside
        try:
            files = _read_checked(Path(path))
        except ArtifactError as exc:
            if info.status == "retired":
                done.pruned.append(info.id)
            else:
                done.missing[info.id] = str(exc)
            continue
        artifacts.put(database, info.id, files)
        registry.set_artifact_path(database, info.id, DB_PREFIX + info.id)
        done.models.append(info.id)
        done.files += len(files)
        done.bytes += sum(len(b) for b in files.values())
    return done


@dataclass
class TakenOver:
    """What `take_over` found in a restored database: models whose files are inside it,
    directories of the same model ids that held other files and were renamed (id -> new path),
    models in use that cannot be loaded (id -> why)."""

    models: list[str] = field(default_factory=list)
    set_aside: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)


def _same_files(directory: Path, files: dict[str, bytes]) -> bool:
    try:
        return directory.is_dir() and {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()} == files
    except OSError:
        return False


def take_over(database: Database, artifacts_dir: str | Path, suffix: str) -> TakenOver:
    """After a restore (`barcast db restore`): the files stored in the database win. `local_path`
    loads a `db:` artifact from `<artifacts_dir>/<model id>` when that directory has a manifest,
    whatever its files are, so a directory left there with other files (another database's model
    of the same id, a damaged copy) would be served instead of the backup's model, or fail to
    load; each such directory is renamed to `<model id>.<suffix>` and the stored files are loaded
    on first use. A directory with exactly the stored files stays."""
    done = TakenOver()
    for info in registry.list_models(database):
        path = info.artifact_path
        if not path or not path.startswith(DB_PREFIX):
            continue
        model_id = path[len(DB_PREFIX):]
        try:
            files = artifacts.get(database, model_id)
        except ArtifactError:
            continue  # named by `unavailable` when the model is in use
        done.models.append(info.id)
        directory = Path(artifacts_dir) / model_id
        if not (directory.exists() or directory.is_symlink()) or _same_files(directory, files):
            continue
        n, aside = 1, directory.with_name(f"{model_id}.{suffix}")
        while aside.exists() or aside.is_symlink():
            n += 1
            aside = directory.with_name(f"{model_id}.{suffix}-{n}")
        directory.rename(aside)
        done.set_aside[info.id] = str(aside)
    done.unavailable = unavailable(database)
    return done
