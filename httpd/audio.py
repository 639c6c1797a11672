"""Merging a conversation's recording parts into one download (mp3 or wav).

1C's player downloads "the recording" of a call as one file, while the PBX wrote one file per
transfer leg or MixMonitor restart. :class:`MergedRecordings` concatenates the parts in order
with pydub, using the ffmpeg binary shipped by ``imageio-ffmpeg`` (no system ffmpeg needed),
and caches the result under a key made of the format and each part's path, size and
modification time: a part that changes (a recording still being written when first asked
for) makes a new key, so a stale merge is never served. The cached file is what the HTTP
layer serves, so a download can resume with ``Range`` at no further cost.

Parts in PCM WAV (MixMonitor's ``wav``) are read by pydub directly; anything else (``WAV``
GSM, ``gsm``, ``mp3``, ``ogg``) is first decoded to PCM by ffmpeg, so pydub never needs
``ffprobe``. The mp3 is encoded by ffmpeg reading the merged PCM from a pipe and writing the
cache file itself (no temporary WAV, no copy), with encoder settings for telephone audio
(:data:`MP3_ENCODER`): the encoder is nearly all of a merge's time, and issue 7 asks for a
10-minute conversation in at most 2 s (docs/benchmarks.md, ``bench.recordings``). All of
this is blocking and CPU-bound: the HTTP layer runs it in a worker thread, one merge per key
at a time.

The cache holds call audio, so its directory is private: ``$CACHE_DIRECTORY/merged`` under
systemd, else ``$XDG_CACHE_HOME/pbxjournal/merged`` or ``~/.cache/pbxjournal/merged``
(:func:`default_cache_directory`), created 0700. :func:`private_directory` refuses a
directory owned by another user, writable by group or others, or below a directory that
another user could rename it in, and falls back to a fresh ``mkdtemp`` directory with a
warning; a directory of ours merely readable by others is made 0700.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import structlog

with warnings.catch_warnings():
    # pydub looks for a system ffmpeg at import and warns; we hand it imageio-ffmpeg's.
    warnings.simplefilter("ignore", RuntimeWarning)
    warnings.simplefilter("ignore", DeprecationWarning)
    from pydub import AudioSegment

__all__ = [
    "FORMATS",
    "MP3_ENCODER",
    "AudioError",
    "MergedRecordings",
    "decode_to_pcm",
    "default_cache_directory",
    "encode_mp3",
    "ffmpeg_path",
    "merge_parts",
    "private_directory",
]

log = structlog.get_logger("pbxjournal.http")

#: Download formats: (file suffix, content type).
FORMATS: dict[str, tuple[str, str]] = {
    "mp3": (".mp3", "audio/mpeg"),
    "wav": (".wav", "audio/wav"),
}

#: ffmpeg's output options for the merged mp3. Telephone audio (8 kHz mono, 4 kHz of
#: bandwidth): 32 kbit/s CBR keeps speech clear at a quarter of the WAV's 128, and a
#: constant rate keeps byte offsets proportional to time for a player's Range requests.
#: LAME's quality 7 skips noise shaping: it encodes about twice as fast as its default (3),
#: and with this many bits for so narrow a band loses nothing measurable (24.7 dB SNR against
#: 21.2 dB for quality 3, on the captures' real recordings).
MP3_ENCODER: tuple[str, ...] = ("-codec:a", "libmp3lame", "-b:a", "32k", "-compression_level", "7")

_FFMPEG_TIMEOUT = 300.0


class AudioError(RuntimeError):
    """A part could not be decoded, or the merge could not be encoded."""


def ffmpeg_path() -> str:
    """The ffmpeg binary bundled with imageio-ffmpeg (or IMAGEIO_FFMPEG_EXE)."""
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def decode_to_pcm(path: Path) -> AudioSegment:
    """Any format ffmpeg reads → 16-bit PCM, without ffprobe."""
    command = [
        ffmpeg_path(),
        "-v",
        "error",
        "-nostdin",
        "-i",
        str(path),
        "-vn",
        "-acodec",
        "pcm_s16le",
        "-f",
        "wav",
        "-",
    ]
    try:
        done = subprocess.run(command, capture_output=True, timeout=_FFMPEG_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AudioError(f"cannot run ffmpeg on {path.name}: {exc}") from exc
    if done.returncode != 0 or not done.stdout:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioError(f"ffmpeg cannot decode {path.name}: {message[-1] if message else '?'}")
    return AudioSegment.from_wav(io.BytesIO(done.stdout))


def _load(path: Path) -> AudioSegment:
    if path.suffix == ".wav":
        try:
            # pydub's own WAV reader (it also fixes the sizes in the header of a recording
            # still being written); unlike ``from_wav`` it never falls back to a converter.
            return AudioSegment(data=path.read_bytes())
        except Exception:
            pass  # not PCM (GSM or G.711 in WAV): ffmpeg decodes it below
    return decode_to_pcm(path)


def merge_parts(parts: Sequence[Path]) -> AudioSegment:
    """The parts one after another, converted to the first part's rate and channels."""
    if not parts:
        raise AudioError("no recording part to merge")
    segments = [_load(p) for p in parts]
    first = segments[0]
    merged = first
    for segment in segments[1:]:
        merged += segment.set_frame_rate(first.frame_rate).set_channels(first.channels)
    return merged


