"""The one audio reader for scoring: a file path or encoded bytes -> mono float32 at the model's rate, with notes.

Every caller that scores audio (`kws label-wav|stream|spectrogram|listen`, the evaluate stage's folder sets, the
MLflow pyfunc model) reads through `read_audio`, so every one of them converts the same way and says the same:
"mixed 2 channels to mono", "resampled 44100 Hz to 16000 Hz", "padded 8000 samples to 16000", "trimmed ...".
TensorFlow-free (soundfile, soxr, numpy).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import DataError

PCM16_SCALE = 32768.0


@dataclass
class Clip:
    """Audio brought to the model's format: `audio` float32 [S] in [-1, 1] at `sample_rate` Hz.

    `seconds` is the true length of the source (before any trimming or padding), `notes` what was changed."""

    audio: np.ndarray
    sample_rate: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def check_audio_path(path: Path) -> None:
    """Raise DataError (in our words, not libsndfile's) unless `path` is an existing regular file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected an audio file (wav/flac)")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file; expected an audio file (wav/flac)")


def _first_line(error: Exception) -> str:
    text = (str(error).strip().splitlines() or [type(error).__name__])[-1]
    return (text.split(": ", 1)[-1] if "Error opening" in text else text)[:160].rstrip(".")


def read_audio(
    source: str | Path | bytes | bytearray | memoryview,
    sample_rate: int,
    clip_samples: int | None = None,
    *,
    name: str | None = None,
) -> Clip:
    """Read a file path or wav/flac bytes as mono float32 at `sample_rate`.

    clip_samples: pad (zeros at the end) or trim to exactly this many samples; None keeps the whole recording.
    When trimming, only the frames needed are decoded (a 30-minute file costs its first second, not 1.9 GB).
    Raises DataError: missing path, folder, undecodable content, or no audio at all (0 frames) — an empty file
    is refused before any padding, never scored as silence.
    """
    import soundfile as sf

    is_path = isinstance(source, str | Path)
    label = name or (str(source) if is_path else "audio")
    if is_path:
        check_audio_path(Path(source))
        handle = str(source)
    else:
        data = bytes(source)
        if not data:
            raise DataError(f"{label}: no audio (0 bytes)")
        handle = io.BytesIO(data)
    try:
        with sf.SoundFile(handle) as f:
            rate, channels, total = int(f.samplerate), int(f.channels), int(f.frames)
            wanted = total
            if clip_samples is not None:  # a little more than needed: the resampler's filter sees past the cut
                wanted = min(total, math.ceil((clip_samples + 64) * rate / sample_rate))
            audio = f.read(wanted, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as error:
        what = f"{len(bytes(source))} bytes" if not is_path else "file"
        raise DataError(f"{label}: cannot read audio; the {what} is not wav/flac ({_first_line(error)})") from None
    if total == 0 or audio.shape[0] == 0:
        raise DataError(f"{label}: the audio holds no samples (0 frames)")
    notes: list[str] = []
    if channels > 1:
        notes.append(f"mixed {channels} channels to mono")
    mono = audio.mean(axis=1, dtype=np.float32)
    if rate != sample_rate:
        import soxr

        mono = soxr.resample(mono, rate, sample_rate).astype(np.float32)
        notes.append(f"resampled {rate} Hz to {sample_rate} Hz")
    seconds = total / rate
    if clip_samples is not None:
        length = round(total * sample_rate / rate)  # the source's length at the model's rate
        if length < clip_samples:
            notes.append(f"padded {length} samples to {clip_samples}")
        elif length > clip_samples:
            notes.append(f"trimmed {length} samples ({seconds:.2f} s) to {clip_samples}")
        mono = np.pad(mono, (0, max(clip_samples - len(mono), 0)))[:clip_samples]
    return Clip(np.ascontiguousarray(mono, dtype=np.float32), int(sample_rate), float(seconds), notes)


def as_float(audio: np.ndarray) -> np.ndarray:
    """Float32 audio in [-1, 1]: int16 scaled by 1/32768, anything else cast."""
    audio = np.asarray(audio)
    if audio.dtype == np.int16:
        return audio.astype(np.float32) / PCM16_SCALE
    return audio.astype(np.float32, copy=False)
