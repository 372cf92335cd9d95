"""The freeze stage: SavedModel + TFLite float/int8 with the frontend inside, checks, export.json, registry."""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.config import Params
from pipeline.errors import KwsError
from pipeline.fileio import ensure_space, write_json, write_text

log = logging.getLogger(__name__)
MIN_FLOAT_AGREEMENT = 0.999


def _clips(params: Params, name: str) -> tuple[np.ndarray, np.ndarray]:
    audio = np.load(artifacts.SET_AUDIO.require(params.paths, set=name), mmap_mode="r")
    labels = np.load(artifacts.SET_LABELS.require(params.paths, set=name)).astype(np.int64)
    return audio, labels


def calibrated_int8(params: Params, saved: Path, out: Path) -> tuple[dict, np.ndarray]:
    """The int8 file calibrated on the best of `freeze.calibration_draws` seeded sets of training clips, written to
    `out`; returns (convert's description with a `calibration` record, the chosen clips).

    Post-training min/max calibration depends on which clips it sees: on one model three draws of 300 clips lost
    1.55, 0.73 and 1.14 points on the generated testing set. Each draw is converted and scored on the validation
    set (selection data, never the testing or real-speech sets the int8 gate reads); the most accurate is kept
    (the earliest on a tie; draw 0 alone when there is one draw or no validation clip). Draw 0 is also the
    backbone that `features.embedding.integer_views` trained the head on (pipeline/export/integer.py)."""
    import tempfile

    from pipeline.export.integer import calibration_audio
    from pipeline.export.tflite import convert
    from pipeline.inference import load_tflite

    audio, labels = _clips(params, "validation")

    def validation_accuracy(path: Path) -> float:
        return float((load_tflite(path).scores(audio).argmax(1) == labels).mean())

    draws = params.freeze.calibration_draws if len(labels) else 1
    clips = calibration_audio(params, 0)
    info = convert(saved, out, "int8", clips)
    if draws == 1:
        return {**info, "calibration": {"draws": 1, "chosen": 0, "clips": len(clips)}}, clips
    scores = [validation_accuracy(out)]
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".calibration-") as tmp:
        for draw in range(1, draws):
            candidate, drawn = Path(tmp) / f"draw{draw}.tflite", calibration_audio(params, draw)
            described = convert(saved, candidate, "int8", drawn)
            scores.append(validation_accuracy(candidate))
            if scores[-1] > max(scores[:-1]):
                shutil.move(candidate, out)
                info, clips = {**described, "path": str(out)}, drawn
    chosen = int(np.argmax(scores))
    log.info("int8 calibration: draw %d of %d kept (validation accuracy %s)", chosen, draws,
             ", ".join(f"{100 * v:.2f} %" for v in scores))  # fmt: skip
    record = {"draws": draws, "chosen": chosen, "clips": len(clips), "validation_accuracy": [round(v, 6) for v in scores]}
    return {**info, "calibration": record}, clips


def _scores(predictors: dict, audio: np.ndarray) -> dict[str, np.ndarray]:
    """Scores (clips, labels) of every exported form (pipeline.inference.Predictor) on one set of clips.

    The TFLite files run one clip per invoke on a one-thread interpreter, which releases the GIL: each runs in a
    thread of its own beside the TensorFlow forms, so the set is scored in about half the time on 2 cores. Every
    interpreter still computes on one thread, so the scores are the same as one after the other."""
    from concurrent.futures import ThreadPoolExecutor

    native = [name for name, predictor in predictors.items() if predictor.kind == "tflite"]
    with ThreadPoolExecutor(max_workers=max(1, len(native)), thread_name_prefix="litert") as pool:
        pending = {name: pool.submit(predictors[name].scores, audio) for name in native}
        done = {name: predictor.scores(audio) for name, predictor in predictors.items() if name not in pending}
        done.update({name: future.result() for name, future in pending.items()})
    return {name: done[name] for name in predictors}


def _compare(scores: dict[str, np.ndarray], labels: np.ndarray) -> dict:
    """Accuracy of every exported form on one labelled set (`_scores`), and its top-1 agreement with Keras."""
    from pipeline.export.tflite import agreement

    return {
        "clips": int(len(labels)),
        "accuracy": {name: float((s.argmax(1) == labels).mean()) for name, s in scores.items()},
        "top1_agreement_with_keras": {name: agreement(scores["keras"], s) for name, s in scores.items() if name != "keras"},
    }


def _int8_drops(scored: dict) -> dict[str, float]:
    """Accuracy points the int8 file loses against the float one, per scored set."""
    return {name: 100.0 * (v["accuracy"]["float"] - v["accuracy"]["int8"]) for name, v in scored.items()}


