"""Offline Speech Commands-style corpus spoken by libespeak-ng voices, byte-identical on every run.

Voice space (VoiceConfig): 8 English accents (en [GB], en-029, en-gb-scotland, en-gb-x-gbclan, en-gb-x-gbcwmd,
en-gb-x-rp, en-us, en-us-nyc) x 87 variants (espeak-ng 1.52's 104 less EXCLUDED) x pitch 15..85 x rate 90..180
wpm x pitch range 20..90 x tract/tempo stretch 0.920..1.080 (resampling) x mic tilt -3..+3 dB/octave x room
(60 % dry, else RT60 150..600 ms at 10..40 % wet): about 4e16 configs. Config i takes accent i mod 8 and variant
i mod 87 (coprime: the first 696 are distinct pairs) and sha256(i) for the numbers.

A clip: speak at volume 40 (22050 Hz), trim silence, resample to `sample_rate` with the stretch, apply tilt
and room, trim, place at a seeded offset, peak-normalise to a seeded 0.3..0.9, pad to `clip_samples`.
Repetitions jitter rate +-7 %, pitch +-4, range +-6, stretch +-1 %, offset and peak. A word over 90 % of the
clip is re-spoken at the rate that fits (<= 450 wpm); anything still too long is cut with a 10 ms fade.

Determinism: libespeak-ng keeps state between utterances in C statics no API resets (pitch-flutter phase,
AGC gain, breath-filter memory, roughness cycle count, Klatt state) and draws `breath` noise (f2, f3, f5,
Alicia, victor, whisper) from libc rand() and espeak_rand(). In one process the same word said twice in a
row differed for every variant tried (m3's length too) and reversing a batch changed every clip, so output
followed worker scheduling; reseeding rand alone fixed nothing. Fix: each process runs a minimal speech
server (python -I -S, ctypes only) that initialises the engine and never speaks; each request (all
repetitions of one word by one speaker) is spoken by a fork() of that pristine server, with srand() and
espeak_ng_SetRandSeed() reseeded per utterance. A clip is a pure function of (seed, word, voice, repetition,
sample rate, clip length) whatever the workers, order or word list. soxr runs in float32 (SSE on any x86-64).
The same holds in a Ray worker (pipeline/data/generate.py): each worker process starts its own server on its
first speaker task and keeps it for the next; a task is one speaker, so a retried task says the same bytes.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import struct
import subprocess
import sys
from dataclasses import dataclass

import espeakng_loader
import numpy as np

from pipeline.data.render import REFERENCE_RATE, Take, fit_limit, render, stable_rng, trim, wav_bytes
from pipeline.errors import DataError

ACCENTS = ("en", "en-029", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-us", "en-us-nyc")
# Left out: robot voices and echo amplitude >= 100 % (robosoft*, RicishayMax*, UniRobot, anikaRobot, Demonic),
# doubled F3 (Tweaky), an unstable speed test (fast) and a name with a space (Mr serious).
EXCLUDED = ("Demonic", "UniRobot", "anikaRobot", "RicishayMax", "RicishayMax2", "RicishayMax3", "robosoft",
            "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6", "robosoft7", "robosoft8", "Tweaky",
            "fast", "Mr serious")  # fmt: skip
_VARIANTS = """Alex Alicia Andrea Andy Annie AnxiousAndy Denis Diogo Gene Gene2 Henrique Hugo Jacky Lee Marco Mario
Michael Mike Nguyen Reed Storm adam anika announcer antonio aunty belinda benjamin boris caleb croak david ed edward
edward2 f1 f2 f3 f4 f5 grandma grandpa gustave ian iven iven2 iven3 iven4 john kaukovalta klatt klatt2 klatt3 klatt4
klatt5 klatt6 linda m1 m2 m3 m4 m5 m6 m7 m8 marcelo max michel miguel mike2 norbert pablo paul pedro quincy rob
robert sandro shelby steph steph2 steph3 travis victor whisper whisperf zac""".split()
VARIANTS = tuple(sorted(_VARIANTS, key=lambda v: hashlib.sha1(v.encode()).hexdigest()))  # interleave the kinds
ESPEAK_RATE = REFERENCE_RATE  # libespeak-ng speaks at 22050 Hz
MAX_RATE = 450

# The speech server: stdlib + ctypes only, so each fork is cheap. Request: u32 length + lines of
# "voice\ttext\trate\tpitch\trange\tseed"; reply (written by the fork): u32 status, u32 count, then u32 bytes + PCM.
_SERVER = r"""
import ctypes, os, signal, struct, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the client's to handle; the server ends at end of input
lib, libc, chunks = ctypes.CDLL(sys.argv[1]), ctypes.CDLL(None), []
lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                             ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
@ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
def collect(wav, n, events):
    if n > 0 and wav:
        chunks.append(ctypes.string_at(wav, 2 * n))
    return 0
