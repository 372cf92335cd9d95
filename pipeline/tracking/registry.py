"""The MLflow model registry: register a version as `challenger`, gated promotion by metric, rollback."""

from __future__ import annotations

import getpass
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import KwsError
from pipeline.tracking.runs import _mlflow, check_tracking, tracking_uri

HISTORY_TAG = "alias_history"  # registered-model tag: JSON {alias: [versions that held it, oldest first]}


class RegistryError(KwsError):
    """A registry request that cannot be done (unknown model/version/alias, worse candidate)."""


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _client():
    uri = tracking_uri()
    check_tracking(uri)
    mlflow = _mlflow()
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


@dataclass
class VersionInfo:
    """One registered version as `kws models` shows it."""

    version: int
    aliases: list[str]
    tags: dict[str, str]
    created: str
    run_id: str


_LOGGED_MODEL_URI = re.compile(r"^models:/(m-[0-9a-f]+)$")  # what mlflow.pyfunc.log_model returns in MLflow 3


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
    client = _client()
    try:
        client.get_registered_model(name)
    except _mlflow().exceptions.MlflowException:
        client.create_registered_model(name, description="Keyword spotter: raw 16 kHz audio in, class scores out")
    found = _LOGGED_MODEL_URI.match(model_uri)
    model_id = found.group(1) if found else None  # links the version to its logged model (UI, lineage)
    version = client.create_model_version(
        name, model_uri, run_id=run_id, tags={k: str(v) for k, v in tags.items()}, model_id=model_id
    )
    client.set_registered_model_alias(name, alias, version.version)
    if model_id is not None:  # what mlflow.register_model does: the logged model lists its registered versions
        try:
            logged = client.get_logged_model(model_id)
            linked = json.loads(logged.tags.get("mlflow.modelVersions", "[]"))
            linked.append({"name": name, "version": version.version})
            client.set_logged_model_tags(model_id, {"mlflow.modelVersions": json.dumps(linked)})
        except _mlflow().exceptions.MlflowException:
            pass
    return int(version.version)


def list_versions(name: str) -> list[VersionInfo]:
    """All versions of `name`, newest first."""
    client = _client()
    try:
        model = client.get_registered_model(name)
    except _mlflow().exceptions.MlflowException:
        raise RegistryError(f"no registered model named {name!r}; run the freeze stage first") from None
    by_version: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        by_version.setdefault(str(version), []).append(alias)
    versions = client.search_model_versions(f"name = '{name}'")
    rows = [
        VersionInfo(
            version=int(v.version),
            aliases=sorted(by_version.get(str(v.version), [])),
            tags=dict(v.tags or {}),
            created=datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            run_id=v.run_id or "",
        )
        for v in versions
    ]
    return sorted(rows, key=lambda r: -r.version)


def _alias_version(client, name: str, alias: str) -> int | None:
    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except _mlflow().exceptions.MlflowException:
        return None


def _metric(client, name: str, version: int, metric: str) -> float:
    tags = client.get_model_version(name, str(version)).tags or {}
    if metric not in tags:
        raise RegistryError(f"{name} version {version} has no {metric!r} tag; known: {', '.join(sorted(tags)) or 'none'}")
    try:
        return float(tags[metric])
    except ValueError:
        raise RegistryError(f"{name} version {version}: tag {metric}={tags[metric]!r} is not a number") from None


def _history(client, name: str) -> dict[str, list[int]]:
    tags = client.get_registered_model(name).tags or {}
    return json.loads(tags.get(HISTORY_TAG, "{}"))


def promote(name: str, version: int | None, alias: str | None, to: str, metric: str, force: bool, reason: str = "") -> str:
    """Point alias `to` at the candidate only if it is at least as good on `metric` as the current holder."""
    client = _client()
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
        return f"{name} version {version} already holds {to!r}"
    candidate_score = _metric(client, name, version, metric)
    if current is not None:
        current_score = _metric(client, name, current, metric)
        if candidate_score < current_score and not force:
            raise RegistryError(
                f"refused: version {version} has {metric} {candidate_score:.4f} < {current_score:.4f} of version "
                f"{current} ({to}); use --force to promote anyway"
            )
    history = _history(client, name)
    if current is not None:
        history.setdefault(to, []).append(current)
    client.set_registered_model_alias(name, to, str(version))
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    why = reason or (f"{metric} {candidate_score:.4f}" + (" (forced)" if force else "")
                     + (f" vs {current_score:.4f} of v{current}" if current is not None else " (first)"))  # fmt: skip
    for key, value in {f"{to}.promoted_by": _who(), f"{to}.promoted_at": stamp, f"{to}.reason": why}.items():
        client.set_model_version_tag(name, str(version), key, value)
    return f"{name} version {version} is now {to!r}" + (f" (was version {current})" if current is not None else "")


def rollback(name: str, alias: str = "champion") -> str:
    """Give `alias` back to the version that held it before the last promotion."""
    client = _client()
    history = _history(client, name)
    previous = history.get(alias, [])
    if not previous:
        raise RegistryError(f"{name}: no earlier holder of {alias!r} to roll back to")
    current = _alias_version(client, name, alias)
    target = previous.pop()
    client.set_registered_model_alias(name, alias, str(target))
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    client.set_model_version_tag(name, str(target), f"{alias}.rolled_back_at", stamp)
    if current is not None:
        client.set_model_version_tag(name, str(current), f"{alias}.rolled_back_by", _who())
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
        name = found["name"]
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
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(dst), tracking_uri=uri_setting, registry_uri=uri_setting
        )
    except mlflow.exceptions.MlflowException as error:
        first = (str(error).strip().splitlines() or ["unknown error"])[0]
        raise RegistryError(f"{uri}: cannot download the model ({first})") from None
    info.path = Path(local)
    return info
