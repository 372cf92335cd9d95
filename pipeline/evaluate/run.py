"""The evaluate stage: testing-set metrics, extra (real-speech) sets, streaming accuracy; written for DVC and MLflow."""

from __future__ import annotations

import logging
import numpy as np
import pandas as pd

from pipeline import artifacts
from pipeline.config import Params, Paths
from pipeline.errors import DataError
from pipeline.fileio import atomic_path, write_json
from pipeline.metrics import accuracy, confusion_matrix, format_confusion, per_class, plot_confusion

log = logging.getLogger(__name__)


def score_set(name: str, scores: np.ndarray, targets: np.ndarray, labels: list[str], paths: Paths,
              clips: list[str] | None = None) -> dict:
    """Accuracy, per-class scores and the confusion matrix of one set, written as CSV (DVC plots), PNG and JSON.

    `clips`: one id per row (a path); given, `clips_<name>.csv` keeps each clip's label and prediction, so two
    models can be compared on the same clips (`kws promote`'s paired test).
    """
    predicted = scores.argmax(axis=1)
    matrix = confusion_matrix(targets, predicted, len(labels))
    names = np.asarray(labels)
    with atomic_path(artifacts.CONFUSION_CSV.path(paths, set=name), ".csv") as tmp:
        pd.DataFrame({"actual": names[targets], "predicted": names[predicted]}).to_csv(tmp, index=False)
    if clips is not None:
        with atomic_path(artifacts.CLIPS_CSV.path(paths, set=name), ".csv") as tmp:
            pd.DataFrame({"clip": clips, "label": names[targets], "predicted": names[predicted],
                          "correct": (predicted == targets).astype(int)}).to_csv(tmp, index=False)  # fmt: skip
    plot_confusion(matrix, labels, artifacts.CONFUSION_PNG.path(paths, set=name), name)
    classes = per_class(matrix, labels)
    write_json(artifacts.PER_CLASS_JSON.path(paths, set=name), {"labels": labels, "matrix": matrix.tolist(), "per_class": classes})
    with atomic_path(artifacts.PER_CLASS_CSV.path(paths, set=name), ".csv") as tmp:  # one row per class: DVC's bar plots
        pd.DataFrame([{"label": label, **values} for label, values in classes.items()]).to_csv(tmp, index=False)
    log.info("%s: accuracy %.1f%% (N=%d)\n%s", name, 100 * accuracy(matrix), len(targets), format_confusion(matrix))
    return {"accuracy": round(accuracy(matrix), 6), "clips": int(len(targets)),
            "macro_f1": round(float(np.mean([c["f1"] for c in classes.values()])), 6)}  # fmt: skip


def folder_present(section: str, spec) -> bool:
    """Whether `evaluate.<section>` entry `spec` (name, path, optional) has its folder. A missing optional one is
    skipped with a warning; a missing required one raises DataError naming the field."""
    if spec.path.is_dir():
        return True
    if not spec.optional:
        raise DataError(f"evaluate.{section}[{spec.name}].path: folder {spec.path} not found")
    log.warning("evaluate.%s %s skipped: %s not found", section, spec.name, spec.path)
    return False


def streaming_accuracy(params: Params, predictor, voices: dict[str, pd.DataFrame] | None = None) -> dict:
    """Score a long seeded recording made from testing clips, as TensorFlow's test_streaming_accuracy does, and
    sweep the detection threshold over it, over speech-free real audio and over a non-keyword speech recording
    (`reports/evaluate/streaming_sweep.{csv,png}`; `voices`: the sweeps of `extra_set_streaming` by set name, drawn
    beside it in the PNG). Raises DataError for a missing non-optional speech-free set."""
    from pipeline.stream.accuracy import match_detections
    from pipeline.stream.recording import write_truth_csv
    from pipeline.stream.run import recognize
    from pipeline.stream.sweep import keyword_sweep, plot_sweep

    feat, settings = params.features, params.evaluate.streaming
    paths, labels = params.paths, params.labels
    audio, truth, (clips, targets, noise) = set_recording(params, "testing")
    write_truth_csv(truth, artifacts.STREAMING_TRUTH.path(paths))
    duration_ms = len(audio) * 1000 / feat.sample_rate
    scores, times_ms = predictor.stream_scores(audio, settings)
    detections = recognize(scores, times_ms, labels, settings)
    with atomic_path(artifacts.STREAMING_DETECTIONS.path(paths), ".csv") as tmp:
        pd.DataFrame([d.__dict__ for d in detections], columns=["label", "time_ms", "score"]).to_csv(tmp, index=False)
    stats = match_detections(detections, truth, settings.time_tolerance_ms, duration_ms=duration_ms)
    stats["mode"] = predictor.stream_mode(settings)

    sweep = keyword_sweep(scores, times_ms, labels, settings, truth, duration_ms)
    stats.update(_false_accept_curves(params, predictor, sweep, clips, targets, noise))
    stats.update(at_budget(sweep, settings.max_false_alarms_per_hour))
    stats.update(_validation_operating_point(params, predictor, sweep))
    with atomic_path(artifacts.STREAMING_SWEEP.path(paths), ".csv") as tmp:
        sweep.to_csv(tmp, index=False)
    plot_sweep(sweep, artifacts.STREAMING_SWEEP_PNG.path(paths),
               f"Threshold sweep ({settings.recording_seconds:g} s recordings, default {settings.detection_threshold:.2f})",
               voices)
    return {k: round(float(v), 6) if isinstance(v, float) else v for k, v in stats.items()}