def say(voice, text, rate, pitch, prange, seed):
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise ValueError("espeak-ng has no voice " + voice)
    for param, value in ((1, rate), (2, 40), (3, pitch), (4, prange)):
        lib.espeak_SetParameter(param, int(value), 0)
    libc.srand(ctypes.c_uint(int(seed)))
    lib.espeak_ng_SetRandSeed(int(seed))
    chunks.clear()
    data = text.encode() + b"\0"
    lib.espeak_Synth(data, len(data), 0, 1, 0, 0, None, None)
    lib.espeak_Synchronize()
    return b"".join(chunks)
def send(blob):
    view = memoryview(blob)
    while view:
        view = view[os.write(1, view):]
def failure(message):
    return struct.pack("<III", 1, 1, len(message.encode())) + message.encode()
if lib.espeak_Initialize(2, 0, sys.argv[2].encode(), 0x8000) != 22050:
    sys.exit("libespeak-ng failed to initialise")
lib.espeak_SetSynthCallback(collect)
say("en", "The quick brown fox jumps over the lazy dog.", 175, 50, 50, 1)  # load data, touch buffers
while True:
    head = sys.stdin.buffer.read(4)
    if len(head) < 4:
        break
    lines = sys.stdin.buffer.read(struct.unpack("<I", head)[0]).decode().splitlines()
    pid = os.fork()
    if pid == 0:
        try:
            pcm = [say(*line.split("\t")) for line in lines]
            reply = struct.pack("<II", 0, len(pcm)) + b"".join(struct.pack("<I", len(p)) + p for p in pcm)
        except BaseException as error:
            reply = failure(repr(error))
        try:
            send(reply)
        finally:
            os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:  # the fork crashed before replying
        send(failure("speech process crashed"))
"""


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


def _between(digest: bytes, k: int, lo: int, hi: int) -> int:
    """The k-th uniform integer in [lo, hi] drawn from a sha256 digest (stable across numpy versions)."""
    return lo + int.from_bytes(digest[2 * k : 2 * k + 2], "little") * (hi - lo + 1) // 65536


def voice_configs(count: int) -> list[VoiceConfig]:
    """`count` distinct speaker configurations; config i depends on i only, so each list prefixes the next."""
    configs: list[VoiceConfig] = []
    seen: set[str] = set()
    for i in range(count):
        for attempt in range(100):
            d = hashlib.sha256(f"voice\x1f{i}\x1f{attempt}".encode()).digest()
            dry = _between(d, 5, 0, 99) < 60
            cfg = VoiceConfig(
                ACCENTS[i % len(ACCENTS)], VARIANTS[i % len(VARIANTS)], pitch=_between(d, 0, 15, 85),
                rate=_between(d, 1, 90, 180), pitch_range=_between(d, 2, 20, 90), stretch=_between(d, 3, 920, 1080),
                tilt=_between(d, 4, -30, 30), room_ms=0 if dry else _between(d, 6, 150, 600),
                room_wet=0 if dry else _between(d, 7, 10, 40),
            )  # fmt: skip
            if cfg.speaker_id not in seen:
                break
        seen.add(cfg.speaker_id)
        configs.append(cfg)
    return configs


class _SpeechServer:
    """Client of one speech-server process owned by the current process."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        args = [sys.executable, "-I", "-S", "-c", _SERVER, espeakng_loader.get_library_path(),
                espeakng_loader.get_data_path()]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _read(self, n: int) -> bytes:
        data = self.proc.stdout.read(n)
        if len(data) != n:
            raise DataError(f"espeak-ng speech server stopped (exit code {self.proc.poll()})")
        return data

    def speak(self, utterances: list[tuple]) -> list[np.ndarray]:
        """Speak (voice, text, rate, pitch, range, seed) in order, from the pristine state; int16 at 22050 Hz."""
        body = "\n".join("\t".join(map(str, u)) for u in utterances).encode()
        self.proc.stdin.write(struct.pack("<I", len(body)) + body)
        self.proc.stdin.flush()
        status, count = struct.unpack("<II", self._read(8))
        blobs = [self._read(struct.unpack("<I", self._read(4))[0]) for _ in range(count)]
        if status:
            raise DataError(f"espeak-ng synthesis failed: {blobs[0].decode()}")
        return [np.frombuffer(blob, dtype="<i2") for blob in blobs]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


