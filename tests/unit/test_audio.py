"""The one audio reader (pipeline.audio): same conversions and notes for paths and bytes, refusals in our words."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import as_float, check_audio_path, read_audio
from pipeline.errors import DataError


def _wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_path_and_bytes_give_the_same_clip_and_notes(tmp_path):
    t = np.arange(4000) / 8000
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 300 * t), 0.25 * np.sin(2 * np.pi * 300 * t)], axis=1).astype(np.float32)
    sf.write(tmp_path / "a.wav", stereo, 8000, subtype="PCM_16")
    from_path = read_audio(tmp_path / "a.wav", 16000, 16000)
    from_bytes = read_audio((tmp_path / "a.wav").read_bytes(), 16000, 16000)
    assert from_path.notes == from_bytes.notes == ["mixed 2 channels to mono", "resampled 8000 Hz to 16000 Hz",
                                                   "padded 8000 samples to 16000"]  # fmt: skip
    np.testing.assert_array_equal(from_path.audio, from_bytes.audio)
    assert from_path.audio.shape == (16000,) and from_path.seconds == 0.5 and not from_path.audio[8100:].any()
    whole = read_audio(tmp_path / "a.wav", 16000)
    assert whole.audio.shape == (8000,) and "padded" not in " ".join(whole.notes)


def test_empty_audio_is_refused_never_padded(tmp_path):
    """Fault: a 0-frame wav was padded to a clip of zeros first and labelled `_silence_ 0.934`."""
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")
    with pytest.raises(DataError, match=r"empty.wav: the audio holds no samples \(0 frames\)"):
        read_audio(tmp_path / "empty.wav", 16000, 16000)
    with pytest.raises(DataError, match=r"^audio: the audio holds no samples \(0 frames\)$"):
        read_audio((tmp_path / "empty.wav").read_bytes(), 16000, 16000)
    with pytest.raises(DataError, match=r"^audio: no audio \(0 bytes\)$"):
        read_audio(b"", 16000, 16000)


def test_missing_folder_and_garbage_are_named_in_our_words(tmp_path):
    """Fault: libsndfile said 'System error' for a missing path and 'Format not recognised' for a folder."""
    with pytest.raises(DataError, match=r"nope.wav: no such file$"):
        read_audio(tmp_path / "nope.wav", 16000, 16000)
    with pytest.raises(DataError, match=r": is a folder; expected an audio file \(wav/flac\)$"):
        check_audio_path(tmp_path)
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00not a wav at all")
    with pytest.raises(DataError, match=r"junk.wav: cannot read audio; the file is not wav/flac \("):
        read_audio(tmp_path / "junk.wav", 16000, 16000)
    with pytest.raises(DataError, match=r"^audio: cannot read audio; the 9 bytes is not wav/flac"):
        read_audio(b"not a wav", 16000, 16000)


def test_a_clip_reads_only_the_frames_it_needs(tmp_path, monkeypatch):
    """Fault: label-wav decoded and resampled a whole 30-minute file to use its first second. A 60 s 44.1 kHz file
    read as one 1 s clip decodes ceil((16000 + 64) * 44100 / 16000) = 44,277 frames, not 2,646,000."""
    sf.write(tmp_path / "long.wav", np.full(60 * 44100, 0.1, np.float32), 44100, subtype="PCM_16")
    asked = []
    real_read = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        asked.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    clip = read_audio(tmp_path / "long.wav", 16000, 16000)
    assert asked == [44277]
    assert clip.seconds == 60.0 and clip.audio.shape == (16000,)
    assert clip.notes == ["resampled 44100 Hz to 16000 Hz", "trimmed 960000 samples (60.00 s) to 16000"]
    assert abs(float(clip.audio[1000:15000].mean()) - 0.1) < 1e-3


def test_as_float_scales_int16():
    np.testing.assert_array_equal(as_float(np.array([-32768, 0, 16384], np.int16)), [-1.0, 0.0, 0.5])
    assert as_float(np.ones(3, np.float64)).dtype == np.float32
