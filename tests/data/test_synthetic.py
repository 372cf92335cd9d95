"""The offline espeak-ng corpus: layout, format, levels, voices, noises and byte-identical determinism."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import espeakng_loader
import numpy as np
import pytest
import soundfile as sf

from pipeline.config import BACKGROUND_NOISE_DIR, SyntheticSource
from pipeline.data.noise import NOISE_NAMES, synthesize_noises
from pipeline.data.generate import corpus_tasks, generate_corpus, run_corpus
from pipeline.data.synthetic import ACCENTS, EXCLUDED, VARIANTS, speak, stop_speech_server, voice_configs

WORDS = ["yes", "marvin", "off"]
SOURCE = SyntheticSource(kind="synthetic", speakers=4, repetitions=2, noise_seconds=2)
NAME = re.compile(r"^[0-9a-f]{8}_nohash_[0-9]+\.wav$")


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.wav"))}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same small corpus generated twice in this process: its tasks in order, then in reverse order (one
    worker's speech server carries over from task to task; Ray worker counts: tests/data/test_distributed.py)."""
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    reverse = corpus_tasks(SOURCE, WORDS)[::-1]
    return {
        "root": one,
        "summary": generate_corpus(SOURCE, WORDS, 7, one, workers=1, progress=False),
        "other": two,
        "other_summary": run_corpus(reverse, SOURCE, 7, two, workers=1, progress=False),
    }


