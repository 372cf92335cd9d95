"""MLflow runs: identity (name, tags, description), grouped metrics, datasets, artifacts; one run per training,
reopened by evaluate and freeze."""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import KwsError

log = logging.getLogger(__name__)
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the UI opens on training runs, not GenAI
NOTE_TAG = "mlflow.note.content"  # the run description shown by the MLflow UI


class TrackingError(KwsError):
    """The MLflow tracking store cannot be used."""


class RuntimeSettings(BaseSettings):
    """Runtime settings from the environment (not experiment params: DVC tracks files, not variables).

    `DVC_EXP_NAME` / `DVC_EXP_BASELINE_REV` are set by DVC during `dvc exp run`; empty otherwise.
    """

    model_config = SettingsConfigDict(extra="ignore")
    mlflow_tracking_uri: str = "sqlite:///mlflow.db"
    mlflow_artifact_root: str = "mlartifacts"
    dvc_exp_name: str = ""
    dvc_exp_baseline_rev: str = ""

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _uri_in_project(cls, uri: str) -> str:
        """A relative local store stays the project's in a `dvc exp run --temp` / `--queue` copy (config.project_store)."""
        from pipeline.config import project_store

        if uri.startswith("sqlite:///"):
            return "sqlite:///" + project_store(uri.removeprefix("sqlite:///"))
        return uri if "://" in uri else project_store(uri)

    @field_validator("mlflow_artifact_root")
    @classmethod
    def _root_in_project(cls, root: str) -> str:
        from pipeline.config import project_store

        return root if "://" in root else project_store(root)


def tracking_uri() -> str:
    return RuntimeSettings().mlflow_tracking_uri


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_tracking(uri: str, timeout: float = 2.0, attempts: int = 3, pause: float = 1.0) -> None:
    """Fail fast, before any work, when the tracking store cannot be reached: `attempts` tries of `timeout` s each,
    `pause` s apart (at most ~8 s in all), then TrackingError with one line naming the URI."""
    if is_server(uri):
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


def check_store(_params: object = None) -> None:
    """A stage's preflight: the configured tracking store answers (see `check_tracking`)."""
    check_tracking(tracking_uri())


def store_exists(uri: str) -> bool:
    """False for a SQLite store whose file is not there yet (reading it would create it)."""
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).is_file()


def _reason(error: Exception) -> str:
    """The gist of a client error: MLflow's HTTP errors wrap a long urllib3 text around a short cause."""
    text = str(error).strip()
    for gist in ("Connection refused", "timed out", "Name or service not known", "Connection reset", "No route to host"):
        if gist.lower() in text.lower():
            return gist.lower()
    return (text.splitlines()[0][:160] if text else "") or type(error).__name__


def lost_a_race(error: Exception) -> bool:
    """True when a store write failed only because another writer had just written the same unique row (two runs
    logging one dataset, two stages creating one registered model): SQLAlchemy's IntegrityError behind an
    MlflowException, MLflow's own RESOURCE_ALREADY_EXISTS, or their text relayed by a tracking server (SQLite,
    PostgreSQL and MySQL wordings). Trying again, or reading the row, then finds it."""
    import sqlalchemy.exc

    if getattr(error, "error_code", None) == "RESOURCE_ALREADY_EXISTS":
        return True
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, sqlalchemy.exc.IntegrityError):
            return True
        cause = cause.__cause__
    text = str(error)
    return any(mark in text for mark in ("IntegrityError", "UNIQUE constraint failed", "duplicate key value", "Duplicate entry"))


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


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
    return out.stdout.strip()


def git_state() -> tuple[str, bool]:
    """(HEAD commit, whether tracked files differ from it); ("unknown", False) outside a git checkout."""
    try:
        return _git("rev-parse", "HEAD"), bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def git_commit() -> str:
    commit, dirty = git_state()
    return commit + ("-dirty" if dirty else "")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def params_hash(params: Mapping) -> str:
    """Six hex digits that change with any experiment param (a readable run name suffix)."""
    return hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:6]


