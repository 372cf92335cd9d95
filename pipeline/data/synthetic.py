"""Offline Speech Commands-style corpus spoken by libespeak-ng voices, byte-identical on every run.

Voice configuration space (VoiceConfig): 8 English accents (espeak file ids: en [GB], en-029 [Caribbean],
en-gb-scotland, en-gb-x-gbclan [Lancaster], en-gb-x-gbcwmd [West Midlands], en-gb-x-rp, en-us, en-us-nyc)
x 87 voice variants (all 104 of espeak-ng 1.52 except the robot/echo novelties listed in EXCLUDED)
x pitch 15..85 (espeakPITCH) x rate 120..220 wpm x pitch range 20..90 (espeakRANGE)
x vocal-tract/tempo factor 0.92..1.10 (resampling: 1.05 = 5 % faster and higher)
x microphone tilt -3..+3 dB/octave x room (dry for 60 %, else RT60 150..600 ms at 10..40 % wet):
about 6e13 combinations. voice_configs(i) cycles accents (i mod 8) and variants (i mod 87, coprime with 8,
so the first 696 configs are all different accent/variant pairs); the numeric knobs come from sha256.

Each clip: synthesise at volume 40 (22050 Hz), trim silence, resample to `sample_rate` (applying the
stretch), apply tilt and room, trim again, place at a seeded random offset, peak-normalise to a seeded
peak in 0.3..0.9, pad to `clip_samples`. Repetitions jitter rate (+-7 %), pitch (+-4), range (+-6),
stretch (+-1 %), offset and peak. A word longer than 90 % of the clip is re-synthesised at the faster
rate that fits (capped at 450 wpm); anything still too long is cut with a 10 ms fade-out.

Determinism: libespeak-ng keeps synthesis state between utterances in C statics (pitch flutter phase,
AGC, breath-filter memory, roughness cycle counter, Klatt state) and draws breath/aspiration noise
from libc rand() and its own espeak_rand(). Output therefore depended on what the process had spoken
before (worker scheduling) and, for breathy/Klatt variants, on the random state. Fix: each worker
initialises the engine once and never speaks; every (speaker, word) is spoken in a fork() of that
pristine process, with srand() and espeak_ng_SetRandSeed() reseeded from the clip's seed before each
utterance. A clip is thus a pure function of (seed, word, voice config, repetition).
"""

from __future__ import annotations

import ctypes
import hashlib
import multiprocessing
import os
import pickle
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import espeakng_loader
import numpy as np
import soxr
from tqdm import tqdm

from pipeline.config import BACKGROUND_NOISE_DIR, SyntheticSource
from pipeline.data.noise import stable_rng, synthesize_noises
from pipeline.errors import DataError
from pipeline.fileio import to_int16, write_wav

