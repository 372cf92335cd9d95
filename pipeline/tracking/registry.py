"""The MLflow model registry: register a version as `challenger` with its card, promotion gated on real speech, rollback."""

from __future__ import annotations

import getpass
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pipeline.errors import KwsError
from pipeline.tracking.compare import pair, refusals
from pipeline.tracking.runs import RuntimeSettings, _mlflow, check_tracking, lost_a_race, process_uris, store_exists, tracking_uri

HISTORY_TAG = "alias_history"  # registered-model tag: JSON {alias: [versions that held it, oldest first]}


class RegistryError(KwsError):
    """A registry request that cannot be done (unknown model/version/alias, worse candidate)."""


LOG_TAG = "alias_log"  # registered-model tag: JSON list of the last alias moves {alias, version, previous, action, by, at, why}
LOG_KEEP = 20
GATE_SETS = ("real_dev",)  # preferred sets for the promotion gate, before any other extra set, then testing
ALARMS = "streaming/false_alarms_per_hour"


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


_BAD_NAME = re.compile(r"['\"\\\\]")


def check_model_name(name: str) -> str:
    """Raise RegistryError for a registered-model name MLflow's filter strings cannot hold (quotes, backslash)."""
    if not name or not name.strip() or _BAD_NAME.search(name):
        raise RegistryError(f"registered model name {name!r}: use letters, digits, spaces, '-', '_' or '.' "
                            "(quotes and backslashes break MLflow's filter strings)")  # fmt: skip
    return name


def _client(create: bool = False):
    """A registry client; unless `create`, a SQLite store that does not exist yet is an error, not a new file."""
    uri = tracking_uri()
    check_tracking(uri)
    if not create and not store_exists(uri):
        raise RegistryError(f"no tracking store at {uri.removeprefix('sqlite:///')}: nothing is registered yet "
                            "(run the freeze stage, or set MLFLOW_TRACKING_URI)")  # fmt: skip
    mlflow = _mlflow()
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _registered(client, name: str):
    try:
        return client.get_registered_model(name)
    except _mlflow().exceptions.MlflowException:
        raise RegistryError(f"no registered model named {name!r}; run the freeze stage first") from None


@dataclass
class VersionInfo:
    """One registered version as `kws models` shows it (`metrics`: its run's headline metrics)."""

    version: int
    aliases: list[str]
    tags: dict[str, str]
    created: str
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    description: str = ""


_LOGGED_MODEL_URI = re.compile(r"^models:/(m-[0-9a-f]+)$")  # what mlflow.pyfunc.log_model returns in MLflow 3


def logged_model_id(model_uri: str) -> str | None:
    found = _LOGGED_MODEL_URI.match(model_uri)
    return found.group(1) if found else None


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def version_of_run(name: str, run_id: str) -> tuple[int, str] | None:
    """The newest version of `name` already registered from `run_id` and its model URI, or None."""
    client = _client()
    try:
        found = client.search_model_versions(f"name = {_quoted(name)} and run_id = {_quoted(run_id)}")
    except _mlflow().exceptions.MlflowException:
        return None
    if not found:
        return None
    newest = max(found, key=lambda v: int(v.version))
    return int(newest.version), newest.source


def reuse_version(name: str, version: int, tags: dict[str, str], alias: str = "challenger") -> int:
    """Re-tag an already registered version and point `alias` at it (a freeze rerun for the same training run)."""
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))
    client.set_registered_model_alias(name, alias, str(version))
    return int(version)


def register(name: str, model_uri: str, run_id: str, tags: dict[str, str], alias: str = "challenger") -> int:
    """Register `model_uri` under `name`, tag it and point `alias` at it; return the version number."""
    check_model_name(name)
    client = _client(create=True)
    try:
        client.get_registered_model(name)
    except _mlflow().exceptions.MlflowException:
        try:
            client.create_registered_model(name, description="Keyword spotter: raw 16 kHz audio in, class scores out")
        except _mlflow().exceptions.MlflowException as error:  # another freeze registered the name first
            if not lost_a_race(error):
                raise
    model_id = logged_model_id(model_uri)  # links the version to its logged model (UI, lineage)
    with process_uris(tracking_uri()):  # a `models:/m-…` source is looked up in the global store (see process_uris)
        version = client.create_model_version(
            name, model_uri, run_id=run_id, tags={k: str(v) for k, v in tags.items()}, model_id=model_id
        )
    _move_alias(client, name, alias, int(version.version), "register", f"registered from run {run_id}")
    if model_id is not None:  # what mlflow.register_model does: the logged model lists its registered versions
        try:
            logged = client.get_logged_model(model_id)
            linked = json.loads(logged.tags.get("mlflow.modelVersions", "[]"))
            linked.append({"name": name, "version": version.version})
            client.set_logged_model_tags(model_id, {"mlflow.modelVersions": json.dumps(linked)})
        except _mlflow().exceptions.MlflowException:
            pass
    return int(version.version)