def run_identity(model: str, params: Mapping, source: str, settings: RuntimeSettings | None = None) -> tuple[str, dict[str, str]]:
    """The run name and identity tags.

    Name: the DVC experiment's name during `dvc exp run`, else `<model>-<params hash>`; tags: the experiment and its
    baseline, the git commit (MLflow's own `mlflow.source.*` tags too), the user and where the run was started.
    """
    settings = settings or RuntimeSettings()
    commit, dirty = git_state()
    name = settings.dvc_exp_name or f"{model}-{params_hash(params)}"
    tags = {
        "model": model,
        "git_commit": commit,
        "git_dirty": str(dirty).lower(),
        "mlflow.source.name": source,
        "mlflow.source.type": "LOCAL",
        "mlflow.source.git.commit": commit,
        "mlflow.user": _user(),
    }
    if settings.dvc_exp_name:
        tags["dvc_exp_name"] = settings.dvc_exp_name
    if settings.dvc_exp_baseline_rev:
        tags["dvc_exp_baseline_rev"] = settings.dvc_exp_baseline_rev
    return name, tags


HEADLINES = [  # (metric, label, percent?) shown in the run description when the run has them
    ("validation/accuracy", "validation accuracy (generated voices)", True),
    ("test/accuracy", "test accuracy (held-out voices)", True),
    ("real_dev/accuracy", "real_dev accuracy (real speakers)", True),
    ("streaming/correct_percentage", "streaming: keywords correct", False),
    ("streaming/false_alarms_per_hour", "streaming: false alarms per hour", False),
    ("test/int8_accuracy", "int8 TFLite test accuracy", True),
    ("real_dev/int8_accuracy", "int8 TFLite real_dev accuracy", True),
]


def note_from(tags: Mapping[str, str], metrics: Mapping[str, float]) -> str:
    """The run description (markdown) from its tags and latest metrics: what was trained on what, and how it did."""
    lines = [f"**{tags.get('model', 'model')}** trained on `{tags.get('data_sources', '?')}` (profile: {tags.get('profile', '?')})."]
    if tags.get("dvc_exp_name"):
        lines.append(f"DVC experiment `{tags['dvc_exp_name']}` from baseline `{tags.get('dvc_exp_baseline_rev', '?')[:10]}`.")
    for key, label, percent in HEADLINES:
        if key in metrics:
            value = metrics[key]
            lines.append(f"- {label}: " + (f"{100 * value:.1f} %" if percent else f"{value:.1f}"))
    if tags.get("registered_version"):
        lines.append(f"Registered as `{tags['registered_version']}`.")
    return "\n".join(lines)


def split_counts(values: Mapping[str, object]) -> tuple[dict[str, float], dict[str, str]]:
    """Floats are metrics; integer counts and text become tags (a count is not a curve to chart)."""
    metrics, tags = {}, {}
    for key, value in values.items():
        if isinstance(value, float):
            metrics[key] = value
        elif isinstance(value, bool | int | str):
            tags[key] = str(value)
    return metrics, tags


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


