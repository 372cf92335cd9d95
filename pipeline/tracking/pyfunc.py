"""The exported SavedModel as an MLflow pyfunc model: wav bytes (or float arrays) in, label and scores out."""

from __future__ import annotations

import base64
import binascii
import io
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.tracking.runs import _mlflow

# What loading and calling the model imports: the code_paths copy of `pipeline` imports pydantic-settings
# (pipeline.tracking.runs) on the way to this module; mlflow itself is added by MLflow.
REQUIREMENTS = ["tensorflow-cpu", "numpy", "pandas", "soundfile", "soxr", "pydantic", "pydantic-settings", "pyyaml"]


def decode_audio(value: object, sample_rate: int, clip_samples: int) -> np.ndarray:
    """One request value (wav/flac bytes or their base64 text, or floats in [-1, 1]) as a padded float32 clip."""
    if isinstance(value, str):  # base64 that schema enforcement did not decode (e.g. a caller without the signature)
        try:
            value = base64.b64decode(value, validate=False)
        except (binascii.Error, ValueError):
            raise ValueError("audio: a string value must be base64-encoded wav/flac bytes") from None
    if isinstance(value, bytes | bytearray | memoryview):
        import soundfile as sf

        try:
            audio, rate = sf.read(io.BytesIO(bytes(value)), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError) as error:
            raise ValueError(f"audio: cannot decode {len(bytes(value))} bytes as wav/flac ({error})") from None
        audio = audio.mean(axis=1)
        if rate != sample_rate:
            import soxr

            audio = soxr.resample(audio, rate, sample_rate).astype(np.float32)
    else:
        audio = np.asarray(value, dtype=np.float32).reshape(-1)
    return np.pad(audio, (0, max(clip_samples - len(audio), 0)))[:clip_samples]


class KeywordSpotter(_mlflow().pyfunc.PythonModel):
    """Scores 1 s clips with the exported SavedModel (frontend inside)."""

    def load_context(self, context) -> None:
        import tensorflow as tf

        self.model = tf.saved_model.load(context.artifacts["saved_model"])
        self.labels = Path(context.artifacts["labels"]).read_text().split()
        signature = self.model.signatures["serving_default"]
        self.clip_samples = int(signature.structured_input_signature[1]["audio"].shape[1])
        self.sample_rate = int(context.model_config.get("sample_rate", 16000)) if context.model_config else 16000

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        import tensorflow as tf

        if "audio" not in model_input:
            raise ValueError(f"expected a column 'audio' (wav bytes), got columns {list(model_input.columns)}")
        if not len(model_input):
            return pd.DataFrame({"label": pd.Series([], dtype=str), "score": pd.Series([], dtype=float), "scores": []})
        batch = np.stack([decode_audio(v, self.sample_rate, self.clip_samples) for v in model_input["audio"]])
        scores = self.model.signatures["serving_default"](audio=tf.constant(batch))["scores"].numpy()
        top = scores.argmax(axis=1)
        return pd.DataFrame({"label": [self.labels[i] for i in top], "score": scores.max(axis=1).astype(float),
                             "scores": [row.astype(float).tolist() for row in scores]})  # fmt: skip


def pinned_requirements() -> list[str]:
    """The packages the model needs at serving time, pinned to the versions it was built with."""
    return [f"{name}=={version(name)}" for name in REQUIREMENTS]


def log_pyfunc(run_id: str, saved_model: Path, labels: Path, example_wav: bytes, sample_rate: int) -> str:
    """Log the pyfunc model with signature and input example to the run; return its model URI."""
    from pipeline.tracking.runs import tracking_uri

    mlflow = _mlflow()
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    status = client.get_run(run_id).info.status  # the training run's; start_run below would overwrite it
    example = pd.DataFrame({"audio": [example_wav]})
    signature = mlflow.models.infer_signature(example, _example_output(saved_model, labels, example, sample_rate))
    try:
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=KeywordSpotter(),
                artifacts={"saved_model": str(saved_model), "labels": str(labels)},
                input_example=example,
                signature=signature,
                pip_requirements=pinned_requirements(),
                code_paths=[str(Path(__file__).resolve().parents[1])],
                model_config={"sample_rate": sample_rate},
            )
    finally:  # a failed freeze must not mark the training run FAILED, nor a finished one RUNNING
        if status != "RUNNING":
            client.set_terminated(run_id, status)
    return info.model_uri


def _example_output(saved_model: Path, labels: Path, example: pd.DataFrame, sample_rate: int) -> pd.DataFrame:
    class _Context:
        artifacts = {"saved_model": str(saved_model), "labels": str(labels)}
        model_config = {"sample_rate": sample_rate}

    spotter = KeywordSpotter()
    spotter.load_context(_Context())
    return spotter.predict(None, example)
