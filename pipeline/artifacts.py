"""Every file a DVC stage writes, named once: the stages write them, later stages and the CLI read them.

An artifact is a folder of `paths` (params.yaml `paths:`, the same values dvc.yaml reads as `${paths.*}`)
plus a name inside it; names with `{set}` or `{mode}` stand for one file per evaluation set or export mode.
`tests/unit/test_dvc_contract.py` checks that each stage's artifacts are among its `outs:` in dvc.yaml.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import DataError


def require(path: Path, stage: str) -> Path:
    """`path` if it exists; else DataError `<path>: not found; run the <stage> stage first`."""
    if not Path(path).exists():
        raise DataError(f"{path}: not found; run the {stage} stage first")
    return Path(path)


@dataclass(frozen=True)
class Artifact:
    """A file (or folder) written by `stage` at `paths.<root>/<name>`."""

    stage: str
    root: str  # a field of config.Paths
    name: str  # relative to that folder; may hold {set} / {mode} placeholders

    @property
    def fields(self) -> list[str]:
        """The placeholders in `name` (e.g. ["set"]), empty for a single file."""
        return [field for _, field, _, _ in string.Formatter().parse(self.name) if field]

    def path(self, paths, **fields: str) -> Path:
        """The artifact under `paths` (a config.Paths); `fields` fill the name's placeholders. KeyError if one is missing."""
        return Path(getattr(paths, self.root)) / self.name.format(**fields)

    def require(self, paths, **fields: str) -> Path:
        """`path(...)` if it exists; else DataError naming the file and the stage to run first."""
        return require(self.path(paths, **fields), self.stage)


# split: packed waveforms per set, the manifest, the class list and the data reports
MANIFEST = Artifact("split", "split", "manifest.parquet")
SPLIT_LABELS = Artifact("split", "split", "labels.txt")
SET_AUDIO = Artifact("split", "split", "{set}_audio.npy")  # int16 [clips, samples]
SET_LABELS = Artifact("split", "split", "{set}_labels.npy")  # int [clips], indices into labels.txt
SET_BACKGROUND = Artifact("split", "split", "background_{set}.npy")
# int16 [clips, samples]: the testing speakers' clips of data.confusable_words (held out of every set; streaming only)
CONFUSABLE_AUDIO = Artifact("split", "split", "testing_confusable_audio.npy")
CONFUSABLE_CLIPS = Artifact("split", "split", "testing_confusable.csv")  # path, word of each row above, in order
SPLIT_REPORT = Artifact("split", "reports", "split.json")  # counts per set and label (a plain output)
SPLIT_METRICS = Artifact("split", "reports", "split_metrics.json")  # a few totals for `dvc metrics`
QUARANTINE = Artifact("split", "reports", "quarantine.csv")
FILE_LEDGER = Artifact("split", "reports", "files.csv")  # every file of every source with its fate
VALIDATION_REPORT = Artifact("split", "reports", "validation.json")
DATA_DOCS = Artifact("split", "reports", "data_docs")

# features: fixed features of the evaluation sets (and training views of a frozen backbone)
SET_FEATURES = Artifact("features", "features", "{set}_features.npy")
FRONTEND = Artifact("features", "features", "frontend.json")
INTEGER_BACKBONE = Artifact("features", "features", "backbone_int8.tflite")  # with features.embedding.integer_views

# finetune: the speech embedding's tuned last convolutions (no weights with features.embedding.finetune.convs 0)
BACKBONE = Artifact("finetune", "backbone", "backbone.npz")  # convs, conv_<i>/kernel, conv_<i>/bias (tuned_arrays)
# a DVC metric: convs, steps, loss (the training objective: cross-entropy + the head's L2), seconds; a history entry
# per checkpoint
FINETUNE_REPORT = Artifact("finetune", "backbone", "finetune.json")
# train
MODEL = Artifact("train", "model", "model.keras")
HISTORY = Artifact("train", "model", "history.json")  # one entry per evaluation step (plots: training curves)
TRAIN_METRICS = Artifact("train", "model", "metrics.json")
TRAIN_LABELS = Artifact("train", "model", "labels.txt")
MODEL_SUMMARY = Artifact("train", "model", "summary.txt")
VALIDATION_CONFUSION = Artifact("train", "model", "validation_confusion.png")
RUN_ID = Artifact("train", "model", "run_id.txt")  # the MLflow run evaluate and freeze add to

# evaluate
EVALUATION = Artifact("evaluate", "reports", "evaluation.json")
EVALUATE_DIR = Artifact("evaluate", "reports", "evaluate")
CONFUSION_CSV = Artifact("evaluate", "reports", "evaluate/confusion_{set}.csv")  # actual,predicted per clip
CONFUSION_PNG = Artifact("evaluate", "reports", "evaluate/confusion_{set}.png")
PER_CLASS_JSON = Artifact("evaluate", "reports", "evaluate/per_class_{set}.json")
PER_CLASS_CSV = Artifact("evaluate", "reports", "evaluate/per_class_{set}.csv")  # label,precision,recall,f1,support
CLIPS_CSV = Artifact("evaluate", "reports", "evaluate/clips_{set}.csv")  # clip,label,predicted,correct (paired promotion)
STREAMING_TRUTH = Artifact("evaluate", "reports", "evaluate/streaming_truth.csv")
STREAMING_DETECTIONS = Artifact("evaluate", "reports", "evaluate/streaming_detections.csv")
STREAMING_SWEEP = Artifact("evaluate", "reports", "evaluate/streaming_sweep.csv")  # threshold, matched %, false alarms/h
STREAMING_SWEEP_PNG = Artifact("evaluate", "reports", "evaluate/streaming_sweep.png")
STREAMING_SWEEP_SET = Artifact("evaluate", "reports", "evaluate/streaming_sweep_{set}.csv")  # an extra set's recording

# freeze
SAVED_MODEL = Artifact("freeze", "export", "saved_model")
TFLITE = Artifact("freeze", "export", "model_{mode}.tflite")  # mode: float | int8
EXPORT_LABELS = Artifact("freeze", "export", "labels.txt")
EXPORT_REPORT = Artifact("freeze", "export", "export.json")
EXPORT_METRICS = Artifact("freeze", "export", "metrics.json")
REGISTERED = Artifact("freeze", "export", "registered.json")
MODEL_CARD = Artifact("freeze", "export", "model_card.md")

ARTIFACTS: dict[str, Artifact] = {name: value for name, value in globals().items() if isinstance(value, Artifact)}


def written_by(stage: str) -> list[Artifact]:
    """The artifacts a stage writes, in declaration order."""
    return [artifact for artifact in ARTIFACTS.values() if artifact.stage == stage]