ACCENTS = ("en", "en-029", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-us", "en-us-nyc")
EXCLUDED = ("Demonic", "UniRobot", "anikaRobot", "RicishayMax", "RicishayMax2", "RicishayMax3", "robosoft",
            "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6", "robosoft7", "robosoft8", "Tweaky",
            "fast", "Mr serious")  # fmt: skip
_VARIANTS = """Alex Alicia Andrea Andy Annie AnxiousAndy Denis Diogo Gene Gene2 Henrique Hugo Jacky Lee Marco Mario
Michael Mike Nguyen Reed Storm adam anika announcer antonio aunty belinda benjamin boris caleb croak david ed edward
edward2 f1 f2 f3 f4 f5 grandma grandpa gustave ian iven iven2 iven3 iven4 john kaukovalta klatt klatt2 klatt3 klatt4
klatt5 klatt6 linda m1 m2 m3 m4 m5 m6 m7 m8 marcelo max michel miguel mike2 norbert pablo paul pedro quincy rob
robert sandro shelby steph steph2 steph3 travis victor whisper whisperf zac""".split()
VARIANTS = tuple(sorted(_VARIANTS, key=lambda v: hashlib.sha1(v.encode()).hexdigest()))  # interleave kinds
ESPEAK_RATE = 22050
VOLUME = 40
MAX_RATE = 450
MAX_FILL = 0.9
BABBLE_WORDS = """about after again air also animal answer because before began between book both came change
children city could country different does each early earth enough every family father find first food found
great group hand head heard house idea important just kind land large later letter light line little long made
many mean might mother move much music name never number often open other paper people picture place plant point
question read really river same school second sentence small something sound spell still story study such take
than their thing think those thought through time together under until very want watch water where while white
without word work world would write year young""".split()


@dataclass(frozen=True)
class VoiceConfig:
    """One synthetic speaker: espeak accent + variant, prosody and cheap acoustic variation (all integers)."""

    accent: str
    variant: str
    pitch: int = 50  # espeakPITCH 0..100
    rate: int = 175  # words per minute
    pitch_range: int = 50  # espeakRANGE 0..100
    stretch: int = 1000  # resampling factor in 1/1000: >1000 is faster with higher pitch and formants
    tilt: int = 0  # microphone spectral tilt in 0.1 dB per octave around 1 kHz
    room_ms: int = 0  # RT60 of a synthetic room in ms; 0 = dry
    room_wet: int = 0  # reverberant level in percent of the direct sound

    @property
    def voice_name(self) -> str:
        return f"{self.accent}+{self.variant}"

    @property
    def canonical(self) -> str:
        return (f"{self.voice_name}|pitch={self.pitch}|rate={self.rate}|range={self.pitch_range}|stretch={self.stretch}"
                f"|tilt={self.tilt}|room={self.room_ms}/{self.room_wet}")  # fmt: skip

    @property
    def speaker_id(self) -> str:
        return hashlib.sha1(self.canonical.encode()).hexdigest()[:8]


def _uniforms(*parts: object) -> list[float]:
    """Sixteen uniforms in [0, 1) from sha256: stable across numpy and Python versions."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return [int.from_bytes(digest[k : k + 2], "little") / 65536 for k in range(0, 32, 2)]


def _between(u: float, lo: int, hi: int) -> int:
    return lo + int(u * (hi - lo + 1))


def voice_configs(count: int) -> list[VoiceConfig]:
    """`count` distinct speaker configurations; a pure function of the index, so each list prefixes the next."""
    configs: list[VoiceConfig] = []
    seen: set[str] = set()
    for i in range(count):
        for attempt in range(100):
            u = _uniforms("voice", i, attempt)
            dry = u[5] < 0.6
            cfg = VoiceConfig(
                ACCENTS[i % len(ACCENTS)], VARIANTS[i % len(VARIANTS)], pitch=_between(u[0], 15, 85),
                rate=_between(u[1], 120, 220), pitch_range=_between(u[2], 20, 90), stretch=_between(u[3], 920, 1100),
                tilt=_between(u[4], -30, 30), room_ms=0 if dry else _between(u[6], 150, 600),
                room_wet=0 if dry else _between(u[7], 10, 40),
            )  # fmt: skip
            if cfg.speaker_id not in seen:
                break
        seen.add(cfg.speaker_id)
        configs.append(cfg)
    return configs


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Espeak:
    """libespeak-ng loaded in this process; only forked children speak, so this copy stays pristine."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]  # fmt: skip
        rate = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0x8000)  # synchronous
        if rate != ESPEAK_RATE:
            raise DataError(f"libespeak-ng failed to initialise (returned {rate})")
        self.lib, self.libc, self.chunks = lib, ctypes.CDLL(None), []
        self._callback = _CALLBACK(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        self.set_voice("en")  # load the dictionary and touch every buffer once, so forks only copy pages
        self.say("The quick brown fox jumps over the lazy dog.", 175, 50, 50, 1)

    def _collect(self, wav, n: int, _events) -> int:
        if n > 0 and wav:
            self.chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        return 0

    def set_voice(self, name: str) -> None:
        if self.lib.espeak_SetVoiceByName(name.encode()) != 0:
            raise DataError(f"espeak-ng has no voice {name!r}")

    def say(self, text: str, rate: int, pitch: int, pitch_range: int, seed: int) -> np.ndarray:
        for param, value in ((1, rate), (2, VOLUME), (3, pitch), (4, pitch_range)):
            self.lib.espeak_SetParameter(param, int(value), 0)
        self.libc.srand(ctypes.c_uint(seed))
        self.lib.espeak_ng_SetRandSeed(seed)
        self.chunks.clear()
        data = text.encode() + b"\0"
        self.lib.espeak_Synth(data, len(data), 0, 1, 0, 0, None, None)
        self.lib.espeak_Synchronize()
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)


_ENGINE: _Espeak | None = None


def _engine() -> _Espeak:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Espeak()
    return _ENGINE