def attach_card(name: str, version: int, model_uri: str, run_id: str, card: Path, description: str) -> None:
    """The version's description, and `model_card.md` beside the model's files (or in its run when not a logged model)."""
    client = _client()
    client.update_model_version(name, str(version), description=description)
    model_id = logged_model_id(model_uri)
    if model_id is not None:
        client.log_model_artifact(model_id, str(card))
    client.log_artifact(run_id, str(card), f"model_card/v{version}")


HEADLINE_METRICS = ("test/accuracy", "real_dev/accuracy", ALARMS, "test/int8_accuracy")


def list_versions(name: str) -> list[VersionInfo]:
    """All versions of `name`, newest first, with their run's headline metrics."""
    check_model_name(name)
    client = _client()
    model = _registered(client, name)
    by_version: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for v in client.search_model_versions(f"name = {_quoted(name)}"):
        metrics = _run_metrics(client, v.run_id)
        rows.append(VersionInfo(
            version=int(v.version), aliases=sorted(by_version.get(str(v.version), [])), tags=dict(v.tags or {}),
            created=datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            run_id=v.run_id or "", metrics={k: metrics[k] for k in HEADLINE_METRICS if k in metrics},
            description=(v.description or "").split("\n", 1)[0],
        ))  # fmt: skip
    return sorted(rows, key=lambda r: -r.version)


def _run_metrics(client, run_id: str | None) -> dict[str, float]:
    if not run_id:
        return {}
    try:
        return dict(client.get_run(run_id).data.metrics)
    except _mlflow().exceptions.MlflowException:
        return {}


def _alias_version(client, name: str, alias: str) -> int | None:
    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except _mlflow().exceptions.MlflowException:
        return None


def _history(client, name: str) -> dict[str, list[int]]:
    tags = client.get_registered_model(name).tags or {}
    return json.loads(tags.get(HISTORY_TAG, "{}"))


def _move_alias(client, name: str, alias: str, version: int, action: str, why: str, push: bool = False) -> int | None:
    """Point `alias` at `version`: the old holder loses its `alias.*` tags, the new one gets fresh ones (no stale
    `rolled_back_*` on a current holder); the move is appended to the model's alias log. Returns the old holder."""
    current = _alias_version(client, name, alias)
    history = _history(client, name)
    if push and current is not None:
        history.setdefault(alias, []).append(current)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for holder in {current, version} - {None}:
        for key in list(client.get_model_version(name, str(holder)).tags or {}):
            if key.startswith(f"{alias}."):
                client.delete_model_version_tag(name, str(holder), key)
    client.set_registered_model_alias(name, alias, str(version))
    for key, value in {"since": stamp, "by": _who(), "reason": why}.items():
        client.set_model_version_tag(name, str(version), f"{alias}.{key}", value)
    log_entries = json.loads((client.get_registered_model(name).tags or {}).get(LOG_TAG, "[]"))
    log_entries.append({"alias": alias, "version": version, "previous": current, "action": action, "by": _who(), "at": stamp,
                        "why": why[:300]})  # fmt: skip
    client.set_registered_model_tag(name, LOG_TAG, json.dumps(log_entries[-LOG_KEEP:]))
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    return current