def at_budget(sweep: pd.DataFrame, budget: float) -> dict:
    """matched_percentage_at_budget (0 when no threshold keeps within `budget` false alarms/h) and, when one does,
    threshold_at_budget: `operating_point` of a keyword recording's sweep."""
    from pipeline.stream.sweep import operating_point

    best = operating_point(sweep, budget)
    if best is None:
        return {"matched_percentage_at_budget": 0.0}
    return {"matched_percentage_at_budget": best["matched_percentage"], "threshold_at_budget": best["threshold"]}


def _within(matched: float, threshold: float | None, budget: float) -> str:
    """The log's '; within 10/h: 52.3 % at 0.88' (or that no threshold keeps within the budget)."""
    if threshold is None:
        return f"; no threshold keeps within {budget:g}/h"
    return f"; within {budget:g}/h: {matched:.1f} % at {threshold:.2f}"


def describe_streaming(stats: dict, settings) -> str:
    """One line for the stage log from `streaming_accuracy`'s figures and `evaluate.streaming` (`settings`): matched
    keywords and false alarms per hour at the default threshold, the best within the false-alarm budget and the
    non-keyword recordings' false alarms, those present."""
    line = (f"streaming ({settings.recording_seconds / 3600:g} h testing recording, {stats.get('truth_keywords', 0):,} "
            f"keywords): {stats['matched_percentage']:.1f} % matched at {stats['false_alarms_per_hour']:g} false alarms/h "
            f"at threshold {settings.detection_threshold:.2f}")  # fmt: skip
    if "threshold_chosen_on_validation" in stats:
        line += f" (validation chose {stats['threshold_chosen_on_validation']:.2f})"
    line += _within(stats["matched_percentage_at_budget"], stats.get("threshold_at_budget"), settings.max_false_alarms_per_hour)
    for key, what in (("non_keyword_false_alarms_per_hour", "other words only"), ("speech_free_false_alarms_per_hour", "speech-free audio")):
        if key in stats:
            line += f"; {what}: {stats[key]:g}/h"
    return line


def describe_set_streaming(name: str, figures: dict, settings) -> str:
    """One line for the stage log from `extra_set_streaming`'s figures for set `name`."""
    line = (f"streaming ({settings.recording_seconds / 3600:g} h {name} recording, {figures['streaming_keywords']:,} "
            f"keywords, the testing recording's noise): {figures['streaming_matched_percentage']:.1f} % matched at "
            f"{figures['streaming_false_alarms_per_hour']:g} false alarms/h at threshold {settings.detection_threshold:.2f}")  # fmt: skip
    return line + _within(figures["streaming_matched_percentage_at_budget"], figures.get("streaming_threshold_at_budget"),
                          settings.max_false_alarms_per_hour)  # fmt: skip


# Seed of each streamed recording, as an offset from params.seed: the keyword recordings of the testing and the
# validation clips, the testing set's other-words-only recording, and (offset + position in evaluate.extra_sets)
# the recordings of extra sets with `streaming: true`.
RECORDING_SEEDS = {"testing": 0, "other_words": 1, "validation": 2, "extra_sets": 3}