def _forked(fn, *args):
    """Run fn(*args) in a fork of this process (engine state untouched here) and return its result."""
    _engine()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child: runs, reports and exits without Python cleanup
        status = 0
        try:
            payload = pickle.dumps((True, fn(*args)), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:  # noqa: BLE001 - everything is reported to the parent
            payload, status = pickle.dumps((False, traceback.format_exc())), 1
        view = memoryview(payload)
        while view:
            view = view[os.write(write_fd, view) :]
        os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    ok, value = pickle.loads(data) if data else (False, "synthesis process died")
    if not ok:
        raise DataError(f"espeak-ng synthesis failed: {value}")
    return value


def _trim(audio: np.ndarray, rel_db: float, pad: int) -> np.ndarray:
    """Drop leading/trailing samples quieter than rel_db below the peak, keeping `pad` samples."""
    loud = np.flatnonzero(np.abs(audio) > np.abs(audio).max(initial=0) * 10 ** (rel_db / 20))
    return audio[max(loud[0] - pad, 0) : loud[-1] + pad + 1] if loud.size else audio[:0]


@dataclass(frozen=True)
class _Take:
    """Seeded variation of one repetition."""

    rate: int
    pitch: int
    pitch_range: int
    stretch: float
    seed: int
    offset: float
    peak: float


def _take(seed: int, word: str, cfg: VoiceConfig, n: int) -> _Take:
    rng = stable_rng(seed, word, cfg.speaker_id, n)
    return _Take(
        rate=int(round(cfg.rate * rng.uniform(0.93, 1.07))), pitch=int(np.clip(cfg.pitch + rng.integers(-4, 5), 0, 100)),
        pitch_range=int(np.clip(cfg.pitch_range + rng.integers(-6, 7), 0, 100)),
        stretch=cfg.stretch / 1000 * rng.uniform(0.99, 1.01), seed=int(rng.integers(1, 2**31 - 1)),
        offset=float(rng.random()), peak=float(rng.uniform(0.3, 0.9)),
    )  # fmt: skip


def _speak_word(voice: str, word: str, takes: list[_Take], limits: list[int]) -> list[np.ndarray]:
    """In a pristine fork: every repetition of one word, re-spoken faster where it would not fit."""
    engine = _engine()
    engine.set_voice(voice)
    out = []
    for take, limit in zip(takes, limits, strict=True):
        audio = _trim(engine.say(word, take.rate, take.pitch, take.pitch_range, take.seed), -40, 44)
        if len(audio) > limit:
            rate = min(MAX_RATE, int(np.ceil(take.rate * len(audio) / limit * 1.05)))
            audio = _trim(engine.say(word, rate, take.pitch, take.pitch_range, take.seed), -40, 44)
        if not audio.size:
            raise DataError(f"voice {voice} produced silence for {word!r}")
        out.append(audio)
    return out


def _room(cfg: VoiceConfig, sample_rate: int) -> np.ndarray:
    """Impulse response: the direct sound plus an exponentially decaying noise tail (the speaker's room)."""
    if not cfg.room_ms:
        return np.ones(1)
    rt60 = cfg.room_ms / 1000
    t = np.arange(int(rt60 * sample_rate)) / sample_rate
    tail = stable_rng("room", cfg.speaker_id).standard_normal(len(t)) * np.exp(-6.908 * t / rt60)
    tail[: int(0.003 * sample_rate)] = 0.0
    ir = tail * (cfg.room_wet / 100) / np.linalg.norm(tail)
    ir[0] = 1.0
    return ir


def _render(raw: np.ndarray, cfg: VoiceConfig, take: _Take, ir: np.ndarray, sample_rate: int, clip: int) -> np.ndarray:
    """Resample, colour, fit and place one word; int16 of exactly `clip` samples."""
    audio = soxr.resample(raw.astype(np.float32) / 32768, ESPEAK_RATE * take.stretch, sample_rate)  # float32: SSE path
    if cfg.tilt or len(ir) > 1:
        n = len(audio) + len(ir) - 1
        nfft = 1 << (n - 1).bit_length()
        freqs = np.fft.rfftfreq(nfft, 1 / sample_rate)
        gain = 10 ** (cfg.tilt / 10 * np.log2(np.maximum(freqs, 100.0) / 1000) / 20) * np.fft.rfft(ir, nfft)
        audio = np.fft.irfft(np.fft.rfft(audio, nfft) * gain, nfft)[:n]
    audio = _trim(np.asarray(audio, dtype=np.float64), -50, 0)
    if len(audio) > clip:
        audio = audio[:clip].copy()
        fade = int(0.01 * sample_rate)
        audio[-fade:] *= np.linspace(1.0, 0.0, fade)
    out = np.zeros(clip)
    start = int(take.offset * (clip - len(audio) + 1))
    out[start : start + len(audio)] = audio
    return to_int16(out * (take.peak / np.abs(out).max()))


def _speaker_task(task: tuple) -> tuple[int, int]:
    """Every word and repetition of one speaker; returns (clips, bytes written)."""
    cfg, words, reps, seed, out_dir, sample_rate, clip = task
    ir, clips, size = _room(cfg, sample_rate), 0, 0
    for word in words:
        takes = [_take(seed, word, cfg, n) for n in range(reps)]
        limits = [int(MAX_FILL * clip * ESPEAK_RATE * t.stretch / sample_rate) for t in takes]
        for n, (raw, take) in enumerate(zip(_forked(_speak_word, cfg.voice_name, word, takes, limits), takes, strict=True)):
            path = Path(out_dir) / word / f"{cfg.speaker_id}_nohash_{n}.wav"
            write_wav(path, _render(raw, cfg, take, ir, sample_rate, clip), sample_rate)
            clips, size = clips + 1, size + path.stat().st_size
    return clips, size


def _babble_tracks(seconds: int, seed: int, talkers: int) -> list[np.ndarray]:
    """In a pristine fork: each talker reads random sentences, with pauses, for `seconds` (22050 Hz int16)."""
    engine, voices, tracks = _engine(), voice_configs(64), []
    for k in range(talkers):
        rng = stable_rng(seed, "babble", k)
        cfg = voices[int(rng.integers(len(voices)))]
        engine.set_voice(cfg.voice_name)
        parts, total = [np.zeros(int(rng.integers(0, ESPEAK_RATE)), np.int16)], 0
        while total < seconds * ESPEAK_RATE:
            text = " ".join(rng.choice(BABBLE_WORDS, int(rng.integers(4, 10))))
            speech = engine.say(text, cfg.rate, cfg.pitch, cfg.pitch_range, int(rng.integers(1, 2**31 - 1)))
            parts += [speech, np.zeros(int(rng.uniform(0.1, 0.6) * ESPEAK_RATE), np.int16)]
            total += len(speech) + len(parts[-1])
        tracks.append(np.concatenate(parts)[: seconds * ESPEAK_RATE])
    return tracks


def babble_audio(seconds: int, sample_rate: int, seed: int, talkers: int = 8) -> np.ndarray:
    """Many overlapping espeak talkers mixed into `seconds` of float audio at `sample_rate`."""
    mix = np.zeros(seconds * sample_rate)
    for k, track in enumerate(_forked(_babble_tracks, seconds, seed, talkers)):
        audio = soxr.resample(track.astype(np.float32) / 32768, ESPEAK_RATE, sample_rate)[: len(mix)]
        mix[: len(audio)] += audio * stable_rng(seed, "babble-gain", k).uniform(0.5, 1.0)
    return mix


def generate_corpus(
    source: SyntheticSource, words: list[str], seed: int, out_dir: Path, sample_rate: int = 16000,
    clip_samples: int = 16000, workers: int | None = None, progress: bool = True,
) -> dict:  # fmt: skip
    """Write `out_dir/<word>/<speaker>_nohash_<n>.wav` for every word, speaker and repetition, plus noises."""
    started, out_dir = time.perf_counter(), Path(out_dir)
    configs = voice_configs(source.speakers)
    workers = max(1, min(workers or os.cpu_count() or 1, len(configs)))
    tasks = [(cfg, list(words), source.repetitions, seed, out_dir, sample_rate, clip_samples) for cfg in configs]
    clips = size = 0
    with tqdm(total=len(tasks) * len(words) * source.repetitions, desc="synthetic corpus", unit="clip",
              disable=not progress) as bar:  # fmt: skip
        if workers == 1:
            babble = babble_audio(source.noise_seconds, sample_rate, seed)
            results = map(_speaker_task, tasks)
            for done, written in results:
                clips, size = clips + done, size + written
                bar.update(done)
        else:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                pending = pool.apply_async(babble_audio, (source.noise_seconds, sample_rate, seed))
                for done, written in pool.imap_unordered(_speaker_task, tasks):
                    clips, size = clips + done, size + written
                    bar.update(done)
                babble = pending.get()
    noises = synthesize_noises(out_dir / BACKGROUND_NOISE_DIR, source.noise_seconds, sample_rate, seed, babble=babble)
    return {
        "clips": clips, "speakers": len(configs), "words": len(words), "noise_files": len(noises),
        "bytes": size + sum(p.stat().st_size for p in noises), "seconds": round(time.perf_counter() - started, 3),
    }  # fmt: skip
