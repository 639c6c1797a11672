"""Merged downloads of a conversation's recording parts, with the real ffmpeg."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import wave
from pathlib import Path

import pytest

from httpd.audio import AudioError, MergedRecordings, decode_to_pcm, ffmpeg_path
from tests.scenarios import RECORDINGS

BLIND = RECORDINGS / "11-incoming-blind-transfer"


def parts() -> list[Path]:
    return sorted(BLIND.iterdir())  # external-101-… then external-103-…


def seconds(path: Path) -> float:
    return len(decode_to_pcm(path)) / 1000.0


def audio_stream(path: Path) -> str:
    """ffmpeg's one-line description of the file's audio stream (codec, rate, bit rate)."""
    done = subprocess.run(
        [ffmpeg_path(), "-hide_banner", "-i", str(path)], capture_output=True, check=False
    )
    (line,) = [
        line
        for line in done.stderr.decode().splitlines()
        if line.strip().startswith("Stream") and "Audio:" in line
    ]
    return line.split("Audio:", 1)[1].strip()


def convert(source: Path, target: Path, *options: str) -> Path:
    subprocess.run(
        [ffmpeg_path(), "-v", "error", "-i", str(source), *options, str(target)], check=True
    )
    return target


def test_merged_mp3_of_a_two_part_call_lasts_as_long_as_its_parts(tmp_path: Path) -> None:
    cache = MergedRecordings(tmp_path)
    merged = cache.get(parts(), "mp3")
    assert merged.read_bytes()[:3] == b"ID3" or merged.read_bytes()[:2] in (
        b"\xff\xf3",
        b"\xff\xfb",
        b"\xff\xf2",
    )
    assert seconds(merged) == pytest.approx(9.6 + 6.02, abs=0.5)


def test_merged_mp3_is_telephone_quality_cbr_at_the_parts_rate(tmp_path: Path) -> None:
    # MixMonitor's wav is 8 kHz mono: the mp3 stays 8 kHz mono, at a constant 32 kbit/s,
    # so that a byte offset is proportional to time for a player's Range requests.
    merged = MergedRecordings(tmp_path).get(parts(), "mp3")
    stream = audio_stream(merged)
    assert stream.startswith("mp3")
    assert "8000 Hz" in stream
    assert "mono" in stream
    assert "32 kb/s" in stream
    audio_bytes = merged.stat().st_size
    assert audio_bytes == pytest.approx((9.6 + 6.02) * 32000 / 8, rel=0.05)


def test_8_bit_and_wideband_parts_merge_at_the_first_parts_format(tmp_path: Path) -> None:
    # 8-bit PCM parts, the second at 16 kHz stereo (a G.722 phone's leg): the merge takes
    # the first part's 8 kHz mono, and the encoder gets 16-bit samples.
    first, second = parts()
    eight_bit = convert(first, tmp_path / "first.wav", "-acodec", "pcm_u8")
    wideband = convert(
        second, tmp_path / "second.wav", "-acodec", "pcm_u8", "-ar", "16000", "-ac", "2"
    )
    merged = MergedRecordings(tmp_path / "cache").get([eight_bit, wideband], "mp3")
    assert "8000 Hz, mono" in audio_stream(merged)
    assert seconds(merged) == pytest.approx(9.6 + 6.02, abs=0.5)


def test_a_part_the_encoder_refuses_is_an_audio_error_and_leaves_no_file(
    tmp_path: Path,
) -> None:
    nine = tmp_path / "nine-channels.wav"
    with wave.open(str(nine), "wb") as handle:  # PCM that reads, but no mp3 holds 9 channels
        handle.setnchannels(9)
        handle.setsampwidth(2)
        handle.setframerate(8000)
        handle.writeframes(bytes(2 * 9 * 8000))
    cache = MergedRecordings(tmp_path / "cache")
    with pytest.raises(AudioError, match="cannot encode mp3"):
        cache.get([nine], "mp3")
    assert list((tmp_path / "cache").iterdir()) == []


def test_concurrent_requests_for_one_merge_share_it_and_leave_no_lock_behind(
    tmp_path: Path,
) -> None:
    cache = MergedRecordings(tmp_path)
    results: list[Path] = []

    def download() -> None:
        results.append(cache.get(parts(), "mp3"))

    threads = [threading.Thread(target=download) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(results) == 4
    assert [p.name for p in tmp_path.iterdir()] == [results[0].name]  # one merge, no leftovers
    assert cache.pending() == 0


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
