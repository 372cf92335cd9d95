"""The MLflow model registry: register a version as `challenger`, gated promotion by metric, rollback."""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from datetime import UTC, datetime

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


def register(name: str, model_uri: str, run_id: str, tags: dict[str, str], alias: str = "challenger") -> int:
    """Register `model_uri` under `name`, tag it and point `alias` at it; return the version number."""
    client = _client()
    try:
        client.get_registered_model(name)
    except _mlflow().exceptions.MlflowException:
        client.create_registered_model(name, description="Keyword spotter: raw 16 kHz audio in, class scores out")
    version = client.create_model_version(name, model_uri, run_id=run_id, tags={k: str(v) for k, v in tags.items()})
    client.set_registered_model_alias(name, alias, version.version)
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
    return float(tags[metric])


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
