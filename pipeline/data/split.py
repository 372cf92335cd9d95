"""The split stage: TensorFlow's hash partition, class balance, quarantine, validation and packing."""

from __future__ import annotations

import hashlib
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from pipeline import artifacts
from pipeline.config import SILENCE_LABEL, UNKNOWN_LABEL, Params, SourceSplit
from pipeline.data.background import SETS, load_noises, pack_portions, silence_rows, split_noises
from pipeline.data.layout import iter_wavs, parse_clip
from pipeline.errors import DataError
from pipeline.fileio import atomic_path, write_json, write_text

log = logging.getLogger(__name__)
MAX_NUM_WAVS_PER_CLASS = 2**27 - 1  # ~134M, as in TensorFlow's speech_commands input_data.py
_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32, "DOUBLE": 64}
COLUMNS = [
    "path", "source", "word", "label", "label_index", "speaker", "repetition", "set", "index",
    "sample_rate", "channels", "bits", "original_length", "rms", "peak", "sha256",
]  # fmt: skip


def hash_percentage(filename: str, salt: str = "") -> float:
    """Where a clip's speaker falls in [0, 100]: SHA-1 of the name without its `_nohash_` suffix."""
    hash_name = re.sub(r"_nohash_.*$", "", parse_clip(filename).name)
    digest = hashlib.sha1((salt + hash_name).encode("utf-8")).hexdigest()
    return (int(digest, 16) % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)


def which_set(filename: str, validation_percentage: float, testing_percentage: float) -> str:
    """TensorFlow's `which_set`: "training", "validation" or "testing", stable per speaker."""
    percentage = hash_percentage(filename)
    if percentage < validation_percentage:
        return "validation"
    if percentage < testing_percentage + validation_percentage:
        return "testing"
    return "training"


def assign_set(filename: str, rule: SourceSplit, validation_percentage: float, testing_percentage: float) -> str:
    """A source's own rule: wholly testing, or the hash rule with its own salt and percentages."""
    if rule.assign == "testing":
        return "testing"
    val = validation_percentage if rule.validation_percentage is None else rule.validation_percentage
    test = testing_percentage if rule.testing_percentage is None else rule.testing_percentage
    percentage = hash_percentage(filename, rule.salt)
    return "validation" if percentage < val else "testing" if percentage < val + test else "training"