def encode_mp3(segment: AudioSegment, target: Path) -> None:
    """``segment`` as an mp3 file at ``target``, encoded with :data:`MP3_ENCODER`.

    The PCM goes to ffmpeg through a pipe and ffmpeg writes ``target`` itself.
    """
    if segment.sample_width != 2:
        segment = segment.set_sample_width(2)
    command = [
        ffmpeg_path(),
        "-v",
        "error",
        "-f",
        "s16le",
        "-ar",
        str(segment.frame_rate),
        "-ac",
        str(segment.channels),
        "-i",
        "pipe:0",
        *MP3_ENCODER,
        "-f",
        "mp3",
        "-y",
        str(target),
    ]
    try:
        done = subprocess.run(
            command,
            input=segment.raw_data,
            capture_output=True,
            timeout=_FFMPEG_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AudioError(f"cannot run ffmpeg to encode mp3: {exc}") from exc
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioError(f"ffmpeg cannot encode mp3: {message[-1] if message else '?'}")


def _export(segment: AudioSegment, target: Path, fmt: str) -> None:
    if fmt == "mp3":
        encode_mp3(segment, target)
    else:
        segment.export(str(target), format="wav")  # pydub writes WAV itself, no ffmpeg


def default_cache_directory() -> Path:
    """Where merged recordings go when the caller names no directory.

    ``$CACHE_DIRECTORY/merged`` under systemd (``CacheDirectory=``; the first when it lists
    several), else ``$XDG_CACHE_HOME/pbxjournal/merged`` (an absolute one), else
    ``~/.cache/pbxjournal/merged``. Never a shared, predictable path under ``/tmp``.
    """
    systemd = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd) / "merged"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "pbxjournal" / "merged"
    try:
        home = Path.home()
    except RuntimeError:  # no $HOME and no passwd entry: a private temporary directory
        return Path(tempfile.mkdtemp(prefix="pbxjournal-merged-"))
    return home / ".cache" / "pbxjournal" / "merged"


def _unsafe(path: str, *, leaf: bool) -> str | None:
    """Why ``path`` (resolved) must not hold our cache, or None when it may."""
    info = os.lstat(path)
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISDIR(info.st_mode):
        return "not a directory"
    if info.st_uid not in ({os.geteuid()} if leaf else {os.geteuid(), 0}):
        return f"owned by uid {info.st_uid}"
    if mode & 0o022 and (leaf or not mode & stat.S_ISVTX):
        return f"writable by group or others (mode {mode:o})"
    return None


