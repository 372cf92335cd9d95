"""MLflow runs: params, metrics, artifacts, datasets; one run per training, reopened by evaluate and freeze."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import KwsError

log = logging.getLogger(__name__)


class TrackingError(KwsError):
    """The MLflow tracking store cannot be used."""


class RuntimeSettings(BaseSettings):
    """Runtime settings from the environment (not experiment params: DVC tracks files, not variables)."""

    model_config = SettingsConfigDict(extra="ignore")
    mlflow_tracking_uri: str = "sqlite:///mlflow.db"
    mlflow_artifact_root: str = "mlartifacts"


def tracking_uri() -> str:
    return RuntimeSettings().mlflow_tracking_uri


def check_tracking(uri: str, timeout: float = 2.0, attempts: int = 3, pause: float = 1.0) -> None:
    """Fail fast, before any work, when the tracking store cannot be reached: `attempts` tries of `timeout` s each,
    `pause` s apart (at most ~8 s in all), then TrackingError with one line naming the URI."""
    if uri.startswith(("http://", "https://")):
        for attempt in range(attempts):
            try:
                with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
                    response.read(64)
                return
            except (urllib.error.URLError, OSError) as error:
                reason = getattr(error, "reason", error)
                if attempt + 1 < attempts:
                    time.sleep(pause)
        raise TrackingError(f"MLflow tracking server {uri} is unreachable ({reason}); start it or set MLFLOW_TRACKING_URI")
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise TrackingError(f"MLflow tracking database folder {folder} does not exist (MLFLOW_TRACKING_URI={uri})")


def _reason(error: Exception) -> str:
    """The gist of a client error: MLflow's HTTP errors wrap a long urllib3 text around a short cause."""
    text = str(error).strip()
    for gist in ("Connection refused", "timed out", "Name or service not known", "Connection reset", "No route to host"):
        if gist.lower() in text.lower():
            return gist.lower()
    return (text.splitlines()[0][:160] if text else "") or type(error).__name__


def flatten(tree: Mapping, prefix: str = "") -> dict[str, str]:
    """Nested params as dotted keys, the way the MLflow UI compares them."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return flat


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# MLflow's own HTTP retries last ~8 minutes by default (7 retries, backoff 2, 120 s timeout): a lost server would
# hang a stage that long. Bounded here to a few seconds; the environment can still override them.
CLIENT_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def _mlflow():
    for key, value in CLIENT_ENV.items():
        os.environ.setdefault(key, value)
    import mlflow

    return mlflow


class Run:
    """One MLflow run that the train stage opens and evaluate/freeze reopen by id."""

    def __init__(self, run_id: str, uri: str):
        self.run_id, self.uri = run_id, uri
        self.client = _mlflow().MlflowClient(tracking_uri=uri)

    @classmethod
    def start(cls, experiment: str, run_name: str, params: Mapping, tags: Mapping[str, str]) -> Run:
        """Create the experiment if needed (artifacts in a local folder) and a new run with params and tags."""
        uri = tracking_uri()
        check_tracking(uri)
        mlflow = _mlflow()
        client = mlflow.MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            root = Path(RuntimeSettings().mlflow_artifact_root).resolve()
            experiment_id = client.create_experiment(experiment, artifact_location=root.as_uri())
        else:
            experiment_id = found.experiment_id
        run = client.create_run(experiment_id, run_name=run_name, tags={"git_commit": git_commit(), **tags})
        self = cls(run.info.run_id, uri)
        flat = flatten(params)
        items = list(flat.items())
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=[mlflow.entities.Param(k, v[:6000]) for k, v in items[start : start + 100]])
        return self

    @classmethod
    def resume(cls, run_id: str) -> Run:
        uri = tracking_uri()
        check_tracking(uri)
        return cls(run_id, uri)

    @classmethod
    def reopen(cls, run_id: str) -> Run | None:
        """Continue an interrupted run (status back to RUNNING); None when the store no longer has it."""
        uri = tracking_uri()
        check_tracking(uri)
        self = cls(run_id, uri)
        try:
            status = self.client.get_run(run_id).info.status
        except _mlflow().exceptions.MlflowException:
            return None
        if status != "RUNNING":
            self._call(self.client.update_run, run_id, status="RUNNING")
        return self

    @classmethod
    def mark_killed(cls, run_id: str) -> None:
        """Mark a run left RUNNING by a killed stage as KILLED (nothing when it is gone or already ended)."""
        run = cls(run_id, tracking_uri())
        try:
            if run.client.get_run(run_id).info.status == "RUNNING":
                run.client.set_terminated(run_id, "KILLED")
        except _mlflow().exceptions.MlflowException:
            pass

    def _call(self, method, *args, **kwargs):
        """One client call; a store that stopped answering becomes a one-line TrackingError, not a traceback."""
        try:
            return method(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - MlflowException, requests and sqlite errors alike: one line
            raise TrackingError(f"MLflow tracking store {self.uri} stopped answering ({_reason(error)})") from None

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        mlflow = _mlflow()
        stamp = mlflow.utils.time.get_current_time_millis()
        batch = [mlflow.entities.Metric(k, float(v), stamp, step or 0) for k, v in values.items()]
        self._call(self.client.log_batch, self.run_id, metrics=batch)

    def tags(self, values: Mapping[str, str]) -> None:
        for key, value in values.items():
            self._call(self.client.set_tag, self.run_id, key, str(value))

    def artifact(self, path: Path, folder: str | None = None) -> None:
        self._call(self.client.log_artifact, self.run_id, str(path), folder)

    def json(self, payload: object, name: str) -> None:
        """Log a JSON document as an artifact at `name` (e.g. confusion/step_000400.json)."""
        folder, _, filename = name.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / filename
            path.write_text(json.dumps(payload, indent=2, sort_keys=True))
            self._call(self.client.log_artifact, self.run_id, str(path), folder or None)

    def text(self, text: str, name: str) -> None:
        self._call(self.client.log_text, self.run_id, text, name)

    def dataset(self, frame, name: str, context: str, digest_source: str) -> None:
        """Record a manifest as the run's dataset input (visible in the UI's Datasets column)."""
        import warnings

        mlflow = _mlflow()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # schema hints about integer columns, source ambiguity
            data = mlflow.data.from_pandas(frame, source=digest_source, name=name)
        inputs = [mlflow.entities.DatasetInput(data._to_mlflow_entity(), [mlflow.entities.InputTag("mlflow.data.context", context)])]
        self.client.log_inputs(self.run_id, datasets=inputs)

    def finish(self, status: str = "FINISHED", quiet: bool = False) -> None:
        """End the run with `status`; `quiet`: on the way out of an interruption, a failure to do so is not news."""
        try:
            self._call(self.client.set_terminated, self.run_id, status)
        except TrackingError:
            if not quiet:
                raise
