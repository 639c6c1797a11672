"""Merged downloads of a conversation's recording parts, with the real ffmpeg."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from httpd.audio import AudioError, MergedRecordings, decode_to_pcm, ffmpeg_path
from tests.scenarios import RECORDINGS

BLIND = RECORDINGS / "11-incoming-blind-transfer"


def parts() -> list[Path]:
    return sorted(BLIND.iterdir())  # external-101-… then external-103-…


def seconds(path: Path) -> float:
    return len(decode_to_pcm(path)) / 1000.0


def test_merged_mp3_of_a_two_part_call_lasts_as_long_as_its_parts(tmp_path: Path) -> None:
    cache = MergedRecordings(tmp_path)
    merged = cache.get(parts(), "mp3")
    assert merged.read_bytes()[:3] == b"ID3" or merged.read_bytes()[:2] in (
        b"\xff\xf3",
        b"\xff\xfb",
        b"\xff\xf2",
    )
    assert seconds(merged) == pytest.approx(9.6 + 6.02, abs=0.5)


def test_merged_wav_keeps_the_parts_in_order(tmp_path: Path) -> None:
    cache = MergedRecordings(tmp_path)
    merged = cache.get(parts(), "wav")
    first, second = (decode_to_pcm(p) for p in parts())
    whole = decode_to_pcm(merged)
    assert len(whole) == pytest.approx(len(first) + len(second), abs=50)
    # The second part's audio starts where the first ends.
    assert whole[len(first) :][:1000].raw_data == second[:1000].raw_data


def test_cache_hit_and_invalidation_when_a_part_changes(tmp_path: Path) -> None:
    work = tmp_path / "parts"
    work.mkdir()
    copies = [Path(shutil.copy(p, work / p.name)) for p in parts()]
    cache = MergedRecordings(tmp_path / "cache")
    one = cache.get(copies, "wav")
    assert cache.get(copies, "wav") == one  # same parts: the cached file
    time.sleep(0.01)
    copies[1].write_bytes(copies[0].read_bytes())  # the second part changed on disk
    two = cache.get(copies, "wav")
    assert two != one
    assert seconds(two) == pytest.approx(2 * 9.6, abs=0.5)


def test_non_pcm_wav_part_is_decoded_by_ffmpeg(tmp_path: Path) -> None:
    # G.711 (or GSM, Asterisk's "WAV") in a WAV container: pydub alone cannot read it.
    # (imageio-ffmpeg's build decodes GSM but has no GSM encoder to make a sample with.)
    ulaw = tmp_path / "part.wav"
    subprocess.run(
        [ffmpeg_path(), "-v", "error", "-i", str(parts()[0]), "-acodec", "pcm_mulaw", str(ulaw)],
        check=True,
    )
    merged = MergedRecordings(tmp_path / "cache").get([ulaw, parts()[1]], "mp3")
    assert seconds(merged) == pytest.approx(9.6 + 6.02, abs=0.5)


def test_cache_stays_under_its_size_limit(tmp_path: Path) -> None:
    cache = MergedRecordings(tmp_path, max_bytes=300_000)
    a = cache.get(parts()[:1], "wav")
    b = cache.get(parts(), "wav")  # ~250 kB: the older merge must go
    assert b.exists() and not a.exists()


def test_unknown_format_and_missing_part_are_clear_errors(tmp_path: Path) -> None:
    cache = MergedRecordings(tmp_path)
    with pytest.raises(AudioError, match="unknown format 'flac'"):
        cache.get(parts(), "flac")
    with pytest.raises(AudioError, match="cannot be read"):
        cache.get([tmp_path / "gone.wav"], "mp3")
