"""The ``pbxjournal`` command line (DESIGN section 6).

Each subcommand lives in its own module and is imported only when it runs, so that
``pbxjournal --help`` stays fast and a tool does not pay for what it does not use.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML settings file (default: built-in defaults + PBXJOURNAL_* environment)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pbxjournal",
        description="Call journal for Asterisk: AMI in, one row per conversation out.",
        epilog="Exit status: 0 ok, 1 failure, 2 configuration error, 3 the journal database "
        "cannot be opened, 4 the HTTP address cannot be listened on.",
    )
    parser.add_argument("--version", action="version", version=f"pbxjournal {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="the daemon: AMI in, journal out",
        description="Connect to the AMI of [ami] settings, assemble every conversation into "
        "one journal row and log one line per call.",
    )
    _add_config(run)

    replay = commands.add_parser(
        "replay",
        help="feed AMI captures through the pipeline offline",
        description="Feed .ami captures through the assembler and the journal rules, as fast "
        "as the CPU allows, with event times taken from the capture.",
    )
    replay.add_argument("captures", nargs="+", type=Path, metavar="CAPTURE.ami")
    replay.add_argument(
        "--json",
        action="store_true",
        help="print every call object as one JSON line each time it is written or changed",
    )
    replay.add_argument(
        "--database", default=None, metavar="URL", help="write into this journal database"
    )
    replay.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress line with events/s on stderr (default: when stderr is a terminal)",
    )
    replay.add_argument(
        "--recordings",
        action="append",
        type=Path,
        default=None,
        metavar="DIR",
        help="recordings directory (repeatable; overrides recordings.directories)",
    )
    _add_config(replay)

    capture = commands.add_parser(
        "capture",
        help="record a live AMI session verbatim",
        description="Log in to the AMI of [ami] settings and write every byte received to "
        "FILE, with FILE.recvlog recording the time and size of each TCP read.",
    )
    capture.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    capture.add_argument(
        "--duration", type=float, default=None, metavar="SECONDS", help="stop after this long"
    )
    _add_config(capture)

    fake = commands.add_parser(
        "fake-pbx",
        help="serve captures over a real AMI TCP session",
        description="A TCP AMI server that replays captures to whoever logs in: banner, "
        "Login, Ping, CoreShowChannels, Logoff, and the captured events at their recorded "
        "pace (or faster), on a clock that starts now unless --keep-time.",
    )
    fake.add_argument("captures", nargs="+", type=Path, metavar="CAPTURE.ami")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=5038)
    fake.add_argument("--username", default=None, help="accepted login (default: any)")
    fake.add_argument("--secret", default=None, help="accepted secret (default: any)")
    fake.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="pace multiplier: 1 = recorded pace, 10 = ten times faster, 0 = as fast as possible",
    )
    fake.add_argument(
        "--loop",
        action="store_true",
        help="start over when the captures are exhausted, as new calls (each lap renames the ids)",
    )
    fake.add_argument(
        "--keep-time",
        action="store_true",
        help="send the captured Timestamps as they are (default: the stream starts now, "
        "today's calls)",
    )
    fake.add_argument(
        "--stay",
        action="store_true",
        help="keep serving (idle, answering Ping) after the captures are exhausted",
    )
    fake.add_argument(
        "--click-to-call",
        type=Path,
        default=None,
        metavar="CAPTURE.ami",
        help="answer Originate by replaying this captured click-to-call (capture 18) for the "
        "requested employee and number",
    )
    check = commands.add_parser(
        "check-config",
        help="check the configuration, the AMI login, the database and the directories",
        description="Read the configuration as `run` does, print what it found and check, "
        "changing nothing: the AMI login, the journal database, the recordings directories "
        "and the HTTP address. Exit status 0 when every check passed.",
    )
    _add_config(check)
    from pbxjournal.dbtools import add_calls_arguments

    migrate = commands.add_parser("migrate", help="apply the journal database's migrations")
    migrate.add_argument("--database", default=None, metavar="URL", help="default: storage.url")
    _add_config(migrate)
    reevaluate = commands.add_parser(
        "reevaluate",
        help="re-evaluate the calls the attention window decides, with the configured one",
        description="Re-evaluate every missed incoming call (the calls with an attention "
        "window) with rules.attention_window and pbx.timezone as configured, 500 per "
        "transaction; rows whose verdict changes get a new version (1C sees them through "
        "/changes). The daemon does the same at start when the window changed since the "
        "journal was written.",
    )
    reevaluate.add_argument("--database", default=None, metavar="URL", help="default: storage.url")
    _add_config(reevaluate)
    reindex = commands.add_parser(
        "reindex-search",
        help="rebuild the search keys from the journal",
        description="Rebuild search_keys and search_suffixes (what a search finds calls by: "
        "numbers in the region pbx.default_region, customers, contact persons, extensions) "
        "from the calls and the directory, in one transaction. The writer keeps them; this "
        "is for a journal whose tables were edited by hand or restored in part, or after "
        "pbx.default_region changed. Run it with the daemon stopped: it holds the write "
        "lock while it runs (minutes at ten million calls).",
    )
    reindex.add_argument("--database", default=None, metavar="URL", help="default: storage.url")
    _add_config(reindex)
    calls = commands.add_parser("calls", help="print the journal, filtered as GET /calls")
    add_calls_arguments(calls)
    _add_config(calls)
    from pbxjournal.users import add_users_arguments

    users = commands.add_parser("users", help="the people who sign in to the web journal")
    _add_config(users)
    add_users_arguments(users)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pbxjournal")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from config import ConfigError

    try:
        if args.command == "run":
            return _run(args)
        if args.command == "check-config":
            from pbxjournal.checkconfig import run_check_config

            return run_check_config(args)
        if args.command == "replay":
            from pbxjournal.replay import run_replay

            return run_replay(args)
        if args.command in ("migrate", "calls"):
            from pbxjournal.dbtools import run_calls, run_migrate

            return run_migrate(args) if args.command == "migrate" else run_calls(args)
        if args.command == "reevaluate":
            from pbxjournal.dbtools import run_reevaluate

            return run_reevaluate(args)
        if args.command == "reindex-search":
            from pbxjournal.dbtools import run_reindex_search

            return run_reindex_search(args)
        if args.command == "users":
            from pbxjournal.users import run_users

            return run_users(args)
        if args.command == "capture":
            from pbxjournal.tools import run_capture

            return run_capture(args)
        if args.command == "fake-pbx":
            from pbxjournal.tools import run_fake_pbx

            return run_fake_pbx(args)
    except ConfigError as exc:
        print(f"pbxjournal: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command!r}")


def _run(args: argparse.Namespace) -> int:
    """The daemon; a failure to start is one line, a hint and an exit code of its own."""
    import structlog

    from config import load_settings
    from pbxjournal.daemon import run_daemon
    from pbxjournal.logs import configure_logging
    from pbxjournal.startup import explain, startup_warnings

    settings = load_settings(args.config)
    configure_logging(settings.log.level, settings.log.format)
    log = structlog.get_logger("pbxjournal")
    for message, details in startup_warnings(settings):
        log.warning(message, **details)
    try:
        return run_daemon(settings, args.config)
    except Exception as exc:
        failure = explain(exc, database_url=settings.storage.url, listen=settings.http.listen)
        if failure is None:
            raise
        log.error("cannot start", reason=failure.message, hint=failure.hint)
        print(failure.render("run"), file=sys.stderr)
        return failure.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
