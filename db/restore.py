"""Put a `barcast db backup` file back as the SQLite database (`barcast db restore`).

The shell steps this replaces had sharp edges: a -wal left beside the database is replayed by
SQLite into the file copied in (the old database's last commits mixed into the restored one), a
file copied over a database a process holds open is written by that process, a file that is not
a barcast database or is damaged or from a newer barcast is found out only when the daemon
fails, the database being replaced is gone for good, and a copy made as root is not the
service's to write.

So: the backup is checked by name first (it exists, is a SQLite file, has no -wal or -journal
beside it, is not the database itself); then copied to a hidden file beside the database
(`copy_backup`; SQLite never opens the backup itself, so nothing is written beside it) and that
copy is checked (`verify`: a barcast schema this barcast knows, `PRAGMA integrity_check`, one
self-contained file, fsynced). Only then is the current database folded into one file (its -wal
checkpointed: it holds committed data) and kept under a second name (`keep_current`, a hard
link, so the database's name never disappears), and the copy renamed over it (`place`). The
caller refuses a live daemon (db.cluster heartbeats) before any of this; `keep_current` needs
SQLite's exclusive lock, so a process that still has the file open (a daemon of a barcast without
heartbeats, a `sqlite3` shell) stops the restore before anything is changed.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from db import backup
from db.errors import DatabaseError, InputError

#: Bytes copied per step: the progress bar's grain.
CHUNK_BYTES = 16 * 1024 * 1024

#: How long `keep_current` waits for another process to let go of the database (seconds).
LOCK_TIMEOUT_S = 2.0

#: The first bytes of every SQLite database file; of a pg_dump custom-format archive.
SQLITE_HEADER = b"SQLite format 3\x00"
PG_DUMP_HEADER = b"PGDMP"

#: Tables every barcast schema has had since its first version.
BARCAST_TABLES = frozenset({"bars", "models", "forecasts"})

#: Called after each step: bytes copied so far, bytes in all.
OnBytes = Callable[[int, int], None]


@dataclass(frozen=True)
class Checked:
    """The restored copy as checked before it was renamed into place."""

    bytes: int
    pages: int
    page_size: int
    schema_version: str
    integrity: str


@dataclass(frozen=True)
class Kept:
    """Where the database that was replaced went. `side_files`: its -wal/-shm/-journal, moved
    with it when SQLite could not fold them into the file (a damaged database)."""

    path: Path
    side_files: list[Path] = field(default_factory=list)
    folded: bool = True


def side_files(path: Path) -> list[Path]:
    return [Path(f"{path}{s}") for s in backup.SIDE_FILES]


def stamp(now: datetime | None = None) -> str:
    """The UTC time that names what a restore keeps: `before-restore-20260131T120000Z`."""
    return "before-restore-" + (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def check_paths(source: Path, target: Path) -> None:
    """Refuse, before anything is copied: a backup that is missing, a directory, the database
    itself (or one of its files), not a SQLite file, or with a -wal or -journal beside it; a
    database path whose directory does not exist or that is a directory."""
    source = source.absolute()
    if not source.exists():
        raise InputError(f"--from {source} does not exist")
    if source.is_dir():
        raise InputError(f"--from {source} is a directory; name the backup file")
    real = source.resolve()
    if real == target or real in side_files(target) or (target.exists() and os.path.samefile(source, target)):
        raise InputError(f"--from {source} is the database being restored ({target}) or one of its files; "
                         "name the backup file")
    for side in ("-wal", "-journal"):
        if Path(f"{source}{side}").exists():
            raise InputError(
                f"--from {source}: {source}{side} exists beside it, so the backup is open as a database in some "
                f"process or was not closed cleanly, and its last writes may be only in {source}{side}; restore a "
                "file `barcast db backup` wrote (one self-contained file)")
    try:
        with open(source, "rb") as fh:  # not a database this process opens through SQLite
            header = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise InputError(f"--from {source}: cannot read it ({exc.strerror})") from None
    if header != SQLITE_HEADER:
        hint = (" (a pg_dump archive: restore it into PostgreSQL with pg_restore)"
                if header.startswith(PG_DUMP_HEADER) else "")
        raise InputError(f"--from {source} is not a SQLite database{hint}; name a file `barcast db backup` wrote")
    if not target.parent.is_dir():
        raise InputError(f"directory {target.parent} of the database {target} does not exist; create it "
                         "(systemd's StateDirectory does), or check --db / [database] url")
    if target.is_dir():
        raise InputError(f"the database path {target} is a directory; check --db / [database] url")


def copy_backup(source: Path, temp: Path, on_bytes: OnBytes | None = None) -> int:
    """Copy the backup byte for byte into the new private file `temp` (mode 0600); its size."""
    total = source.stat().st_size
    done = 0
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
            while chunk := src.read(CHUNK_BYTES):
                dst.write(chunk)
                done += len(chunk)
                if on_bytes is not None:
                    on_bytes(done, total)
    except OSError as exc:
        raise DatabaseError(f"cannot copy {source} to {temp.parent}: {exc.strerror}") from None
    return done


def verify(temp: Path, source: Path) -> Checked:
    """Check the copy of the backup: a barcast schema this barcast knows (an older one is fine:
    `barcast db upgrade` takes it on), `PRAGMA integrity_check`; then make it one self-contained
    file, fsynced. Raise InputError naming the backup and what is wrong with it."""
    from db import migrate

    revision = _schema_version(temp, source)
    if revision not in migrate.known_revisions():
        raise InputError(f"--from {source} has schema version {revision}, newer than this barcast knows (up to "
                         f"{migrate.head_revision()}); restore it with the barcast that wrote it, or upgrade barcast")
    try:
        sealed, problems = backup.self_contained(temp)
    except sqlite3.Error as exc:
        raise InputError(f"--from {source} is damaged: SQLite cannot read it ({exc}); restore another backup") from None
    if problems != ["ok"]:
        raise InputError(f"--from {source} fails PRAGMA integrity_check ({'; '.join(problems)}): the backup is "
                         "damaged; restore another backup")
    return Checked(sealed.bytes, sealed.pages, sealed.page_size, revision, sealed.integrity)


def _schema_version(temp: Path, source: Path) -> str:
    conn = sqlite3.connect(temp)
    try:
        tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone() if "alembic_version" in tables \
            else None
    except sqlite3.Error as exc:
        raise InputError(f"--from {source} is damaged: SQLite cannot read it ({exc}); restore another backup") from None
    finally:
        conn.close()
    missing = "no schema version" if row is None else "" if tables >= BARCAST_TABLES else \
        f"no {', '.join(sorted(BARCAST_TABLES - tables))} table"
    if missing:
        raise InputError(f"--from {source} is a SQLite database but not a barcast one ({missing}); name a file "
                         "`barcast db backup` wrote")
    assert row is not None
    return str(row[0])


def _free_name(target: Path, suffix: str) -> Path:
    """`<target>.<suffix>`, or with `-2`, `-3`... when a restore in the same second kept one."""
    n = 1
    while True:
        name = Path(f"{target}.{suffix}" + ("" if n == 1 else f"-{n}"))
        if not any(p.exists() for p in (name, *side_files(name))):
            return name
        n += 1


def keep_current(target: Path, suffix: str) -> Kept | None:
    """Keep the database being replaced as `<target>.<suffix>`: first fold its -wal (committed
    transactions) into the file and switch it to a rollback journal, so the kept file is whole on
    its own; this takes SQLite's exclusive lock, so a process with the database open stops the
    restore here, before anything changed. A file SQLite cannot fold (damaged, not a database)
    is kept with its -wal/-shm/-journal moved beside it under the new name. The kept name is a
    hard link: the database's own name stays until `place` replaces it."""
    if not target.exists():
        return None
    kept = _free_name(target, suffix)
    folded = True
    try:
        conn = sqlite3.connect(target, isolation_level=None, timeout=LOCK_TIMEOUT_S)
        try:
            conn.execute("PRAGMA journal_mode=DELETE").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise InputError(f"another process has the database {target} open ({exc}): stop it first (the "
                             "daemon, `barcast tail -f`, a sqlite3 shell); nothing was changed") from None
        folded = False
    try:
        try:
            os.link(target, kept)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
                raise
            os.rename(target, kept)  # a file system without hard links: the name is missing until `place`
        moved = []
        for side, to in zip(side_files(target), side_files(kept), strict=True):
            if not folded and side.exists():
                os.rename(side, to)
                moved.append(to)
    except OSError as exc:
        raise DatabaseError(f"cannot keep the database {target} as {kept}: {exc.strerror}; nothing was "
                            "restored") from None
    return Kept(kept, moved, folded)


def place(temp: Path, target: Path) -> list[Path]:
    """Rename the checked copy to the database's name, mode 0600 and, as root, owned by the
    directory's owner and group (the service's user under systemd's StateDirectory). Side files
    left under the database's name are removed first (SQLite would replay a -wal or -journal
    into the restored file): returns those."""
    directory = target.parent
    os.chmod(temp, 0o600)
    if os.geteuid() == 0:
        st = directory.stat()
        os.chown(temp, st.st_uid, st.st_gid)
    removed = []
    for side in side_files(target):
        if side.exists():
            side.unlink()
            removed.append(side)
    backup.place(temp, target)
    return removed
