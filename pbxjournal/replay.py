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
import time
from collections.abc import Iterable, Iterator, Sequence
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

__all__ = ["Progress", "capture_events", "replay_captures", "run_replay"]


class Progress:
    """A one-line progress report on a terminal: share of bytes read, messages per second."""

    def __init__(self, paths: Sequence[Path], stream: TextIO, *, every: float = 0.25) -> None:
        self.total = sum(p.stat().st_size for p in paths)
        self.stream = stream
        self.every = every
        self.done = 0
        self.messages = 0
        self.started = time.monotonic()
        self._shown_at = 0.0
        self.name = ""

    def advance(self, size: int) -> None:
        self.done += size
        self.messages += 1
        now = time.monotonic()
        if now - self._shown_at >= self.every:
            self._shown_at = now
            self._show(now)

    def finish(self) -> None:
        self._show(time.monotonic())
        self.stream.write("\n")
        self.stream.flush()

    def _show(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        share = self.done / self.total if self.total else 1.0
        width = 24
        bar = "#" * int(share * width)
        self.stream.write(
            f"\r[{bar:<{width}}] {share:4.0%}  {self.done / 1e6:7.1f}/{self.total / 1e6:.1f} MB  "
            f"{self.messages / elapsed:9,.0f} events/s  {self.name[:40]}"
        )
        self.stream.flush()


def capture_events(
    captures: Iterable[Path], progress: Progress | None = None
) -> Iterator[tuple[AmiEvent, float]]:
    """Every journal event of the captures with the time to feed it at (the PBX's clock)."""
    last_time = 0.0
    for path in captures:
        if progress is not None:
            progress.name = path.name
        for captured in iter_capture_messages(path):
            raw = captured.raw
            if progress is not None:
                progress.advance(len(raw) + 4)
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
    progress: Progress | None = None,
) -> Iterator[list[JournalEntry]]:
    """Feed every capture through ``pipeline``; yield the entries each step changed.

    After the last capture, the remaining grace periods run out (as time would have let
    them), so nothing is left open.
    """
    last_time = 0.0
    for event, now in capture_events(captures, progress):
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
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    progress = Progress(args.captures, sys.stderr) if show else None
    if args.database:
        from pbxjournal.dbtools import replay_into_database

        try:
            return replay_into_database(
                pipeline,
                settings,
                args.database,
                capture_events(args.captures, progress),
                as_json=args.json,
                stream=stream,
            )
        finally:
            if progress is not None:
                progress.finish()
    tz = settings.pbx.tz
    employees = employee_directory(settings)
    for changed in replay_captures(pipeline, args.captures, progress):
        if args.json:
            for entry in changed:
                obj = to_call_object(entry, tz, employees)
                stream.write(json.dumps(obj, ensure_ascii=False) + "\n")
    if progress is not None:
        progress.finish()
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
