"""One way to score audio: a `Predictor` for every form of a trained model, described by the model itself.

`load_model(spec)` takes
* an export folder (`saved_model/` inside), a SavedModel folder or a downloaded MLflow model folder (`MLmodel`);
* a `.tflite` file (float or int8: float audio in, float scores out) — loaded with `ai_edge_litert` and numpy
  only, TensorFlow is never imported on that path;
* `models:/NAME@ALIAS`, `models:/NAME/VERSION` or `models:/m-ID` (pipeline.tracking.registry.download_model);
* a `.keras` classifier (features -> logits, for development): labels from the `labels.txt` the train stage wrote
  beside it, the frontend from the `features` given by the caller (the only form that needs them).

Labels, sample rate, clip length and streaming geometry come from the artifact: the model card `kws.json`
(`assets/kws.json` inside a SavedModel, an associated file zipped onto the end of a `.tflite`, as TFLite Support
packs labels) and `labels.txt`; never from params.yaml. The card also records the RecognizeCommands settings the
model's streaming figures were measured at (`recognize`), which `kws stream` / `kws listen` apply. Every scorer in
the project — the CLI, evaluate, freeze's export checks, the MLflow pyfunc model, the benches — goes through
`Predictor.scores` / `detect`.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.audio import Clip, as_float, read_audio
from pipeline.errors import KwsError

if TYPE_CHECKING:
    from pipeline.config import FeaturesParams, StreamParams
    from pipeline.stream.recognize import Detection

log = logging.getLogger(__name__)

SIGNATURE = "serving_default"
EMBED_SIGNATURE = "embed_sequence"  # audio [1, S] (any length, unpadded) -> embeddings [1, M, 96]
HEAD_SIGNATURE = "head"  # embeddings [B, N, 96] -> scores [B, C]
INPUT_NAME = "audio"
OUTPUT_NAME = "scores"
EMBEDDINGS_NAME = "embeddings"
LABELS_FILE = "labels.txt"
CARD_FILE = "kws.json"  # the model card: labels, sample_rate, clip_samples, preprocess, streaming geometry
CARD_FORMAT = 1
Progress = Callable[[int, int], None]  # (done, total) units of work


def model_card(labels: list[str], sample_rate: int, clip_samples: int, preprocess: str,
               streaming: dict | None = None, recognize: dict | None = None) -> dict:  # fmt: skip
    """What a Predictor needs to know about an exported model; `streaming` is {hop, span, window_vectors} (samples,
    samples, vectors) for a model that scores a shared embedding sequence, else None; `recognize` the
    RecognizeCommands settings its streaming figures were measured at (pipeline.config.RECOGNIZE_SETTINGS: ms,
    a threshold in [0, 1], a count, a re-arm rule), else None."""
    return {"format": CARD_FORMAT, "labels": list(labels), "sample_rate": int(sample_rate),
            "clip_samples": int(clip_samples), "preprocess": preprocess, "streaming": streaming,
            "recognize": recognize}  # fmt: skip


def card_archive(card: dict) -> bytes:
    """`kws.json` and `labels.txt` as a zip, appended to a .tflite (TFLite Support's associated files): the
    interpreter ignores bytes after the flatbuffer, `zipfile` finds the archive from the end of the file."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr(CARD_FILE, json.dumps(card, indent=2))
        z.writestr(LABELS_FILE, "".join(f"{label}\n" for label in card["labels"]))
    return archive.getvalue()


def read_tflite_card(path: Path) -> dict | None:
    """The model card zipped onto a .tflite, or None when the file carries none. Raises KwsError for a card that
    is not a JSON object (a damaged file must not pass for one without a card)."""
    try:
        with zipfile.ZipFile(path) as z:
            text = z.read(CARD_FILE)
    except (zipfile.BadZipFile, KeyError, OSError):
        return None
    return _card(text, f"{path}: its model card {CARD_FILE}")


def read_saved_model_card(folder: Path) -> dict | None:
    """The model card in a SavedModel's assets, or None (an export made before cards existed). Raises KwsError for
    a card that is not a JSON object."""
    try:
        text = (Path(folder) / "assets" / CARD_FILE).read_bytes()
    except OSError:
        return None
    return _card(text, f"{folder}/assets/{CARD_FILE}")


def _card(text: bytes, where: str) -> dict:
    try:
        card = json.loads(text)
    except ValueError as error:
        raise KwsError(f"{where} is not valid JSON ({_first_line(error)}); re-run the freeze stage") from None
    if not isinstance(card, dict):
        raise KwsError(f"{where} is not a JSON object; re-run the freeze stage")
    return card


def card_recognize(card: dict | None, where: Path) -> dict | None:
    """The RecognizeCommands settings a model card records (`recognize`, see model_card), each checked as an
    evaluate.streaming value; None when it records none. Raises KwsError naming the first unknown or invalid one."""
    recorded = (card or {}).get("recognize")
    if not recorded:
        return None
    from pydantic import ValidationError

    from pipeline.config import RECOGNIZE_SETTINGS, StreamParams

    if not isinstance(recorded, dict):
        raise KwsError(f"{where}: its model card's recognize is not a mapping of settings; re-run the freeze stage")
    for key, value in recorded.items():
        if key not in RECOGNIZE_SETTINGS:
            raise KwsError(f"{where}: its model card's recognize.{key} is not a RecognizeCommands setting (expected "
                           f"{', '.join(RECOGNIZE_SETTINGS)}); re-run the freeze stage")  # fmt: skip
        try:
            StreamParams.model_validate({key: value})
        except ValidationError as error:
            message = error.errors()[0]["msg"].removeprefix("Value error, ")
            raise KwsError(f"{where}: its model card's recognize.{key}: {message}; re-run the freeze stage") from None
    return dict(recorded)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class Predictor:
    """Float audio [B, clip_samples] at `sample_rate` in, class scores [B, len(labels)] out, for any model form.

    Capabilities are declared in `capabilities`: "clips" (always), "sequence" (scores a long recording on the
    shared embedding sequence), "features" (scores precomputed features: the Keras classifier)."""

    kind: str  # saved_model | tflite | keras
    path: Path
    labels: list[str]
    sample_rate: int
    clip_samples: int
    predict_fn: Callable[[np.ndarray], np.ndarray]
    info: dict = field(default_factory=dict)
    batch_size: int = 256
    sequence_fn: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None  # (audio [S], progress) -> scores, times
    features_fn: Callable[[np.ndarray], np.ndarray] | None = None  # features [B, T, F] -> scores [B, C]
    describe_fn: Callable[[], dict] | None = None  # facts that cost time to gather (op counts), for `kws inspect`
    stream_geometry: dict | None = None  # sequence models: {hop, span, window_vectors} (samples, samples, vectors)
    model: object | None = None  # Keras only: the serving model (audio -> {scores}) that the freeze stage exports
    recognize: dict | None = None  # the RecognizeCommands settings its model card records (card_recognize), if any

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({"clips"} | ({"sequence"} if self.sequence_fn else set())
                         | ({"features"} if self.features_fn else set()))  # fmt: skip

    def read(self, source: str | Path | bytes, whole: bool = False) -> Clip:
        """A file or wav bytes at this model's rate: one clip (padded/trimmed), or the whole recording."""
        return read_audio(source, self.sample_rate, None if whole else self.clip_samples)

    def scores(self, audio: np.ndarray) -> np.ndarray:
        """Scores [B, C] float32 for audio [B, S] or one clip [S] (int16 is scaled to [-1, 1])."""
        audio = np.asarray(audio)  # a memory-mapped int16 set stays on disk: converted batch by batch
        if audio.ndim == 1:
            audio = audio[None]
        if audio.ndim != 2 or audio.shape[1] != self.clip_samples:
            raise KwsError(f"expected audio [batch, {self.clip_samples}], got shape {audio.shape}")
        parts = [np.asarray(self.predict_fn(np.ascontiguousarray(as_float(audio[i : i + self.batch_size]))), np.float32)
                 for i in range(0, len(audio), self.batch_size)]  # fmt: skip
        return np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), np.float32)

    def scores_from_features(self, features: np.ndarray) -> np.ndarray:
        """Scores [B, C] from precomputed features [B, T, F] (the features stage's arrays); Keras models only."""
        if self.features_fn is None:
            raise KwsError(f"{self.path}: a {self.kind} model takes audio, not precomputed features")
        parts = [np.asarray(self.features_fn(features[i : i + self.batch_size]), np.float32)
                 for i in range(0, len(features), self.batch_size)]  # fmt: skip
        return np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), np.float32)

    def stream_mode(self, settings: StreamParams) -> str:
        """`sequence` when the settings ask for it and the model can, else `windows` (pipeline.stream.run)."""
        from pipeline.stream.run import stream_mode

        return stream_mode(settings, self.sequence_fn)

    def stream_scores(self, audio: np.ndarray, settings: StreamParams, progress: Progress | None = None):
        """(scores [N, C], END times [N] in ms) over a long recording [S], in the mode `stream_mode` chooses."""
        from pipeline.stream.run import recording_scores

        return recording_scores(as_float(audio).reshape(-1), self.scores, settings, self.sample_rate,
                                clip_samples=self.clip_samples, batch_size=self.batch_size,
                                sequence_fn=self.sequence_fn, progress=progress)  # fmt: skip

    def detect(self, audio: np.ndarray, settings: StreamParams, progress: Progress | None = None) -> list[Detection]:
        """Commands heard in a recording of any length [S], smoothed by RecognizeCommands (`settings`)."""
        from pipeline.stream.run import recognize

        scores, times_ms = self.stream_scores(audio, settings, progress)
        return recognize(scores, times_ms, self.labels, settings)

    def describe(self) -> dict:
        """What `kws inspect` shows: kind, tensors, labels, sizes, parameters, quantization, provenance."""
        extra = self.describe_fn() if self.describe_fn else {}
        return {"kind": self.kind, "path": str(self.path), "labels": list(self.labels), "sample_rate": self.sample_rate,
                "clip_samples": self.clip_samples, "capabilities": sorted(self.capabilities), **self.info, **extra}  # fmt: skip