def extra_set_streaming(params: Params, predictor, position: int, clips: np.ndarray, targets: np.ndarray) -> tuple[dict, pd.DataFrame] | None:
    """Stream a recording of extra set `evaluate.extra_sets[position]`'s clips [N, S] (labels [N]), made as the
    testing recording is (`evaluate.streaming`: length, word spacing, other-word share, noise volume) and over the
    testing recording's background noise, so that its curve differs from the testing recording's in the voices only.

    Writes its threshold sweep to `streaming_sweep_<name>.csv` and returns (figures, sweep): streaming_keywords,
    streaming_matched_percentage and streaming_false_alarms_per_hour at the default threshold, and the best
    matched % within `max_false_alarms_per_hour` with its threshold (0 and no threshold when none keeps within).
    None, with a warning, for a set without the keyword clips, or the other-word clips, the recording needs."""
    from pipeline.config import UNKNOWN_LABEL
    from pipeline.stream.recording import make_recording
    from pipeline.stream.sweep import keyword_sweep

    spec, settings, labels = params.evaluate.extra_sets[position], params.evaluate.streaming, params.labels
    keywords = [i for i, label in enumerate(labels) if not label.startswith("_")]
    unknown = labels.index(UNKNOWN_LABEL) if UNKNOWN_LABEL in labels else -1
    if not np.isin(targets, keywords).any():
        log.warning("evaluate.extra_sets %s: not streamed, it holds no keyword clips", spec.name)
        return None
    if settings.unknown_fraction > 0 and not np.any(targets == unknown):
        log.warning("evaluate.extra_sets %s: not streamed, it holds no %s clips for the recording's other words "
                    "(evaluate.streaming.unknown_fraction %g)", spec.name, UNKNOWN_LABEL, settings.unknown_fraction)  # fmt: skip
        return None
    noise = np.load(artifacts.SET_BACKGROUND.require(params.paths, set="testing"))
    rate = params.features.sample_rate
    audio, truth = make_recording(clips, targets, labels, noise, settings, rate,
                                  params.seed + RECORDING_SEEDS["extra_sets"] + position)  # fmt: skip
    scores, times_ms = predictor.stream_scores(audio, settings)
    duration_ms = len(audio) * 1000 / rate
    sweep = keyword_sweep(scores, times_ms, labels, settings, truth, duration_ms)
    with atomic_path(artifacts.STREAMING_SWEEP_SET.path(params.paths, set=spec.name), ".csv") as tmp:
        sweep.to_csv(tmp, index=False)
    default = keyword_sweep(scores, times_ms, labels, settings, truth, duration_ms, [settings.detection_threshold]).iloc[0]
    figures = {"keywords": int((~truth["label"].str.startswith("_")).sum()),
               "matched_percentage": float(default["matched_percentage"]),
               "false_alarms_per_hour": float(default["false_alarms_per_hour"]),
               **at_budget(sweep, settings.max_false_alarms_per_hour)}  # fmt: skip
    return {f"streaming_{k}": round(v, 6) if isinstance(v, float) else v for k, v in figures.items()}, sweep


def set_recording(params: Params, set_name: str) -> tuple[np.ndarray, pd.DataFrame, tuple]:
    """The seeded `evaluate.streaming` recording (audio [S] float32, truth) made from one set's packed clips
    ("testing" or "validation") and its background noise, with those (clips [N, S], labels [N], noise [M]) for
    further recordings. Raises ValueError for another set name, and DataError naming the missing split output
    (run the split stage)."""
    from pipeline.stream.recording import make_recording

    if set_name not in ("testing", "validation"):
        raise ValueError(f"set_name must be 'testing' or 'validation', got {set_name!r}")
    paths = params.paths
    clips = np.asarray(np.load(artifacts.SET_AUDIO.require(paths, set=set_name), mmap_mode="r"))
    targets = np.load(artifacts.SET_LABELS.require(paths, set=set_name))
    noise = np.load(artifacts.SET_BACKGROUND.require(paths, set=set_name))
    audio, truth = make_recording(clips, targets, params.labels, noise, params.evaluate.streaming,
                                  params.features.sample_rate, params.seed + RECORDING_SEEDS[set_name])  # fmt: skip
    return audio, truth, (clips, targets, noise)