def _per_clip(client, run_id: str, folder: Path) -> dict[str, Path]:
    """Set name -> local copy of the run's `evaluate/clips_<set>.csv` (what evaluate logged per clip)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a CLI's stderr is for the one-line verdict
    try:
        listed = client.list_artifacts(run_id, "evaluate")
    except _mlflow().exceptions.MlflowException:
        return {}
    found = {}
    for item in listed:
        base = item.path.rsplit("/", 1)[-1]
        if base.startswith("clips_") and base.endswith(".csv"):
            found[base.removeprefix("clips_").removesuffix(".csv")] = item.path
    local = {}
    for set_name, path in found.items():
        target = folder / run_id
        target.mkdir(parents=True, exist_ok=True)
        local[set_name] = Path(client.download_artifacts(run_id, path, str(target)))
    return local


def gate_set(challenger: set[str], champion: set[str], wanted: str | None) -> str | None:
    """The set both versions were scored on that the gate compares: `wanted`, else real_dev, another extra set, testing."""
    common = challenger & champion
    if wanted is not None:
        return wanted if wanted in common else None
    for name in (*GATE_SETS, *sorted(common - {"testing"}), "testing"):
        if name in common:
            return name
    return None


@dataclass
class Decision:
    """What `promote` compared and decided; `lines` are for the user (stdout)."""

    message: str
    lines: list[str]


def compare_versions(client, name: str, challenger: int, champion: int, wanted_set: str | None,
                     require_significant: bool) -> tuple[list[str], list[str]]:  # fmt: skip
    """(report lines, refusal reasons) of `challenger` against `champion` on the same clips and on false alarms."""
    new = client.get_model_version(name, str(challenger))
    old = client.get_model_version(name, str(champion))
    with tempfile.TemporaryDirectory() as tmp:
        new_clips, old_clips = _per_clip(client, new.run_id, Path(tmp) / "new"), _per_clip(client, old.run_id, Path(tmp) / "old")
        chosen = gate_set(set(new_clips), set(old_clips), wanted_set)
        if chosen is None and wanted_set is not None:
            raise RegistryError(f"--set {wanted_set}: per-clip results of v{challenger}: {', '.join(sorted(new_clips)) or 'none'}; "
                                f"of v{champion}: {', '.join(sorted(old_clips)) or 'none'}")  # fmt: skip
        paired = None
        lines = []
        if chosen is not None:
            paired = pair(chosen, pd.read_csv(new_clips[chosen]), pd.read_csv(old_clips[chosen]))
            lines.append(f"v{challenger} vs v{champion} on {paired.describe()}")
        else:
            lines.append("no per-clip results of both versions on a common set: no paired comparison")
    new_metrics, old_metrics = _run_metrics(client, new.run_id), _run_metrics(client, old.run_id)
    alarms = (new_metrics.get(ALARMS), old_metrics.get(ALARMS))
    if None not in alarms:
        lines.append(f"streaming false alarms per hour: challenger {alarms[0]:.1f} vs champion {alarms[1]:.1f}")
    if paired is None and wanted_set is None:  # older versions without per-clip files: the run metrics, unpaired
        for set_name in (*GATE_SETS, "test"):
            key = f"{set_name}/accuracy"
            if key in new_metrics and key in old_metrics:
                lines.append(f"{key} (unpaired): challenger {new_metrics[key]:.4f} vs champion {old_metrics[key]:.4f}")
                if new_metrics[key] < old_metrics[key]:
                    return lines, [f"lower {key}: {new_metrics[key]:.4f} vs {old_metrics[key]:.4f}",
                                   *refusals(None, alarms, require_significant)]  # fmt: skip
                break
    return lines, refusals(paired, alarms, require_significant)


def promote(name: str, version: int | None, alias: str | None, to: str, force: bool, reason: str = "",
            gate: str | None = None, require_significant: bool = False) -> Decision:  # fmt: skip
    """Point alias `to` at the candidate unless it is worse than the current holder for users.

    The gate pairs both versions' per-clip results on real speech (`gate`, else real_dev, else testing): refused when
    lower on accuracy or higher on streaming false alarms per hour, and with `require_significant` unless McNemar's
    exact p < 0.05. `force` promotes anyway (recorded). Raises RegistryError with the numbers when refused.
    """
    check_model_name(name)
    client = _client()
    _registered(client, name)
    if version is None:
        version = _alias_version(client, name, alias or "challenger")
        if version is None:
            raise RegistryError(f"{name} has no version with alias {alias or 'challenger'!r}")
    try:
        client.get_model_version(name, str(version))
    except _mlflow().exceptions.MlflowException:
        raise RegistryError(f"{name} has no version {version}") from None
    current = _alias_version(client, name, to)
    if current == version:
        return Decision(f"{name} version {version} already holds {to!r}", [])
    lines, reasons = ([], []) if current is None else compare_versions(client, name, version, current, gate, require_significant)
    if reasons and not force:
        raise RegistryError(f"refused: version {version} vs {to} version {current}: " + "; ".join(reasons)
                            + ("; " + lines[0] if lines and "McNemar" in lines[0] else "") + "; use --force to promote anyway")  # fmt: skip
    why = reason or ("; ".join(lines) or "first holder") + (f" (forced over: {'; '.join(reasons)})" if reasons else "")
    _move_alias(client, name, to, version, "promote" + (" --force" if force and reasons else ""), why, push=True)
    message = f"{name} version {version} is now {to!r}" + (f" (was version {current})" if current is not None else "")
    return Decision(message, lines)


def rollback(name: str, alias: str = "champion") -> str:
    """Give `alias` back to the version that held it before the last promotion."""
    check_model_name(name)
    client = _client()
    _registered(client, name)
    history = _history(client, name)
    previous = history.get(alias, [])
    if not previous:
        raise RegistryError(f"{name}: no earlier holder of {alias!r} to roll back to")
    target = previous.pop()
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    current = _move_alias(client, name, alias, target, "rollback", f"rolled back from version {_alias_version(client, name, alias)}")
    return f"{name}: {alias!r} is version {target} again (was version {current})"


@dataclass
class DownloadedModel:
    """A registered (or logged) model copied to a local folder, and where it came from."""

    uri: str
    path: Path
    name: str | None = None
    version: int | None = None
    aliases: list[str] | None = None
    run_id: str | None = None
    tags: dict[str, str] | None = None


_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))?$")


def download_model(uri: str, dst: Path) -> DownloadedModel:
    """Resolve `models:/NAME@alias`, `models:/NAME/N` or `models:/m-ID` and download the model folder into `dst`."""
    found = _MODELS_URI.match(uri)
    if not found or (found["alias"] is None and found["version"] is None and not found["name"].startswith("m-")):
        raise RegistryError(f"{uri!r} is not a model URI; expected models:/NAME@ALIAS, models:/NAME/VERSION or models:/m-ID")
    client = _client()
    mlflow = _mlflow()
    info = DownloadedModel(uri=uri, path=Path(dst))
    if found["alias"] is not None or found["version"] is not None:
        name = check_model_name(found["name"])
        try:
            if found["alias"] is not None:
                version = client.get_model_version_by_alias(name, found["alias"])
            else:
                version = client.get_model_version(name, found["version"])
        except mlflow.exceptions.MlflowException:
            what = f"alias {found['alias']!r}" if found["alias"] is not None else f"version {found['version']}"
            raise RegistryError(f"{uri}: registered model {name!r} has no {what}") from None
        info.name, info.version, info.run_id = name, int(version.version), version.run_id or None
        info.aliases = sorted(version.aliases or [])
        info.tags = dict(version.tags or {})
    uri_setting = tracking_uri()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a CLI's stderr is for warnings
    source = _local_source(uri, _storage_location(client, found, info))
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=str(source) if source else uri, dst_path=str(dst), tracking_uri=uri_setting, registry_uri=uri_setting
        )
    except mlflow.exceptions.MlflowException as error:
        first = (str(error).strip().splitlines() or ["unknown error"])[0]
        raise RegistryError(f"{uri}: cannot download the model ({first})") from None
    info.path = Path(local)
    return info


def _storage_location(client, found: re.Match, info: DownloadedModel) -> str | None:
    """Where the model's files are stored (an artifact URI), or None when MLflow cannot say."""
    mlflow = _mlflow()
    try:
        if info.version is not None:
            return client.get_model_version_download_uri(info.name, str(info.version))
        return client.get_logged_model(found["name"]).artifact_location
    except mlflow.exceptions.MlflowException:
        return None


