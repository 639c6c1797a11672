"""``pbxjournal replay``: captures through the real pipeline, offline, as fast as the CPU allows.

Event time comes from each event's ``Timestamp`` (the capture's recvlog time, or the last
timestamp seen, for the few events without one), so the grace periods and attention windows
run on the PBX's clock, not the wall clock. With ``--json`` every call object is printed as one
JSON line each time it is written or changed; the last line per ``id`` wins. With
``--database URL`` the calls go into that journal database (migrated first) instead of memory.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from config import Settings, load_settings
from connector.capture import iter_capture_messages
from connector.events import (
    AmiEvent,
    MalformedMessage,
    is_journal_message,
    normalize,
    parse_message,
)
from pbxjournal.pipeline import JournalPipeline, build_pipeline, employee_directory
from storage.journal import JournalEntry, to_call_object

__all__ = ["capture_events", "replay_captures", "run_replay"]


def capture_events(captures: Iterable[Path]) -> Iterator[tuple[AmiEvent, float]]:
    """Every journal event of the captures with the time to feed it at (the PBX's clock)."""
    last_time = 0.0
    for path in captures:
        for captured in iter_capture_messages(path):
            raw = captured.raw
            if not is_journal_message(raw):
                continue
            try:
                message = parse_message(raw)
            except MalformedMessage:
                continue
            if not message.event:
                continue
            receive_time = captured.receive_time if captured.receive_time is not None else last_time
            try:
                event = normalize(message, receive_time)
            except MalformedMessage:
                continue
            last_time = max(last_time, event.time)
            yield event, last_time


def replay_captures(
    pipeline: JournalPipeline,
    captures: Iterable[Path],
) -> Iterator[list[JournalEntry]]:
    """Feed every capture through ``pipeline``; yield the entries each step changed.

    After the last capture, the remaining grace periods run out (as time would have let
    them), so nothing is left open.
    """
    last_time = 0.0
    for event, now in capture_events(captures):
        last_time = now
        changed = pipeline.feed(event, now)
        if changed:
            yield changed
    changed = pipeline.drain(last_time)
    if changed:
        yield changed


def run_replay(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stream = out if out is not None else sys.stdout
    settings: Settings = load_settings(args.config)
    for path in args.captures:
        if not path.is_file():
            print(f"pbxjournal replay: no such capture: {path}", file=sys.stderr)
            return 2
    recordings = [str(p) for p in args.recordings] if args.recordings else None
    pipeline = build_pipeline(settings, recordings=recordings)
    if args.database:
        from pbxjournal.dbtools import replay_into_database

        return replay_into_database(
            pipeline,
            settings,
            args.database,
            capture_events(args.captures),
            as_json=args.json,
            stream=stream,
        )
    tz = settings.pbx.tz
    employees = employee_directory(settings)
    for changed in replay_captures(pipeline, args.captures):
        if args.json:
            for entry in changed:
                obj = to_call_object(entry, tz, employees)
                stream.write(json.dumps(obj, ensure_ascii=False) + "\n")
    if not args.json:
        _print_table(pipeline, settings, stream)
    stream.flush()
    return 0


def _print_table(pipeline: JournalPipeline, settings: Settings, stream: TextIO) -> None:
    tz = settings.pbx.tz
    employees = employee_directory(settings)
    rows = [to_call_object(e, tz, employees) for e in pipeline.journal.entries()]
    for row in rows:
        people = ", ".join(f"{p['name'] or p['extension']} ({p['role']})" for p in row["employees"])
        flags = "".join(
            mark for mark, on in (("N", row["first_contact"]), ("!", row["attention"])) if on
        )
        stream.write(
            f"{row['started_at'][:19]}  {row['direction']:<8}  {row['number'] or '-':<14}  "
            f"{row['status_label']:<11}  {row['talk_seconds']:>6.1f}s  {flags:<2}  "
            f"rec:{len(row['recordings'])}  {people}\n"
        )
    stream.write(f"{len(rows)} calls\n")