def _validation_operating_point(params: Params, predictor, sweep: pd.DataFrame) -> dict:
    """Choose the threshold on a recording of *validation* clips (the testing recording's settings, its own seed):
    the one matching the most keywords within `max_false_alarms_per_hour`. Adds that recording's curve to `sweep`
    (columns validation_*) and returns the threshold with the testing recording's figures at it, the honest
    operating point (chosen on held-out data, reported on the test); {} when no threshold meets the budget there."""
    from pipeline.stream.sweep import keyword_sweep, validated_point

    settings, rate = params.evaluate.streaming, params.features.sample_rate
    audio, truth, _ = set_recording(params, "validation")
    scores, times_ms = predictor.stream_scores(audio, settings)
    curve = keyword_sweep(scores, times_ms, params.labels, settings, truth, len(audio) * 1000 / rate)
    sweep["validation_matched_percentage"] = curve["matched_percentage"].to_numpy()
    sweep["validation_false_alarms_per_hour"] = curve["false_alarms_per_hour"].to_numpy()
    chosen = validated_point(curve, sweep, settings.max_false_alarms_per_hour)
    if chosen is None:
        return {}
    return {"threshold_chosen_on_validation": chosen["threshold"],
            "matched_percentage_at_validation_threshold": chosen["matched_percentage"],
            "false_alarms_per_hour_at_validation_threshold": chosen["false_alarms_per_hour"]}  # fmt: skip