def probe(path: Path) -> dict:
    """Format, level and content hash of one wav; `error` is set when it cannot be decoded."""
    data = path.read_bytes()
    try:
        info = sf.info(str(path))
        audio, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as error:
        return {"error": f"cannot decode: {str(error).splitlines()[0][:120]}", "sha256": hashlib.sha256(data).hexdigest()}
    mono = audio.mean(axis=1) if audio.size else np.zeros(0, np.float32)
    return {
        "error": "",
        "sample_rate": int(info.samplerate),
        "channels": int(info.channels),
        "bits": _BITS.get(info.subtype, 0),
        "original_length": int(info.frames),
        "rms": float(np.sqrt(np.mean(mono**2))) if mono.size else 0.0,
        "peak": float(np.abs(mono).max()) if mono.size else 0.0,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def scan_raw(params: Params, progress: bool = True) -> pd.DataFrame:
    """One row per word clip of every source folder under `paths.raw`, with its probe and set."""
    raw = params.paths.raw
    rules = {s.name: s.split for s in params.data.sources}
    keywords = set(params.data.keywords)
    rows = []
    wavs = [(name, wav) for name in rules for wav in iter_wavs(raw / name)]
    for name, wav in tqdm(wavs, desc="scan", unit="clip", disable=not progress, mininterval=1):
        rel = wav.relative_to(raw / name)
        clip = parse_clip(rel)
        label = clip.word if clip.word in keywords or clip.word == SILENCE_LABEL else UNKNOWN_LABEL
        rows.append(
            {
                "path": str(wav.relative_to(raw)),
                "source": name,
                "word": clip.word,
                "label": label,
                "speaker": clip.speaker,
                "repetition": clip.repetition,
                "set": assign_set(clip.name, rules[name], params.split.validation_percentage, params.split.testing_percentage),
                **probe(wav),
            }
        )
    if not rows:
        raise DataError(f"{raw}: no clips found; run the download stage first")
    return pd.DataFrame(rows)


def balance(clips: pd.DataFrame, params: Params, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """Keep every keyword clip; sample unknown clips to `unknown_percentage` of each set's keyword count."""
    kept, counts = [], {}
    for name in SETS:
        in_set = clips[clips["set"] == name]
        words = in_set[~in_set["label"].isin([UNKNOWN_LABEL, SILENCE_LABEL])]
        unknown = in_set[in_set["label"] == UNKNOWN_LABEL]
        want = math.ceil(len(words) * params.split.unknown_percentage / 100)
        take = np.sort(rng.choice(len(unknown), size=min(want, len(unknown)), replace=False))
        kept += [words, in_set[in_set["label"] == SILENCE_LABEL], unknown.iloc[take]]
        counts[name] = {"keywords": len(words), "unknown_available": len(unknown), "unknown_used": len(take)}
    return pd.concat(kept), counts


@dataclass(frozen=True)
class SplitResult:
    """What the split stage produced, for the CLI and tests."""

    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    summary: dict


def _pack(out: Path, name: str, rows: pd.DataFrame, silence: np.ndarray, raw: Path, clip_samples: int) -> None:
    """Write one set's waveforms as a single int16 [N, clip_samples] array (word clips padded/trimmed)."""
    with atomic_path(out / f"{name}_audio.npy", ".npy") as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16, shape=(len(rows), clip_samples))
        words = rows[~rows["path"].str.contains("@")]
        for i, path in enumerate(words["path"]):
            audio, _ = sf.read(str(raw / path), dtype="int16", always_2d=True)
            clip = audio[:clip_samples, 0]
            array[i, : len(clip)] = clip
            array[i, len(clip) :] = 0
        array[len(words) :] = silence
        array.flush()
        del array


def split_metrics(summary: dict) -> dict:
    """The few totals of split.json that `dvc metrics`/`dvc exp show` compare: clips per set and files quarantined."""
    return {"clips": {name: counts["total"] for name, counts in summary["sets"].items()}, "quarantined": summary["quarantined"]}


def run_split(params: Params, progress: bool = True) -> SplitResult:
    """Partition, validate (Great Expectations), quarantine, balance and pack the raw sources."""
    from pipeline.data.validate import FileCheck, build_data_docs, check_files, check_sets

    out, reports = params.paths.split, params.paths.reports
    feat, labels = params.features, params.labels
    rng = np.random.default_rng(params.seed)
    clips = scan_raw(params, progress)
    undecodable = clips[clips["error"] != ""][["path", "error"]].rename(columns={"error": "reason"})
    decoded = clips[clips["error"] == ""].drop(columns="error")
    file_check = FileCheck(feat.sample_rate, feat.clip_samples, params.split.min_rms)
    failing = check_files(decoded, file_check)
    quarantine = pd.concat([undecodable, failing], ignore_index=True).sort_values("path", ignore_index=True)
    quarantine.insert(1, "source", quarantine["path"].str.split("/").str[0])
    reports.mkdir(parents=True, exist_ok=True)
    with atomic_path(reports / "quarantine.csv", ".csv") as tmp:
        quarantine.to_csv(tmp, index=False)
    bad_fraction = len(quarantine) / len(clips)
    if bad_fraction > params.split.max_bad_fraction:
        raise DataError(
            f"split: {len(quarantine)} of {len(clips)} files ({bad_fraction:.1%}) quarantined, above "
            f"split.max_bad_fraction {params.split.max_bad_fraction:.1%}; see {reports / 'quarantine.csv'}"
        )
    good = decoded[~decoded["path"].isin(set(quarantine["path"]))]
    kept, counts = balance(good, params, rng)
    portions = split_noises(
        load_noises(params.paths.raw, feat.sample_rate),
        params.split.validation_percentage,
        params.split.testing_percentage,
        feat.clip_samples,
    )
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for name in SETS:
        words = kept[kept["set"] == name].sort_values("path")
        real_silence = int((words["label"] == SILENCE_LABEL).sum())
        want = math.ceil(counts[name]["keywords"] * params.split.silence_percentage / 100)
        rows, audio = silence_rows(
            portions, name, max(want - real_silence, 0), feat.clip_samples, feat.sample_rate,
            params.split.background_volume, rng,
        )  # fmt: skip
        silence = pd.DataFrame(rows).assign(label=SILENCE_LABEL, set=name)
        frame = pd.concat([words, silence], ignore_index=True) if rows else words.reset_index(drop=True)
        frame["index"] = np.arange(len(frame))
        frame["label_index"] = frame["label"].map(labels.index)
        _pack(out, name, frame, audio, params.paths.raw, feat.clip_samples)
        with atomic_path(out / f"{name}_labels.npy", ".npy") as tmp:
            np.save(tmp, frame["label_index"].to_numpy(np.int16))
        with atomic_path(out / f"background_{name}.npy", ".npy") as tmp:
            np.save(tmp, pack_portions(portions, name))
        counts[name]["silence_generated"] = len(rows)
        frames.append(frame)
    manifest = pd.concat(frames, ignore_index=True)[COLUMNS]
    sets = check_sets(manifest, labels, params.split.min_class_count)
    docs = build_data_docs(sets.results, reports / "data_docs", reports / "validation.json")
    if not sets.success:
        raise DataError("split: data validation failed: " + "; ".join(sets.failures[:3]) + f" (see {docs})")
    with atomic_path(out / "manifest.parquet", ".parquet") as tmp:
        manifest.to_parquet(tmp, index=False)
    write_text(out / "labels.txt", "\n".join(labels) + "\n")
    summary = {
        "files_scanned": len(clips),
        "quarantined": len(quarantine),
        "quarantined_fraction": round(bad_fraction, 6),
        "sets": {
            name: {**counts[name], "total": int((manifest["set"] == name).sum()),
                   "per_label": manifest[manifest["set"] == name]["label"].value_counts().reindex(labels, fill_value=0).to_dict()}
            for name in SETS
        },
    }  # fmt: skip
    write_json(artifacts.SPLIT_REPORT.path(params.paths), summary)
    write_json(artifacts.SPLIT_METRICS.path(params.paths), split_metrics(summary))
    return SplitResult(manifest, quarantine, summary)
