"""``pbxjournal users``: the people who sign in to the web journal.

``users add LOGIN --employee EXT [--admin]``, ``users passwd LOGIN``, ``users remove LOGIN``,
``users list``. A password is read from the terminal (asked twice, not echoed) or, when stdin
is not a terminal, from its first line; never from the command line, where ``ps`` and the
shell's history would show it. The users live in the journal's database
(:mod:`httpd.web.accounts`), which is migrated first as every database command does.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from pathlib import Path
from typing import TextIO

from config import Settings, load_settings

__all__ = ["add_users_arguments", "read_password", "run_users"]

_LOGIN = re.compile(r"[A-Za-z0-9._@-]{1,64}")
MIN_PASSWORD = 8


def add_users_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database", default=None, metavar="URL", help="default: storage.url")
    # --config and --database also after the action (`users add anna --config F`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--database", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", parents=[common], help="add a user (the password is asked for)")
    add.add_argument("login")
    add.add_argument(
        "--employee", required=True, metavar="EXT", help="the employee's id or extension"
    )
    add.add_argument("--admin", action="store_true", help="an administrator")
    passwd = actions.add_parser(
        "passwd", parents=[common], help="set a user's password (signs them out)"
    )
    passwd.add_argument("login")
    remove = actions.add_parser("remove", parents=[common], help="remove a user (signs them out)")
    remove.add_argument("login")
    actions.add_parser("list", parents=[common], help="list the users")


def read_password(stdin: TextIO | None = None) -> str:
    """From the terminal (twice) or stdin's first line; ValueError when unusable."""
    stream = stdin or sys.stdin
    if stream.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != first:
            raise ValueError("the passwords differ")
        password = first
    else:
        password = stream.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    return password


def run_users(args: argparse.Namespace) -> int:
    from pbxjournal.dbtools import _fail, _is_database_error

    settings = load_settings(args.config)
    url = args.database or settings.storage.url
    login = getattr(args, "login", None)
    if login is not None and not _LOGIN.fullmatch(login):
        print(
            "pbxjournal users: a login is 1-64 letters, digits, '.', '_', '@' or '-'",
            file=sys.stderr,
        )
        return 2
    password = None
    if args.action in ("add", "passwd"):
        try:
            password = read_password()
        except (ValueError, EOFError) as exc:
            print(f"pbxjournal users: {exc}", file=sys.stderr)
            return 2
    from storage.engine import run_tool

    try:
        return run_tool(_users(settings, url, args, password))
    except Exception as exc:
        if _is_database_error(exc):
            return _fail("users", exc, url)
        raise


async def _users(
    settings: Settings, url: str, args: argparse.Namespace, password: str | None
) -> int:
    from httpd.web.accounts import Accounts
    from pbxjournal.dbtools import open_journal

    async with open_journal(settings, url) as journal:
        accounts = Accounts(journal.database)
        if args.action == "add":
            assert password is not None
            if not await accounts.employee_known(args.employee):
                print(
                    f"pbxjournal users: no employee {args.employee!r} (an id or extension "
                    "of [employees] or GET /api/v1/employees)",
                    file=sys.stderr,
                )
                return 2
            if not await accounts.add(args.login, args.employee, password, admin=args.admin):
                print(f"pbxjournal users: {args.login!r} exists already", file=sys.stderr)
                return 1
            print(f"added {args.login} (employee {args.employee})")
        elif args.action == "passwd":
            assert password is not None
            if not await accounts.set_password(args.login, password):
                print(f"pbxjournal users: no user {args.login!r}", file=sys.stderr)
                return 1
            print(f"password of {args.login} changed; their sessions ended")
        elif args.action == "remove":
            if not await accounts.remove(args.login):
                print(f"pbxjournal users: no user {args.login!r}", file=sys.stderr)
                return 1
            print(f"removed {args.login}")
        else:
            for account in await accounts.accounts():
                name = account.employee_name or "?"
                admin = "  admin" if account.admin else ""
                print(f"{account.login}\t{account.employee}\t{name}{admin}")
    return 0
