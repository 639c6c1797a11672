"""What an admin sees when the daemon or a tool cannot start: one line, a hint, an exit code.

Theory of operation
-------------------
A start-up failure is almost always the machine's, not the program's: a journal directory
that does not exist yet, a read-only file, a PostgreSQL that is not running, a port another
program holds. A traceback of 150 lines hides the one fact that matters, so
:func:`explain` turns the exceptions these raise (SQLAlchemy's, asyncpg's, the socket's;
wrapped in exception groups or chained) into a :class:`StartupFailure`: a line that names
what failed and where, a hint, and an exit code of its own, so that a supervisor or a script
can tell the causes apart:

====  =====================================================================
code  meaning
====  =====================================================================
2     the configuration is wrong (a key named; see ``config``)
3     the journal database cannot be opened or created (SQLite file, PostgreSQL
      refusing the connection, the login or the database), or its spool (a missing
      directory, another daemon holding it)
4     the HTTP address cannot be listened on (in use, not allowed)
====  =====================================================================

Anything else is a bug and keeps its traceback.

:func:`startup_warnings` lists the likely mistakes worth a warning at start: a recordings
directory that is missing or unreadable, no API client configured, a relative SQLite path.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from config import Settings

__all__ = [
    "EXIT_CONFIG",
    "EXIT_JOURNAL",
    "EXIT_LISTEN",
    "StartupFailure",
    "explain",
    "sqlite_path",
    "startup_warnings",
]

EXIT_CONFIG = 2
EXIT_JOURNAL = 3
EXIT_LISTEN = 4


@dataclass(frozen=True, slots=True)
class StartupFailure:
    message: str
    hint: str
    exit_code: int

    def render(self, command: str) -> str:
        return f"pbxjournal {command}: {self.message}\n  hint: {self.hint}"


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL (None for another database, an in-memory one or no URL at all),
    read as SQLAlchemy reads it, so the file checked is the file opened (``%20`` is a space)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database.startswith(":memory:"):
        return None
    return Path(database)


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes and contexts, and the members of exception groups."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__, getattr(current, "orig", None)):
            if isinstance(linked, BaseException):
                stack.append(linked)


def explain(
    exc: BaseException, *, database_url: str | None = None, listen: str | None = None
) -> StartupFailure | None:
    """A one-line account of a start-up failure, or None when it is not one we know."""
    for cause in _causes(exc):
        if type(cause).__name__ in ("SpoolError", "SpoolBusy"):
            return StartupFailure(
                str(cause),
                "create the directory for the daemon's user or set writer.spool; a spool in "
                "use belongs to another pbxjournal configured alike (systemctl status)",
                EXIT_JOURNAL,
            )
        failure = _listen_failure(cause, listen)
        if failure is None and database_url is not None:
            failure = _database_failure(cause, database_url)
        if failure is not None:
            return failure
    return None


def _listen_failure(cause: BaseException, listen: str | None) -> StartupFailure | None:
    if not isinstance(cause, OSError) or "bind" not in str(cause):
        return None
    where = listen or "the HTTP address"
    if cause.errno == errno.EADDRINUSE:
        port = where.rsplit(":", 1)[-1]
        return StartupFailure(
            f"cannot listen on {where}: address already in use",
            f"another program (or another pbxjournal) holds the port: ss -ltnp 'sport = :{port}'"
            "; or change http.listen",
            EXIT_LISTEN,
        )
    if cause.errno in (errno.EACCES, errno.EPERM):
        return StartupFailure(
            f"cannot listen on {where}: permission denied",
            "ports below 1024 need CAP_NET_BIND_SERVICE; use a higher port in http.listen",
            EXIT_LISTEN,
        )
    if cause.errno == errno.EADDRNOTAVAIL:
        return StartupFailure(
            f"cannot listen on {where}: no such address on this host",
            "http.listen must name an address of this machine (or 0.0.0.0)",
            EXIT_LISTEN,
        )
    return StartupFailure(
        f"cannot listen on {where}: {cause.strerror or cause}",
        "check http.listen",
        EXIT_LISTEN,
    )


def _database_failure(cause: BaseException, url: str) -> StartupFailure | None:
    path = sqlite_path(url)
    text = str(cause)
    if path is not None:
        if type(cause).__name__ == "OperationalError" and (
            "unable to open database file" in text
            or "readonly database" in text
            or "disk I/O error" in text
        ):
            return _sqlite_failure(path, text)
        return None
    name = type(cause).__name__
    where = _redacted(url)
    if isinstance(cause, ConnectionRefusedError) or (
        isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
    ):
        return StartupFailure(
            f"cannot connect to the journal database {where}: connection refused",
            "is PostgreSQL running and listening there? (pg_lsclusters; listen_addresses, port)",
            EXIT_JOURNAL,
        )
    if isinstance(cause, OSError) and isinstance(cause, (TimeoutError, ConnectionError)):
        return StartupFailure(
            f"cannot connect to the journal database {where}: {cause.strerror or cause}",
            "check the host and port of storage.url and the network between",
            EXIT_JOURNAL,
        )
    if isinstance(cause, OSError) and cause.errno in (errno.ENOENT, -2, -3, -5):
        return StartupFailure(
            f"cannot connect to the journal database {where}: {cause.strerror or cause}",
            "check the host of storage.url",
            EXIT_JOURNAL,
        )
    if name in ("InvalidPasswordError", "InvalidAuthorizationSpecificationError"):
        return StartupFailure(
            f"cannot log in to the journal database {where}: {text}",
            "check the user and password in storage.url (and pg_hba.conf)",
            EXIT_JOURNAL,
        )
    if name == "InvalidCatalogNameError":
        return StartupFailure(
            f"cannot open the journal database {where}: {text}",
            "create it: createdb -O <user> <database> (docs/operations.md)",
            EXIT_JOURNAL,
        )
    return None


def _sqlite_failure(path: Path, text: str) -> StartupFailure:
    hint = (
        "create the directory and give it to the daemon's user "
        "(install -d -o pbxjournal -g pbxjournal DIR), or set storage.url"
    )
    directory = path.parent
    if not directory.exists():
        reason = f"directory {directory} does not exist"
    elif not directory.is_dir():
        reason = f"{directory} is not a directory"
    elif path.exists() and path.is_dir():
        reason = "it is a directory"
    elif path.exists() and not _writable(path):
        reason = "the file is read-only (permissions, a read-only mount or chattr +i)"
        hint = "let the daemon's user write it: chown/chmod, remount, or chattr -i"
    elif not path.exists() and not os.access(directory, os.W_OK | os.X_OK):
        reason = f"directory {directory} is not writable by this user"
    else:
        reason = text.splitlines()[0].removeprefix("(sqlite3.OperationalError) ")
        hint = "check the file, its directory and the disk (df, dmesg)"
    return StartupFailure(f"cannot open the journal {path}: {reason}", hint, EXIT_JOURNAL)


def _writable(path: Path) -> bool:
    """Whether the file can really be opened for writing (root ignores the mode bits,
    not an immutable flag or a read-only mount)."""
    try:
        with path.open("r+b"):
            return True
    except OSError:
        return False


def startup_warnings(settings: Settings) -> list[tuple[str, dict[str, object]]]:
    """Likely mistakes: (message, details) for a warning each."""
    warnings: list[tuple[str, dict[str, object]]] = []
    for directory in settings.recordings.directories:
        path = Path(directory)
        if not path.is_dir():
            warnings.append(
                (
                    "recordings directory does not exist: calls will show no recordings",
                    {"directory": str(path)},
                )
            )
        elif not os.access(path, os.R_OK | os.X_OK):
            warnings.append(
                (
                    "recordings directory cannot be read by this user: calls will show no "
                    "recordings",
                    {"directory": str(path)},
                )
            )
    if not settings.http.clients:
        warnings.append(
            (
                "no [[http.clients]] configured: every API request will be refused with 401",
                {"hint": "add a client with a username and password, or a token"},
            )
        )
    database = sqlite_path(settings.storage.url)
    if database is not None and not database.is_absolute():
        warnings.append(
            (
                "storage.url names a relative SQLite path: it depends on the working directory",
                {"path": str(database), "resolves_to": str(database.resolve())},
            )
        )
    return warnings
