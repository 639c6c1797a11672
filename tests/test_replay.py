"""``pbxjournal replay``: captures through the whole pipeline to call objects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from config import load_settings
from pbxjournal.pipeline import build_pipeline
from pbxjournal.replay import replay_captures
from tests.scenarios import EMPLOYEES, RECORDINGS, capture

ROOT = Path(__file__).resolve().parent.parent


def write_config(tmp_path: Path, *, window: str = "24h") -> Path:
    employees = "\n".join(f'{ext} = "{name}"' for ext, name in EMPLOYEES.items())
    dirs = ", ".join(json.dumps(str(d)) for d in sorted(RECORDINGS.iterdir()))
    path = tmp_path / "pbxjournal.toml"
    path.write_text(
        f'[pbx]\ntimezone = "Europe/Moscow"\n[rules]\nattention_window = "{window}"\n'
        f"[recordings]\ndirectories = [{dirs}]\n[employees]\n{employees}\n",
        "utf-8",
    )
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "pbxjournal.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_missed_call_is_lost_with_attention_until_the_call_back(tmp_path: Path) -> None:
    result = run_cli(
        "replay",
        str(capture("15-missed-then-callback")),
        "--json",
        "--config",
        str(write_config(tmp_path)),
    )
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    missed = [line for line in lines if line["direction"] == "incoming"]
    assert [(m["status"], m["attention"]) for m in missed] == [("lost", True), ("no_answer", False)]
    assert missed[0]["status_label"] == "Потерян"
    assert missed[1]["status_label"] == "Нет ответа"
    assert missed[0]["id"] == missed[1]["id"]
    assert missed[1]["version"] > missed[0]["version"]
    callback = [line for line in lines if line["direction"] == "outgoing"]
    assert len(callback) == 1
    assert callback[0]["status"] == "reached"
    assert callback[0]["number"] == "+79265550011" == missed[0]["number"]
    # The call back is not a first contact: the journal already held the missed call.
    assert (missed[-1]["first_contact"], callback[0]["first_contact"]) == (True, False)


def test_call_object_of_a_blind_transfer_has_both_recording_parts(tmp_path: Path) -> None:
    result = run_cli(
        "replay",
        str(capture("11-incoming-blind-transfer")),
        "--json",
        "--config",
        str(write_config(tmp_path)),
    )
    assert result.returncode == 0, result.stderr
    (call,) = json_lines(result.stdout)
    assert call["started_at"].endswith("+03:00")
    assert call["status"] == "answered" and call["status_label"] == "Принят"
    assert call["number"] == "+79057778899"
    assert call["number_raw"] == "79057778899"
    assert [(e["extension"], e["name"], e["role"]) for e in call["employees"]] == [
        ("101", "Ivanova Anna", "answered"),
        ("103", "Sidorova Maria", "answered"),
    ]
    parts = call["recordings"]
    assert [p["part"] for p in parts] == [1, 2]
    assert [p["url"] for p in parts] == [f"/api/v1/recordings/{p['id']}" for p in parts]
    assert parts[0]["duration_seconds"] == pytest.approx(9.6, abs=0.1)
    assert parts[1]["duration_seconds"] == pytest.approx(6.02, abs=0.1)
    assert parts[1]["offset_seconds"] == pytest.approx(12.6, abs=0.2)
    assert call["talk_seconds"] == pytest.approx(18.6, abs=1.0)


def test_header_only_recording_of_a_missed_call_is_not_a_part(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path))
    pipeline = build_pipeline(settings)
    entries = [
        e
        for batch in replay_captures(pipeline, [capture("03-incoming-noanswer-timeout")])
        for e in batch
    ]
    assert len(entries) == 1
    entry = entries[0]
    assert entry.call.recordings  # the PBX did announce a file...
    assert entry.recordings == ()  # ...but it holds no audio


def test_replaying_all_captures_gives_one_row_per_conversation(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path))
    pipeline = build_pipeline(settings)
    slugs = sorted(p.name.removesuffix(".ami") for p in capture("x").parent.glob("*.ami"))
    for _ in replay_captures(pipeline, [capture(s) for s in slugs]):
        pass
    expected = sum(
        len(
            json.loads((capture(s).with_suffix(".expected.json")).read_text("utf-8")).get(
                "calls", []
            )
        )
        for s in slugs
    )
    assert len(pipeline.journal.entries()) == expected == 70
    assert pipeline.assembler.open_conversations == 0


def test_replaying_the_same_capture_twice_adds_no_row(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path))
    pipeline = build_pipeline(settings)
    path = capture("14-two-overlapping-incoming")
    for _ in replay_captures(pipeline, [path, path]):
        pass
    assert len(pipeline.journal.entries()) == 2


def test_replay_table_on_a_terminal_lists_calls(tmp_path: Path) -> None:
    result = run_cli(
        "replay",
        str(capture("02-incoming-ringgroup-102-answers")),
        "--config",
        str(write_config(tmp_path)),
    )
    assert result.returncode == 0, result.stderr
    assert "Petrov Ivan (answered)" in result.stdout
    assert result.stdout.strip().endswith("1 calls")


def test_replay_of_a_missing_file_fails_clearly(tmp_path: Path) -> None:
    result = run_cli("replay", str(tmp_path / "nope.ami"))
    assert result.returncode == 2
    assert "no such capture" in result.stderr


def test_replay_with_a_bad_config_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[pbx]\ntimezone = "Europe/Moskow"\n', "utf-8")
    result = run_cli("replay", str(capture("01-incoming-answered-direct")), "--config", str(bad))
    assert result.returncode == 2
    assert "pbx.timezone" in result.stderr


def test_replay_progress_line_reports_events_per_second(tmp_path: Path) -> None:
    result = run_cli(
        "replay",
        str(capture("17-burst-50-mixed")),
        "--progress",
        "--config",
        str(write_config(tmp_path)),
    )
    assert result.returncode == 0, result.stderr
    last = result.stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert "100%" in last and "events/s" in last and "17-burst-50-mixed.ami" in last
    assert result.stdout.strip().endswith("50 calls")
    # Not on a pipe unless asked: the JSON/table output stays clean.
    quiet = run_cli("replay", str(capture("01-incoming-answered-direct")))
    assert "events/s" not in quiet.stderr