@contextmanager
def process_uris(uri: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking and registry URIs at `uri`, then put them and the MLFLOW_*_URI variables
    they write back, so later calls in this process see their own store. Needed where MLflow reads the global URI
    whatever the client's: log_model (no client argument) and a SQLite registry's create_model_version, which
    looks up a `models:/m-…` source through MlflowClient() (outside the project's folder, e.g. in a temporary DVC
    experiment's copy, the default store there is another file: "Logged model … not found")."""
    mlflow = _mlflow()
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    env = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Run:
    """One MLflow run that the train stage opens and evaluate/freeze reopen by id."""

    def __init__(self, run_id: str, uri: str):
        self.run_id, self.uri = run_id, uri
        self.client = _mlflow().MlflowClient(tracking_uri=uri)
        self.datasets: dict[str, tuple[str, str]] = {}  # context -> (name, digest) of the inputs logged by this object

    @property
    def name(self) -> str:
        return self._call(self.client.get_run, self.run_id).info.run_name

    @classmethod
    def start(cls, experiment: str, model: str, params: Mapping, tags: Mapping[str, str], source: str = "stages/train.py") -> Run:
        """Create the experiment if needed and a new run named and tagged by `run_identity`, with params and a note.

        A local store keeps artifacts in `MLFLOW_ARTIFACT_ROOT`; a tracking server decides (proxied artifacts).
        """
        uri = tracking_uri()
        check_tracking(uri)
        mlflow = _mlflow()
        client = mlflow.MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            location = None if is_server(uri) else Path(RuntimeSettings().mlflow_artifact_root).resolve().as_uri()
            try:
                experiment_id = client.create_experiment(experiment, artifact_location=location, tags=EXPERIMENT_KIND)
            except mlflow.exceptions.MlflowException as error:
                if not lost_a_race(error):  # anything but another worker creating it first
                    raise
                experiment_id = client.get_experiment_by_name(experiment).experiment_id
        else:
            experiment_id = found.experiment_id
            if found.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND["mlflow.experimentKind"]:
                client.set_experiment_tag(experiment_id, *next(iter(EXPERIMENT_KIND.items())))
        name, identity = run_identity(model, params, source)
        all_tags = {**identity, **tags}
        run = client.create_run(experiment_id, run_name=name, tags={**all_tags, NOTE_TAG: note_from(all_tags, {})})
        self = cls(run.info.run_id, uri)
        items = list(flatten(params).items())
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=[mlflow.entities.Param(k, v[:6000]) for k, v in items[start : start + 100]])
        return self

    @classmethod
    def resume(cls, run_id: str) -> Run:
        """The train stage's run, reopened. Raises TrackingError (one line) when the store does not answer or does not
        hold it: the model was trained against another store, or DVC restored it from its run cache after a run
        whose store is gone (a `dvc exp run --temp` copy before runs were kept in the project's store)."""
        uri = tracking_uri()
        check_tracking(uri)
        missing = TrackingError(f"MLflow run {run_id} (the train stage's run_id.txt) is not in the tracking store {uri} "
                                "(the model was trained against another store, or its files came from DVC's cache or a "
                                "remote); set MLFLOW_TRACKING_URI to the store that holds it, or retrain: dvc repro -f -s "
                                "train, then dvc repro")  # fmt: skip
        if not store_exists(uri):  # reading a SQLite store that is not there would create an empty one
            raise missing
        self = cls(run_id, uri)
        try:
            self.client.get_run(run_id)
        except Exception as error:  # noqa: BLE001 - MlflowException, requests and sqlite errors alike: one line
            if getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                raise missing from None
            raise TrackingError(f"MLflow tracking store {uri} stopped answering ({_reason(error)})") from None
        return self

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


    def metrics(self, values: Mapping[str, float], step: int | None = None, dataset: tuple[str, str] | None = None) -> None:
        """Log metrics at `step`; `dataset` = (name, digest) of a dataset input links them to it in the UI."""
        mlflow = _mlflow()
        stamp = mlflow.utils.time.get_current_time_millis()
        name, digest = dataset or (None, None)
        batch = [mlflow.entities.Metric(k, float(v), stamp, step or 0, dataset_name=name, dataset_digest=digest)
                 for k, v in values.items()]  # fmt: skip
        self._call(self.client.log_batch, self.run_id, metrics=batch)

    def results(self, prefix: str, values: Mapping[str, object], step: int | None = None, dataset: tuple[str, str] | None = None) -> None:
        """One set's figures under `prefix/`: rates as metrics, counts and labels as tags."""
        metrics, tags = split_counts(values)
        self.metrics({f"{prefix}/{k}": v for k, v in metrics.items()}, step=step, dataset=dataset)
        self.tags({f"{prefix}/{k}": v for k, v in tags.items()})

    def step_metrics(self, entry: Mapping[str, float], step: int) -> None:
        """One evaluation step of training: `train_x` -> `train/x`, `validation_x` -> `validation/x` (linked to the
        validation dataset input when one was logged), anything else (learning_rate) under `train/`."""
        groups: dict[str, dict[str, float]] = {"train": {}, "validation": {}}
        for key, value in entry.items():
            if key == "step":
                continue
            prefix, _, rest = key.partition("_")
            if prefix in groups and rest:
                groups[prefix][rest] = value
            else:
                groups["train"][key] = value
        self.metrics({f"train/{k}": v for k, v in groups["train"].items()}, step=step)
        self.metrics({f"validation/{k}": v for k, v in groups["validation"].items()}, step=step, dataset=self.datasets.get("validation"))

    def tags(self, values: Mapping[str, str]) -> None:
        for key, value in values.items():
            self._call(self.client.set_tag, self.run_id, key, str(value))

    def refresh_note(self, extra: Mapping[str, str] | None = None) -> str:
        """Rewrite the run description from the run's current tags and metrics (after evaluate, after freeze)."""
        data = self.client.get_run(self.run_id).data
        note = note_from({**data.tags, **(extra or {})}, data.metrics)
        self.client.set_tag(self.run_id, NOTE_TAG, note)
        return note

    def artifact(self, path: Path, folder: str | None = None) -> None:
        self._call(self.client.log_artifact, self.run_id, str(path), folder)

    def json(self, payload: object, name: str) -> None:
        """Log a JSON document as an artifact at `name` (e.g. confusion/step_000400.json)."""
        folder, _, filename = name.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / filename
            path.write_text(json.dumps(payload, indent=2, sort_keys=True))
            self._call(self.client.log_artifact, self.run_id, str(path), folder or None)

    def confusion(self, matrix, labels: list[str], step: int, title: str) -> None:
        """The confusion matrix of one evaluation step as a PNG (confusion/step_000400.png) and as JSON."""
        from pipeline.metrics import plot_confusion

        with tempfile.TemporaryDirectory() as tmp:
            png = Path(tmp) / f"step_{step:06d}.png"
            plot_confusion(matrix, labels, png, f"{title}, step {step}")
            self.client.log_artifact(self.run_id, str(png), "confusion")
        self.json({"labels": labels, "matrix": matrix.tolist(), "step": step}, f"confusion/step_{step:06d}.json")

    def text(self, text: str, name: str) -> None:
        self._call(self.client.log_text, self.run_id, text, name)

    def dataset(self, frame, name: str, context: str, digest: str, source: str) -> tuple[str, str]:
        """Record a manifest (one row per clip) as a dataset input; returns (name, digest) for `metrics(dataset=)`.

        `digest`: the DVC hash of the data (or a content hash), at most 36 characters (MLflow's column).
        """
        import warnings

        mlflow = _mlflow()
        digest = digest[:36]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # schema hints about integer columns, source ambiguity
            data = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest)._to_mlflow_entity()
        inputs = [mlflow.entities.DatasetInput(data, [mlflow.entities.InputTag("mlflow.data.context", context)])]
        for attempt in range(3):  # MLflow looks the dataset up, then inserts it: a concurrent run may insert between
            try:
                self.client.log_inputs(self.run_id, datasets=inputs)
                break
            except mlflow.exceptions.MlflowException as error:
                if attempt == 2 or not lost_a_race(error):
                    raise TrackingError(f"MLflow tracking store {self.uri} refused dataset {name!r} ({_reason(error)})") from None
        self.datasets[context] = (name, digest)
        return name, digest

    def link_to_model(self, model_id: str) -> int:
        """Log each set's latest metrics again for the logged model, linked to the set's dataset input (MLflow 3.17 keeps
        a metric's dataset only on logged-model metrics); `test/` goes with the `testing` input. Returns the count."""
        mlflow = _mlflow()
        run = self.client.get_run(self.run_id)
        digests = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
        stamp = mlflow.utils.time.get_current_time_millis()
        batch = []
        for key, value in run.data.metrics.items():
            prefix = key.split("/", 1)[0]
            dataset = "testing" if prefix == "test" else prefix
            if "/" in key and dataset in digests and dataset not in ("training", "validation"):
                batch.append(mlflow.entities.Metric(key, value, stamp, 0, model_id=model_id, dataset_name=dataset,
                                                    dataset_digest=digests[dataset]))  # fmt: skip
        for start in range(0, len(batch), 100):
            self.client.log_batch(self.run_id, metrics=batch[start : start + 100])
        return len(batch)

    def finish(self, status: str = "FINISHED", quiet: bool = False) -> None:
        """End the run with `status`; `quiet`: on the way out of an interruption, a failure to do so is not news."""
        try:
            self._call(self.client.set_terminated, self.run_id, status)
        except TrackingError:
            if not quiet:
                raise


def content_digest(*arrays) -> str:
    """A 32-hex content hash of numpy arrays (clips and labels of a set with no DVC hash)."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(memoryview(array).cast("B") if array.flags.c_contiguous else array.tobytes())
    return digest.hexdigest()[:32]


def dvc_hash(lock: Path, stage: str, out: Path) -> str | None:
    """The md5 DVC recorded in dvc.lock for `out` of `stage`, if any."""
    if not lock.is_file():
        return None
    import yaml

    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for entry in stages.get(stage, {}).get("outs", []):
        if Path(entry["path"]) == Path(out):
            return str(entry.get("md5") or entry.get("hash") or "") or None
    return None


def split_digest(split: Path, lock: Path = Path("dvc.lock")) -> str:
    """The DVC hash of the split output (from dvc.lock) or, outside DVC, a hash of its manifest."""
    found = dvc_hash(lock, "split", split)
    if found:
        return found
    manifest = split / "manifest.parquet"
    return hashlib.sha256(manifest.read_bytes()).hexdigest()[:32] if manifest.exists() else "unknown"
