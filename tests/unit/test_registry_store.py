"""The registry after the project folder moved, and model names MLflow's filter strings cannot hold."""

from __future__ import annotations

import shutil

import pytest

from pipeline.errors import ConfigError
from pipeline.tracking.registry import RegistryError, check_model_name, download_model, list_versions, relocate

pytestmark = pytest.mark.slow  # a fresh SQLite registry per test: ~20 s of MLflow migrations each


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A SQLite registry in project/ with one version whose files lie in project/mlartifacts (absolute paths)."""
    import mlflow

    project = tmp_path / "project"
    files = project / "mlartifacts" / "1" / "models" / "m-1" / "artifacts"
    files.mkdir(parents=True)
    (files / "MLmodel").write_text("flavors: {}\n")
    (files / "weights.bin").write_bytes(b"\x01\x02")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project}/mlflow.db")
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", str(project / "mlartifacts"))
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")
    client.create_registered_model("kws")
    version = client.create_model_version("kws", files.as_uri())
    client.set_registered_model_alias("kws", "challenger", version.version)
    return tmp_path, project


def test_a_moved_project_still_finds_its_models(store, monkeypatch, tmp_path):
    """Fault: MLflow recorded absolute artifact paths, so after `mv project moved` `kws inspect --model
    models:/kws@challenger` failed with '<a temporary folder>: not a model'."""
    root, project = store
    moved = root / "moved"
    shutil.move(project, moved)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{moved}/mlflow.db")
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", str(moved / "mlartifacts"))
    found = download_model("models:/kws@challenger", tmp_path / "dst")
    assert found.version == 1 and found.aliases == ["challenger"]
    assert sorted(p.name for p in found.path.iterdir()) == ["MLmodel", "weights.bin"]
    assert (found.path / "weights.bin").read_bytes() == b"\x01\x02"


def test_missing_files_are_named_with_the_cause(store, monkeypatch, tmp_path):
    root, project = store
    shutil.move(project, root / "moved")
    shutil.rmtree(root / "moved" / "mlartifacts")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'moved'}/mlflow.db")
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", str(root / "moved" / "mlartifacts"))
    with pytest.raises(RegistryError) as caught:
        download_model("models:/kws@challenger", tmp_path / "dst")
    message = str(caught.value)
    assert f"not at {project}/mlartifacts/1/models/m-1/artifacts" in message and "was the project folder moved?" in message
    assert f"today's artifact root {root / 'moved' / 'mlartifacts'}" in message


def test_relocate_keeps_the_part_under_the_artifact_root(tmp_path):
    assert relocate(tmp_path / "old/mlartifacts/1/m/artifacts", tmp_path / "new/mlartifacts") == tmp_path / "new/mlartifacts/1/m/artifacts"
    assert relocate(tmp_path / "elsewhere/1/m", tmp_path / "new/mlartifacts") is None


def test_a_quoted_model_name_is_refused_at_load_time_and_at_the_registry(store):
    """Fault: `freeze.registered_model_name: anna's kws` crashed `kws models` (Invalid clause(s) in filter string)."""
    from pipeline.config import parse_params

    with pytest.raises(ConfigError, match=r"freeze.registered_model_name: .*\"anna's kws\" holds a quote or backslash"):
        parse_params({"seed": 1, "data": {"sources": [{"kind": "synthetic"}]}, "freeze": {"registered_model_name": "anna's kws"}})
    with pytest.raises(RegistryError, match=r"registered model name \"anna's kws\": use letters"):
        list_versions("anna's kws")
    assert check_model_name("anna kws") == "anna kws"
    assert [v.version for v in list_versions("kws")] == [1]
