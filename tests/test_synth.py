"""The synthetic load capture (bench/synth.py) is a faithful multiplication of the real calls.

Thousands of copies of the real conversations, renumbered and interleaved, replayed offline
through the journal pipeline: one row per copy, each with what its original call had, and
nothing left open. If this holds, a benchmark on the synthetic capture measures real work.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pytest

from bench.synth import (
    CallTemplate,
    SyntheticCapture,
    build_capture,
    load_expected,
    load_templates,
)
from config import Settings
from connector.assembly import FinishedCall
from connector.capture import iter_capture_messages
from connector.events import MalformedMessage, is_journal_message, normalize, parse_message
from pbxjournal.pipeline import build_pipeline

CALLS = 2000
CONCURRENCY = 200


def replay(path: Path) -> tuple[list[FinishedCall], int, int, int]:
    """(the calls of the journal's rows, calls finished, peak of open conversations, conversations
    still open at the end)."""
    pipeline = build_pipeline(Settings(), recordings=[])
    assembler = pipeline.assembler
    peak = 0
    last = 0.0
    for captured in iter_capture_messages(path):
        if not is_journal_message(captured.raw):
            continue
        try:
            message = parse_message(captured.raw)
        except MalformedMessage:
            continue
        if not message.event:
            continue
        event = normalize(message, last)
        last = max(last, event.time)
        pipeline.feed(event, last)
        peak = max(peak, assembler.open_conversations)
    pipeline.drain(last)
    rows = [entry.call for entry in pipeline.journal.entries()]
    return rows, pipeline.stats.calls_finished, peak, assembler.open_conversations


@pytest.fixture(scope="module")
def templates() -> list[CallTemplate]:
    return load_templates()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory, templates: list[CallTemplate]) -> Path:
    path = tmp_path_factory.mktemp("synth") / "load.ami"
    build_capture(path, calls=CALLS, concurrency=CONCURRENCY, seed=7, templates=templates)
    return path


def test_every_copy_is_one_row_with_the_outcome_of_its_original(synthetic: Path) -> None:
    expected = load_expected(synthetic)
    wants = {c["conversation_id"]: c for c in expected["calls"]}
    assert len(wants) == expected["call_count"] == CALLS

    calls, finished, peak, still_open = replay(synthetic)

    assert finished == len(calls) == CALLS
    assert sorted(c.conversation_id for c in calls) == sorted(wants)
    for call in calls:
        want = wants[call.conversation_id]
        got = {
            "direction": call.direction.value,
            "number": call.external_number,
            "answered": call.answered,
            "employees_answered": list(call.employees_answered),
            "recordings": [PurePosixPath(r.path).name for r in call.recordings],
        }
        assert got == {key: want[key] for key in got}, want["template"]
    assert still_open == 0
    assert CONCURRENCY * 0.9 <= peak <= CONCURRENCY * 1.05, peak


def test_copies_get_new_numbers_that_match_their_recording_names(
    synthetic: Path, templates: list[CallTemplate]
) -> None:
    expected = load_expected(synthetic)
    originals = {t.outcome.number[-10:].encode() for t in templates if t.outcome.number}
    assert len(originals) > 40
    assert re.search(b"|".join(originals), synthetic.read_bytes()) is None
    numbers = [c["number"] for c in expected["calls"] if c["number"]]
    assert len(set(numbers)) == len(numbers)
    for call in expected["calls"]:
        if call["number"] and call["recordings"]:
            assert any(call["number"][-10:] in name for name in call["recordings"]), call
    assert len(expected["templates"]) >= 60  # the burst's calls and every single-call capture


def test_the_capture_is_a_function_of_the_seed(
    tmp_path: Path, templates: list[CallTemplate]
) -> None:
    def build(name: str, seed: int) -> SyntheticCapture:
        path = tmp_path / name
        return build_capture(path, calls=30, concurrency=10, seed=seed, templates=templates)

    first = build("a.ami", 3)
    again = build("b.ami", 3)
    other = build("c.ami", 4)
    assert first.path.read_bytes() == again.path.read_bytes()
    assert first.calls == again.calls
    assert first.path.read_bytes() != other.path.read_bytes()
    assert (tmp_path / "a.ami.recvlog").read_bytes() == (tmp_path / "b.ami.recvlog").read_bytes()


def test_the_recvlog_describes_the_capture(synthetic: Path) -> None:
    # Read through the recvlog (which checks it covers the file exactly): every message once.
    messages = sum(1 for _ in iter_capture_messages(synthetic))
    assert messages == load_expected(synthetic)["events"] + 2  # + login answer, FullyBooted


def test_a_journal_only_capture_keeps_what_the_assembler_reads(
    tmp_path: Path, templates: list[CallTemplate]
) -> None:
    full = build_capture(
        tmp_path / "full.ami", calls=60, concurrency=20, seed=5, templates=templates
    )
    lean = build_capture(
        tmp_path / "lean.ami",
        calls=60,
        concurrency=20,
        seed=5,
        templates=templates,
        journal_only=True,
    )
    assert lean.calls == full.calls
    assert lean.events < full.events / 2
    raws = [m.raw for m in iter_capture_messages(lean.path)][2:]  # login answer, FullyBooted
    assert all(is_journal_message(raw) for raw in raws)
    rows, _, _, left_open = replay(lean.path)
    assert sorted(r.conversation_id for r in rows) == sorted(c.conversation_id for c in lean.calls)
    assert left_open == 0
