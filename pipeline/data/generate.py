"""The generated corpus as one Ray Data pipeline: one task per speaker (espeak or neural) plus one for the noises.

Each task is a pure function of its item (the seed, the speaker, its words) and returns its files as
(relative path, WAV bytes); the driver writes them. So the corpus is the same bytes with 1 worker in this
process, 2 local workers or a cluster of machines (no shared filesystem needed), and a task rerun after a
killed worker rewrites nothing twice. Workers (see pipeline/compute.py) keep their espeak speech server and
neural ONNX sessions from task to task.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pipeline.compute import map_tasks
from pipeline.config import SyntheticSource
from pipeline.data.render import write_blob
from pipeline.errors import DataError
from pipeline.progress import progress_bar

log = logging.getLogger(__name__)

# One core's seconds a clip (measured on the 2-core machine: espeak ~3 ms, Piper ~0.1 s, Kokoro ~0.7 s). Without
# RAY_ADDRESS or KWS_WORKERS, a corpus estimated under LOCAL_RAY_MIN_S of one core runs in this process: starting
# a local Ray costs 30-50 s on the loaded 2-core machine (its raylet alone waits 15 s for a metrics agent).
SECONDS_PER_CLIP = {"espeak": 0.003, "piper": 0.1, "kokoro": 0.7}
LOCAL_RAY_MIN_S = 120.0


class CorpusWorker:
    """Renders one corpus task: ("espeak", VoiceConfig, words), ("neural", NeuralVoice, phonemes) or ("noise",)."""

    def __init__(self, seed: int, repetitions: int, neural_repetitions: int, noise_seconds: int, sample_rate: int,
                 clip_samples: int) -> None:  # fmt: skip
        self.seed, self.reps, self.neural_reps = seed, repetitions, neural_repetitions
        self.noise_seconds, self.rate, self.clip = noise_seconds, sample_rate, clip_samples

    def __call__(self, item: tuple) -> list[tuple[str, bytes]]:
        kind = item[0]
        if kind == "espeak":
            from pipeline.data.synthetic import speaker_clips

            return speaker_clips(item[1], item[2], self.reps, self.seed, self.rate, self.clip)
        if kind == "neural":
            from pipeline.data.neural import voice_clips

            return voice_clips(item[1], item[2], self.neural_reps, self.seed, self.rate, self.clip)
        if kind == "noise":
            from pipeline.data.noise import noise_files

            return noise_files(self.noise_seconds, self.rate, self.seed)
        raise ValueError(f"unknown corpus task {kind!r}")


def corpus_tasks(source: SyntheticSource, words: list[str], voices: list | None = None,
                 plan: dict[str, list[str]] | None = None) -> list[tuple]:  # fmt: skip
    """Tasks of one corpus: neural voices first (Kokoro is ~100x slower a clip), then espeak, then the noises.
    `source.speakers` espeak configurations say every word of `words`; neural voices say `plan[speaker_id]`."""
    from pipeline.data.synthetic import voice_configs

    espeak = [("espeak", cfg, list(words)) for cfg in voice_configs(source.speakers)]
    return [*neural_tasks(voices or [], plan or {v.speaker_id: list(words) for v in voices or []}), *espeak, ("noise",)]


def neural_tasks(voices: list, plan: dict[str, list[str]]) -> list[tuple]:
    """One task per neural voice with the phoneme ids of its words (`plan[speaker_id]`), Kokoro first."""
    if not voices:
        return []
    from pipeline.data.neural import voice_phonemes

    phonemes = voice_phonemes(voices, plan)
    return [("neural", v, phonemes[v.speaker_id]) for v in sorted(voices, key=lambda v: v.engine != "kokoro")]


def estimate_seconds(tasks: list[tuple], source: SyntheticSource) -> float:
    """One core's estimated seconds for the tasks (SECONDS_PER_CLIP)."""
    engine = {"espeak": lambda t: "espeak", "neural": lambda t: t[1].engine, "noise": lambda t: "espeak"}
    return sum(_clips(t, source) * SECONDS_PER_CLIP[engine[t[0]](t)] for t in tasks)


def _clips(task: tuple, source: SyntheticSource) -> int:
    reps = {"espeak": source.repetitions, "neural": source.neural_repetitions, "noise": 0}[task[0]]
    return len(task[2]) * reps if task[0] != "noise" else 0