def relocate(stored: Path, artifact_root: Path) -> Path | None:
    """`stored` (an absolute path recorded before the project moved) under today's artifact root: the part after
    the root's folder name (`mlartifacts/1/models/m-1/artifacts` -> `<root>/1/models/m-1/artifacts`)."""
    parts = stored.parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == artifact_root.name:
            return artifact_root.joinpath(*parts[i + 1 :])
    return None


def _local_source(uri: str, location: str | None) -> Path | None:
    """A local folder to download from when the recorded one is gone because the project folder moved; None to
    let MLflow download `uri` as recorded. Raises RegistryError naming the missing location otherwise."""
    if not location or not (location.startswith("file:") or location.startswith("/")):
        return None
    from urllib.parse import unquote, urlparse

    stored = Path(unquote(urlparse(location).path)) if location.startswith("file:") else Path(location)
    if stored.exists():
        return None
    root = Path(RuntimeSettings().mlflow_artifact_root).resolve()
    moved = relocate(stored, root)
    if moved is not None and moved.exists():
        return moved
    raise RegistryError(f"{uri}: the model's files are not at {stored}, where the registry recorded them (was the "
                        f"project folder moved?), nor under today's artifact root {root} (MLFLOW_ARTIFACT_ROOT)")  # fmt: skip