_CLIENT: _SpeechServer | None = None


def speak(utterances: list[tuple]) -> list[np.ndarray]:
    """Speak utterances via this process's speech server (started on first use, never shared with forks)."""
    global _CLIENT
    if _CLIENT is None or _CLIENT.owner != os.getpid():
        _CLIENT = _SpeechServer()
    return _CLIENT.speak(utterances)


def stop_speech_server() -> None:
    """Stop this process's speech server, if any (a new one starts on the next `speak`)."""
    global _CLIENT
    if _CLIENT is not None and _CLIENT.owner == os.getpid():
        _CLIENT.close()
    _CLIENT = None


def _forget_server() -> None:
    """In a forked child: drop the parent's pipes so the parent's server still sees EOF when it stops."""
    global _CLIENT
    if _CLIENT is not None:
        _CLIENT.proc.stdin.close()
        _CLIENT.proc.stdout.close()
    _CLIENT = None


os.register_at_fork(after_in_child=_forget_server)
atexit.register(stop_speech_server)  # a Ray worker's clean exit; a killed one closes the pipe (EOF)


def _take(seed: int, word: str, cfg: VoiceConfig, n: int) -> Take:
    """Rate/pitch/range/stretch jitter, espeak seed, offset and peak of repetition n."""
    rng = stable_rng(seed, word, cfg.speaker_id, n)
    return Take(
        rate=int(round(cfg.rate * rng.uniform(0.93, 1.07))),
        pitch=int(np.clip(cfg.pitch + rng.integers(-4, 5), 0, 100)),
        pitch_range=int(np.clip(cfg.pitch_range + rng.integers(-6, 7), 0, 100)),
        stretch=cfg.stretch / 1000 * rng.uniform(0.99, 1.01), seed=int(rng.integers(1, 2**31 - 1)),
        offset=float(rng.random()), peak=float(rng.uniform(0.3, 0.9)),
    )  # fmt: skip


def _speak_word(cfg: VoiceConfig, word: str, takes: list[Take], limits: list[int]) -> list[np.ndarray]:
    """Every repetition of one word, re-spoken faster (same sequence, new fork) where one would not fit."""
    rates = [t.rate for t in takes]
    while True:
        said = speak([(cfg.voice_name, word, r, t.pitch, t.pitch_range, t.seed) for r, t in zip(rates, takes)])
        trimmed = [trim(pcm, -40, 44) for pcm in said]
        long = [i for i, a in enumerate(trimmed) if len(a) > limits[i] and rates[i] < MAX_RATE]
        if not long:
            break
        for i in long:
            rates[i] = min(MAX_RATE, int(np.ceil(rates[i] * len(trimmed[i]) / limits[i] * 1.05)))
    if any(not a.size for a in trimmed):
        raise DataError(f"voice {cfg.voice_name} produced silence for {word!r}")
    return trimmed


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


def speaker_clips(cfg: VoiceConfig, words: list[str], reps: int, seed: int, sample_rate: int,
                  clip: int) -> list[tuple[str, bytes]]:  # fmt: skip
    """Every word and repetition of one speaker as (`<word>/<speaker>_nohash_<n>.wav`, WAV bytes)."""
    ir, out = _room(cfg, sample_rate), []
    for word in words:
        takes = [_take(seed, word, cfg, n) for n in range(reps)]
        limits = [fit_limit(t, sample_rate, clip) for t in takes]
        for n, (pcm, take) in enumerate(zip(_speak_word(cfg, word, takes, limits), takes, strict=True)):
            audio = render(pcm, take, cfg.tilt, ir, sample_rate, clip)
            out.append((f"{word}/{cfg.speaker_id}_nohash_{n}.wav", wav_bytes(audio, sample_rate)))
    return out
