"""Recording parts resolved to real files, wherever the spool is mounted."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from connector.recordings import RecordingFinder, probe_audio
from tests.scenarios import RECORDINGS, assemble_capture

BLIND = "11-incoming-blind-transfer"
PBX_DIR = "/var/spool/asterisk/monitor/main/2026/11/28"


def test_parts_found_by_basename_in_a_flat_directory() -> None:
    (call,) = assemble_capture(BLIND).calls
    found = RecordingFinder([RECORDINGS / BLIND]).find(call)
    assert [f.file.name for f in found] == [Path(p.path).name for p in call.recordings]
    assert [f.part for f in found] == [1, 2]
    assert found[0].duration_seconds == pytest.approx(9.6, abs=0.05)
    assert found[1].offset_seconds == pytest.approx(12.61, abs=0.05)


def test_parts_found_when_the_pbx_tree_is_mounted_elsewhere(tmp_path: Path) -> None:
    # The daemon sees /var/spool/asterisk/monitor as /mnt/pbx-monitor (NFS, bind mount...).
    mount = tmp_path / "pbx-monitor"
    dated = mount / "main" / "2026" / "11" / "28"
    dated.mkdir(parents=True)
    for wav in (RECORDINGS / BLIND).iterdir():
        shutil.copy(wav, dated / wav.name)
    (call,) = assemble_capture(BLIND).calls
    found = RecordingFinder([mount]).find(call)
    assert [f.file.parent for f in found] == [dated, dated]


def test_the_pbx_path_itself_when_it_lies_under_a_configured_directory(tmp_path: Path) -> None:
    finder = RecordingFinder([tmp_path])
    wav = next((RECORDINGS / BLIND).iterdir())
    target = tmp_path / "2026" / wav.name
    target.parent.mkdir()
    shutil.copy(wav, target)
    assert finder.locate(str(target)) == target
    # Only tails of the PBX's path are tried, never a walk of the spool: a file moved into
    # an unrelated folder is not found.
    assert finder.locate(f"{PBX_DIR}/{wav.name}") is None


def test_a_missing_file_is_simply_not_a_part(tmp_path: Path) -> None:
    (call,) = assemble_capture(BLIND).calls
    assert RecordingFinder([tmp_path]).find(call) == []


def test_header_only_wav_has_no_audio() -> None:
    empty = RECORDINGS / "03-incoming-noanswer-timeout"
    (wav,) = list(empty.iterdir())
    info = probe_audio(wav)
    assert info is not None
    assert (info.size, info.has_audio) == (44, False)


def test_queue_recording_from_monitor_filename_hint_without_mixmonitor(tmp_path: Path) -> None:
    # FreePBX sets MONITOR_FILENAME (no extension) for queue calls; when no MixMonitorStart
    # names the file, the hint is tried with each configured format.
    (call,) = assemble_capture("05-incoming-queue-101-answers").calls
    assert call.recording_hints
    stripped = replace(call, recordings=())
    found = RecordingFinder([RECORDINGS / "05-incoming-queue-101-answers"], ["gsm", "wav"]).find(
        stripped
    )
    assert [f.file.suffix for f in found] == [".wav"]


def test_a_directory_configured_twice_lists_each_part_once(tmp_path: Path) -> None:
    (call,) = assemble_capture(BLIND).calls
    for wav in (RECORDINGS / BLIND).iterdir():
        shutil.copy(wav, tmp_path / wav.name)
    # The same directory configured twice must not double the parts.
    found = RecordingFinder([tmp_path, tmp_path]).find(call)
    assert len(found) == 2