def with_confusable_clips(params: Params, clips: np.ndarray, targets: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The testing clips [N, S] and labels [N] with near-miss words appended as `_unknown_` clips, for the
    non-keyword recording: of each `data.confusable_words` word, a seeded sample of its testing speakers' clips
    (artifacts.CONFUSABLE_AUDIO / CONFUSABLE_CLIPS) as large as the testing set's mean number of clips per other
    word (all of them when fewer), so each near-miss word is about as frequent in the recording as another other
    word; a word no testing speaker said adds nothing. Returns (clips, labels, clips appended); with no confusable
    words nothing is read and the recording is the one made before they existed. Raises DataError when the split
    output is missing (run the split stage)."""
    from pipeline.config import UNKNOWN_LABEL

    if not params.data.confusable_words:
        return clips, targets, 0
    near_miss = np.load(artifacts.CONFUSABLE_AUDIO.require(params.paths), mmap_mode="r")
    words = pd.read_csv(artifacts.CONFUSABLE_CLIPS.require(params.paths))["word"].to_numpy()
    manifest = pd.read_parquet(artifacts.MANIFEST.require(params.paths), columns=["set", "word", "label"])
    others = manifest[(manifest["set"] == "testing") & (manifest["label"] == UNKNOWN_LABEL)]
    per_word = round(len(others) / max(others["word"].nunique(), 1))
    rng = np.random.default_rng(seed)
    rows = []
    for word in params.data.confusable_words:
        said = np.flatnonzero(words == word)
        rows += sorted(rng.choice(said, size=min(per_word, said.size), replace=False).tolist())
    added = np.asarray(near_miss[np.asarray(rows, dtype=np.int64)], dtype=np.asarray(clips).dtype)
    unknown = np.full(len(rows), params.labels.index(UNKNOWN_LABEL), dtype=targets.dtype)
    return np.concatenate([np.asarray(clips), added]), np.concatenate([targets, unknown]), len(rows)


def _false_accept_curves(params: Params, predictor, sweep: pd.DataFrame, clips, targets, noise) -> dict:
    """Add false accepts per hour per threshold on non-keyword speech and on speech-free audio to `sweep` (columns)
    and return their values at the default threshold."""
    from pipeline.config import UNKNOWN_LABEL
    from pipeline.stream.recording import make_recording
    from pipeline.stream.sweep import false_accepts_per_hour, hours_of, speech_free_audio

    settings, labels, rate = params.evaluate.streaming, params.labels, params.features.sample_rate
    default = float(settings.detection_threshold)
    found: dict = {}

    def at_default(parts, hours) -> float:
        return false_accepts_per_hour(parts, labels, settings, hours, thresholds=[default])[0]

    if UNKNOWN_LABEL in labels and np.any(targets == labels.index(UNKNOWN_LABEL)):
        only_unknown = settings.model_copy(update={"unknown_fraction": 1.0})
        seed = params.seed + RECORDING_SEEDS["other_words"]
        clips, targets, near_miss = with_confusable_clips(params, clips, targets, seed)
        speech, _ = make_recording(clips, targets, labels, noise, only_unknown, rate, seed)
        part = [predictor.stream_scores(speech, settings)]
        hours = hours_of(len(speech), rate)
        sweep["non_keyword_false_alarms_per_hour"] = false_accepts_per_hour(part, labels, settings, hours)
        found["non_keyword_false_alarms_per_hour"] = at_default(part, hours)
        found["non_keyword_confusable_clips"] = near_miss
    for spec in params.evaluate.speech_free_sets:
        if not folder_present("speech_free_sets", spec):
            continue
        recordings = speech_free_audio(spec.path, rate)
        if not recordings:
            raise DataError(f"evaluate.speech_free_sets[{spec.name}].path: {spec.path} holds no .wav files")
        parts = [predictor.stream_scores(audio, settings) for _, audio in recordings]
        hours = hours_of(sum(len(audio) for _, audio in recordings), rate)
        sweep["speech_free_false_alarms_per_hour"] = false_accepts_per_hour(parts, labels, settings, hours)
        found["speech_free_false_alarms_per_hour"] = at_default(parts, hours)
        found["speech_free_hours"] = round(hours, 4)
        break  # one speech-free curve: the first set present
    return found


def _accuracy_by(rows: pd.DataFrame, column: str, correct: np.ndarray, prefix: str) -> dict[str, float]:
    """{prefix + value: accuracy} of the manifest `rows` grouped by `column` (`correct` [clips] bool, indexed by
    the rows' `index`); {} when the rows hold fewer than two values."""
    if rows[column].nunique() < 2:
        return {}
    return {f"{prefix}{value}": round(float(correct[group["index"].to_numpy()].mean()), 6) for value, group in rows.groupby(column)}


def run_evaluate(params: Params) -> dict:
    """Write `reports/evaluate/*` and add the figures to the training run in MLflow."""
    from pipeline.evaluate.sets import load_folder_set
    from pipeline.tracking import Run
    from pipeline.tracking.runs import content_digest, split_digest

    paths, labels, feat = params.paths, params.labels, params.features
    out = artifacts.EVALUATE_DIR.path(paths)
    run = Run.resume(artifacts.RUN_ID.require(paths).read_text().strip())
    from pipeline.inference import load_keras

    scorer = load_keras(artifacts.MODEL.require(paths), feat, params.evaluate.batch_size)
    test_features = np.load(artifacts.SET_FEATURES.require(paths, set="testing"))
    test_targets = np.load(artifacts.SET_LABELS.require(paths, set="testing")).astype(np.int64)
    test_scores = scorer.scores_from_features(test_features)
    manifest = pd.read_parquet(artifacts.MANIFEST.require(paths), columns=["set", "source", "engine", "index", "path", "label"])
    testing = manifest[manifest["set"] == "testing"].sort_values("index")
    linked = {"testing": run.dataset(testing.reset_index(drop=True), "testing", "testing", split_digest(paths.split),
                                     str(paths.split))}  # fmt: skip
    metrics: dict[str, dict] = {"testing": score_set("testing", test_scores, test_targets, labels, paths, list(testing["path"]))}
    correct = test_scores.argmax(1) == test_targets
    # e.g. the real profile: generated and real clips scored apart
    metrics["testing"] |= _accuracy_by(testing, "source", correct, "accuracy_")
    # generated clips by the engine that spoke them (not silence): espeak against the neural voices
    metrics["testing"] |= _accuracy_by(testing[testing["engine"] != ""], "engine", correct, "accuracy_engine_")
    voices: dict[str, pd.DataFrame] = {}
    for position, extra in enumerate(params.evaluate.extra_sets):
        if not folder_present("extra_sets", extra):
            continue
        folder = load_folder_set(extra.path, labels, feat.sample_rate, feat.clip_samples)
        frame = pd.DataFrame({"path": folder.paths, "label": [labels[i] for i in folder.labels]})
        linked[extra.name] = run.dataset(frame, extra.name, "evaluation", content_digest(folder.audio, folder.labels), str(extra.path))
        metrics[extra.name] = score_set(extra.name, scorer.scores(folder.audio), folder.labels, labels, paths, folder.paths)
        metrics[extra.name]["skipped_files"] = len(folder.skipped)
        streamed = extra_set_streaming(params, scorer, position, folder.audio, folder.labels) if extra.streaming else None
        if streamed:
            metrics[extra.name] |= streamed[0]
            voices[extra.name] = streamed[1]
    metrics["streaming"] = streaming_accuracy(params, scorer, voices)
    write_json(artifacts.EVALUATION.path(paths), metrics)
    for name, values in metrics.items():  # test/accuracy, real_dev/accuracy, streaming/false_alarms_per_hour, ...
        run.results("test" if name == "testing" else name, values, dataset=linked.get(name))
    for report in [*sorted(out.glob("confusion_*.png")), *sorted(out.glob("streaming_sweep*")), *sorted(out.glob("per_class_*.json")), *sorted(out.glob("clips_*.csv"))]:
        run.artifact(report, "evaluate")
    run.artifact(artifacts.EVALUATION.path(paths), "evaluate")
    run.refresh_note()
    return metrics
