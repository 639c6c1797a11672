"""``pbxjournal check-config``: what ``nginx -t`` is to nginx.

Reads the configuration (the file and the ``PBXJOURNAL_*`` environment, as ``run`` does),
prints what it found, then checks what ``run`` will need, changing nothing: the AMI login
(log in, log off; when a client may click-to-call, that the AMI user may ``Originate``, from
``ListCommands``), the journal database (connect; its schema revision against this
version's; for a SQLite file that does not exist yet, that it could be created), the
recordings directories, the HTTP address. One line per check: ``ok``, ``warn`` or ``FAIL``.
Exit status 0 when nothing failed, 1 otherwise (2 for a configuration error, as every
command).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from config import Settings, load_settings
from pbxjournal.startup import explain, sqlite_path, startup_warnings

if TYPE_CHECKING:
    from connector.ami import AmiSession

__all__ = ["run_check_config"]

#: How long each network check may take.
CHECK_TIMEOUT = 5.0


class Report:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failed = 0

    def line(self, status: str, what: str, detail: str) -> None:
        if status == "FAIL":
            self.failed += 1
        print(f"{status:<4}  {what:<12} {detail}", file=self.out)


def run_check_config(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stream = out if out is not None else sys.stdout
    settings = load_settings(args.config, os.environ)
    report = Report(stream)
    source = str(args.config) if args.config else "built-in defaults"
    print(f"configuration: {source} + PBXJOURNAL_* environment", file=stream)
    print(
        f"  pbx {settings.pbx.name!r}, time zone {settings.pbx.timezone}, "
        f"{len(settings.employees)} employees",
        file=stream,
    )
    print(f"  ami {settings.ami.username}@{settings.ami.host}:{settings.ami.port}", file=stream)
    print(f"  journal {settings.storage.redacted_url}", file=stream)
    print(f"  http {settings.http.listen}, {len(settings.http.clients)} client(s)", file=stream)
    from storage.engine import run_tool

    run_tool(_check_all(settings, report))
    for message, details in startup_warnings(settings):
        if "recordings directory" in message:
            continue  # reported per directory above
        extra = ", ".join(f"{k}={v}" for k, v in details.items())
        report.line("warn", "config", f"{message} ({extra})")
    verdict = "configuration ok" if not report.failed else f"{report.failed} check(s) failed"
    print(verdict, file=stream)
    return 0 if not report.failed else 1


async def _check_all(settings: Settings, report: Report) -> None:
    await _check_ami(settings, report)
    await _check_database(settings, report)
    _check_recordings(settings, report)
    _check_listen(settings, report)


async def _check_ami(settings: Settings, report: Report) -> None:
    from connector.ami import AmiError, AmiLoginError, open_session

    where = f"{settings.ami.host}:{settings.ami.port}"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            session = await open_session(settings.ami)
            try:
                banner = session.banner
                originate = await _may_originate(session) if _originators(settings) else None
                await session.logoff()
            finally:
                await session.close()
    except AmiLoginError as exc:
        report.line("FAIL", "ami", f"{where}: login as {settings.ami.username!r} refused: {exc}")
    except (OSError, TimeoutError, AmiError) as exc:
        reason = str(exc) or type(exc).__name__
        report.line("FAIL", "ami", f"{where}: cannot connect: {reason}")
    else:
        report.line("ok", "ami", f"{where}: logged in as {settings.ami.username!r} ({banner})")
        if originate is not None:
            _report_originate(settings, report, originate)


def _originators(settings: Settings) -> list[str]:
    """The API clients allowed to click-to-call."""
    return [c.name for c in settings.http.clients if "originate" in c.scopes]


async def _may_originate(session: AmiSession) -> bool | str:
    """Whether the AMI user may send ``Originate`` (``ListCommands`` lists only the actions
    its ``write`` permissions allow), or why that cannot be told."""
    from connector.ami import AmiError

    try:
        (answer, *_rest) = await session.send_action({"Action": "ListCommands"})
    except AmiError as exc:
        return str(exc)
    return any(key.lower() == "originate" for key, _value in answer.headers)


def _report_originate(settings: Settings, report: Report, originate: bool | str) -> None:
    clients = ", ".join(_originators(settings))
    if originate is True:
        report.line("ok", "originate", f"the AMI user may Originate (click-to-call for {clients})")
    elif originate is False:
        report.line(
            "FAIL",
            "originate",
            f"{clients} may click-to-call (scope originate) but the AMI user "
            f"{settings.ami.username!r} may not Originate: add originate to its write "
            "permissions in manager.conf, or the PBX refuses every call back "
            "(Permission denied)",
        )
    else:
        report.line(
            "warn", "originate", f"cannot tell whether the AMI user may Originate: {originate}"
        )


async def _check_database(settings: Settings, report: Report) -> None:
    from storage.engine import open_database
    from storage.migrate import current_revision, head_revision

    url = settings.storage.url
    path = sqlite_path(url)
    if path is not None and not path.exists():
        directory = path.parent
        if directory.is_dir() and os.access(directory, os.W_OK | os.X_OK):
            report.line("ok", "journal", f"{path} does not exist yet; `run` will create it")
        else:
            problem = "does not exist" if not directory.exists() else "is not writable"
            report.line("FAIL", "journal", f"cannot create {path}: directory {problem}")
        return
    database = open_database(url)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            revision = await current_revision(database)
    except Exception as exc:
        failure = explain(exc, database_url=url)
        if failure is None:
            report.line("FAIL", "journal", f"{settings.storage.redacted_url}: {exc}")
        else:
            report.line("FAIL", "journal", f"{failure.message} (hint: {failure.hint})")
        return
    finally:
        await database.dispose()
    head = head_revision()
    if revision == head:
        report.line("ok", "journal", f"{settings.storage.redacted_url}: schema up to date")
    elif revision is None:
        report.line(
            "ok",
            "journal",
            f"{settings.storage.redacted_url}: empty; `run` or `migrate` sets it up",
        )
    else:
        report.line(
            "warn",
            "journal",
            f"{settings.storage.redacted_url}: schema {revision}, this version needs {head}; "
            "`run` or `migrate` upgrades it",
        )


def _check_recordings(settings: Settings, report: Report) -> None:
    for directory in settings.recordings.directories:
        path = Path(directory)
        if not path.is_dir():
            report.line("FAIL", "recordings", f"{path}: does not exist")
        elif not os.access(path, os.R_OK | os.X_OK):
            report.line("FAIL", "recordings", f"{path}: cannot be read by this user")
        else:
            report.line("ok", "recordings", f"{path}: readable")


def _check_listen(settings: Settings, report: Report) -> None:
    host, port = settings.http.host, settings.http.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        failure = explain(
            OSError(exc.errno, f"error while attempting to bind: {exc.strerror}"),
            listen=settings.http.listen,
        )
        detail = failure.message if failure is not None else str(exc)
        report.line("warn", "http", f"{detail} (the daemon already running?)")
    else:
        report.line("ok", "http", f"{settings.http.listen}: free to listen on")
