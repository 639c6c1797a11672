"""Finding a conversation's recording files on disk.

The PBX names a recording by its own absolute path (``MIXMONITOR_FILENAME``), but the daemon
often sees the spool through a mount elsewhere (NFS, a bind mount, a copy on a backup host).
:class:`RecordingFinder` resolves each part against the configured directories: the path as
given when it lies under one of them, then every tail of the path under each directory
(``/var/spool/asterisk/monitor/2026/11/28/x.wav`` is tried as ``DIR/2026/11/28/x.wav``,
``DIR/11/28/x.wav``, ``DIR/28/x.wav``, ``DIR/x.wav``), and for FreePBX's extension-less
``CALLFILENAME``/``MONITOR_FILENAME`` hints, the same with each configured format. Only a few
``stat`` calls per part, never a walk of the spool.

Only a file inside a configured directory is a part: every candidate is resolved first
(``..`` and every symlink followed, :func:`inside_directories`) and kept only when the real
path still lies under one of the directories, themselves resolved. A
``MIXMONITOR_FILENAME`` of ``DIR/../../etc/pbxjournal.toml``, or a symlink in the spool
pointing out of it, is refused and logged once per call (a warning with its conversation id);
the part is simply not listed. The HTTP layer checks the stored path again before serving it.

A file that holds no audio (a 44-byte WAV header left by a call never answered, or an empty
file) is not a part: the player would show an empty track.

This is blocking file-system work: the daemon runs it in a worker thread, never on the event
loop.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from connector.assembly import FinishedCall

__all__ = [
    "AudioInfo",
    "FoundRecording",
    "RecordingFinder",
    "inside_directories",
    "probe_audio",
]


_WAV_HEADER_BYTES = 44


@dataclass(frozen=True, slots=True)
class AudioInfo:
    size: int
    #: Seconds of audio when the format tells it cheaply (WAV), else None.
    duration: float | None
    has_audio: bool


@dataclass(frozen=True, slots=True)
class FoundRecording:
    """A recording part resolved to a readable file with audio."""

    part: int
    #: The path the PBX announced (kept to match the part when it is reported again).
    pbx_path: str
    file: Path
    started_at: float
    #: Seconds from the start of the conversation to the start of this part.
    offset_seconds: float
    duration_seconds: float | None
    size: int


def probe_audio(path: Path) -> AudioInfo | None:
    """Size, duration and whether the file holds audio; None when it cannot be read."""
    try:
        size = path.stat().st_size
    except OSError:
        return None
    if path.suffix.lower() != ".wav":
        return AudioInfo(size=size, duration=None, has_audio=size > 0)
    try:
        with path.open("rb") as handle:
            header = handle.read(4096)
    except OSError:
        return None
    return _wav_info(header, size)


def _wav_info(header: bytes, size: int) -> AudioInfo:
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        # Not a RIFF file after all (or a truncated one): judge by size alone.
        return AudioInfo(size=size, duration=None, has_audio=size > _WAV_HEADER_BYTES)
    byte_rate = 0
    offset = 12
    while offset + 8 <= len(header):
        chunk_id = header[offset : offset + 4]
        (chunk_size,) = struct.unpack_from("<I", header, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt " and body + 12 <= len(header):
            (byte_rate,) = struct.unpack_from("<I", header, body + 8)
        elif chunk_id == b"data":
            # A writer killed mid-call leaves the size field at 0 although audio follows.
            data_bytes = chunk_size if chunk_size else max(0, size - body)
            data_bytes = min(data_bytes, max(0, size - body))
            duration = data_bytes / byte_rate if byte_rate else None
            return AudioInfo(size=size, duration=duration, has_audio=data_bytes > 0)
        offset = body + chunk_size + (chunk_size & 1)
    return AudioInfo(size=size, duration=None, has_audio=size > _WAV_HEADER_BYTES)


def inside_directories(path: str | Path, directories: Iterable[str | Path]) -> Path | None:
    """``path`` resolved (``..`` and symlinks), when that lies inside one of ``directories``.

    The directories are resolved too, so a spool reached through a symlink still matches;
    a symlink inside a directory that points out of every directory does not.
    """
    real = Path(os.path.realpath(path))
    for directory in directories:
        if real.is_relative_to(os.path.realpath(directory)):
            return real
    return None


class RecordingFinder:
    """Resolves the recording parts of finished calls to files under ``directories``."""

    def __init__(
        self,
        directories: Iterable[str | Path],
        formats: Sequence[str] = ("wav",),
        *,
        on_refused: Callable[[str, int], None] | None = None,
    ) -> None:
        #: Told (conversation id, how many) once per call whose parts lay outside every
        #: directory: the daemon logs it (this module does no I/O but the file system's).
        self.on_refused = on_refused
        #: Parts refused so far, all calls together.
        self.refused = 0
        self._directories = [Path(d) for d in directories]
        self._formats = [f.lstrip(".") for f in formats]
        self._format_set = {f.lower() for f in self._formats}

    def locate(self, pbx_path: str) -> Path | None:
        """The real file for a path as the PBX named it, inside the directories, or None."""
        return self._locate(pbx_path)[0]

    def _locate(self, pbx_path: str) -> tuple[Path | None, bool]:
        """(the real file or None, whether a file outside the directories was refused)."""
        refused = False
        for candidate in self._candidates(pbx_path):
            if not candidate.is_file():
                continue
            real = inside_directories(candidate, self._directories)
            if real is not None:
                return real, refused
            refused = True
        return None, refused

    def _candidates(self, pbx_path: str) -> Iterable[Path]:
        pure = PurePosixPath(pbx_path)
        if pure.is_absolute():
            for directory in self._directories:
                try:
                    Path(pbx_path).relative_to(directory)
                except ValueError:
                    continue
                yield Path(pbx_path)
        parts = [p for p in pure.parts if p not in ("/", "", ".", "..")]
        for directory in self._directories:
            for start in range(len(parts)):
                yield directory.joinpath(*parts[start:])

    def find(self, call: FinishedCall) -> list[FoundRecording]:
        """The parts of ``call`` that exist and hold audio, in the order they started."""
        found: list[FoundRecording] = []
        seen: set[Path] = set()
        entries: list[tuple[str, float]] = [(p.path, p.started_at) for p in call.recordings]
        if not entries:
            # No MixMonitorStart announced a file: try FreePBX's name hints with each format.
            for hint in call.recording_hints:
                # Uniqueids put dots in names: only a configured format is an extension.
                if PurePosixPath(hint).suffix.lstrip(".").lower() in self._format_set:
                    entries.append((hint, call.started_at))
                else:
                    entries.extend((f"{hint}.{fmt}", call.started_at) for fmt in self._formats)
        refused = 0
        for pbx_path, started_at in entries:
            resolved, outside = self._locate(pbx_path)
            refused += outside
            if resolved is None:
                continue
            if resolved in seen:
                continue
            info = probe_audio(resolved)
            if info is None or not info.has_audio:
                continue
            seen.add(resolved)
            found.append(
                FoundRecording(
                    part=len(found) + 1,
                    pbx_path=pbx_path,
                    file=resolved,
                    started_at=started_at,
                    offset_seconds=round(max(0.0, started_at - call.started_at), 3),
                    duration_seconds=None if info.duration is None else round(info.duration, 3),
                    size=info.size,
                )
            )
        if refused:
            self.refused += refused
            if self.on_refused is not None:
                self.on_refused(call.conversation_id, refused)
        return found
