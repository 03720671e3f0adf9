"""A consistent copy of a SQLite database while a daemon keeps writing it (`barcast db backup`).

SQLite's online backup API copies the database page by page inside ONE read transaction, opened
before the first page: in WAL mode a reader never blocks the daemon's writes (they go to the -wal
file, which is not checkpointed past the backup's snapshot until it ends), and because the
snapshot is held across the steps, a commit by another process does not restart the copy (without
it `sqlite3_backup_step` starts over after every commit of another connection, and a busy daemon
never lets it finish: bench/db_backup.py saw 1,500 restarts in a minute). Steps of
`PAGES_PER_STEP` pages drive the progress bar. `VACUUM INTO` is as consistent, but rebuilds every
table and index, without progress: on a 485 MB database of 120 days, under a writer, it took
1.3-3.6 s where the page copy took 1.1-2.4 s (three runs of two, 2 shared cores); it wins only on
a file with many free pages (just after a first big prune: 132 MB in 1.2 s against 485 MB in
1.8-3.6 s), which `barcast db prune --vacuum` gives back anyway. The writer's slowest commit
during the page copy was 13-26 ms (9-25 ms alone), during VACUUM INTO 20-58 ms.

The copy goes to a hidden temporary file beside the target, is checked (`PRAGMA integrity_check`),
switched to a rollback journal (one self-contained file, no -wal beside it) and only then renamed
to the target's name, so a failed or interrupted backup never leaves a half file under that name.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from db.engine import create_db_engine, sqlite_file
from db.errors import DatabaseError, InputError

#: Pages copied per backup step (16 MiB at SQLite's default 4 KiB page): the progress bar's grain.
PAGES_PER_STEP = 4096

#: Called after each step: pages copied so far, pages in all.
OnPages = Callable[[int, int], None]

#: Files SQLite keeps beside a database; a stale -wal or -journal is replayed into the file.
SIDE_FILES = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class Copied:
    """What `copy_pages` copied: the source's schema version and the snapshot's pages."""

    revision: str
    pages: int
    seconds: float


@dataclass(frozen=True)
class Sealed:
    """The finished backup file, as checked before it was renamed into place."""

    bytes: int
    pages: int
    page_size: int
    integrity: str


def check_target(source: Path, target: Path, *, force: bool) -> None:
    """Refuse a target that is the source (or one of its side files), in a missing directory, a
    directory, an existing file without `force`, or a file some SQLite process has open."""
    target = target.absolute()
    if target.resolve() == source or any(target.resolve() == Path(f"{source}{s}") for s in SIDE_FILES) or (
            target.exists() and os.path.samefile(target, source)):
        raise InputError(f"--to {target} is the database being backed up (or one of its files); name another file")
    if not target.parent.is_dir():
        what = "does not exist" if not target.parent.exists() else "is not a directory"
        raise InputError(f"--to {target}: directory {target.parent} {what}; create it first")
    if target.is_dir():
        raise InputError(f"--to {target} is a directory; name the backup file, e.g. {target / 'barcast.db'}")
    if target.exists() and not force:
        raise InputError(f"--to {target} exists; pass --force to replace it, or name another file")
    for side in ("-wal", "-journal"):
        if Path(f"{target}{side}").exists():
            raise InputError(
                f"--to {target}: {target}{side} exists beside it (a process has it open as a database, or "
                f"did not close it cleanly) and SQLite would replay it into the backup; name another file")


def temp_path(target: Path, kind: str = "backup") -> Path:
    """A hidden name beside the target: same directory, so the final rename is atomic."""
    return target.absolute().parent / f".{target.name}.{kind}-{uuid.uuid4().hex[:8]}"


def _revision(conn: sqlite3.Connection, source: Path) -> str:
    from db import migrate

    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:
        row = None
    if row is None:
        raise DatabaseError(f"{source} has no barcast schema; refusing to back it up as one")
    if row[0] not in migrate.known_revisions():
        raise DatabaseError(f"{source} has schema version {row[0]}, newer than this barcast knows (up to "
                            f"{migrate.head_revision()}); back it up with the barcast that wrote it")
    return str(row[0])


def copy_pages(source_url: str, temp: Path, on_pages: OnPages | None = None) -> Copied:
    """Copy every page of the SQLite database `source_url` into the new file `temp`, all from the
    snapshot its first read fixed (see the module docstring)."""
    source = sqlite_file(source_url)
    assert source is not None
    started = time.monotonic()
    engine = create_db_engine(source_url, create=False)  # the path checks of every open; no schema check
    try:
        with engine.connect() as conn, conn.begin():
            raw = conn.connection.driver_connection
            assert isinstance(raw, sqlite3.Connection)
            revision = _revision(raw, source)  # the transaction's first read: the snapshot from here on
            pages = [0]

            def step(_status: int, remaining: int, total: int) -> None:
                pages[0] = total
                if on_pages is not None:
                    on_pages(total - remaining, total)

            dest = sqlite3.connect(temp)
            try:
                raw.backup(dest, pages=PAGES_PER_STEP, progress=step)
            finally:
                dest.close()
    except (SQLAlchemyError, sqlite3.Error) as exc:
        raise DatabaseError(f"backing up {source} failed: {getattr(exc, 'orig', None) or exc}") from None
    except OSError as exc:
        raise DatabaseError(f"cannot write the backup in {temp.parent}: {exc.strerror}") from None
    finally:
        engine.dispose()
    return Copied(revision, pages[0], time.monotonic() - started)


def seal(temp: Path) -> Sealed:
    """Make `temp` one self-contained file (rollback journal: no -wal beside it, whatever was
    written into it after the copy is in the file) and check it; raise if SQLite finds a fault."""
    try:
        sealed, problems = self_contained(temp)
    except sqlite3.Error as exc:
        raise DatabaseError(f"checking the backup {temp} failed: {exc}") from None
    if problems != ["ok"]:
        raise DatabaseError("the copy fails PRAGMA integrity_check (" + "; ".join(problems) + "): the source "
                            "database may be damaged; run `sqlite3 FILE 'PRAGMA integrity_check'` on it")
    return sealed


def self_contained(path: Path) -> tuple[Sealed, list[str]]:
    """Switch the private file `path` to a rollback journal (one file, no -wal), run `PRAGMA
    integrity_check` and fsync it: the file as checked and what SQLite found (`["ok"]`: nothing).
    Raises sqlite3.Error when SQLite cannot read it (not a database)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=DELETE").fetchone()
        problems = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(20)")]
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()
    with open(path, "rb+") as fh:  # no SQLite lock is held on this private file any more
        os.fsync(fh.fileno())
    return Sealed(path.stat().st_size, pages, page_size, problems[0] if problems == ["ok"] else "failed"), problems


def place(temp: Path, target: Path) -> None:
    """Rename the sealed backup to its name (atomically replacing a file `--force` allowed)."""
    os.replace(temp, target)
    fd = os.open(target.absolute().parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a crash
    finally:
        os.close(fd)


def discard(temp: Path) -> None:
    """Remove what a failed backup wrote (the temporary file and any side file SQLite made)."""
    for path in (temp, *(Path(f"{temp}{s}") for s in SIDE_FILES)):
        path.unlink(missing_ok=True)