FALLBACKS = {"float_frontend": "dynamic_backbone", "dynamic_backbone": "float_backbone"}  # tflite.FLOAT_PART says each


def backbone_fallback(scheme: str, capabilities: frozenset[str], drops: dict[str, float], max_drop: float) -> str | None:
    """The scheme to redo the int8 file with, or None: only for a model on the speech embedding (capability
    `sequence`) whose int8 file loses more than `max_drop` points on some set. After the calibrated integer
    backbone (`float_frontend`) comes `dynamic_backbone` (int8 weights, inputs quantized per invoke), then
    `float_backbone` (only the classifier head int8); the gate applies to the last one."""
    over = "sequence" in capabilities and max(drops.values(), default=0.0) > max_drop
    return FALLBACKS.get(scheme) if over else None


def int8_fallbacks(info: dict, scored: dict, redo, capabilities: frozenset[str], max_drop: float) -> tuple[dict, dict]:
    """The int8 file's description and scores after backbone_fallback's schemes, tried in turn while the file loses
    more than `max_drop` points on some scored set: `redo(scheme)` converts again and returns (description,
    scores per set). A redone description records `fallback`: the first scheme, its lost points and every scheme
    tried; the calibration record stays only on a file whose ranges came from calibration clips."""
    drops, tried, calibration = _int8_drops(scored), [], info.get("calibration")
    while scheme := backbone_fallback(info["scheme"], capabilities, drops, max_drop):
        log.warning("int8 file (%s) %s; converting again as %s", info["scheme"], points_text(drops), scheme)
        tried.append({"scheme": info["scheme"], "lost_points": {k: round(v, 2) for k, v in drops.items()}})
        info, scored = redo(scheme)
        if scheme != "dynamic_backbone" and calibration is not None:  # dynamic ranges come from each invoke
            info["calibration"] = calibration
        info["fallback"] = {"from": tried[0]["scheme"], "lost_points": tried[0]["lost_points"], "tried": tried}
        drops = _int8_drops(scored)
        log.info("int8 file (%s) %s against the float file", scheme, points_text(drops))
    return info, scored


def points_text(drops: dict[str, float]) -> str:
    """'loses 1.27 pt on real_dev, gains 0.10 pt on testing': accuracy points lost per set (negative: gained)."""
    return ", ".join(f"{'gains' if value < 0 else 'loses'} {abs(value):.2f} pt on {name}" for name, value in drops.items())


