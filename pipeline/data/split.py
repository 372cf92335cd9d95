"""The split stage: TensorFlow's hash partition, class balance, quarantine, validation and packing."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from pipeline import artifacts
from pipeline.config import SILENCE_LABEL, UNKNOWN_LABEL, Params, SourceSplit, SyntheticSource
from pipeline.data.background import SETS, load_noises, pack_portions, silence_rows, split_noises
from pipeline.data.layout import hash_name, parse_clip, scan_tree
from pipeline.errors import DataError
from pipeline.fileio import atomic_path, write_json, write_text

log = logging.getLogger(__name__)
MAX_NUM_WAVS_PER_CLASS = 2**27 - 1  # ~134M, as in TensorFlow's speech_commands input_data.py
_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32, "DOUBLE": 64}
LEDGER_COLUMNS = ["path", "source", "status", "set", "label", "check", "reason"]
LEDGER_STATUSES = ("used", "not_sampled", "quarantined", "skipped", "noise")
CONFUSABLE_SET = artifacts.CONFUSABLE_AUDIO.name.removesuffix("_audio.npy")  # packed like a set, never trained or scored
COLUMNS = [
    "path", "source", "word", "label", "label_index", "speaker", "engine", "repetition", "set", "index",
    "sample_rate", "channels", "bits", "original_length", "rms", "peak", "sha256",
]  # fmt: skip


def hash_percentage(filename: str, salt: str = "") -> float:
    """Where a clip's speaker falls in [0, 100]: SHA-1 of the name without its `_nohash_` suffix."""
    digest = hashlib.sha1((salt + hash_name(parse_clip(filename).name)).encode("utf-8")).hexdigest()
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
    test = testing_percentage if rule.testing_percentage is None else rule.testing_percentage  # SourceSplit.percentages
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


def speaker_engines(params: Params) -> dict[str, dict[str, str]]:
    """Source name -> {speaker id -> engine} for each synthetic source: "piper" or "kokoro" for its neural voices
    (pipeline/data/neural.py's list, the one the download stage speaks with), "espeak" for any other speaker."""
    from pipeline.data.neural import neural_voices

    engines = {}
    for source in params.data.sources:
        if isinstance(source, SyntheticSource):
            voices = neural_voices(source.kokoro_blends, params.seed, source.kokoro_male_share)
            engines[source.name] = {v.speaker_id: v.engine for v in voices if source.piper or v.engine != "piper"}
    return engines


def clip_engine(engines: dict[str, dict[str, str]], source: str, speaker: str) -> str:
    """The engine that spoke a clip: espeak, piper or kokoro for a synthetic source, "" for any other source
    (recorded or imported clips) and for the split's silence clips."""
    return engines[source].get(speaker, "espeak") if source in engines else ""


