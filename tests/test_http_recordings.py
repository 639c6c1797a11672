"""Recordings over HTTP: Range requests on a part, the merged download, missing files.

The parts are the real wav files of the captures (tests/data/ami-traces/recordings), found by
the real recordings finder while the captures were replayed into the journal.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import sqlalchemy as sa

from httpd.app import init_app
from httpd.audio import decode_to_pcm
from storage.models import CallRecording
from tests.http_support import Api, Maker
from tests.scenarios import RECORDINGS

BLIND = RECORDINGS / "11-incoming-blind-transfer"


async def blind_transfer(api: Api) -> dict[str, Any]:
    (listed,) = await api.calls(q="79057778899")
    call: dict[str, Any] = await api.get(f"/api/v1/calls/{listed['id']}")
    return call


async def move_part(api: Api, recording_id: int, path: Path) -> None:
    async with api.journal.database.write_sessions() as session, session.begin():
        await session.execute(
            sa.update(CallRecording)
            .where(CallRecording.id == recording_id)
            .values(file_path=str(path))
        )


async def test_a_range_in_the_middle_of_a_part_returns_exactly_those_bytes(
    make_api: Maker,
) -> None:
    api = await make_api()
    call = await blind_transfer(api)
    first = call["recordings"][0]
    original = sorted(BLIND.iterdir())[0].read_bytes()
    # 8 kHz 16-bit mono: seconds 3 to 5 of the part, as 1C's player seeks by ±10 s.
    start, end = 44 + 3 * 16000, 44 + 5 * 16000 - 1
    async with api.client.get(
        first["url"], headers={**api.auth, "Range": f"bytes={start}-{end}"}
    ) as response:
        body = await response.read()
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(original)}"
        assert response.headers["Content-Type"] == "audio/wav"
        assert response.headers["Accept-Ranges"] == "bytes"
    assert body == original[start : end + 1]

    async with api.client.get(first["url"], headers=api.auth) as response:
        assert response.status == 200
        assert response.headers["Accept-Ranges"] == "bytes"
        assert await response.read() == original

    async with api.client.get(
        first["url"], headers={**api.auth, "Range": f"bytes={len(original) + 10}-"}
    ) as response:
        assert response.status == 416
        assert response.headers["Content-Range"] == f"bytes */{len(original)}"

    async with api.client.get(
        first["url"], headers={**api.auth, "Range": "bytes=-100"}
    ) as response:
        assert response.status == 206
        assert await response.read() == original[-100:]


async def test_a_missing_part_is_a_404_recording_missing_never_a_500(
    make_api: Maker, tmp_path: Path
) -> None:
    api = await make_api()
    call = await blind_transfer(api)
    part = call["recordings"][1]
    await move_part(api, part["id"], tmp_path / "rotated-away.wav")
    missing = await api.get(part["url"], status=404)
    assert missing["error"]["code"] == "recording_missing"
    detail = await api.get(f"/api/v1/calls/{call['id']}")
    assert [r["available"] for r in detail["timeline"]["recordings"]] == [True, False]
    merged = await api.get(call["recording_url"], status=404)
    assert merged["error"]["code"] == "recording_missing"
    unknown = await api.get("/api/v1/recordings/987654", status=404)
    assert unknown["error"]["code"] == "recording_not_found"
    for attempt in ("/api/v1/recordings/..%2F..%2Fetc%2Fpasswd", "/api/v1/recordings/-1"):
        refused = await api.get(attempt, status=400)
        assert refused["error"]["code"] == "invalid_parameter"


async def test_merged_mp3_of_the_two_part_call_lasts_as_long_as_its_parts(
    make_api: Maker, tmp_path: Path
) -> None:
    api = await make_api()
    # An employee with a Cyrillic name: the file name needs RFC 5987's filename*.
    await api.put("/api/v1/employees/101", {"name": "Иванова Анна", "extensions": ["101"]})
    call = await blind_transfer(api)
    async with api.client.get(call["recording_url"], headers=api.auth) as response:
        body = await response.read()
        assert response.status == 200, body[:300]
        assert response.headers["Content-Type"] == "audio/mpeg"
        disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment; filename=")
    encoded = disposition.split("filename*=UTF-8''", 1)[1]
    assert unquote(encoded) == "2026-11-28_06-44_+79057778899_Иванова-Анна.mp3"
    assert 'filename="2026-11-28_06-44_+79057778899_' in disposition
    saved = tmp_path / "download.mp3"
    saved.write_bytes(body)
    assert body[:3] == b"ID3" or body[:2] in (b"\xff\xf3", b"\xff\xfb", b"\xff\xf2")
    parts = sum(p["duration_seconds"] for p in call["recordings"])
    assert len(decode_to_pcm(saved)) / 1000 == pytest.approx(parts, abs=0.5)
    assert parts == pytest.approx(9.6 + 6.02, abs=0.1)


async def test_a_range_of_the_merged_mp3_resumes_the_download_with_the_same_bytes(
    make_api: Maker,
) -> None:
    # An interrupted download of the whole conversation resumes where it stopped; the first
    # request merges, the range is served from the merge it cached.
    api = await make_api()
    call = await blind_transfer(api)
    async with api.client.get(call["recording_url"], headers=api.auth) as response:
        whole = await response.read()
        assert response.status == 200
        assert response.headers["Accept-Ranges"] == "bytes"
    start = len(whole) // 3
    async with api.client.get(
        call["recording_url"], headers={**api.auth, "Range": f"bytes={start}-"}
    ) as response:
        rest = await response.read()
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes {start}-{len(whole) - 1}/{len(whole)}"
        assert response.headers["Content-Type"] == "audio/mpeg"
        assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    assert whole[:start] + rest == whole


async def test_merged_wav_is_cached_and_remade_when_a_part_changes(
    make_api: Maker, aiohttp_client: Any, tmp_path: Path
) -> None:
    seeded = await make_api()
    call = await blind_transfer(seeded)
    # The parts are copied to a spool of their own, a recordings directory of this app.
    spool = tmp_path / "spool"
    spool.mkdir()
    settings = dataclasses.replace(
        seeded.settings,
        recordings=dataclasses.replace(
            seeded.settings.recordings,
            directories=(*seeded.settings.recordings.directories, str(spool)),
        ),
    )
    app = init_app(settings, seeded.journal, merged_cache=tmp_path / "merged")
    api = Api(await aiohttp_client(app), app, seeded.journal, settings)
    copies = []
    for part, source in zip(call["recordings"], sorted(BLIND.iterdir()), strict=True):
        copy = Path(shutil.copy(source, spool / source.name))
        await move_part(api, part["id"], copy)
        copies.append(copy)
    url = call["recording_url"] + "?format=wav"
    one = await api.get(url)
    (cached,) = (tmp_path / "merged").iterdir()
    made = cached.stat().st_ino
    assert await api.get(url) == one
    assert cached.stat().st_ino == made  # the cached file was served, not a new merge
    copies[1].write_bytes(copies[0].read_bytes())  # the second part was rewritten
    two = await api.get(url)
    assert two != one
    whole = tmp_path / "two.wav"
    whole.write_bytes(two)
    assert len(decode_to_pcm(whole)) / 1000 == pytest.approx(2 * 9.6, abs=0.5)


async def test_a_call_without_recording_and_a_bad_format_are_4xx(make_api: Maker) -> None:
    api = await make_api()
    (lost, *_) = await api.calls(kind="lost")
    assert lost["recordings"] == []
    none = await api.get(f"/api/v1/calls/{lost['id']}/recording", status=404)
    assert none["error"]["code"] == "no_recording"
    call = await blind_transfer(api)
    flac = await api.get(call["recording_url"] + "?format=flac", status=400)
    assert "format" in flac["error"]["message"]