def export_models(params: Params) -> dict:
    """Write models/export/* and return the report that becomes export.json."""
    from pipeline.export.serving import export_saved_model, saved_model_latency_ms
    from pipeline.export.tflite import convert, latency_ms
    from pipeline.inference import load_keras, load_saved_model, load_tflite

    out, feat, paths = params.paths.export, params.features, params.paths
    keras_predictor = load_keras(artifacts.MODEL.require(paths), feat, params.evaluate.batch_size)
    serving = keras_predictor.model
    saved = artifacts.SAVED_MODEL.path(paths)
    export_saved_model(serving, saved, keras_predictor.labels, feat.sample_rate, feat.preprocess,
                       params.evaluate.streaming.recognize())  # the settings its streaming figures were measured at
    shutil.copyfile(saved / "labels.txt", artifacts.EXPORT_LABELS.path(paths))
    int8_path = artifacts.TFLITE.path(paths, mode="int8")
    tflite = {"float": convert(saved, artifacts.TFLITE.path(paths, mode="float"), "float")}
    tflite["int8"], representative = calibrated_int8(params, saved, int8_path)
    sets = {"testing": _clips(params, "testing")}
    for spec in params.evaluate.extra_sets:  # the real-speech sets: does quantization hold on people, not only on the generator?
        if spec.path.is_dir():
            from pipeline.evaluate.sets import load_folder_set

            folder = load_folder_set(spec.path, params.labels, params.features.sample_rate, params.features.clip_samples)
            sets[spec.name] = (folder.audio, np.asarray(folder.labels, np.int64))
    predictors = {"keras": keras_predictor, "saved_model": load_saved_model(saved),
                  **{mode: load_tflite(artifacts.TFLITE.path(paths, mode=mode)) for mode in tflite}}  # fmt: skip
    raw = {name: _scores(predictors, audio) for name, (audio, _) in sets.items()}
    scored = {name: _compare(raw[name], labels) for name, (_, labels) in sets.items()}
    agree = scored["testing"]["top1_agreement_with_keras"]
    if agree["float"] < MIN_FLOAT_AGREEMENT or agree["saved_model"] < MIN_FLOAT_AGREEMENT:
        raise KwsError(f"exported models disagree with Keras on the testing set: {agree}")

    def redo(scheme: str) -> tuple[dict, dict]:  # only the int8 file changed: the other forms keep their scores
        from concurrent.futures import ThreadPoolExecutor

        info = convert(saved, int8_path, "int8", representative, scheme=scheme)
        predictors["int8"] = load_tflite(int8_path)
        with ThreadPoolExecutor(max_workers=len(sets), thread_name_prefix="litert") as pool:  # an interpreter a thread
            int8 = {name: pool.submit(load_tflite(int8_path).scores, audio) for name, (audio, _) in sets.items()}
            for name in sets:
                raw[name]["int8"] = int8[name].result()
        return info, {name: _compare(raw[name], labels) for name, (_, labels) in sets.items()}

    tflite["int8"], scored = int8_fallbacks(tflite["int8"], scored, redo, keras_predictor.capabilities,
                                            params.freeze.max_int8_drop)  # fmt: skip
    testing, test_audio = scored.pop("testing"), sets["testing"][0]
    extra = scored
    clip = np.asarray(test_audio[0], np.float32) / 32768.0
    repeats = params.freeze.latency_repeats
    latency = {
        "keras": latency_ms(lambda x: serving(x, training=False), clip, repeats=repeats),
        "saved_model": saved_model_latency_ms(saved, clip, threads=1, repeats=repeats),
        **{f"tflite_{mode}": latency_ms(predictors[mode].predict_fn, clip, repeats=repeats) for mode in tflite},
    }
    files = {p.name: p.stat().st_size for p in sorted(out.glob("*.tflite"))}
    files["saved_model"] = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file())
    report = {
        "labels": params.labels,
        "parameters": keras_predictor.info["parameters"],
        "clip_samples": params.features.clip_samples,
        "sample_rate": params.features.sample_rate,
        "saved_model": {"signature": "serving_default", "input": {"name": "audio", "dtype": "float32",
                        "shape": [None, params.features.clip_samples]}, "output": {"name": "scores", "dtype": "float32",
                        "shape": [None, len(params.labels)]}},  # fmt: skip
        "tflite": tflite,
        "bytes": files,
        "testing": testing,
        **extra,
        "latency_ms_1_thread": latency,
    }
    return report


def _example_wav(params: Params) -> bytes:
    import soundfile as sf

    audio, _ = _clips(params, "testing")
    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(audio[0]), params.features.sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def register_model(params: Params, report: dict) -> dict:
    """Log the pyfunc model to the training run, register it, point `challenger` at it and give it its model card."""
    from pipeline.tracking import Run
    from pipeline.tracking.card import card_summary, model_card, training_lines
    from pipeline.tracking.pyfunc import log_pyfunc
    from pipeline.tracking.registry import attach_card, logged_model_id, register, reuse_version, version_of_run

    paths = params.paths
    run_id = artifacts.RUN_ID.require(paths).read_text().strip()
    evaluation = json.loads(artifacts.EVALUATION.require(paths).read_text())
    train_metrics = json.loads(artifacts.TRAIN_METRICS.require(paths).read_text())
    name = params.freeze.registered_model_name
    existing = version_of_run(name, run_id)  # a rerun after a kill that followed the registration: one version per run
    if existing is not None:
        log.info("%s version %d is already registered from run %s: reused", name, existing[0], run_id)
        model_uri = existing[1]
    else:
        model_uri = log_pyfunc(run_id, artifacts.SAVED_MODEL.path(paths), artifacts.EXPORT_LABELS.path(paths),
                               _example_wav(params), params.features.sample_rate, params.evaluate.streaming.model_dump())  # fmt: skip
    run = Run.resume(run_id)
    run_tags = run.client.get_run(run_id).data.tags
    tags = {"model": params.train.model.name, "git_commit": run_tags.get("git_commit", "unknown")}
    if run_tags.get("dvc_exp_name"):
        tags["dvc_exp_name"] = run_tags["dvc_exp_name"]
    version = reuse_version(name, existing[0], tags) if existing is not None else register(name, model_uri, run_id, tags)
    for set_name in scored_sets(report):  # int8 figures beside the float ones: test/int8_accuracy, real_dev/int8_accuracy
        run.metrics({f"{'test' if set_name == 'testing' else set_name}/int8_accuracy": report[set_name]["accuracy"]["int8"]})
    run.tags({"export/tflite_int8_bytes": report["bytes"]["model_int8.tflite"], "registered_version": f"{name}/{version}"})
    run.artifact(artifacts.EXPORT_REPORT.path(paths), "export")
    if Path("dvc.lock").is_file():
        run.artifact(Path("dvc.lock"), "config")
    model_id = logged_model_id(model_uri)
    if model_id is not None:
        run.link_to_model(model_id)
    matrices = {}
    for set_name in evaluation:
        per_class = artifacts.PER_CLASS_JSON.path(paths, set=set_name)
        if per_class.is_file():
            matrices[set_name] = np.asarray(json.loads(per_class.read_text())["matrix"])
    card = model_card(name=name, version=version, run_name=run.name, run_id=run_id, model=params.train.model.name,
                      preprocess=params.features.preprocess, labels=params.labels,
                      sources=[s.model_dump(mode="json") for s in params.data.sources], evaluation=evaluation,
                      matrices=matrices, export=report,
                      threshold=params.evaluate.streaming.detection_threshold,
                      alarm_budget=params.evaluate.streaming.max_false_alarms_per_hour,
                      recognize=params.evaluate.streaming.recognize(),
                      training=training_lines(params.train, params.features, train_metrics.get("hard_negatives")))  # fmt: skip
    card_path = artifacts.MODEL_CARD.path(paths)
    write_text(card_path, card)
    attach_card(name, version, model_uri, run_id, card_path, card_summary(card))
    run.refresh_note()
    return {"name": name, "version": version, "alias": "challenger", "model_uri": model_uri, "run_id": run_id}


