"""The journal pipeline: normalised events → assembler → recordings → rules → entries.

One object, used the same way by ``pbxjournal replay`` (events from a file, time from the
capture) and by the daemon (events from the AMI connector, time from the clock and the
events). It owns no task and reads no clock: the caller passes ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from config import Settings
from connector.assembly import CallAssembler, ChannelClassifier, FinishedCall
from connector.events import AmiEvent
from connector.recordings import RecordingFinder
from storage.journal import EmployeeDirectory, EmployeeInfo, JournalEntry
from storage.memory import MemoryJournal
from storage.numbers import normalize_number
from storage.rules import AttentionWindow

__all__ = [
    "JournalPipeline",
    "PipelineStats",
    "build_assembler",
    "build_classifier",
    "build_finder",
    "build_pipeline",
    "employee_directory",
    "employee_mobiles",
]


@dataclass(slots=True)
class PipelineStats:
    calls_finished: int = 0
    entries_written: int = 0


def employee_directory(settings: Settings) -> EmployeeDirectory:
    return EmployeeDirectory(
        EmployeeInfo(id=e.id, extension=e.extension, name=e.name, mobile=e.mobile)
        for e in settings.employees
    )


def employee_mobiles(settings: Settings) -> dict[str, str]:
    """Employees' external numbers, normalised as the journal compares numbers → extension.
    A number given to two employees goes to the first (the configuration's order)."""
    region = settings.pbx.default_region
    mobiles: dict[str, str] = {}
    for employee in settings.employees:
        for number in employee.mobile:
            normalised = normalize_number(number, region)
            if normalised:
                mobiles.setdefault(normalised, employee.extension)
    return mobiles


class JournalPipeline:
    def __init__(
        self,
        assembler: CallAssembler,
        finder: RecordingFinder,
        journal: MemoryJournal,
        *,
        grace: float,
    ) -> None:
        self.assembler = assembler
        self.finder = finder
        self.journal = journal
        self.grace = grace
        self.stats = PipelineStats()

    def feed(self, event: AmiEvent, now: float) -> list[JournalEntry]:
        return self._write(self.assembler.feed(event, now), now)

    def expire(self, now: float) -> list[JournalEntry]:
        return self._write(self.assembler.expire(now), now)

    def resync(
        self,
        snapshots: Sequence[AmiEvent],
        now: float,
        *,
        lost_since: float | None,
    ) -> list[JournalEntry]:
        return self._write(self.assembler.resync(snapshots, now, lost_since=lost_since), now)

    def drain(self, last_event_time: float) -> list[JournalEntry]:
        """End of a replay: let every grace period run out, as time would have."""
        return self.expire(last_event_time + self.grace + 1e-6)

    def _write(self, calls: Iterable[FinishedCall], now: float) -> list[JournalEntry]:
        changed: list[JournalEntry] = []
        for call in calls:
            self.stats.calls_finished += 1
            changed.extend(self.journal.write(call, self.finder.find(call), now))
        self.stats.entries_written += len(changed)
        return changed


def build_classifier(
    settings: Settings,
    *,
    extensions: Iterable[str] = (),
    mobiles: Mapping[str, str] | None = None,
) -> ChannelClassifier:
    """The channel classifier of the configuration; with the journal's directory
    (``SqlJournal.classifier_directory``) its ``extensions`` are added and its ``mobiles``
    replace the configured ones (they were seeded into it and may have been edited over
    HTTP since)."""
    region = settings.pbx.default_region
    return ChannelClassifier(
        settings.pbx.extension_pattern,
        trunks=settings.pbx.trunks,
        extensions=sorted({e.extension for e in settings.employees} | set(extensions)),
        mobiles=employee_mobiles(settings) if mobiles is None else dict(mobiles),
        normalize=lambda number: normalize_number(number, region),
    )


def build_assembler(settings: Settings) -> CallAssembler:
    pbx = settings.pbx
    return CallAssembler(
        build_classifier(settings),
        grace=pbx.hangup_grace,
        max_call_duration=pbx.max_call_duration,
    )


def build_finder(settings: Settings, recordings: Iterable[str] | None = None) -> RecordingFinder:
    directories = (
        list(recordings) if recordings is not None else list(settings.recordings.directories)
    )
    return RecordingFinder(
        directories, settings.recordings.formats, on_refused=log_refused_recordings
    )


def log_refused_recordings(conversation_id: str, refused: int) -> None:
    """Once per call: parts named outside every recordings directory (not listed). The
    path is not logged: recording file names hold phone numbers."""
    structlog.get_logger("pbxjournal").warning(
        "recording outside the recordings directories refused",
        conversation_id=conversation_id,
        refused=refused,
    )


def build_pipeline(
    settings: Settings, *, recordings: Iterable[str] | None = None
) -> JournalPipeline:
    pbx = settings.pbx
    assembler = build_assembler(settings)
    finder = build_finder(settings, recordings)
    configured = settings.rules.attention_window
    window = (
        AttentionWindow.until_end_of_day(pbx.tz)
        if configured.seconds is None
        else AttentionWindow.fixed(configured.seconds, pbx.tz)
    )
    journal = MemoryJournal(pbx=pbx.name, window=window, region=pbx.default_region)
    return JournalPipeline(assembler, finder, journal, grace=pbx.hangup_grace)
