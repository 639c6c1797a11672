"""Issue 15's marks through the SQL journal: ``number_withheld``, employees' ``on_mobile``
(call object, timeline participants and legs) and the ``blonde`` transfer kind.

The peer captures (tests/data/ami-traces/peer, employees' mobiles as in
tests/test_peer_flows.py) go through the real pipeline twice: into the in-memory journal
(the oracle, what ``pbxjournal replay --json`` prints) and into SQLite and PostgreSQL
(``replay --database``'s path: the writer's batch, on SQLite in its own thread with Core
executemany for the parts). ``GET /calls``, ``/calls/{id}``, ``/changes`` and
``pbxjournal calls --json`` must show what the memory journal shows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config import HttpSettings, Settings
from connector.events import AmiEvent
from pbxjournal.dbtools import open_journal, replay_events
from pbxjournal.pipeline import build_pipeline, employee_directory
from storage.journal import JournalEntry, to_call_detail, to_call_object
from tests.db import ENGINES, fresh_url
from tests.http_support import CLIENTS, basic
from tests.test_peer_flows import PEER, peer_events, peer_settings
from tests.test_replay import json_lines, run_cli

SLUGS = sorted(p.name.removesuffix(".ami") for p in PEER.glob("*.ami"))
#: Each capture an hour after the previous one (they have no clock of their own).
APART = 3600.0


def all_events() -> Iterator[AmiEvent]:
    for index, slug in enumerate(SLUGS):
        for event in peer_events(slug):
            yield dataclasses.replace(event, time=event.time + index * APART)


def settings_for(tmp_path: Path) -> Settings:
    settings = peer_settings(tmp_path)
    return dataclasses.replace(settings, http=HttpSettings(listen="127.0.0.1:0", clients=CLIENTS))


def memory_rows(settings: Settings) -> list[JournalEntry]:
    pipeline = build_pipeline(settings, recordings=[])
    rows: dict[int, JournalEntry] = {}
    last = 0.0
    for event in all_events():
        last = event.time
        for entry in pipeline.feed(event, event.time):
            rows[entry.id] = entry
    for entry in pipeline.drain(last):
        rows[entry.id] = entry
    return list(rows.values())


def marks(call: dict[str, Any]) -> dict[str, Any]:
    """What issue 15 added to a call object (and its timeline when there is one)."""
    shown: dict[str, Any] = {
        "number_withheld": call["number_withheld"],
        "employees": [(e["extension"], e["role"], e["on_mobile"]) for e in call["employees"]],
    }
    timeline = call.get("timeline")
    if timeline is not None:
        shown["participants"] = [(p["extension"], p["on_mobile"]) for p in timeline["participants"]]
        shown["legs"] = [(leg["extension"], leg["on_mobile"]) for leg in timeline["legs"]]
        shown["transfers"] = [(t["kind"], t["by"], t["target"]) for t in timeline["transfers"]]
    return shown


def without_identity(call: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in call.items() if k not in ("id", "version")}


@pytest.mark.parametrize("engine", ENGINES)
async def test_http_shows_the_marks_the_memory_journal_shows(
    engine: str, tmp_path: Path, aiohttp_client: Any
) -> None:
    from httpd.app import init_app

    settings = settings_for(tmp_path)
    tz, directory = settings.pbx.tz, employee_directory(settings)
    oracle = {e.call.conversation_id: e for e in memory_rows(settings)}
    url = await fresh_url(engine, tmp_path)
    async with open_journal(settings, url) as journal:
        events = ((event, event.time) for event in all_events())
        await replay_events(build_pipeline(settings, recordings=[]), journal, events)
        client = await aiohttp_client(init_app(settings, journal, merged_cache=tmp_path / "m"))
        auth = basic("1c", "s3cret")
        try:
            page = await (
                await client.get(
                    "/api/v1/calls", params={"internal": "show", "limit": 100}, headers=auth
                )
            ).json()
            feed = await (
                await client.get("/api/v1/changes", params={"since": 0}, headers=auth)
            ).json()
            details = {}
            for item in page["items"]:
                response = await client.get(f"/api/v1/calls/{item['id']}", headers=auth)
                assert response.status == 200
                details[item["linkedid"]] = await response.json()
        finally:
            await client.close()
    listed = {item["linkedid"]: item for item in page["items"]}
    fed = {item["linkedid"]: item for item in feed["items"]}
    assert set(listed) == set(fed) == set(details) == set(oracle)
    for linkedid, entry in oracle.items():
        expected = to_call_object(entry, tz, directory)
        assert without_identity(listed[linkedid]) == without_identity(expected), linkedid
        assert without_identity(fed[linkedid]) == without_identity(expected), linkedid
        detail = to_call_detail(entry, tz, directory)
        assert marks(details[linkedid]) == marks(detail), linkedid
    # The corpus has each mark set somewhere, so the comparison is not of defaults only.
    shown = [marks(d) for d in details.values()]
    assert any(m["number_withheld"] for m in shown)
    assert any(on for m in shown for _, _, on in m["employees"])
    assert any(on for m in shown for _, on in m["legs"])
    assert any(on for m in shown for _, on in m["participants"])


@pytest.mark.parametrize("engine", ENGINES)
async def test_replay_database_and_calls_json_print_what_replay_prints(
    engine: str, tmp_path: Path
) -> None:
    settings_for(tmp_path)  # writes tmp_path/peer.toml, the peer PBX with employees' mobiles
    config = str(tmp_path / "peer.toml")
    captures = [str(PEER / f"{slug}.ami") for slug in SLUGS]
    memory = run_cli("replay", *captures, "--json", "--config", config)
    assert memory.returncode == 0, memory.stderr
    url = await fresh_url(engine, tmp_path)
    stored = run_cli("replay", *captures, "--json", "--config", config, "--database", url)
    assert stored.returncode == 0, stored.stderr
    listed = run_cli("calls", "--internal", "show", "--json", "--config", config, "--database", url)
    assert listed.returncode == 0, listed.stderr

    def by_linkedid(stdout: str) -> dict[str, dict[str, Any]]:
        return {o["linkedid"]: without_identity(o) for o in json_lines(stdout)}

    expected = by_linkedid(memory.stdout)
    assert by_linkedid(stored.stdout) == expected
    assert by_linkedid(listed.stdout) == expected
    assert any(o["number_withheld"] for o in expected.values())
    assert any(e["on_mobile"] for o in expected.values() for e in o["employees"])