def _tensor(name: str, shape, dtype) -> dict:
    return {"name": name, "shape": [None if d is None or d < 0 else int(d) for d in shape], "dtype": str(dtype)}


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _labels(folder: Path, classes: int, card: dict | None, where: Path) -> list[str]:
    """Labels from the model card, else labels.txt beside the model; never from params.yaml."""
    if card and card.get("labels"):
        labels, source = list(card["labels"]), f"{where} (model card)"
    elif (folder / LABELS_FILE).is_file():
        labels, source = (folder / LABELS_FILE).read_text(encoding="utf-8").split(), str(folder / LABELS_FILE)
    else:
        raise KwsError(f"{where}: carries no labels and no {LABELS_FILE} lies beside it; copy the export's {LABELS_FILE}")
    if len(labels) != classes:
        raise KwsError(f"{source}: {len(labels)} labels for a model with {classes} scores")
    return labels


def _sample_rate(card: dict | None, export: dict | None, where: Path) -> int:
    for facts in (card, export):
        if facts and facts.get("sample_rate"):
            return int(facts["sample_rate"])
    raise KwsError(f"{where}: no sample rate in its model card or export.json; re-run the freeze stage")


def _export_facts(export: dict | None) -> dict:
    """The parts of export.json worth showing beside a model that came from that export."""
    if not export:
        return {}
    facts = {"parameters": export.get("parameters"), "parameters_source": "export.json"}
    if export.get("testing"):
        facts["export_testing"] = export["testing"]
    if export.get("bytes"):
        facts["export_bytes"] = export["bytes"]
    return facts


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def load_saved_model(folder: Path, export: dict | None = None, sample_rate: int | None = None) -> Predictor:
    """A SavedModel with `serving_default` audio -> scores (and, for a speech-embedding model, the streaming pair)."""
    import tensorflow as tf

    folder = Path(folder)
    card = read_saved_model_card(folder)  # a damaged card fails before TensorFlow spends seconds loading the graph
    recognize = card_recognize(card, folder)
    try:
        loaded = tf.saved_model.load(str(folder))
    except (OSError, ValueError, RuntimeError) as error:
        raise KwsError(f"{folder}: cannot load the SavedModel ({_first_line(error)})") from None
    if SIGNATURE not in loaded.signatures:
        raise KwsError(f"{folder}: SavedModel has no {SIGNATURE!r} signature (found {sorted(loaded.signatures)})")
    fn = loaded.signatures[SIGNATURE]
    inputs, outputs = fn.structured_input_signature[1], fn.structured_outputs
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        raise KwsError(f"{folder}: signature is {sorted(inputs)} -> {sorted(outputs)}, expected {INPUT_NAME} -> {OUTPUT_NAME}")
    clip_samples, classes = int(inputs[INPUT_NAME].shape[-1]), int(outputs[OUTPUT_NAME].shape[-1])
    rate = int(sample_rate) if sample_rate else _sample_rate(card, export, folder)

    def predict(audio: np.ndarray) -> np.ndarray:
        return fn(**{INPUT_NAME: tf.constant(audio, tf.float32)})[OUTPUT_NAME].numpy()

    sequence_fn, geometry = _saved_sequence_fn(loaded, card, rate)
    info = {
        "signature": SIGNATURE,
        "streaming": "sequence" if sequence_fn else "windows",
        "inputs": [_tensor(name, s.shape.as_list(), s.dtype.name) for name, s in sorted(inputs.items())],
        "outputs": [_tensor(name, s.shape.as_list(), s.dtype.name) for name, s in sorted(outputs.items())],
        "bytes": _size(folder),
        "model_card": bool(card),
        **({"recognize": recognize} if recognize else {}),
        **_export_facts(export),
    }
    if info.get("parameters") is None:
        info["parameters"] = int(sum(np.prod(v.shape) for v in loaded.variables))
        info["parameters_source"] = "SavedModel variables (frontend constants included)"
    return Predictor("saved_model", folder, _labels(folder, classes, card, folder), rate, clip_samples, predict, info,
                     sequence_fn=sequence_fn, stream_geometry=geometry, recognize=recognize)  # fmt: skip