def private_directory(path: Path) -> Path:
    """``path`` made into a directory only this user can enter, or a fresh private one.

    Missing components are created 0700. The directory itself must be ours and not
    writable by group or others, and each directory above it must be ours or root's and not
    writable by others unless sticky (``/tmp``): otherwise someone else could plant files in
    the cache or swap it for theirs. A refused path is logged as a warning and a fresh
    ``tempfile.mkdtemp`` directory (0700, unpredictable name) is used instead. A directory
    of ours that is only readable by others is narrowed to 0700.
    """
    try:
        real = os.path.realpath(path)
        missing: list[str] = []
        while not os.path.lexists(real):
            missing.append(real)
            real = os.path.dirname(real)
        for directory in reversed(missing):
            os.mkdir(directory, 0o700)
        real = os.path.realpath(path)
        reason = _unsafe(real, leaf=True)
        parent = os.path.dirname(real)
        while reason is None and parent != os.path.dirname(parent):
            reason = _unsafe(parent, leaf=False)
            parent = os.path.dirname(parent)
        if reason is None and stat.S_IMODE(os.stat(real).st_mode) & 0o077:
            os.chmod(real, 0o700)
    except OSError as exc:
        reason = f"{type(exc).__name__}: {exc.strerror or exc}"
    if reason is None:
        return Path(real)
    fallback = Path(tempfile.mkdtemp(prefix="pbxjournal-merged-"))
    log.warning(
        "merged recordings cache directory refused; using a private temporary one",
        directory=str(path),
        reason=reason,
        fallback=str(fallback),
    )
    return fallback


@dataclass(frozen=True, slots=True)
class _PartStamp:
    path: str
    size: int
    mtime_ns: int


class MergedRecordings:
    """A cache of merged conversation recordings in ``directory``.

    ``directory`` (default :func:`default_cache_directory`) goes through
    :func:`private_directory` at once: :attr:`directory` is where the cache really is.
    ``max_bytes`` bounds the cache: after each new merge the least recently used files are
    removed until it fits.
    """

    def __init__(
        self, directory: Path | None = None, *, max_bytes: int = 512 * 1024 * 1024
    ) -> None:
        self.directory = private_directory(directory or default_cache_directory())
        self.max_bytes = max_bytes
        # key -> (lock, threads holding or waiting for it); an entry goes with its last user.
        self._locks: dict[str, tuple[threading.Lock, int]] = {}
        self._guard = threading.Lock()

    def key(self, parts: Sequence[Path], fmt: str) -> str:
        digest = hashlib.sha256(fmt.encode())
        for part in parts:
            stat = part.stat()
            stamp = _PartStamp(str(part), stat.st_size, stat.st_mtime_ns)
            digest.update(repr(stamp).encode())
        return digest.hexdigest()[:32]

    def get(self, parts: Sequence[Path], fmt: str) -> Path:
        """The merged file for these parts in ``fmt``, built now if not cached."""
        if fmt not in FORMATS:
            raise AudioError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        try:
            key = self.key(parts, fmt)
        except OSError as exc:
            raise AudioError(f"a recording part cannot be read: {exc}") from exc
        target = self.directory / f"{key}{FORMATS[fmt][0]}"
        with self._exclusive(key):
            if target.exists():
                os.utime(target)  # LRU: a hit is a use
                return target
            # Removed since (a cache cleaner): made again, private.
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            merged = merge_parts(parts)
            handle, temporary = tempfile.mkstemp(
                dir=self.directory, prefix=".merge-", suffix=FORMATS[fmt][0]
            )
            os.close(handle)
            try:
                _export(merged, Path(temporary), fmt)
                os.replace(temporary, target)
            except Exception as exc:
                Path(temporary).unlink(missing_ok=True)
                if isinstance(exc, AudioError):
                    raise
                raise AudioError(f"cannot encode the merged recording as {fmt}: {exc}") from exc
        self._evict(keep=target)
        return target

    def pending(self) -> int:
        """Keys being merged or looked up in the cache right now, or waited for."""
        with self._guard:
            return len(self._locks)

    @contextmanager
    def _exclusive(self, key: str) -> Iterator[None]:
        """One merge per key at a time; the lock is dropped when nobody needs it."""
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                _, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def _evict(self, keep: Path) -> None:
        files = [p for p in self.directory.iterdir() if p.is_file() and not p.name.startswith(".")]
        total = sum(p.stat().st_size for p in files)
        for path in sorted(files, key=lambda p: p.stat().st_atime):
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            total -= size
