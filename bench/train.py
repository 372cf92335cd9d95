#!/usr/bin/env python
"""Benchmark: training speed (steps/s) and time to a validation accuracy, per architecture (not a test).

Usage:
    uv run python bench/train.py                              # every model, 90 s of wall time each
    uv run python bench/train.py --models ds_cnn conv --target 0.8 --max-seconds 120
    uv run python bench/train.py --models tiny_conv --max-seconds 30 --save /tmp/bench_models -v

Runs the train stage's step (pipeline/train/loop.py: the seed's batch order and learning-rate schedule, fresh
augmentation + the shared feature layer inside the step, forward and backward pass, weight regularisers) on the
split / features stages' data (paths.split, paths.features of params.yaml; `dvc repro features` makes them).
Every `--eval-every` steps the validation features are scored; a model stops when `--max-seconds` of wall time
(training + evaluation) are spent, after all of train.steps (as the train stage), or at the target with
`--stop-at-target`.

Feature layer per model: `embedding_head` trains on the frozen speech embedding's precomputed training views
(preprocess speech_embedding), every other architecture from scratch on a tf.signal frontend: params.yaml's
preprocess, or `--preprocess` (default mfcc) when params.yaml says speech_embedding. Features that
paths.features does not hold for that configuration (per its frontend.json) are computed here from paths.split
with the pipeline's own extraction, once per configuration; that time is reported, not counted as training.

Reported per model: parameters, steps/s (training steps only, after the first step, which traces the graph),
seconds and steps to reach `--target` validation accuracy or null (seconds count training steps only: no
evaluation, no tracing; resolution `--eval-every` steps), the best validation accuracy within the budget, and
the final model's top-1 on real clips (`--real`, default the real_dev extra set of params.yaml when present):
generated validation accuracy says little about people.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import machine_facts  # noqa: E402
from pipeline.config import Params, load_params, parse_params  # noqa: E402
from pipeline.errors import DataError, KwsError  # noqa: E402
from pipeline.fileio import write_json  # noqa: E402
from pipeline.metrics import accuracy  # noqa: E402
from pipeline.models import MODEL_NAMES  # noqa: E402

EMBEDDING_MODEL, EMBEDDING_PREPROCESS = "embedding_head", "speech_embedding"  # only with each other
SCRATCH_MODES = ("mfcc", "log_mel", "spectrogram", "embedding_mel")


def model_params(base: Params, name: str, scratch_preprocess: str | None) -> Params:
    """params.yaml with `train.model` = this architecture (params.yaml's spec if it names it, else defaults)
    and the feature layer it trains on."""
    raw = base.model_dump(mode="json")
    feat = raw["features"]
    if name == EMBEDDING_MODEL:
        feat["preprocess"] = EMBEDDING_PREPROCESS
    elif scratch_preprocess is not None:
        feat["preprocess"] = scratch_preprocess
    elif feat["preprocess"] == EMBEDDING_PREPROCESS:
        feat["preprocess"] = "mfcc"
    raw["train"]["model"] = raw["train"]["model"] if base.train.model.name == name else {"name": name}
    if feat["preprocess"] != EMBEDDING_PREPROCESS:  # hard negatives are mined on the embedding's sequence only
        raw["train"]["hard_negatives"]["hours"] = 0
    return parse_params(raw, f"params.yaml (benchmark of {name})")


def _stored_features_match(params: Params) -> bool:
    """Whether paths.features was made for exactly these features settings."""
    try:
        stored = json.loads((params.paths.features / "frontend.json").read_text(encoding="utf-8"))["params"]
    except (OSError, ValueError, KeyError):
        return False
    return stored == params.features.model_dump(mode="json")


def prepare_data(params: Params, cache: dict) -> tuple[object, str, float]:
    """(TrainData, where its features came from, seconds spent computing features here), cached per settings."""
    from pipeline.train.loop import TrainData, epoch_rows, load_train_data

    key = json.dumps(params.features.model_dump(mode="json"), sort_keys=True)
    if key in cache:
        return cache[key][0], cache[key][1], 0.0
    if _stored_features_match(params):
        data, source, seconds = load_train_data(params), str(params.paths.features), 0.0
    else:
        from pipeline.features.extract import training_views
        from pipeline.features.layers import extract

        split = params.paths.split
        files = [split / f"{n}.npy" for n in ("training_audio", "training_labels", "background_training",
                                              "validation_audio", "validation_labels")]  # fmt: skip
        missing = [str(p) for p in files if not p.exists()]
        if missing:
            raise DataError(f"missing {', '.join(missing)}: run the split stage first")
        audio, labels, noise, val_audio, val_labels = (np.load(p, mmap_mode="r") for p in files)
        if len(audio) == 0:
            raise DataError(f"{files[0]}: the training set is empty")
        print(f"  computing {params.features.preprocess} features ({params.paths.features} holds other settings)",
              flush=True)  # fmt: skip
        start = time.perf_counter()
        val_features = extract(np.asarray(val_audio), params.features)
        views = training_views(params) if params.features.preprocess == EMBEDDING_PREPROCESS else None
        seconds = time.perf_counter() - start
        data = TrainData(audio, np.asarray(labels, np.int32), np.asarray(noise, np.float32) / 32768.0,
                         np.asarray(val_features, np.float32), np.asarray(val_labels, np.int32), files)  # fmt: skip
        data.views = views  # set after construction: older TrainData has no `views` field
        data.epoch = epoch_rows(params, len(labels))  # train.neural_repeats, as the train stage samples
        source = "computed by the benchmark from " + str(split)
    cache[key] = (data, source)
    return data, source, seconds


def real_features(params: Params, folder, cache: dict):
    """Features of the real clips (folder set) for this run's frontend, computed once per feature setting."""
    from pipeline.features.layers import extract

    key = ("real", params.features.model_dump_json())
    if key not in cache:
        cache[key] = extract(folder.audio, params.features)
    return cache[key]


def bench_model(params: Params, data, name: str, args: argparse.Namespace, real=None) -> dict:
    """Train one architecture from scratch within the budget; return its row (with `real_accuracy` on the
    real clips `real` = (features, labels) when given)."""
    import keras
    import tensorflow as tf

    from pipeline.models import build_model
    from pipeline.train.loop import _optimizer, evaluate_features, make_step
    from pipeline.train.schedule import learning_rate_at, total_steps

    cfg, feat, labels = params.train, params.features, params.labels
    views = getattr(data, "views", None)
    shape = tuple(data.val_features.shape[1:])
    keras.utils.set_random_seed(params.seed)
    model = build_model(cfg.model, shape, len(labels))
    optimizer = _optimizer(params)
    step_fn = make_step(params, model, optimizer, data.noise, precomputed=views is not None)

    total = total_steps(cfg.steps)  # the train stage stops there too
    history, best, reached, stopped = [], 0.0, None, "budget"
    train_s, eval_s, first_step_s, window = 0.0, 0.0, 0.0, []
    began = time.perf_counter()
    step = 0
    while True:
        optimizer.learning_rate.assign(learning_rate_at(step, cfg.steps, cfg.learning_rate))
        rows = data.batch_rows(args.batch, params.seed, step)
        if views is None:
            inputs = tf.constant(data.audio[rows].astype(np.float32) / 32768.0)
        else:
            inputs = tf.constant(views[step % len(views), rows])
        start = time.perf_counter()
        loss, correct = step_fn(inputs, tf.constant(data.labels[rows]), tf.constant(step, tf.int64))
        window.append((float(loss), float(correct)))  # float() waits for the step to finish
        elapsed = time.perf_counter() - start
        if step == 0:
            first_step_s = elapsed  # graph tracing + the first step: not in steps/s nor in time to target
        else:
            train_s += elapsed
        step += 1
        out_of_time = time.perf_counter() - began >= args.max_seconds
        if step % args.eval_every == 0 or out_of_time or step == total:
            start = time.perf_counter()
            matrix, val_loss = evaluate_features(model, data.val_features, data.val_labels, len(labels))
            eval_s += time.perf_counter() - start
            acc = accuracy(matrix)
            train_loss, train_acc = np.mean(window, axis=0)
            window = []
            history.append({"step": step, "train_seconds": round(train_s, 2), "validation_accuracy": round(acc, 4),
                            "validation_loss": round(val_loss, 4), "train_accuracy": round(float(train_acc), 4),
                            "train_loss": round(float(train_loss), 4)})  # fmt: skip
            best = max(best, acc)
            if reached is None and acc >= args.target:
                reached = {"steps": step, "seconds": round(train_s, 2),
                           "wall_seconds": round(time.perf_counter() - began, 2)}  # fmt: skip
            if args.verbose:
                print(f"  {name} step {step}: validation accuracy {acc:.1%} after {train_s:.1f} s", flush=True)
            if reached is not None and args.stop_at_target:
                stopped = "target"
            elif step == total:
                stopped = "schedule"
            elif not out_of_time:
                continue
            break
    if args.save is not None:
        path = args.save / name / "model.keras"
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
    timed = step - 1
    real_accuracy = None
    if real is not None:
        matrix, _ = evaluate_features(model, real[0], real[1], len(labels))
        real_accuracy = round(accuracy(matrix), 4)
    return {
        "real_accuracy": real_accuracy,
        "spec": cfg.model.model_dump(mode="json"),
        "preprocess": feat.preprocess,
        "feature_shape": list(shape),
        "parameters": int(model.count_params()),
        "steps": step,
        "stopped": stopped,  # budget | target (--stop-at-target) | schedule (all of train.steps done)
        "steps_per_second": round(timed / train_s, 2) if train_s > 0 else None,
        "clips_per_second": round(timed * args.batch / train_s, 1) if train_s > 0 else None,
        "first_step_seconds": round(first_step_s, 2),
        "train_seconds": round(train_s, 2),
        "eval_seconds": round(eval_s, 2),
        "wall_seconds": round(time.perf_counter() - began, 2),
        "seconds_to_target": reached["seconds"] if reached else None,
        "steps_to_target": reached["steps"] if reached else None,
        "wall_seconds_to_target": reached["wall_seconds"] if reached else None,
        "best_validation_accuracy": round(best, 4),
        "final_validation_accuracy": history[-1]["validation_accuracy"],
        "history": history,
    }


def _fmt(value, spec: str, width: int) -> str:
    return f"{'-':>{width}s}" if value is None else f"{value:{width}{spec}}"


def main(argv: list[str] | None = None) -> int:
    """Benchmark the chosen architectures, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES, metavar="NAME",
                        help=f"architectures to train (default: all of {', '.join(MODEL_NAMES)})")  # fmt: skip
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--preprocess", choices=SCRATCH_MODES, default=None,
                        help="frontend of the from-scratch models (default: params.yaml's, mfcc if that is speech_embedding)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=100, help="clips per training step (default 100)")
    parser.add_argument("--target", type=float, default=0.8, help="validation accuracy to reach (fraction, default 0.8)")
    parser.add_argument("--max-seconds", type=float, default=90.0,
                        help="wall-time budget per model, training + evaluation (default 90: all models in ~14 min)")  # fmt: skip
    parser.add_argument("--eval-every", type=int, default=50, help="steps between validation evaluations (default 50)")
    parser.add_argument("--stop-at-target", action="store_true", help="stop a model as soon as it reaches the target")
    parser.add_argument("--save", type=Path, default=None, help="save each trained model as SAVE/<name>/model.keras")
    parser.add_argument("--verbose", "-v", action="store_true", help="print every evaluation")
    parser.add_argument("--real", type=Path, default=None,
                        help="folder of real labelled clips to score each trained model on (default: the real_dev "
                             "extra set of params.yaml when present; 'none' to skip)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("bench/results/train.json"))
    args = parser.parse_args(argv)
    if not 0 < args.target <= 1:
        parser.error("--target is a fraction in (0, 1]")
    if args.batch < 1 or args.eval_every < 1 or args.max_seconds <= 0:
        parser.error("--batch, --eval-every and --max-seconds must be positive")

    try:
        base = load_params(args.params)
        runs = [(name, model_params(base, name, args.preprocess)) for name in args.models]
    except KwsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    import keras
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()  # as the train stage runs
    results: dict = {
        **machine_facts(),
        "keras": keras.__version__,
        "settings": {"batch": args.batch, "target": args.target, "max_seconds": args.max_seconds,
                     "eval_every": args.eval_every, "stop_at_target": args.stop_at_target,
                     "optimizer": base.train.optimizer, "learning_rate": base.train.learning_rate,
                     "schedule_steps": base.train.steps, "op_determinism": True},
        "models": {},
    }  # fmt: skip
    print(f"batch {args.batch}, target {args.target:.0%}, {args.max_seconds:g} s per model, "
          f"{os.cpu_count()} CPUs, TensorFlow {tf.__version__}", flush=True)  # fmt: skip
    header = (f"{'model':17s} {'features':>16s} {'params':>8s} {'steps/s':>8s} {'clips/s':>8s} {'steps':>6s} "
              f"{'s->tgt':>7s} {'steps->tgt':>10s} {'best val':>9s} {'real':>6s}")  # fmt: skip
    cache: dict = {}
    rows = []
    real_dir = args.real or next((s.path for s in base.evaluate.extra_sets if s.name == "real_dev"), None)
    folder = None
    if real_dir is not None and str(real_dir) != "none" and Path(real_dir).is_dir():
        from pipeline.evaluate.sets import load_folder_set

        folder = load_folder_set(Path(real_dir), base.labels, base.features.sample_rate, base.features.clip_samples)
        results["real"] = {"path": str(real_dir), "clips": len(folder.labels)}
    for name, params in runs:
        try:
            data, source, precompute_s = prepare_data(params, cache)
        except KwsError as error:
            print(f"error: {error}\n(create the data with: DVC_NO_ANALYTICS=1 uv run dvc repro features)", file=sys.stderr)
            return 1
        if not rows:
            print(f"{len(data.audio)} training clips, {len(data.val_labels)} validation clips\n{header}", flush=True)
        real = None if folder is None else (real_features(params, folder, cache), np.asarray(folder.labels, np.int64))
        row = bench_model(params, data, name, args, real)
        row.update(features_source=source, feature_precompute_seconds=round(precompute_s, 2) if precompute_s else None,
                   training_clips=int(len(data.audio)), validation_clips=int(len(data.val_labels)))  # fmt: skip
        results["models"][name] = row
        rows.append(row)
        print(
            f"{name:17s} {row['preprocess']:>16s} {row['parameters']:8d} {_fmt(row['steps_per_second'], '.2f', 8)} "
            f"{_fmt(row['clips_per_second'], '.0f', 8)} {row['steps']:6d} {_fmt(row['seconds_to_target'], '.1f', 7)} "
            f"{_fmt(row['steps_to_target'], 'd', 10)} {row['best_validation_accuracy']:9.1%} "
            f"{_fmt(None if row['real_accuracy'] is None else 100 * row['real_accuracy'], '.1f', 6)}",
            flush=True,
        )
    results["load_average_1m_after"] = round(os.getloadavg()[0], 2)  # other processes skew steps/s
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