def _saved_sequence_fn(loaded, card: dict | None, sample_rate: int):
    """Streaming on the shared embedding sequence through `embed_sequence` and `head`, geometry from the card."""
    if EMBED_SIGNATURE not in loaded.signatures or HEAD_SIGNATURE not in loaded.signatures:
        return None, None
    import tensorflow as tf

    from pipeline.features.geometry import STREAM_HOP, STREAM_SPAN
    from pipeline.stream.sequence import sequence_scores

    geometry = (card or {}).get("streaming") or {}
    hop, span = int(geometry.get("hop", STREAM_HOP)), int(geometry.get("span", STREAM_SPAN))  # older exports: fixed
    embed, head = loaded.signatures[EMBED_SIGNATURE], loaded.signatures[HEAD_SIGNATURE]
    window = int(head.structured_input_signature[1][EMBEDDINGS_NAME].shape[1])

    def stream(audio: np.ndarray, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        return sequence_scores(
            audio, lambda a: embed(**{INPUT_NAME: tf.constant(a)})[EMBEDDINGS_NAME].numpy(),
            lambda e: head(**{EMBEDDINGS_NAME: tf.constant(e)})[OUTPUT_NAME].numpy(),
            window_vectors=window, hop=hop, span=span, sample_rate=sample_rate, progress=progress)  # fmt: skip

    return stream, {"hop": hop, "span": span, "window_vectors": window}


def _quantize_boundaries(interp) -> list[dict]:
    """Scale and zero point of every QUANTIZE / DEQUANTIZE op's quantized tensor (where float meets int8)."""
    found = []
    for op in interp._get_ops_details():  # noqa: SLF001 - no public per-op API (pipeline.export.tflite uses it too)
        if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE"):
            continue
        index = op["outputs"][0] if op["op_name"] == "QUANTIZE" else op["inputs"][0]
        detail = interp._get_tensor_details(index, 0)  # noqa: SLF001
        scales, zeros = detail["quantization_parameters"]["scales"], detail["quantization_parameters"]["zero_points"]
        found.append({"op": op["op_name"], "tensor": detail["name"].split(";")[0], "dtype": np.dtype(detail["dtype"]).name,
                      "scale": float(scales[0]) if len(scales) else 0.0,
                      "zero_point": int(zeros[0]) if len(zeros) else 0})  # fmt: skip
    return found


def load_tflite(path: Path, export: dict | None = None, threads: int = 1) -> Predictor:
    """A .tflite through ai_edge_litert (no TensorFlow) on `threads` threads; labels and rate from its embedded card
    or labels.txt."""
    from pipeline.export.tflite import TfliteModel

    path = Path(path)
    try:
        model = TfliteModel(path, num_threads=threads)
    except (ValueError, RuntimeError) as error:
        raise KwsError(f"{path}: cannot load the TFLite model ({_first_line(error)})") from None
    card = read_tflite_card(path)
    recognize = card_recognize(card, path)
    classes = int(model.output["shape_signature"][-1])
    labels = _labels(path.parent, classes, card, path)
    if card is None:
        log.warning("%s carries no model card (an export made before cards existed); labels from %s", path,
                    path.parent / LABELS_FILE)  # fmt: skip

    def describe() -> dict:
        details = model.details()
        converted = next((v for v in ((export or {}).get("tflite") or {}).values()
                          if Path(v.get("path", "")).name == path.name), None)  # fmt: skip
        return {
            "inputs": details["inputs"], "outputs": details["outputs"], "bytes": details["bytes"],
            "tflite": {key: details[key] for key in ("ops", "macs", "int8_mac_fraction", "weight_bytes")},
            "quantization": {
                "mode": converted.get("mode") if converted else ("int8" if details["int8_mac_fraction"] > 0 else "float"),
                "scheme": converted.get("scheme") if converted else None,
                "int8_mac_fraction": details["int8_mac_fraction"],
                # of all MACs, those on int8 weights whose input is quantized on each invoke (dynamic-range kernels)
                "int8_dynamic_mac_fraction": round(details["macs"].get("int8_dynamic", 0) / max(sum(details["macs"].values()), 1), 3),
                "boundaries": _quantize_boundaries(model.interpreter),
            },
        }

    info = {"streaming": "windows", "model_card": card is not None, **({"recognize": recognize} if recognize else {}),
            **_export_facts(export)}  # fmt: skip
    return Predictor("tflite", path, labels, _sample_rate(card, export, path), model.clip_samples, model.predict, info,
                     describe_fn=describe, recognize=recognize)  # fmt: skip


def load_keras(path: Path, features: FeaturesParams, batch_size: int = 256) -> Predictor:
    """The trained classifier (features -> logits) behind the frontend `features` describe, composed by
    pipeline.export.serving.build_serving_model exactly as it is exported; labels from labels.txt beside it."""
    import tensorflow as tf

    from pipeline.export.serving import load_serving_model, sequence_parts

    path = Path(path)
    serving, classifier = load_serving_model(path, features)
    classes = int(classifier.output_shape[-1])
    labels = _labels(path.parent, classes, None, path)
    samples = features.clip_samples

    @tf.function(input_signature=[tf.TensorSpec([None, samples], tf.float32)], reduce_retracing=True)
    def scores(audio):
        return serving(audio, training=False)[OUTPUT_NAME]

    def from_features(features_batch: np.ndarray) -> np.ndarray:
        return tf.nn.softmax(classifier(features_batch, training=False)).numpy()

    sequence_fn, geometry = None, None
    parts = sequence_parts(serving)
    if parts is not None:
        from pipeline.stream.sequence import sequence_scores

        layer, head = parts
        sequence = tf.function(layer.sequence, input_signature=[tf.TensorSpec([1, None], tf.float32)])
        hop, span = layer.stream_geometry
        window = layer.steps_for(samples)
        geometry = {"hop": int(hop), "span": int(span), "window_vectors": int(window)}

        def head_scores(embeddings: np.ndarray) -> np.ndarray:
            return tf.nn.softmax(head(embeddings, training=False)).numpy()

        def sequence_fn(audio: np.ndarray, progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
            return sequence_scores(audio, lambda a: sequence(a).numpy(), head_scores, window_vectors=window, hop=hop,
                                   span=span, sample_rate=features.sample_rate, batch_size=batch_size,
                                   progress=progress)  # fmt: skip

    info = {
        "streaming": "sequence" if sequence_fn else "windows",
        "inputs": [_tensor(INPUT_NAME, [None, samples], "float32")],
        "outputs": [_tensor(OUTPUT_NAME, [None, classes], "float32")],
        "bytes": _size(path),
        "parameters": int(classifier.count_params()),
        "parameters_source": "Keras classifier",
        "frontend": f"features.{features.preprocess} (given by the caller: a .keras file holds only the classifier)",
    }
    return Predictor("keras", path, labels, features.sample_rate, samples, lambda a: scores(a).numpy(), info,
                     batch_size=batch_size, sequence_fn=sequence_fn, features_fn=from_features,
                     stream_geometry=geometry, model=serving)  # fmt: skip


def _mlflow_model_sample_rate(folder: Path) -> int | None:
    import yaml

    try:
        mlmodel = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    config = ((mlmodel.get("flavors") or {}).get("python_function") or {}).get("config") or {}
    return config.get("sample_rate")


def _load_path(path: Path, features: FeaturesParams | None) -> Predictor:
    if path.is_file() and path.suffix == ".tflite":
        return load_tflite(path, _read_json(path.parent / "export.json"))
    if path.is_file() and path.suffix == ".keras":
        if features is None:
            raise KwsError(f"{path}: a .keras classifier needs the frontend settings (features of params.yaml)")
        return load_keras(path, features)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return load_saved_model(path, _read_json(path.parent / "export.json"))
    if path.is_dir() and (path / "MLmodel").is_file() and (path / "artifacts" / "saved_model").is_dir():
        predictor = load_saved_model(path / "artifacts" / "saved_model", None, _mlflow_model_sample_rate(path))
        predictor.info["mlflow_model"] = str(path)
        return predictor
    if path.is_dir() and (path / "saved_model" / "saved_model.pb").is_file():
        return _load_path(path / "saved_model", features)
    if not path.exists():
        raise KwsError(f"{path}: no such model file or folder")
    raise KwsError(f"{path}: not a model; expected a SavedModel folder, an export folder, a .tflite or .keras file, "
                   "or a models:/ URI")  # fmt: skip


def check_model_spec(spec: str | Path) -> None:
    """Raise KwsError for a model argument that cannot be a model, before anything heavy is imported."""
    text = str(spec)
    if text.startswith("models:/"):
        return
    if "://" in text or text.startswith(("runs:/", "models:")):
        raise KwsError(f"{text}: unsupported model URI; use models:/NAME@ALIAS, models:/NAME/VERSION or a local path")
    path = Path(text)
    if not path.exists():
        raise KwsError(f"{path}: no such model file or folder")
    if path.is_file() and path.suffix not in (".tflite", ".keras"):
        raise KwsError(f"{path}: not a model; expected a SavedModel folder, an export folder, a .tflite or .keras file, "
                       "or a models:/ URI")  # fmt: skip


def load_model(spec: str | Path, features: FeaturesParams | None = None) -> Predictor:
    """The model named by `spec` (see the module docstring). `features` is used by a .keras classifier only."""
    check_model_spec(spec)
    text = str(spec)
    if text.startswith("models:/"):
        from pipeline.tracking.registry import download_model

        # the SavedModel is read into memory by load, so the download can go once the model is loaded
        with tempfile.TemporaryDirectory(prefix="kws-model-") as tmp:
            found = download_model(text, Path(tmp))
            predictor = _load_path(found.path, features)
            predictor.path = Path(text)
            predictor.info.pop("mlflow_model", None)
            predictor.info["registry"] = {"uri": text, "name": found.name, "version": found.version,
                                          "aliases": found.aliases, "run_id": found.run_id, "tags": found.tags}  # fmt: skip
        return predictor
    return _load_path(Path(text), features)