def scan_raw(params: Params, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(clips, others): one row per word clip of every source folder under `paths.raw`, with its probe and set;
    and one ledger row per file the download stage skipped, rejected or took as background noise."""
    raw = params.paths.raw
    rules = {s.name: s.split for s in params.data.sources}
    keywords = set(params.data.keywords)
    rows, others = [], []
    engines = speaker_engines(params)
    found = {name: scan_tree(raw / name) for name in rules if (raw / name).is_dir()}
    wavs = [(name, clip.rel) for name, inventory in found.items() for clip in inventory.clips]
    for name, rel in tqdm(wavs, desc="scan", unit="clip", disable=not progress, mininterval=1):
        clip = parse_clip(rel)
        label = clip.word if clip.word in keywords or clip.word == SILENCE_LABEL else UNKNOWN_LABEL
        rows.append(
            {
                "path": f"{name}/{rel}",
                "source": name,
                "word": clip.word,
                "label": label,
                "speaker": clip.speaker,
                "engine": clip_engine(engines, name, clip.speaker),
                "repetition": clip.repetition,
                "set": assign_set(clip.name, rules[name], params.split.validation_percentage, params.split.testing_percentage),
                **probe(raw / name / rel),
            }
        )
    for name, inventory in found.items():
        imported = _import_summary(raw / name)
        others += [_ledger_row(f"{name}/{f.rel}", name, "noise", reason="background noise") for f in inventory.noise]
        for status, key, check in (("skipped", "skipped", ""), ("quarantined", "rejected", "import")):
            others += [_ledger_row(f"{name}/{e['path']}", name, status, check, e["reason"]) for e in imported.get(key, [])]
    if not rows:
        raise DataError(f"{raw}: no clips found; run the download stage first")
    return pd.DataFrame(rows), pd.DataFrame(others, columns=LEDGER_COLUMNS)


def _import_summary(folder: Path) -> dict:
    """What the download stage recorded about a source (`source.json`): skipped and rejected files, mappings."""
    path = folder / "source.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _ledger_row(path: str, source: str, status: str, check: str = "", reason: str = "", **more: str) -> dict:
    return {"path": path, "source": source, "status": status, "set": "", "label": "", "check": check,
            "reason": reason, **more}  # fmt: skip


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


def _pack(out: Path, name: str, files: list[str], silence: np.ndarray, raw: Path, clip_samples: int) -> None:
    """Write one set's waveforms as one int16 [len(files) + len(silence), clip_samples] array, rows in that order:
    the decoded `files` (paths under `raw`, zero-padded to the clip length), then the generated `silence` rows."""
    with atomic_path(out / f"{name}_audio.npy", ".npy") as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16, shape=(len(files) + len(silence), clip_samples))
        for i, path in enumerate(files):
            audio, _ = sf.read(str(raw / path), dtype="int16", always_2d=True)
            clip = audio[:clip_samples, 0]
            array[i, : len(clip)] = clip
            array[i, len(clip) :] = 0
        array[len(files) :] = silence
        array.flush()
        del array


def split_metrics(summary: dict) -> dict:
    """The few totals of split.json that `dvc metrics`/`dvc exp show` compare: clips per set and files by fate."""
    return {"clips": {name: counts["total"] for name, counts in summary["sets"].items()}, "files": summary["files"]}


def _check_sets_not_empty(clips: pd.DataFrame, params: Params) -> None:
    """Every set needs clips (training to learn, validation to select, testing to report), and every keyword too."""
    for name in SETS:
        if not (clips["set"] == name).any():
            speakers = clips["speaker"].nunique()
            raise DataError(
                f"split: the {name} set gets no clips ({speakers} speaker(s) in all, split.validation_percentage "
                f"{params.split.validation_percentage:g}, split.testing_percentage {params.split.testing_percentage:g}); "
                "change the percentages or add speakers; clips TF's which_set rule already placed (TF's own test set, "
                "all 'testing') need their source's `split: {salt: <any text>}` for a fresh speaker split"
            )
    if params.split.min_class_count > 0:
        missing = [k for k in params.data.keywords if not (clips["label"] == k).any()]
        if missing:
            words = sorted(set(clips["word"]))
            raise DataError(
                f"split: no usable clips of keyword(s) {missing} in any source; word folders found: {words[:20]}"
                + (" ..." if len(words) > 20 else "")
            )


def run_split(params: Params, progress: bool = True) -> SplitResult:
    """Partition, validate (Great Expectations), quarantine, balance and pack the raw sources.

    Writes `paths.split` (manifest, labels, packed audio per set) and, under `paths.reports`, `quarantine.csv`,
    `files.csv` (every file of every source with its fate: used, not_sampled, quarantined, skipped, noise) and
    `split.json`. Raises DataError when too many files are bad, a set or keyword is empty, or validation fails.
    """
    from pipeline.data.validate import FileCheck, build_data_docs, check_files, check_sets

    out, reports = params.paths.split, params.paths.reports
    feat, labels = params.features, params.labels
    rng = np.random.default_rng(params.seed)
    clips, others = scan_raw(params, progress)
    undecodable = clips[clips["error"] != ""][["path", "error"]].rename(columns={"error": "reason"}).assign(check="decode")
    decoded = clips[clips["error"] == ""].drop(columns="error")
    file_check = FileCheck(feat.sample_rate, feat.clip_duration_ms, params.split.min_rms)
    failing = check_files(decoded, file_check)
    rejected = others.loc[others["status"] == "quarantined", ["path", "check", "reason"]]
    quarantine = pd.concat([undecodable, failing, rejected], ignore_index=True).sort_values("path", ignore_index=True)
    quarantine = quarantine[["path", "check", "reason"]]
    quarantine.insert(1, "source", quarantine["path"].str.split("/").str[0])
    reports.mkdir(parents=True, exist_ok=True)
    with atomic_path(reports / "quarantine.csv", ".csv") as tmp:
        quarantine.to_csv(tmp, index=False)
    candidates = len(clips) + len(rejected)
    bad_fraction = len(quarantine) / candidates
    if bad_fraction > params.split.max_bad_fraction:
        raise DataError(
            f"split: {len(quarantine)} of {candidates} files ({bad_fraction:.1%}) quarantined, above "
            f"split.max_bad_fraction {params.split.max_bad_fraction:.1%}; see {reports / 'quarantine.csv'}"
        )
    good = decoded[~decoded["path"].isin(set(quarantine["path"]))]
    _check_sets_not_empty(good, params)
    near_miss = good["word"].isin(set(params.data.confusable_words))  # held out of every set (streaming only)
    kept, counts = balance(good[~near_miss], params, rng)
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
        silence = pd.DataFrame(rows).assign(label=SILENCE_LABEL, set=name, engine="")
        frame = pd.concat([words, silence], ignore_index=True) if rows else words.reset_index(drop=True)
        frame["index"] = np.arange(len(frame))
        frame["label_index"] = frame["label"].map(labels.index)
        _pack(out, name, list(words["path"]), audio, params.paths.raw, feat.clip_samples)
        with atomic_path(out / f"{name}_labels.npy", ".npy") as tmp:
            np.save(tmp, frame["label_index"].to_numpy(np.int16))
        with atomic_path(out / f"background_{name}.npy", ".npy") as tmp:
            np.save(tmp, pack_portions(portions, name))
        counts[name]["silence_generated"] = len(rows)
        frames.append(frame)
    confusable = good[near_miss & (good["set"] == "testing")].sort_values("path")
    _pack(out, CONFUSABLE_SET, list(confusable["path"]), np.zeros((0, feat.clip_samples), np.int16), params.paths.raw,
          feat.clip_samples)  # fmt: skip
    with atomic_path(artifacts.CONFUSABLE_CLIPS.path(params.paths), ".csv") as tmp:
        confusable[["path", "word"]].to_csv(tmp, index=False)
    counts["testing"]["confusable"] = len(confusable)
    manifest = pd.concat(frames, ignore_index=True)[COLUMNS]
    sets = check_sets(manifest, labels, params.split.min_class_count)
    docs = build_data_docs(sets.results, reports / "data_docs", reports / "validation.json")
    if not sets.success:
        raise DataError("split: data validation failed: " + "; ".join(sets.failures[:3]) + f" (see {docs})")
    ledger = _ledger(clips, manifest, quarantine, others, list(confusable["path"]), set(params.data.confusable_words))
    with atomic_path(artifacts.FILE_LEDGER.path(params.paths), ".csv") as tmp:
        ledger.to_csv(tmp, index=False)
    with atomic_path(out / "manifest.parquet", ".parquet") as tmp:
        manifest.to_parquet(tmp, index=False)
    write_text(out / "labels.txt", "\n".join(labels) + "\n")
    summary = _summary(params, clips, manifest, quarantine, ledger, counts, bad_fraction)
    write_json(artifacts.SPLIT_REPORT.path(params.paths), summary)
    write_json(artifacts.SPLIT_METRICS.path(params.paths), split_metrics(summary))
    return SplitResult(manifest, quarantine, summary)


def _ledger(clips: pd.DataFrame, manifest: pd.DataFrame, quarantine: pd.DataFrame, others: pd.DataFrame,
            confusable: list[str], held_out: set[str]) -> pd.DataFrame:  # fmt: skip
    """One row per file of every source: used (in the manifest, or a testing speaker's confusable word, set
    `testing_confusable`), not_sampled, quarantined, skipped or noise."""
    reasons = dict(zip(quarantine["path"], quarantine["reason"], strict=True))
    checks = dict(zip(quarantine["path"], quarantine["check"], strict=True))
    where = dict(zip(manifest["path"], manifest["set"], strict=True))  # generated silence rows match no clip
    where.update(dict.fromkeys(confusable, CONFUSABLE_SET))
    rows = []
    for row in clips[["path", "source", "label", "set", "word"]].itertuples(index=False):
        if row.path in reasons:
            rows.append(_ledger_row(row.path, row.source, "quarantined", checks[row.path], reasons[row.path], label=row.label))
        elif row.path in where:
            rows.append({**_ledger_row(row.path, row.source, "used", label=row.label), "set": where[row.path]})
        else:
            reason = ("a confusable word of a training or validation speaker (data.confusable_words: never trained on)"
                      if row.word in held_out else "an unknown clip beyond split.unknown_percentage")  # fmt: skip
            rows.append({**_ledger_row(row.path, row.source, "not_sampled", reason=reason, label=row.label), "set": row.set})
    ledger = pd.concat([pd.DataFrame(rows, columns=LEDGER_COLUMNS), others], ignore_index=True)
    return ledger.sort_values("path", ignore_index=True)


def _summary(params: Params, clips: pd.DataFrame, manifest: pd.DataFrame, quarantine: pd.DataFrame,
             ledger: pd.DataFrame, counts: dict, bad_fraction: float) -> dict:  # fmt: skip
    """reports/split.json: totals of the file ledger, reasons, mapped folders, per-set, per-label and per-engine
    counts."""
    labels, confusable = params.labels, set(params.data.confusable_words)
    imports = {name: _import_summary(params.paths.raw / name) for name in sorted(set(clips["source"]))}
    skipped = ledger[ledger["status"] == "skipped"]
    return {
        "files": {status: int((ledger["status"] == status).sum()) for status in LEDGER_STATUSES},
        "files_scanned": len(clips),
        "quarantined": len(quarantine),
        "quarantined_fraction": round(bad_fraction, 6),
        "quarantined_by_check": quarantine["check"].value_counts().sort_index().to_dict(),
        "skipped_by_reason": skipped["reason"].value_counts().sort_index().to_dict(),
        "mapped_folders": {name: s["mapped_folders"] for name, s in imports.items() if s.get("mapped_folders")},
        "dataset_roots": {name: s["root"] for name, s in imports.items() if s.get("root", ".") != "."},
        "words": {word: {"label": label, "clips": int(n)} | ({"confusable": True} if word in confusable else {})
                  for (word, label), n in clips.groupby(["word", "label"]).size().items()},  # confusable: held out
        "sets": {
            name: {**counts[name], "total": int((manifest["set"] == name).sum()),
                   "per_label": manifest[manifest["set"] == name]["label"].value_counts().reindex(labels, fill_value=0).to_dict(),
                   # clips per engine that spoke them (espeak, piper, kokoro; "" for other sources and silence)
                   "per_engine": manifest[manifest["set"] == name]["engine"].value_counts().sort_index().to_dict()}
            for name in SETS
        },
    }  # fmt: skip
