"""params.yaml as one typed, frozen pydantic model: the single source of truth for every stage."""

from __future__ import annotations

import os
import re
import types
from pathlib import Path
from typing import Annotated, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError
from pipeline.models.specs import MODEL_NAMES, DsCnnSpec, ModelSpec

COMMANDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
OTHER_WORDS = [
    "bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin", "nine", "one",
    "seven", "sheila", "six", "three", "tree", "two", "wow", "zero", "backward", "follow", "forward",
    "learn", "visual",
]  # fmt: skip
SILENCE_LABEL = "_silence_"
UNKNOWN_LABEL = "_unknown_"
BACKGROUND_NOISE_DIR = "_background_noise_"
SPEECH_COMMANDS_URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"

_WORD = re.compile(r"^[a-z][a-z']*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# `dvc exp run --temp` and `dvc exp run --queue` run the stages in a copy of the project made under
# <project>/.dvc/tmp/exps/ (…/standalone/<tmp>/ or …/<tmp>/); see dvc_experiment_project.
_EXPERIMENT_COPY = (".dvc", "tmp", "exps")


def dvc_experiment_project(cwd: Path | None = None) -> tuple[Path, Path] | None:
    """(project root, the copy's root) when `cwd` (default: the working directory) lies in the copy of a project
    that a temporary or queued DVC experiment runs in, else None."""
    here = (cwd or Path.cwd()).absolute()
    parts, size = here.parts, len(_EXPERIMENT_COPY)
    for i in range(len(parts) - size, 0, -1):  # the innermost copy
        if parts[i : i + size] == _EXPERIMENT_COPY:
            copy = next((p for p in (here, *here.parents) if len(p.parts) > i + size and (p / ".dvc").is_dir()), None)
            return None if copy is None else (Path(*parts[:i]), copy)
    return None


def project_path(path: Path, cwd: Path | None = None) -> Path:
    """`path` as the project means it. A relative path is read from the working directory (a DVC stage's: the
    project root) and returned unchanged, except in the copy of the project that `dvc exp run --temp` or `--queue`
    runs in (dvc_experiment_project): there a relative path not found in the copy, such as `../shared/data` beside
    the project, is the same path read from the project, returned absolute when it exists there. Without this such
    an experiment skipped the optional real sets with a warning, and `dvc exp show` gave it no real_dev figures.
    Absolute paths, paths found, and paths found nowhere (left to the stage's own error) are returned unchanged."""
    here = (cwd or Path.cwd()).absolute()
    if path.is_absolute() or (here / path).exists():
        return path
    moved = Path(project_store(str(path), here))  # unchanged, i.e. still relative, outside an experiment's copy
    return moved if moved.is_absolute() and moved.exists() else path


def project_store(path: str, cwd: Path | None = None) -> str:
    """Where a local store (the MLflow database, its artifact root) at relative `path` lives: in the project, also
    when a stage runs in a temporary or queued experiment's copy (dvc_experiment_project), whose files are deleted
    after the run, so its MLflow run would be lost and a later stage could not reopen it. Absolute paths and
    other places: unchanged."""
    found = dvc_experiment_project(cwd)
    if found is None or Path(path).is_absolute():
        return path
    project, copy = found
    return os.path.normpath(project / (cwd or Path.cwd()).absolute().relative_to(copy) / path)


def juggled(value: object, annotation: object) -> str | None:
    """Why `value` would reach a field typed `annotation` only through a type conversion pydantic's lax mode does
    silently (true -> 1.0, 1 -> true, "0.5" -> 0.5), or None when it needs none. Looks through Annotated, unions
    (fine if any member takes the value as it is) and lists; other types are left to pydantic."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return juggled(value, get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        reasons = [juggled(value, member) for member in get_args(annotation)]
        return None if any(reason is None for reason in reasons) else reasons[0]
    if origin is list and isinstance(value, list):
        (item,) = get_args(annotation) or (object,)
        return next((reason for reason in (juggled(v, item) for v in value) if reason), None)
    if annotation is type(None):
        return None if value is None else "not null"
    if annotation is bool and not isinstance(value, bool):
        return "expected true or false"
    if annotation in (int, float) and isinstance(value, bool | str):
        return "expected a number, not " + ("true/false" if isinstance(value, bool) else _text_kind(value))
    return None


def _text_kind(value: str) -> str:
    """"a quoted string" for a number written in quotes ("5"), "text" for a word (`steps: abc`, quoted or not)."""
    try:
        float(value)
    except ValueError:
        return "text"
    return "a quoted string"


class Strict(BaseModel):
    """Base: unknown keys are errors, a loaded config cannot be mutated, and a value of the wrong YAML type is an
    error rather than converted (`streaming: 1`, `background_volume: true`, `steps: ["2000"]`: juggled)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _same_yaml_types(cls, raw: object) -> object:
        if isinstance(raw, dict):  # a model validator: pydantic allows no field validator on a union's tag field
            for key, value in raw.items():
                field = cls.model_fields.get(key)
                reason = juggled(value, field.annotation) if field is not None else None
                if reason:
                    raise JuggledValue(key, value, reason)
        return raw


class JuggledValue(ValueError):
    """A params value of the wrong YAML type (juggled); _describe names it by its full key."""

    def __init__(self, key: str, value: object, reason: str):
        super().__init__(f"{reason} (got {value!r})")
        self.key = key


Percent = Annotated[float, Field(ge=0, le=100)]


class Paths(Strict):
    """Where each stage writes; dvc.yaml reads the same values through ${paths.*}."""

    raw: Path = Path("data/raw")
    downloads: Path = Path("data/downloads")
    split: Path = Path("data/split")
    features: Path = Path("data/features")
    reports: Path = Path("reports")
    model: Path = Path("models/train")
    backbone: Path = Path("models/backbone")  # the finetune stage's tuned convolutions (features.embedding.finetune)
    export: Path = Path("models/export")
    checkpoints: Path = Path(".cache/checkpoints")
    logs: Path = Path("logs")


class SourceSplit(Strict):
    """How one source's clips divide into sets; defaults are TensorFlow's `which_set` rule unchanged."""

    validation_percentage: Percent | None = None
    testing_percentage: Percent | None = None
    salt: str = ""
    assign: Literal["hash", "testing"] = "hash"

    def percentages(self, defaults: SplitParams) -> tuple[float, float]:
        """(validation, testing) percentages in force for this source: its own, else `split:`'s."""
        val = defaults.validation_percentage if self.validation_percentage is None else self.validation_percentage
        test = defaults.testing_percentage if self.testing_percentage is None else self.testing_percentage
        return val, test

    def sets(self, defaults: SplitParams) -> set[str]:
        """The sets this source can put clips into."""
        if self.assign == "testing":
            return {"testing"}
        val, test = self.percentages(defaults)
        return {"training"} | ({"validation"} if val > 0 else set()) | ({"testing"} if test > 0 else set())


class SyntheticSource(Strict):
    """Corpus generated offline by espeak-ng voices in the Speech Commands layout."""

    kind: Literal["synthetic"]
    name: str = "synthetic"
    speakers: int = Field(320, ge=1, le=5000)
    repetitions: int = Field(2, ge=1, le=20)
    noise_seconds: int = Field(60, ge=2, le=600)
    piper: bool = False  # + the neural Piper "joe" voice (one US male speaker)
    kokoro_blends: int = Field(0, ge=0, le=500)  # + this many seeded blends of the five Kokoro-82M voices
    kokoro_unknown_words: int | None = Field(None, ge=0)  # unknown words per blend (None: all); keywords always
    kokoro_male_share: float = Field(0.2, gt=0, lt=1)  # expected weight of the male style in a blend (0.2: styles alike)
    neural_repetitions: int = Field(1, ge=1, le=10)  # neural voices cost ~1 s a clip, espeak ~3 ms
    split: SourceSplit = SourceSplit()


class UrlSource(Strict):
    """A Speech Commands tar.gz archive fetched over HTTP(S), resumed, verified, safely extracted."""

    kind: Literal["url"]
    name: str = "speech_commands"
    url: str = SPEECH_COMMANDS_URL
    sha256: str = ""
    size: int | None = Field(None, ge=1)
    split: SourceSplit = SourceSplit()

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        if value and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("expected 64 hex digits or an empty string")
        return value.lower()


class LocalSource(Strict):
    """An existing folder in the Speech Commands layout or the official test-set layout."""

    kind: Literal["local"]
    name: str
    path: Path
    layout: Literal["auto", "speech_commands", "test_set"] = "auto"
    background_noise: Path | None = None
    split: SourceSplit = SourceSplit()

    @field_validator("path", "background_noise")
    @classmethod
    def _beside_project(cls, path: Path | None) -> Path | None:
        return None if path is None else project_path(path)


Source = Annotated[SyntheticSource | UrlSource | LocalSource, Field(discriminator="kind")]


class DataParams(Strict):
    """What the download stage materialises."""

    keywords: list[str] = Field(default_factory=lambda: list(COMMANDS), min_length=1)
    unknown_words: list[str] = Field(default_factory=lambda: list(OTHER_WORDS))
    # Near-miss other words ("so" for "no", "cup" for "up"): said by the generated voices, never trained on. The
    # testing speakers' clips join the non-keyword streaming recording (pipeline.evaluate.run), as often as each
    # other word; a source's folders of these words are held out the same way.
    confusable_words: list[str] = Field(default_factory=list)
    sources: list[Source] = Field(min_length=1)

    @field_validator("keywords", "unknown_words", "confusable_words")
    @classmethod
    def _words(cls, words: list[str]) -> list[str]:
        bad = [w for w in words if not _WORD.match(w)]
        if bad:
            raise ValueError(f"words must be lower-case English words, got {bad}")
        if len(set(words)) != len(words):
            raise ValueError("words must not repeat")
        return words

    @model_validator(mode="after")
    def _consistent(self) -> DataParams:
        overlap = sorted(set(self.keywords) & set(self.unknown_words))
        if overlap:
            raise ValueError(f"words in both keywords and unknown_words: {overlap}")
        for other in ("keywords", "unknown_words"):
            overlap = sorted(set(getattr(self, other)) & set(self.confusable_words))
            if overlap:
                raise ValueError(f"words in both {other} and confusable_words: {overlap} (data.confusable_words names "
                                 "near-misses the model never trains on: list your own words' near-misses, or [])")
        names = [s.name for s in self.sources]
        for name in names:
            if not _NAME.match(name):
                raise ValueError(f"source name {name!r} must be a simple folder name")
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        return self


class SplitParams(Strict):
    """TensorFlow's set partition and class balance, plus the data-quality gate."""

    validation_percentage: Percent = 10.0
    testing_percentage: Percent = 10.0
    unknown_percentage: Percent = 10.0
    silence_percentage: Percent = 10.0
    background_volume: float = Field(0.1, ge=0, le=1)
    min_rms: float = Field(0.002, ge=0)
    min_class_count: int = Field(1, ge=0)
    max_bad_fraction: float = Field(0.05, ge=0, le=1)

    @model_validator(mode="after")
    def _sum(self) -> SplitParams:
        if self.validation_percentage + self.testing_percentage >= 100:
            raise ValueError("validation_percentage + testing_percentage must be below 100")
        return self


class SpecAugment(Strict):
    """SpecAugment masks on the frontend output during training (Park et al. 2019, arXiv:1904.08779)."""

    enabled: bool = False
    time_masks: int = Field(2, ge=0)
    time_mask_frames: int = Field(10, ge=1)
    frequency_masks: int = Field(2, ge=0)
    frequency_mask_bins: int = Field(5, ge=1)


class FinetuneParams(Strict):
    """Fine-tuning the speech embedding's last convolutions on augmented training audio (the finetune stage,
    pipeline/features/finetune.py); every later stage then embeds with the tuned backbone. Off with `convs: 0`, the
    model's default for a params file that does not set it; params.yaml sets 9 and 500 steps."""

    convs: int = Field(0, ge=0, le=19)  # the last N of the backbone's 20 convolutions; its first block stays pretrained
    head_steps: int = Field(1000, ge=1)  # a head trained on the frozen backbone's clean embeddings first
    head_learning_rate: float = Field(0.001, gt=0, le=1)
    steps: int = Field(1000, ge=1)  # then the head and those convolutions together, on fresh augmented views
    learning_rate: float = Field(0.0001, gt=0, le=1)
    background_volume: float = Field(0.2, ge=0, le=1)  # the views' noise (features.background_frequency of them)
    checkpoint_every: int = Field(100, ge=1)


class EmbeddingParams(Strict):
    """The pretrained speech embedding (`preprocess: speech_embedding`): one 96-d vector every 80 ms; frozen, or
    its last convolutions fine-tuned first (`finetune`)."""

    pad_to_ms: int = Field(2000, ge=1000, le=4000)
    align: Literal["center", "end"] = "center"
    views: int = Field(3, ge=1, le=20)
    # what surrounds the clip in the padded window of the augmented views (1..views-1): `silence` (zeros, as a
    # clip is scored) or `noise` (the view's background noise spans the whole window, as in a recording)
    view_context: Literal["silence", "noise"] = "silence"
    # also embed every training view through the int8 backbone that model_int8.tflite ships, and train the head on
    # float and integer embeddings in turn (pipeline/export/integer.py): the int8 file then loses less accuracy.
    # Like `views`, it applies to the speech_embedding's training views only
    integer_views: bool = False
    finetune: FinetuneParams = FinetuneParams()
    # the finetune stage's weights file when finetune.convs > 0 (set by Params from `paths`; None: pretrained)
    _backbone: Path | None = PrivateAttr(None)

    @property
    def backbone_file(self) -> Path | None:
        """The fine-tuned convolutions' weights (.npz) every feature layer loads, or None for the pretrained backbone."""
        return self._backbone

    @model_validator(mode="after")
    def _integer_views_in_clip(self) -> EmbeddingParams:
        if self.integer_views and self.view_context != "silence":
            raise ValueError("integer_views needs view_context: silence (the int8 backbone takes clip-length audio)")
        return self


class FeaturesParams(Strict):
    """The one audio frontend (shared by training, evaluation, export, streaming) and augmentation."""

    sample_rate: int = Field(16000, ge=8000, le=48000)
    clip_duration_ms: int = Field(1000, ge=100, le=10000)
    preprocess: Literal["mfcc", "log_mel", "spectrogram", "embedding_mel", "speech_embedding"] = "mfcc"
    window_size_ms: float = Field(30.0, gt=0)
    window_stride_ms: float = Field(10.0, gt=0)
    feature_bin_count: int = Field(40, ge=1, le=512)
    lower_frequency_hz: float = Field(20.0, ge=0)
    upper_frequency_hz: float = Field(7000.0, gt=0)
    time_shift_ms: float = Field(100.0, ge=0)
    background_frequency: float = Field(0.8, ge=0, le=1)
    background_volume: float = Field(0.1, ge=0, le=1)
    spec_augment: SpecAugment = SpecAugment()
    embedding: EmbeddingParams = EmbeddingParams()

    @property
    def feature_shape(self) -> tuple[int, int]:
        """(time steps, values per step) of one clip's features: the models' input shape."""
        from pipeline.features.geometry import EMBEDDING_DIM, embedding_count

        if self.preprocess == "speech_embedding":
            padded = max(self.clip_samples, self.sample_rate * self.embedding.pad_to_ms // 1000)
            return embedding_count(padded), EMBEDDING_DIM
        return self.frames, self.feature_bin_count

    @property
    def clip_samples(self) -> int:
        return self.sample_rate * self.clip_duration_ms // 1000

    @property
    def window_samples(self) -> int:
        return int(self.sample_rate * self.window_size_ms / 1000)

    @property
    def stride_samples(self) -> int:
        return int(self.sample_rate * self.window_stride_ms / 1000)

    @property
    def frames(self) -> int:
        from pipeline.features.geometry import frame_count

        return frame_count(self.clip_samples, self.window_samples, self.stride_samples)

    @model_validator(mode="after")
    def _fits(self) -> FeaturesParams:
        if self.window_samples > self.clip_samples:
            raise ValueError("window_size_ms must not exceed clip_duration_ms")
        if self.upper_frequency_hz > self.sample_rate / 2 or self.lower_frequency_hz >= self.upper_frequency_hz:
            raise ValueError("need lower_frequency_hz < upper_frequency_hz <= sample_rate / 2")
        if self.preprocess == "spectrogram" and self.feature_bin_count > self.window_samples // 2 + 1:
            raise ValueError("spectrogram: feature_bin_count exceeds the FFT bins of one window")
        fixed = (self.sample_rate, self.window_samples, self.stride_samples, self.feature_bin_count)
        if self.preprocess == "speech_embedding" and self.sample_rate != 16000:
            raise ValueError("speech_embedding needs sample_rate 16000")
        if self.preprocess == "embedding_mel" and fixed != (16000, 512, 160, 32):  # the pretrained embedding's mel
            raise ValueError("embedding_mel is fixed: set sample_rate 16000, window_size_ms 32, window_stride_ms 10, feature_bin_count 32")
        return self


class HardNegatives(Strict):
    """A second training round on the first round's false alarms (pipeline/train/hard_negatives.py).

    The first round's head scores `hours` hours of recordings made of *training* clips and training noise (the
    `evaluate.streaming` recording settings); every 80 ms window at least `exclude_ms` from each keyword where a
    keyword scores above `min_score` joins the training set as `_unknown_` (another word within
    `unknown_within_ms`) or `_silence_`, and a new head trains from scratch on the set with them.
    """

    hours: float = Field(0.0, ge=0, le=24)  # 0: off (one round)
    min_score: float = Field(0.7, gt=0, lt=1)
    exclude_ms: float = Field(1200.0, ge=0)
    unknown_within_ms: float = Field(600.0, ge=0)


class TrainParams(Strict):
    """Model choice and the seed's schedule: `steps[i]` steps at `learning_rate[i]`."""

    model: ModelSpec = Field(default_factory=lambda: DsCnnSpec(name="ds_cnn"))
    steps: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [2400, 600], min_length=1)
    learning_rate: list[Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: [0.001, 0.0001], min_length=1)
    batch_size: int = Field(100, ge=1, le=4096)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # loss weight of `_unknown_` clips against 1 for every other class: with more other-word clips
    # (split.unknown_percentage) and a weight below 1, the model sees more varied negatives at the same prior
    unknown_weight: float = Field(1.0, gt=0, le=1)
    # each training clip a neural voice spoke (the split manifest's engine: piper or kokoro) enters every epoch this
    # many times: oversampling the few neural-voice clips against the many espeak ones; 1: every clip once
    neural_repeats: int = Field(1, ge=1, le=100)
    # exponential moving average of the weights (Polyak & Juditsky 1992; Keras' optimizer `use_ema`): the model
    # keeps avg <- m * avg + (1 - m) * w over every step instead of the last step's weights; null: off
    ema_momentum: float | None = Field(None, gt=0, lt=1)
    hard_negatives: HardNegatives = HardNegatives()
    eval_step_interval: int = Field(400, ge=1)
    save_step_interval: int = Field(100, ge=1)
    experiment: str = "kws"

    @field_validator("model", mode="before")
    @classmethod
    def _name_only(cls, value: object) -> object:
        """`train.model: conv` (e.g. `dvc exp run -S train.model=conv`) means that model with its defaults."""
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _pairs(self) -> TrainParams:
        if len(self.steps) != len(self.learning_rate):
            raise ValueError(f"steps and learning_rate need the same length, got {len(self.steps)} and {len(self.learning_rate)}")
        return self


class StreamParams(Strict):
    """Streaming recognition (TensorFlow's RecognizeCommands) and the long test recording it is scored on."""

    average_window_ms: float = Field(500.0, gt=0)
    detection_threshold: float = Field(0.7, ge=0, le=1)
    suppression_ms: float = Field(500.0, ge=0)
    minimum_count: int = Field(4, ge=1)
    # when the previous command's word may be reported again (pipeline.stream.recognize): release, once its averaged
    # score falls to the threshold or another word leads; other_command, TF's rule, only after another command
    # (in noise that never passes the threshold between words, TF's rule drops the second of two equal keywords)
    rearm: Literal["release", "other_command"] = "release"
    clip_stride_ms: float = Field(30.0, gt=0)
    # sequence: a speech-embedding model scores the shared 80 ms embedding sequence (each vector computed once);
    # windows: every clip_stride_ms window is scored alone (any model; the only mode for from-scratch models)
    mode: Literal["sequence", "windows"] = "sequence"
    time_tolerance_ms: float = Field(1500.0, gt=0)
    recording_seconds: float = Field(600.0, gt=0)
    word_interval_ms: float = Field(2000.0, gt=0)
    word_jitter_ms: float = Field(400.0, ge=0)
    unknown_fraction: float = Field(0.3, ge=0, le=1)
    background_volume: float = Field(0.1, ge=0, le=1)
    # the false-accept budget of the operating point reported beside the threshold sweep (matched % at <= this)
    max_false_alarms_per_hour: float = Field(10.0, ge=0)

    def recognize(self) -> dict:
        """The RECOGNIZE_SETTINGS of these params: what a model's streaming figures were measured at."""
        return {key: getattr(self, key) for key in RECOGNIZE_SETTINGS}


# RecognizeCommands' settings, the part of evaluate.streaming that belongs to a model rather than to the evaluate
# recording: the freeze stage writes them into the model card (`recognize`, pipeline.inference.model_card), and
# `kws stream` / `kws listen` apply them to that model unless a flag overrides one.
RECOGNIZE_SETTINGS = ("clip_stride_ms", "average_window_ms", "detection_threshold", "suppression_ms", "minimum_count", "rearm")


class ExtraSet(Strict):
    """A labelled folder of real recordings scored beside the testing set (e.g. `real_dev`)."""

    name: str
    path: Path
    layout: Literal["auto", "speech_commands", "test_set"] = "auto"
    optional: bool = True
    streaming: bool = False  # also stream a recording of its clips, made as the testing recording (pipeline.evaluate.run)

    @field_validator("path")
    @classmethod
    def _beside_project(cls, path: Path) -> Path:
        return project_path(path)


class SpeechFreeSet(Strict):
    """A folder of wav recordings that hold no speech (e.g. the real `_background_noise_`), streamed as recorded:
    every detection in them is a false accept."""

    name: str
    path: Path
    optional: bool = True

    @field_validator("path")
    @classmethod
    def _beside_project(cls, path: Path) -> Path:
        return project_path(path)


class EvaluateParams(Strict):
    """Test-set metrics, extra evaluation sets and streaming accuracy."""

    batch_size: int = Field(256, ge=1)
    extra_sets: list[ExtraSet] = Field(default_factory=list)
    streaming: StreamParams = StreamParams()
    speech_free_sets: list[SpeechFreeSet] = Field(default_factory=list)

    @field_validator("extra_sets")
    @classmethod
    def _unique(cls, sets: list[ExtraSet]) -> list[ExtraSet]:
        names = [s.name for s in sets]
        if len(set(names)) != len(names) or "testing" in names:
            raise ValueError(f"extra set names must be unique and not 'testing', got {names}")
        for name in names:
            if not _NAME.match(name):
                raise ValueError(f"extra set name {name!r} must be a simple file name")
        return sets


class FreezeParams(Strict):
    """Exports (SavedModel, TFLite float/int8) and registration in the MLflow model registry."""

    registered_model_name: str = Field("kws", min_length=1)
    max_int8_drop: float = Field(1.0, ge=0, le=100)
    representative_clips: int = Field(300, ge=10)
    calibration_draws: int = Field(3, ge=1, le=10)  # int8 calibration sets tried; the best on validation is kept
    latency_repeats: int = Field(50, ge=1)

    @field_validator("registered_model_name")
    @classmethod
    def _filterable(cls, name: str) -> str:
        """The name goes into MLflow filter strings (`name = '...'`), where a quote or backslash breaks them."""
        if any(c in name for c in "'\"\\"):
            raise ValueError(f"{name!r} holds a quote or backslash; use letters, digits, spaces, '-', '_' or '.'")
        return name


class Params(Strict):
    """The whole of params.yaml."""

    seed: int = Field(ge=0)
    paths: Paths = Paths()
    data: DataParams
    split: SplitParams = SplitParams()
    features: FeaturesParams = FeaturesParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    freeze: FreezeParams = FreezeParams()

    @model_validator(mode="after")
    def _cross_field(self) -> Params:
        """Rules between sections that a stage relies on, checked before any work (one line naming the keys)."""
        feat, split = self.features, self.split
        if self.train.model.name == "embedding_head" and feat.preprocess != "speech_embedding":
            raise ValueError("train.model embedding_head needs features.preprocess speech_embedding")
        if feat.preprocess == "speech_embedding" and feat.clip_duration_ms > feat.embedding.pad_to_ms:
            raise ValueError(
                f"features.clip_duration_ms ({feat.clip_duration_ms}) must not exceed features.embedding.pad_to_ms "
                f"({feat.embedding.pad_to_ms}): the embedding sees each clip padded to pad_to_ms"
            )
        if feat.embedding.finetune.convs:
            if feat.preprocess != "speech_embedding":
                raise ValueError(f"features.embedding.finetune.convs ({feat.embedding.finetune.convs}) needs "
                                 f"features.preprocess speech_embedding, not {feat.preprocess}: set it to 0")  # fmt: skip
            # artifacts.BACKBONE (not imported: check and download would depend on artifacts.py; a test ties them)
            feat.embedding._backbone = (self.paths.backbone / "backbone.npz").absolute()  # Ray workers read it too
        if feat.time_shift_ms >= feat.clip_duration_ms:
            raise ValueError(f"features.time_shift_ms ({feat.time_shift_ms:g}) must be below features.clip_duration_ms ({feat.clip_duration_ms})")
        if feat.spec_augment.enabled:
            frames, bins = feat.feature_shape
            masks = feat.spec_augment
            if masks.time_mask_frames > frames or masks.frequency_mask_bins > bins:
                raise ValueError(
                    f"features.spec_augment: time_mask_frames ({masks.time_mask_frames}) and frequency_mask_bins "
                    f"({masks.frequency_mask_bins}) must fit the features ({frames} frames x {bins} bins)"
                )
        for i, source in enumerate(self.data.sources):
            val, test = source.split.percentages(split)
            if source.split.assign == "hash" and val + test >= 100:
                raise ValueError(f"data.sources.{i}.split: validation + testing percentages ({val:g} + {test:g}) must be below 100")
        for name, key in (("validation", "validation_percentage"), ("testing", "testing_percentage")):
            if not any(name in s.split.sets(split) for s in self.data.sources):
                raise ValueError(
                    f"split.{key} is 0 and no source's split gives {name} clips: training needs a validation set and "
                    "evaluate a testing set (set a percentage above 0)"
                )
        if not self.data.unknown_words and all(s.kind == "synthetic" for s in self.data.sources):
            if split.unknown_percentage > 0 and split.min_class_count > 0:
                raise ValueError(
                    "data.unknown_words is empty but every source is synthetic: _unknown_ would get no clips "
                    "(add unknown words or set split.unknown_percentage 0 and split.min_class_count 0)"
                )
        neural = [s for s in self.data.sources if isinstance(s, SyntheticSource) and (s.piper or s.kokoro_blends)]
        if self.train.neural_repeats > 1 and not neural:
            raise ValueError(
                f"train.neural_repeats is {self.train.neural_repeats} but no data.sources entry has neural voices "
                "(a synthetic source with piper or kokoro_blends): set train.neural_repeats 1"
            )
        stream = self.evaluate.streaming
        mining = self.train.hard_negatives
        if mining.hours and feat.preprocess != "speech_embedding":
            raise ValueError(
                f"train.hard_negatives.hours ({mining.hours:g}) needs features.preprocess speech_embedding (the "
                f"windows are mined on its 80 ms sequence), not {feat.preprocess}: set train.hard_negatives.hours 0"
            )
        if mining.hours and mining.hours * 3_600_000 < stream.word_interval_ms:
            raise ValueError(
                f"train.hard_negatives.hours ({mining.hours:g}) must hold at least one "
                f"evaluate.streaming.word_interval_ms ({stream.word_interval_ms:g} ms), or be 0 (off)"
            )
        if stream.word_interval_ms - feat.clip_duration_ms < 2 * stream.word_jitter_ms:
            raise ValueError(
                f"evaluate.streaming.word_interval_ms ({stream.word_interval_ms:g}) must be at least "
                f"features.clip_duration_ms ({feat.clip_duration_ms}) plus twice word_jitter_ms ({stream.word_jitter_ms:g})"
            )
        if stream.recording_seconds * 1000 < stream.word_interval_ms:
            raise ValueError("evaluate.streaming.recording_seconds must hold at least one word_interval_ms")
        return self

    @property
    def labels(self) -> list[str]:
        """Class order of every model: silence, unknown, then the wanted words."""
        return [SILENCE_LABEL, UNKNOWN_LABEL, *self.data.keywords]


class ParamsLoader(yaml.SafeLoader):
    """YAML 1.2 booleans (true/false only), as DVC reads params: `yes`, `no`, `on`, `off` stay words."""


ParamsLoader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _describe(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    loc = first["loc"]
    # a discriminated union adds the tag (e.g. "synthetic") after the list index: not a key the user wrote
    where = ".".join(str(p) for i, p in enumerate(loc) if not (i and _is_tag(p, loc[i - 1])))
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, JuggledValue):  # raised by the model holding the key: name the key itself
        return f"{source}: {'.'.join(filter(None, [where, cause.key]))}: {cause}"
    got = first.get("input")
    # the value the user wrote, unless the message already says it ("got ..."): "greater than 0" is no echo of a 0
    echoed = re.search(r"\bgot\b", first["msg"]) is not None
    shown = "" if isinstance(got, dict | list) or got is None or echoed else f" (got {got!r})"
    more = f" [+{error.error_count() - 1} more]" if error.error_count() > 1 else ""
    message = first["msg"].removeprefix("Value error, ")  # our own rules' messages name their keys themselves
    if not where and first["type"] == "value_error":
        return f"{source}: {message}{more}"
    return f"{source}: {where or '<root>'}: {message}{shown}{more}"


_KINDS = {"synthetic", "url", "local"}


def _is_tag(part: object, before: object) -> bool:
    return (part in _KINDS and isinstance(before, int)) or (part in MODEL_NAMES and before == "model")


def parse_params(raw: object, source: str = "params.yaml") -> Params:
    """Validate an already-loaded mapping; raise ConfigError with a one-line message naming the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml before any work starts."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    try:
        raw = yaml.load(text, Loader=ParamsLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{line} is not valid YAML") from None
    return parse_params(raw, str(path))
