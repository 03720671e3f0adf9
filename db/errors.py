"""One exception family for the whole project.

It lives in `db` because `db` is imported by every other package and imports none of them.
The CLI prints the message (no traceback) and exits with `exit_code`.
"""

from __future__ import annotations


class BarcastError(Exception):
    """Base of every error barcast reports to a person. The message must name what was at fault."""

    exit_code = 1


class InputError(BarcastError):
    """Bad input from a user: a CSV row, a CLI argument, a file that is not what it claims."""

    exit_code = 2


class UnknownNameError(InputError):
    """A well-formed name of nothing barcast knows (a series neither configured nor stored): the
    CLI exits 2, the HTTP API answers 404."""


class ConfigError(InputError):
    """A config key is unknown, of the wrong type or has a bad value."""


class DatabaseError(BarcastError):
    """The database cannot be opened, is corrupt, read-only, or of an incompatible schema version."""


class MissingDatabaseError(DatabaseError):
    """A command that only reads was pointed at a database that does not exist: bad input."""

    exit_code = 2


class SchemaVersionError(DatabaseError):
    """The database schema is older (needs `barcast db upgrade`) or newer than this barcast."""


class ArtifactError(BarcastError):
    """A model artifact is missing, corrupt or does not match what was asked of it."""


class FencedOut(BarcastError):
    """A write carried a fencing token that is no longer the series lease's: another daemon owns
    the series now, so the write is refused (db/cluster.py)."""


class NotImplementedYet(BarcastError):
    """A command that a later issue fills: says so honestly and exits non-zero."""
