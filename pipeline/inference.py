"""Any form of a trained model behind one interface for the CLI: SavedModel, TFLite, Keras, export folder, registry URI.

`load_model(spec, params)` takes
* None: `paths.export/saved_model` (what the freeze stage writes);
* a SavedModel folder, an export folder holding `saved_model/`, or a downloaded MLflow model folder (`MLmodel`);
* a `.tflite` file (float or int8: float audio in, float scores out either way);
* a `.keras` classifier (features -> logits) from the train stage, run behind the frontend of params.yaml;
* `models:/NAME@ALIAS`, `models:/NAME/VERSION` or `models:/m-ID`: downloaded from the MLflow registry
  (pipeline.tracking.registry.download_model) and run through the pyfunc model's SavedModel.
Labels come from the model's labels.txt; the sample rate from export.json or the pyfunc config, else params.yaml.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import Params
from pipeline.errors import KwsError

log = logging.getLogger(__name__)

SIGNATURE = "serving_default"
INPUT_NAME = "audio"  # same names as pipeline.export.serving (not imported: that module imports TensorFlow)
OUTPUT_NAME = "scores"
LABELS_FILE = "labels.txt"


@dataclass
class Predictor:
    """Float audio [B, clip_samples] at `sample_rate` in, class scores [B, len(labels)] out."""

    kind: str  # saved_model | tflite | keras
    path: Path
    labels: list[str]
    sample_rate: int
    clip_samples: int
    predict_fn: Callable[[np.ndarray], np.ndarray]
    info: dict = field(default_factory=dict)
    batch_size: int = 256
    stream_fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None  # shared-sequence streaming

    def scores(self, audio: np.ndarray) -> np.ndarray:
        """Scores [B, C] float32 for audio [B, S] or one clip [S] (int16 is scaled to [-1, 1])."""
        audio = np.asarray(audio)
        if audio.dtype == np.int16:
            audio = audio.astype(np.float32) / 32768.0
        audio = np.asarray(audio, np.float32)
        if audio.ndim == 1:
            audio = audio[None]
        if audio.ndim != 2 or audio.shape[1] != self.clip_samples:
            raise KwsError(f"expected audio [batch, {self.clip_samples}], got shape {audio.shape}")
        parts = [np.asarray(self.predict_fn(audio[i : i + self.batch_size]), np.float32)
                 for i in range(0, len(audio), self.batch_size)]  # fmt: skip
        return np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), np.float32)

    def describe(self) -> dict:
        """What `kws inspect` shows: kind, tensors, labels, sizes, parameters, quantization, provenance."""
        return {
            "kind": self.kind,
            "path": str(self.path),
            "labels": list(self.labels),
            "sample_rate": self.sample_rate,
            "clip_samples": self.clip_samples,
            **self.info,
        }


def _tensor(name: str, shape, dtype) -> dict:
    return {"name": name, "shape": [None if d is None or d < 0 else int(d) for d in shape], "dtype": str(dtype)}


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _labels(folder: Path, classes: int, params: Params) -> list[str]:
    path = folder / LABELS_FILE
    labels = path.read_text(encoding="utf-8").split() if path.is_file() else list(params.labels)
    if not path.is_file():
        log.warning("%s not found; using the labels of params.yaml", path)
    if len(labels) != classes:
        raise KwsError(f"{path if path.is_file() else 'params.yaml'}: {len(labels)} labels for a model with {classes} scores")
    return labels


def _export_facts(export: dict | None) -> dict:
    """The parts of export.json worth showing beside a model that came from that export."""
    if not export:
        return {}
    facts = {"parameters": export.get("parameters"), "parameters_source": "export.json"}
    testing = export.get("testing") or {}
    if testing:
        facts["export_testing"] = testing
    if export.get("bytes"):
        facts["export_bytes"] = export["bytes"]
    return facts


def _load_saved_model(folder: Path, params: Params, sample_rate: int | None, export: dict | None) -> Predictor:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(folder))
    except (OSError, ValueError, RuntimeError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise KwsError(f"{folder}: cannot load the SavedModel ({first})") from None
    if SIGNATURE not in loaded.signatures:
        raise KwsError(f"{folder}: SavedModel has no {SIGNATURE!r} signature (found {sorted(loaded.signatures)})")
    fn = loaded.signatures[SIGNATURE]
    inputs = fn.structured_input_signature[1]
    outputs = fn.structured_outputs
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        raise KwsError(f"{folder}: signature is {sorted(inputs)} -> {sorted(outputs)}, expected {INPUT_NAME} -> {OUTPUT_NAME}")
    spec, out = inputs[INPUT_NAME], outputs[OUTPUT_NAME]
    clip_samples, classes = int(spec.shape[-1]), int(out.shape[-1])

    def predict(audio: np.ndarray) -> np.ndarray:
        return fn(**{INPUT_NAME: tf.constant(audio, tf.float32)})[OUTPUT_NAME].numpy()

    stream_fn = _sequence_fn(loaded, params)
    info = {
        "signature": SIGNATURE,
        "streaming": "sequence" if stream_fn else "windows",
        "inputs": [_tensor(name, s.shape.as_list(), s.dtype.name) for name, s in sorted(inputs.items())],
        "outputs": [_tensor(name, s.shape.as_list(), s.dtype.name) for name, s in sorted(outputs.items())],
        "bytes": _size(folder),
        **_export_facts(export),
    }
    if info.get("parameters") is None:
        info["parameters"] = int(sum(np.prod(v.shape) for v in loaded.variables))
        info["parameters_source"] = "SavedModel variables (frontend constants included)"
    return Predictor("saved_model", folder, _labels(folder, classes, params),
                     int(sample_rate or params.features.sample_rate), clip_samples, predict, info,
                     stream_fn=stream_fn)  # fmt: skip


def _sequence_fn(loaded, params: Params):
    """Streaming on the shared embedding sequence through a SavedModel's `embed_sequence` and `head` signatures."""
    from pipeline.export.serving import EMBED_SIGNATURE, EMBEDDINGS_NAME, HEAD_SIGNATURE

    if EMBED_SIGNATURE not in loaded.signatures or HEAD_SIGNATURE not in loaded.signatures:
        return None
    import tensorflow as tf

    from pipeline.features.embedding import STREAM_HOP, STREAM_SPAN
    from pipeline.stream.sequence import sequence_scores

    embed, head = loaded.signatures[EMBED_SIGNATURE], loaded.signatures[HEAD_SIGNATURE]
    window = int(head.structured_input_signature[1][EMBEDDINGS_NAME].shape[1])

    def stream(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return sequence_scores(
            audio, lambda a: embed(**{INPUT_NAME: tf.constant(a)})[EMBEDDINGS_NAME].numpy(),
            lambda e: head(**{EMBEDDINGS_NAME: tf.constant(e)})[OUTPUT_NAME].numpy(),
            window_vectors=window, hop=STREAM_HOP, span=STREAM_SPAN, sample_rate=params.features.sample_rate)  # fmt: skip

    return stream


def _quantize_boundaries(model) -> list[dict]:
    """Scale and zero point of every QUANTIZE / DEQUANTIZE op's quantized tensor (where float meets int8)."""
    interp = model.interpreter
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


def _load_tflite(path: Path, params: Params, export: dict | None) -> Predictor:
    from pipeline.export.tflite import TfliteModel

    try:
        model = TfliteModel(path, num_threads=1)
    except (ValueError, RuntimeError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise KwsError(f"{path}: cannot load the TFLite model ({first})") from None
    details = model.details()
    classes = int(model.output["shape_signature"][-1])
    info = {
        "inputs": details["inputs"],
        "outputs": details["outputs"],
        "bytes": details["bytes"],
        **_export_facts(export),
        "tflite": {key: details[key] for key in ("ops", "macs", "int8_mac_fraction", "weight_bytes")},
    }
    converted = next((v for v in ((export or {}).get("tflite") or {}).values() if Path(v.get("path", "")).name == path.name), None)
    info["quantization"] = {
        "mode": converted.get("mode") if converted else ("int8" if details["int8_mac_fraction"] > 0 else "float"),
        "scheme": converted.get("scheme") if converted else None,
        "int8_mac_fraction": details["int8_mac_fraction"],
        "boundaries": _quantize_boundaries(model),
    }
    sample_rate = (export or {}).get("sample_rate") or params.features.sample_rate
    return Predictor("tflite", path, _labels(path.parent, classes, params), int(sample_rate), model.clip_samples,
                     model.predict, info)  # fmt: skip


def _load_keras(path: Path, params: Params) -> Predictor:
    from pipeline.predict import KerasScorer

    scorer = KerasScorer(path, params.features)
    classes = int(scorer.model.output_shape[-1])
    if classes != len(params.labels):
        raise KwsError(f"{path}: {classes} scores but params.yaml has {len(params.labels)} labels")
    samples = params.features.clip_samples
    info = {
        "inputs": [_tensor(INPUT_NAME, [None, samples], "float32")],
        "outputs": [_tensor(OUTPUT_NAME, [None, classes], "float32")],
        "bytes": _size(path),
        "parameters": int(scorer.model.count_params()),
        "parameters_source": "Keras classifier",
        "frontend": f"features.{params.features.preprocess} of params.yaml",
    }
    return Predictor("keras", path, list(params.labels), params.features.sample_rate, samples, scorer, info,
                     stream_fn=scorer.stream_scores)  # fmt: skip


def _mlflow_model_sample_rate(folder: Path) -> int | None:
    import yaml

    try:
        mlmodel = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    config = ((mlmodel.get("flavors") or {}).get("python_function") or {}).get("config") or {}
    return config.get("sample_rate")


def _load_path(path: Path, params: Params, registry: dict | None = None) -> Predictor:
    if path.is_file() and path.suffix == ".tflite":
        return _load_tflite(path, params, _read_json(path.parent / "export.json"))
    if path.is_file() and path.suffix == ".keras":
        return _load_keras(path, params)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        export = _read_json(path.parent / "export.json")
        return _load_saved_model(path, params, (export or {}).get("sample_rate"), export)
    if path.is_dir() and (path / "MLmodel").is_file() and (path / "artifacts" / "saved_model").is_dir():
        predictor = _load_saved_model(path / "artifacts" / "saved_model", params, _mlflow_model_sample_rate(path), None)
        predictor.info["mlflow_model"] = str(path)
        return predictor
    if path.is_dir() and (path / "saved_model" / "saved_model.pb").is_file():
        return _load_path(path / "saved_model", params)
    if not path.exists():
        raise KwsError(f"{path}: no such model file or folder")
    raise KwsError(f"{path}: not a model; expected a SavedModel folder, an export folder, a .tflite or .keras file, "
                   "or a models:/ URI")  # fmt: skip


def load_model(spec: str | Path | None, params: Params) -> Predictor:
    """The model named by `spec` (see the module docstring), default `paths.export/saved_model`."""
    if spec is None or str(spec) == "":
        default = params.paths.export / "saved_model"
        if not (default / "saved_model.pb").is_file():
            raise KwsError(f"{default}: no exported model; run the freeze stage (dvc repro freeze) or pass --model")
        return _load_path(default, params)
    text = str(spec)
    if text.startswith("models:/"):
        from pipeline.tracking.registry import download_model

        # the SavedModel is read into memory by load, so the download can go once the model is loaded
        with tempfile.TemporaryDirectory(prefix="kws-model-") as tmp:
            found = download_model(text, Path(tmp))
            predictor = _load_path(found.path, params)
            predictor.path = Path(text)
            predictor.info.pop("mlflow_model", None)
            predictor.info["registry"] = {"uri": text, "name": found.name, "version": found.version,
                                          "aliases": found.aliases, "run_id": found.run_id, "tags": found.tags}  # fmt: skip
        return predictor
    if "://" in text or text.startswith(("runs:/", "models:")):
        raise KwsError(f"{text}: unsupported model URI; use models:/NAME@ALIAS, models:/NAME/VERSION or a local path")
    return _load_path(Path(text), params)
