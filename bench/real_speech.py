#!/usr/bin/env python
"""Score an exported model on a folder of real recordings: top-1 accuracy, per-class recall, confusion matrix.

Usage:
    uv run python bench/real_speech.py                        # models/export on ../shared/data/speech_commands_test_v0.02_dev
    uv run python bench/real_speech.py --model models/export --variant all
    uv run python bench/real_speech.py --model models/export/model_int8.tflite --data ~/my_clips --json-out my.json

Trains nothing. `--model` is a SavedModel folder (saved_model.pb inside), an export folder (saved_model/ and
*.tflite inside: `--variant` picks one, `all` scores each) or one .tflite file; the class names are read from
labels.txt beside it (or inside the SavedModel). `--data` is any folder of labelled wavs, in the Speech Commands
layout (`<word>/<speaker>_nohash_<n>.wav`) or the official test-set layout (`_silence_/`, `_unknown_/`, keywords);
words that are not classes of the model count as `_unknown_`. Clips are mixed to mono, resampled to the model's
rate (export.json beside the model, else `--sample-rate`) and padded/trimmed to its clip length
(pipeline.evaluate.sets.load_folder_set); unreadable files are listed and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from pipeline.errors import DataError, KwsError  # noqa: E402
from pipeline.fileio import write_json  # noqa: E402
from pipeline.metrics import accuracy, confusion_matrix, per_class  # noqa: E402

DEFAULT_DATA = Path("../shared/data/speech_commands_test_v0.02_dev")
LABELS_FILE = "labels.txt"


def default_data() -> Path | None:
    """The real Speech Commands dev clips, relative to the working folder or to the repository."""
    for path in (DEFAULT_DATA, ROOT / DEFAULT_DATA):
        if path.is_dir():
            return path
    return None


def find_models(path: Path) -> tuple[dict[str, Path], Path]:
    """({variant name: SavedModel folder or .tflite file}, the folder holding export.json / labels.txt)."""
    if path.is_file():
        if path.suffix != ".tflite":
            raise DataError(f"{path}: expected a .tflite file, a SavedModel folder or an export folder")
        return {path.stem: path}, path.parent
    if not path.is_dir():
        raise DataError(f"{path}: not found")
    if (path / "saved_model.pb").exists():
        return {"saved_model": path}, path.parent
    models: dict[str, Path] = {}
    if (path / "saved_model" / "saved_model.pb").exists():
        models["saved_model"] = path / "saved_model"
    models.update({p.stem: p for p in sorted(path.glob("*.tflite"))})
    if not models:
        raise DataError(f"{path}: no saved_model/ and no .tflite file inside")
    return models, path


def read_model_labels(model: Path, home: Path) -> list[str]:
    """labels.txt inside a SavedModel folder, else beside the model."""
    for folder in ([model] if model.is_dir() else []) + [model.parent, home]:
        if (folder / LABELS_FILE).exists():
            labels = (folder / LABELS_FILE).read_text(encoding="utf-8").split()
            if labels:
                return labels
    raise DataError(f"{model}: no {LABELS_FILE} inside or beside it")


def make_scorer(model: Path, threads: int, batch: int):
    """(score function audio [B, S] -> scores [B, C], samples per clip the model takes), via pipeline.inference."""
    from pipeline.inference import load_saved_model, load_tflite

    predictor = load_tflite(model, threads=threads) if model.suffix == ".tflite" else load_saved_model(model)
    predictor.batch_size = batch
    return predictor.scores, predictor.clip_samples


def format_matrix(matrix: np.ndarray, labels: list[str]) -> str:
    """Rows: true class, columns: predicted class (first 6 characters of its name)."""
    width = max(7, len(str(int(matrix.max()))) + 2)
    name_width = max(len(label) for label in labels)
    lines = [" " * name_width + "".join(f"{label[:width - 1]:>{width}}" for label in labels)]
    lines += [f"{label:>{name_width}}" + "".join(f"{int(v):>{width}}" for v in row) for label, row in zip(labels, matrix, strict=True)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Score each chosen model variant on the folder, print the results, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/export"),
                        help="SavedModel folder, export folder or .tflite file (default models/export)")  # fmt: skip
    parser.add_argument("--variant", default="auto",
                        help="in an export folder: saved_model, model_float, model_int8 (a .tflite name), "
                             "all, or auto (saved_model, else the first .tflite; the default)")  # fmt: skip
    parser.add_argument("--data", type=Path, default=None, help=f"folder of labelled wavs (default {DEFAULT_DATA})")
    parser.add_argument("--sample-rate", type=int, default=None, help="model's sample rate (default: export.json, else 16000)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="TFLite interpreter threads")
    parser.add_argument("--batch", type=int, default=256, help="clips per SavedModel call")
    parser.add_argument("--out", "--json-out", dest="out", type=Path, default=Path("bench/results/real_speech.json"))
    args = parser.parse_args(argv)

    try:
        data = args.data or default_data()
        if data is None:
            raise DataError(f"{DEFAULT_DATA}: not found; pass --data FOLDER")
        models, home = find_models(args.model)
        if args.variant == "all":
            chosen = models
        elif args.variant == "auto":
            name = "saved_model" if "saved_model" in models else next(iter(models))
            chosen = {name: models[name]}
        elif args.variant in models:
            chosen = {args.variant: models[args.variant]}
        else:
            raise DataError(f"--variant {args.variant}: not in {args.model} (found: {', '.join(models)}, all, auto)")
        export_json = home / "export.json"
        sample_rate = args.sample_rate
        if sample_rate is None and export_json.exists():
            sample_rate = json.loads(export_json.read_text(encoding="utf-8")).get("sample_rate")
        sample_rate = int(sample_rate or 16000)
        labels = read_model_labels(next(iter(chosen.values())), home)
    except KwsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    import tensorflow as tf

    from pipeline.data.layout import detect_layout
    from pipeline.evaluate.sets import load_folder_set

    results: dict = {
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "data": str(data),
        "model": str(args.model),
        "sample_rate": sample_rate,
        "labels": labels,
        "variants": {},
    }
    folder, clip_samples = None, None
    try:
        for name, model in chosen.items():
            if read_model_labels(model, home) != labels:
                raise DataError(f"{model}: labels differ from the other variants'")
            score, samples = make_scorer(model, args.threads, args.batch)
            if folder is None or samples != clip_samples:
                layout = detect_layout(data)
                folder, clip_samples = load_folder_set(data, labels, sample_rate, samples), samples
                counts = np.bincount(folder.labels, minlength=len(labels))
                results.update(layout=layout, clips=len(folder.labels), clip_samples=samples,
                               skipped=[{"file": f, "why": why} for f, why in folder.skipped],
                               clips_per_class=dict(zip(labels, counts.tolist(), strict=True)))  # fmt: skip
                print(f"{data}: {layout} layout, {len(folder.labels)} clips ({len(folder.skipped)} skipped), "
                      f"{sample_rate} Hz, {samples} samples per clip")  # fmt: skip
            start = time.perf_counter()
            scores = score(folder.audio)
            seconds = time.perf_counter() - start
            matrix = confusion_matrix(folder.labels, scores.argmax(axis=1), len(labels))
            classes = per_class(matrix, labels)
            row = {"path": str(model), "accuracy": round(accuracy(matrix), 6),
                   "macro_recall": round(float(np.mean([c["recall"] for c in classes.values() if c["support"]])), 6),
                   "scoring_seconds": round(seconds, 2), "per_class": classes, "matrix": matrix.tolist()}  # fmt: skip
            results["variants"][name] = row
            print(f"\n{name} ({model}): top-1 accuracy {row['accuracy']:.1%} (N={int(matrix.sum())}), "
                  f"macro recall {row['macro_recall']:.1%}")  # fmt: skip
            predicted = matrix.sum(axis=0)
            print(f"{'class':>12s} {'recall':>7s} {'precision':>9s} {'support':>8s}")
            for i, (label, c) in enumerate(classes.items()):  # '-': undefined (no clip of / predicted as the class)
                recall = f"{c['recall']:7.1%}" if c["support"] else f"{'-':>7s}"
                precision = f"{c['precision']:9.1%}" if predicted[i] else f"{'-':>9s}"
                print(f"{label:>12s} {recall} {precision} {c['support']:8d}")
            print("confusion matrix (rows: true class, columns: predicted)")
            print(format_matrix(matrix, labels), flush=True)
    except KwsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