def _clips(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*/*.wav") if p.parent.name != BACKGROUND_NOISE_DIR)


def test_counts_and_names(corpora: dict) -> None:
    root, summary = corpora["root"], corpora["summary"]
    clips = _clips(root)
    assert len(clips) == len(WORDS) * 4 * 2
    assert sorted(p.name for p in root.iterdir()) == sorted([*WORDS, BACKGROUND_NOISE_DIR])
    assert all(NAME.match(p.name) for p in clips)
    for word in WORDS:
        names = {p.name for p in (root / word).glob("*.wav")}
        speakers = {n.split("_nohash_")[0] for n in names}
        assert speakers == {c.speaker_id for c in voice_configs(4)}
        assert names == {f"{s}_nohash_{n}.wav" for s in speakers for n in range(2)}
    total = sum(p.stat().st_size for p in root.rglob("*.wav"))
    assert summary == {**summary, "clips": 24, "speakers": 4, "words": 3, "noise_files": 6, "bytes": total}
    assert "seconds" not in summary, "wall-clock time would change source.json (a DVC output) on every regeneration"


def test_format_levels_and_content(corpora: dict) -> None:
    for path in _clips(corpora["root"]):
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", 16000)
        audio, _ = sf.read(str(path), dtype="int16")
        peak = int(np.abs(audio.astype(np.int32)).max())
        assert 0.29 * 32767 < peak < 32767, path  # seeded peak in 0.3..0.9, never clipped
        assert audio.min() > -32768
        voiced = np.flatnonzero(np.abs(audio.astype(np.int32)) > 0.05 * peak)
        assert 0.1 * 16000 < voiced[-1] - voiced[0] < 16000, path  # a word, not a click or silence
        assert np.sqrt(np.mean((audio / 32768.0) ** 2)) > 0.01


def test_repetitions_differ(corpora: dict) -> None:
    for word in WORDS:
        for cfg in voice_configs(4):
            a, b = (sf.read(str(corpora["root"] / word / f"{cfg.speaker_id}_nohash_{n}.wav"))[0] for n in (0, 1))
            assert not np.array_equal(a, b)


def test_byte_identical_whatever_the_task_order(corpora: dict) -> None:
    first, second = _hashes(corpora["root"]), _hashes(corpora["other"])
    assert len(first) == 24 + 6
    assert first == second
    assert corpora["summary"]["bytes"] == sum(kind["bytes"] for kind in corpora["other_summary"].values())


def test_clip_does_not_depend_on_word_list(corpora: dict, tmp_path: Path) -> None:
    source = SyntheticSource(kind="synthetic", speakers=2, repetitions=2, noise_seconds=2)
    generate_corpus(source, ["off"], 7, tmp_path, workers=1, progress=False)
    alone = {k: v for k, v in _hashes(tmp_path).items() if k.startswith("off/")}
    full = _hashes(corpora["root"])
    assert len(alone) == 4
    assert all(full[name] == digest for name, digest in alone.items())


def test_seed_changes_the_corpus(corpora: dict, tmp_path: Path) -> None:
    source = SyntheticSource(kind="synthetic", speakers=1, repetitions=1, noise_seconds=2)
    generate_corpus(source, ["yes"], 8, tmp_path, workers=1, progress=False)
    name = f"yes/{voice_configs(1)[0].speaker_id}_nohash_0.wav"
    assert _hashes(tmp_path)[name] != _hashes(corpora["root"])[name]


@pytest.mark.parametrize("variant", ["f2", "f3", "f5", "Alicia", "victor", "klatt", "whisper"])
def test_breathy_variants_are_deterministic(variant: str) -> None:
    line = (f"en-us+{variant}", "sheila", 150, 60, 50, 12345)
    first = speak([line])[0]
    speak([(f"en+{variant}", "backward", 120, 30, 70, 99), line])  # dirty nothing: every request is a fresh fork
    again = speak([line])[0]
    stop_speech_server()
    fresh = speak([line])[0]  # a new server process
    stop_speech_server()
    assert first.size > 1000
    assert np.array_equal(first, again) and np.array_equal(first, fresh)


def test_every_accent_speaks_differently() -> None:
    said = speak([(f"{accent}+m1", "tomato", 175, 50, 50, 1) for accent in ACCENTS])
    stop_speech_server()
    assert all(pcm.size > 1000 for pcm in said)
    assert len({pcm.tobytes() for pcm in said}) == len(ACCENTS)


def test_voice_configs_are_distinct_stable_and_spread() -> None:
    configs = voice_configs(320)
    ids = [c.speaker_id for c in configs]
    assert len(set(ids)) == 320 and all(re.fullmatch(r"[0-9a-f]{8}", i) for i in ids)
    assert configs == voice_configs(320) and configs[:10] == voice_configs(10)
    assert {c.accent for c in configs} == set(ACCENTS) and len(ACCENTS) >= 8
    assert {c.variant for c in configs} == set(VARIANTS) and len(VARIANTS) >= 80
    assert len({c.pitch for c in configs}) > 30 and len({c.rate for c in configs}) > 30
    assert 0 < sum(c.room_ms > 0 for c in configs) < 320
    assert voice_configs(1)[0].speaker_id == hashlib.sha1(voice_configs(1)[0].canonical.encode()).hexdigest()[:8]


def test_variant_list_matches_espeak_data() -> None:
    # espeak silently ignores an unknown variant, so a typo would quietly duplicate the base voice
    available = {p.name for p in (Path(espeakng_loader.get_data_path()) / "voices" / "!v").iterdir()}
    assert set(VARIANTS) <= available
    assert set(VARIANTS) | set(EXCLUDED) == available and not set(VARIANTS) & set(EXCLUDED)
    assert len(VARIANTS) % 2 == 1  # coprime with the 8 accents: accent/variant pairs cycle through all


def test_noises(corpora: dict, tmp_path: Path) -> None:
    noise_dir = corpora["root"] / BACKGROUND_NOISE_DIR
    assert sorted(p.stem for p in noise_dir.glob("*.wav")) == sorted(NOISE_NAMES) and len(NOISE_NAMES) >= 6
    for path in noise_dir.glob("*.wav"):
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", 2 * 16000)
        audio, _ = sf.read(str(path), dtype="int16")
        assert 1000 < np.abs(audio.astype(np.int32)).max() < 32767
    paths = synthesize_noises(tmp_path, 2, 16000, 7)  # standalone: babble spoken by its own server
    assert [p.name for p in paths] == [f"{n}.wav" for n in NOISE_NAMES]
    assert _hashes(tmp_path) == _hashes(noise_dir)