def run_corpus(tasks: list[tuple], source: SyntheticSource, seed: int, out_dir: Path, sample_rate: int = 16000,
               clip_samples: int = 16000, workers: int | None = None, progress: bool = True) -> dict:  # fmt: skip
    """Run corpus tasks (see `corpus_tasks`) and write their files under out_dir; returns files and bytes per kind
    (espeak, neural, noise). The time goes to the log only: source.json is a tracked output."""
    started, out_dir = time.perf_counter(), Path(out_dir)
    args = (seed, source.repetitions, source.neural_repetitions, source.noise_seconds, sample_rate, clip_samples)
    counts = {kind: {"files": 0, "bytes": 0} for kind in ("espeak", "neural", "noise")}
    work = estimate_seconds(tasks, source)
    local_default = None if work > LOCAL_RAY_MIN_S else 1
    try:
        with progress_bar(sum(_clips(t, source) for t in tasks), "generated corpus", "clip", progress,
                          total_work=work) as bar:  # fmt: skip
            for index, files in map_tasks(CorpusWorker, args, tasks, workers, local_default=local_default):
                kind = counts[tasks[index][0]]
                for rel, blob in files:
                    kind["bytes"] += write_blob(out_dir / rel, blob)
                kind["files"] += len(files)
                bar.update(len(files) if tasks[index][0] != "noise" else 0, work=estimate_seconds([tasks[index]], source))
    finally:
        from pipeline.data.synthetic import stop_speech_server

        stop_speech_server()  # this process's, when the tasks ran here; Ray workers stop theirs on exit
    clips = counts["espeak"]["files"] + counts["neural"]["files"]
    log.info("generated corpus: %d clips in %.1f s", clips, time.perf_counter() - started)
    return counts


def _neural_summary(tasks: list[tuple], counts: dict) -> dict:
    neural = [t for t in tasks if t[0] == "neural"]
    return {"clips": counts["neural"]["files"], "speakers": len(neural),
            "words": len({w for t in neural for w in t[2]}), "bytes": counts["neural"]["bytes"]}  # fmt: skip


def generate_corpus(source: SyntheticSource, words: list[str], seed: int, out_dir: Path, sample_rate: int = 16000,
                    clip_samples: int = 16000, workers: int | None = None, progress: bool = True,
                    voices: list | None = None, plan: dict[str, list[str]] | None = None) -> dict:  # fmt: skip
    """Write `out_dir/<word>/<speaker>_nohash_<n>.wav` for every espeak speaker (and neural voice) and the noises.
    Returns the espeak counts (clips, speakers, words, noise files, bytes with the noises) and `neural`'s own."""
    tasks = corpus_tasks(source, words, voices, plan)
    counts = run_corpus(tasks, source, seed, out_dir, sample_rate, clip_samples, workers, progress)
    summary = {
        "clips": counts["espeak"]["files"], "speakers": source.speakers, "words": len(words),
        "noise_files": counts["noise"]["files"], "bytes": counts["espeak"]["bytes"] + counts["noise"]["bytes"],
    }  # fmt: skip
    if voices:
        summary["neural"] = _neural_summary(tasks, counts)
    return summary


def generate_neural(words: list[str] | dict[str, list[str]], voices: list, seed: int, out_dir: Path,
                    repetitions: int = 1, sample_rate: int = 16000, clip_samples: int = 16000,
                    workers: int | None = None, progress: bool = True) -> dict:  # fmt: skip
    """Only the neural voices (no espeak speakers, no noises): `words` for all, or a speaker_id -> words plan."""
    plan = words if isinstance(words, dict) else {v.speaker_id: list(words) for v in voices}
    source = SyntheticSource(kind="synthetic", neural_repetitions=repetitions)
    tasks = neural_tasks(voices, plan)
    return _neural_summary(tasks, run_corpus(tasks, source, seed, out_dir, sample_rate, clip_samples, workers, progress))


def sized_source(source: SyntheticSource, speakers: int | None = None, piper: bool | None = None,
                 kokoro_blends: int | None = None) -> SyntheticSource:  # fmt: skip
    """`source` resized to `speakers` voices in all (espeak + neural). Neural voices named by `piper` /
    `kokoro_blends` are kept as given; otherwise they keep their share of `source` (rounded down, Piper first),
    and espeak fills the rest. Raises DataError when the neural voices leave no espeak speaker."""
    piper = source.piper if piper is None else piper
    named = kokoro_blends is not None
    blends = source.kokoro_blends if kokoro_blends is None else kokoro_blends
    if speakers is None:
        return source.model_copy(update={"piper": piper, "kokoro_blends": blends})
    if not named:
        neural = int(piper) + blends
        share = speakers * neural // (source.speakers + neural) if neural else 0
        piper, blends = piper and share > 0, max(0, share - int(piper))
    espeak = speakers - int(piper) - blends
    if espeak < 1:
        raise DataError(f"--speakers {speakers}: the {int(piper) + blends} neural voices leave no espeak speaker")
    return source.model_copy(update={"speakers": espeak, "piper": piper, "kokoro_blends": blends})
