"""The exported SavedModel as an MLflow pyfunc model: wav bytes (or float arrays) in, label and scores out."""

from __future__ import annotations

import base64
import binascii
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.audio import Clip
from pipeline.errors import DataError, KwsError
from pipeline.tracking.runs import _mlflow, process_uris

OUTPUT_COLUMNS = ["label", "score", "scores", "labels", "seconds", "detections", "notes"]

# What loading and calling the model imports: the code_paths copy of `pipeline` imports pydantic-settings
# (pipeline.tracking.runs) on the way to this module; mlflow itself is added by MLflow.
REQUIREMENTS = ["tensorflow-cpu", "numpy", "pandas", "soundfile", "soxr", "pydantic", "pydantic-settings", "pyyaml"]


def _clip_of(value: object, predictor) -> Clip:
    """One request value (wav/flac bytes, their base64 text, or floats in [-1, 1]) as the whole recording."""
    if isinstance(value, str):  # base64 that schema enforcement did not decode (e.g. a caller without the signature)
        try:
            value = base64.b64decode(value, validate=False)
        except (binascii.Error, ValueError):
            raise DataError("audio: a string value must be base64-encoded wav/flac bytes") from None
    if isinstance(value, bytes | bytearray | memoryview):
        return predictor.read(bytes(value), whole=True)
    audio = np.asarray(value, dtype=np.float32).reshape(-1)
    if not audio.size:
        raise DataError("audio: the audio holds no samples (0 frames)")
    return Clip(audio, predictor.sample_rate, audio.size / predictor.sample_rate, [])


def _bad_request(message: str):
    """An MLflow error the scoring server answers with HTTP 400 and our sentence in `message`."""
    mlflow = _mlflow()
    return mlflow.exceptions.MlflowException(message, error_code=mlflow.protos.databricks_pb2.INVALID_PARAMETER_VALUE)


class KeywordSpotter(_mlflow().pyfunc.PythonModel):
    """Scores audio with the exported SavedModel (frontend inside) through pipeline.inference.Predictor.

    A clip up to the model's window gives its label and scores; a longer recording is streamed (the path of
    `kws stream`): `detections` over the recording, and label/scores of its most keyword-like window, with a note."""

    def load_context(self, context) -> None:
        from pipeline.config import StreamParams
        from pipeline.inference import load_saved_model

        config = context.model_config or {}
        self.predictor = load_saved_model(Path(context.artifacts["saved_model"]), sample_rate=config.get("sample_rate"))
        self.streaming = StreamParams.model_validate(config.get("streaming") or {})

    def _row(self, clip: Clip) -> dict:
        predictor = self.predictor
        labels, notes = predictor.labels, list(clip.notes)
        if len(clip.audio) <= predictor.clip_samples:
            scores = predictor.scores(np.pad(clip.audio, (0, predictor.clip_samples - len(clip.audio))))[0]
            detections = []
        else:
            window_scores, times_ms = predictor.stream_scores(clip.audio, self.streaming)
            from pipeline.stream.run import recognize

            found = recognize(window_scores, times_ms, labels, self.streaming)
            keyword = [i for i, name in enumerate(labels) if not name.startswith("_")]
            best = int(window_scores[:, keyword].max(axis=1).argmax()) if len(window_scores) and keyword else 0
            scores = window_scores[best] if len(window_scores) else np.zeros(len(labels), np.float32)
            detections = [{"label": d.label, "time_s": round(d.time_ms / 1000.0, 3), "score": round(float(d.score), 4)}
                          for d in found]  # fmt: skip
            notes.append(f"{clip.seconds:.2f} s is longer than the model's {predictor.clip_samples / predictor.sample_rate:g} s "
                         f"window: streamed ({predictor.stream_mode(self.streaming)}); label and scores are those of the "
                         f"window ending at {times_ms[best] / 1000.0 if len(times_ms) else 0:.2f} s, detections cover "
                         "the whole recording")  # fmt: skip
        top = int(np.argmax(scores))
        return {"label": labels[top], "score": float(scores[top]), "scores": [float(v) for v in scores],
                "labels": list(labels), "seconds": round(float(clip.seconds), 3), "detections": detections,
                "notes": notes}  # fmt: skip

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if "audio" not in model_input:
            raise _bad_request(f"expected a column 'audio' (wav bytes), got columns {list(model_input.columns)}")
        rows = []
        for i, value in enumerate(model_input["audio"]):
            try:
                rows.append(self._row(_clip_of(value, self.predictor)))
            except KwsError as error:  # empty or undecodable audio: the caller's mistake, said in `message`
                raise _bad_request(f"row {i}: {error}") from None
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


def pinned_requirements() -> list[str]:
    """The packages the model needs at serving time, pinned to the versions it was built with."""
    return [f"{name}=={version(name)}" for name in REQUIREMENTS]


def log_pyfunc(run_id: str, saved_model: Path, labels: Path, example_wav: bytes, sample_rate: int,
               streaming: dict | None = None) -> str:  # fmt: skip
    """Log the pyfunc model with signature and input example to the run; return its model URI."""
    from pipeline.tracking.runs import tracking_uri

    mlflow = _mlflow()
    uri = tracking_uri()
    client = mlflow.MlflowClient(tracking_uri=uri)
    status = client.get_run(run_id).info.status  # the training run's; start_run below would overwrite it
    example = pd.DataFrame({"audio": [example_wav]})
    config = {"sample_rate": sample_rate, "streaming": streaming or {}}
    signature = mlflow.models.infer_signature(example, _example_output(saved_model, labels, example, config))
    try:
        with process_uris(uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=KeywordSpotter(),
                artifacts={"saved_model": str(saved_model), "labels": str(labels)},
                input_example=example,
                signature=signature,
                pip_requirements=pinned_requirements(),
                code_paths=[str(Path(__file__).resolve().parents[1])],
                model_config=config,
            )
    finally:  # a failed freeze must not mark the training run FAILED, nor a finished one RUNNING
        if status != "RUNNING":
            client.set_terminated(run_id, status)
    return info.model_uri


def _example_output(saved_model: Path, labels: Path, example: pd.DataFrame, config: dict) -> pd.DataFrame:
    class _Context:
        artifacts = {"saved_model": str(saved_model), "labels": str(labels)}
        model_config = config

    spotter = KeywordSpotter()
    spotter.load_context(_Context())
    return spotter.predict(None, example)