def scored_sets(report: dict) -> list[str]:
    """The labelled sets the exports were compared on: testing, then the extra (real-speech) sets."""
    return [name for name, value in report.items() if isinstance(value, dict) and "top1_agreement_with_keras" in value]


def summary_metrics(report: dict) -> dict:
    """The few export figures `dvc metrics show` should print (export.json keeps every detail)."""
    testing = report["testing"]
    return {
        "bytes": report["bytes"],
        "parameters": report["parameters"],
        "test_accuracy": testing["accuracy"],
        "agreement_with_keras": testing["top1_agreement_with_keras"],
        **{f"{name}_accuracy": report[name]["accuracy"] for name in scored_sets(report) if name != "testing"},
        "latency_median_ms": {name: round(v["median_ms"], 3) for name, v in report["latency_ms_1_thread"].items()},
    }


def export_space_needed(params: Params) -> int:
    """Bytes the exports need, estimated from the trained model: SavedModel, two TFLite files and the MLflow copy of
    the SavedModel, each at most a few times the Keras file (the frontend's weights, e.g. the speech embedding's
    ~1 MB, come on top), with a 50 MB floor for TensorFlow's temporary conversion files."""
    keras_file = params.paths.model / "model.keras"
    size = keras_file.stat().st_size if keras_file.exists() else 0
    frontend = 20_000_000 if params.features.preprocess == "speech_embedding" else 0
    return max(50_000_000, 8 * size + 4 * frontend)


def run_freeze(params: Params) -> dict:
    """Export, check, write export.json, then register the model version."""
    from pipeline.export.tflite import int8_gate
    from pipeline.tracking import Run

    paths = params.paths
    for needed in (artifacts.RUN_ID, artifacts.EVALUATION):  # checked before the minutes of export, not after
        needed.require(paths)
    # the registry and the train run are needed at the end: an unreachable server or a store without the run fails
    # now, in seconds (Run.resume checks the store answers, then that it holds the run)
    Run.resume(artifacts.RUN_ID.path(paths).read_text().strip())
    ensure_space(params.paths.export, export_space_needed(params), "the exports")
    for stale in (artifacts.REGISTERED, artifacts.MODEL_CARD):  # never leave an earlier run's record behind
        stale.path(paths).unlink(missing_ok=True)
    report = export_models(params)
    write_json(artifacts.EXPORT_REPORT.path(paths), report)
    write_json(artifacts.EXPORT_METRICS.path(paths), summary_metrics(report))
    int8 = report["tflite"]["int8"]
    schemes = [t["scheme"] for t in int8.get("fallback", {}).get("tried", [])] + [int8.get("scheme") or "int8"]
    for name in scored_sets(report):  # int8 may lose at most max_int8_drop points on every set, real speech included
        accuracy = report[name]["accuracy"]
        int8_gate(accuracy["float"], accuracy["int8"], params.freeze.max_int8_drop, name, schemes)
    registered = register_model(params, report)
    write_json(artifacts.REGISTERED.path(paths), registered)
    return {**report, "registered": registered}
