"""dvc.yaml matches the code: each stage's deps cover every pipeline module it imports, its outs every artifact it writes.

A stage's import closure is found statically: starting at `stages/<stage>.py`, every `import pipeline...` and
`from pipeline... import ...` (module-level or inside functions) is followed through the modules it names.
A module is covered when it or a folder above it is a dep. Modules with no code (empty `__init__.py`) are exempt.
"""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import pytest
import yaml

from pipeline import artifacts
from pipeline.config import ParamsLoader, parse_params
from tests.conftest import REPO

INTERPOLATION = re.compile(r"\$\{\s*([\w.]+)\s*\}")
FIELD_EXAMPLES = {"set": "testing", "mode": "float"}


def resolve(text: str, params: dict) -> str:
    """Substitute dvc.yaml's ${a.b} from params.yaml; KeyError names an unknown key."""

    def lookup(match: re.Match) -> str:
        value = params
        for key in match.group(1).split("."):
            value = value[key]
        return str(value)

    return INTERPOLATION.sub(lookup, text)


def module_file(module: str, repo: Path) -> Path | None:
    """pipeline.a.b -> pipeline/a/b.py or pipeline/a/b/__init__.py (relative to repo); None if neither exists."""
    base = Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if (repo / candidate).is_file():
            return candidate
    return None


def imported_modules(path: Path, module: str, repo: Path) -> set[str]:
    """The `pipeline.*` modules one file imports, anywhere in it (function bodies included)."""
    tree = ast.parse((repo / path).read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from ..a import b
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)  # `from pipeline import artifacts`
    return {name for name in found if name.split(".")[0] == "pipeline" and module_file(name, repo)}


def with_parents(module: str) -> list[str]:
    """pipeline.a.b -> [pipeline, pipeline.a, pipeline.a.b]: importing a module runs its packages' __init__ first."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_closure(entry: Path, repo: Path) -> dict[Path, str]:
    """Every pipeline module file reachable from `entry` (a stage file), mapped to one module that imports it."""
    seen: dict[Path, str] = {}
    todo = [(entry, ".".join(entry.with_suffix("").parts), str(entry))]
    while todo:
        path, module, importer = todo.pop()
        for name in imported_modules(path, module, repo):
            for member in with_parents(name):
                file = module_file(member, repo)
                if file is not None and file not in seen:
                    seen[file] = importer if member == name else f"{importer} (package of {name})"
                    todo.append((file, member, member))
    return seen


def has_code(path: Path) -> bool:
    """False for a module that is empty or only a docstring (changing it cannot change a stage's result)."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)


def entries(section: list | None) -> list[str]:
    """Paths of a deps/outs/metrics/plots list whose items are strings or {path: options}."""
    return [item if isinstance(item, str) else next(iter(item)) for item in section or []]


def covers(declared: str, path: Path) -> bool:
    declared_path = Path(declared)
    return path == declared_path or declared_path in path.parents


def contract_violations(dvc: dict, params_raw: dict, repo: Path = REPO) -> list[str]:
    """Every mismatch between `dvc` (a parsed dvc.yaml) and the code under `repo`; empty when they agree."""
    paths = parse_params(params_raw).paths
    problems: list[str] = []
    for stage, spec in dvc["stages"].items():
        entry = Path("stages") / f"{stage}.py"
        if spec.get("cmd") != f"python -m stages.{stage}":
            problems.append(f"{stage}: cmd should be `python -m stages.{stage}`, got {spec.get('cmd')!r}")
        if not (repo / entry).is_file():
            problems.append(f"{stage}: {entry} not found")
            continue
        deps = [resolve(dep, params_raw) for dep in entries(spec.get("deps"))]
        for dep in deps:
            if dep.split("/")[0] in {"pipeline", "stages"} and not (repo / dep).exists():
                problems.append(f"{stage}: dep {dep} does not exist")
        if str(entry) not in deps:
            problems.append(f"{stage}: deps lack its entry {entry}")
        for file, importer in sorted(import_closure(entry, repo).items()):
            if has_code(repo / file) and not any(covers(dep, file) for dep in deps):
                problems.append(f"{stage}: imports {file} (from {importer}) but no dep covers it")
        outs = [resolve(out, params_raw) for key in ("outs", "metrics", "plots") for out in entries(spec.get(key))]
        for artifact in artifacts.written_by(stage):
            path = artifact.path(paths, **{field: FIELD_EXAMPLES[field] for field in artifact.fields})
            if not any(covers(out, path) for out in outs):
                problems.append(f"{stage}: writes {path} but no out/metric/plot covers it")
    return problems


@pytest.fixture(scope="module")
def contract() -> tuple[dict, dict]:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
    params_raw = yaml.load((REPO / "params.yaml").read_text(encoding="utf-8"), Loader=ParamsLoader)
    return dvc, params_raw


def test_dvc_yaml_deps_cover_each_stage_imports_and_outs_cover_its_artifacts(contract):
    dvc, params_raw = contract
    assert {"download", "split", "features", "train", "evaluate", "freeze"} <= set(dvc["stages"])
    assert contract_violations(dvc, params_raw) == []


def test_features_stage_tracks_every_features_key_but_the_training_masks(contract):
    """A new features key must rerun the features stage; spec_augment (applied by train) must not."""
    from pipeline.config import FeaturesParams

    dvc, _ = contract
    listed = {key.split(".", 1)[1] for key in dvc["stages"]["features"]["params"]
              if isinstance(key, str) and key.startswith("features.")}  # fmt: skip
    assert listed == set(FeaturesParams.model_fields) - {"spec_augment"}
    assert "features" in dvc["stages"]["train"]["params"]  # the masks do rerun training


def test_finetune_stage_tracks_exactly_the_features_keys_it_reads(contract):
    """The 3.5-minute stage reruns for a key that changes the tuned weights and for no other (e.g. integer views)."""
    from pipeline.features.finetune import FEATURES_READ

    dvc, params_raw = contract
    listed = [key for key in dvc["stages"]["finetune"]["params"] if isinstance(key, str)]
    assert sorted(key.split(".", 1)[1] for key in listed if key.startswith("features.")) == sorted(FEATURES_READ)
    assert "features" not in listed and "features.embedding.integer_views" not in listed
    for key in listed:  # each names a key of params.yaml
        value = params_raw
        for part in key.split("."):
            value = value[part]


def test_every_stage_writes_at_least_one_declared_artifact(contract):
    dvc, _ = contract
    assert all(artifacts.written_by(stage) for stage in ("split", "features", "train", "evaluate", "freeze"))
    assert {artifact.stage for artifact in artifacts.ARTIFACTS.values()} <= set(dvc["stages"])


def test_closure_follows_function_level_and_package_imports():
    closure = import_closure(Path("stages/evaluate.py"), REPO)
    assert Path("pipeline/stream/accuracy.py") in closure  # imported inside streaming_accuracy()
    assert Path("pipeline/evaluate/run.py") in closure
    assert Path("pipeline/evaluate/__init__.py") in closure  # the package runs before its module
    assert Path("pipeline/artifacts.py") in closure
    assert Path("pipeline/export/freeze.py") not in closure


@pytest.mark.parametrize(
    ("stage", "removed", "expected"),
    [
        ("train", "pipeline/metrics.py", "train: imports pipeline/metrics.py"),
        ("evaluate", "pipeline/stream", "evaluate: imports pipeline/stream/accuracy.py"),  # a function-level import
        ("freeze", "pipeline/config.py", "freeze: imports pipeline/config.py"),
        ("freeze", "stages/freeze.py", "freeze: deps lack its entry stages/freeze.py"),
    ],
)
def test_a_missing_dep_is_reported(contract, stage, removed, expected):
    dvc, params_raw = copy.deepcopy(contract)
    deps = dvc["stages"][stage]["deps"]
    assert removed in deps
    deps.remove(removed)
    problems = contract_violations(dvc, params_raw)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_a_missing_out_and_a_stale_dep_are_reported(contract):
    dvc, params_raw = copy.deepcopy(contract)
    train = dvc["stages"]["train"]
    train["outs"] = [out for out in train["outs"] if "run_id.txt" not in str(out)]
    train["deps"].append("pipeline/no_such_module.py")
    problems = contract_violations(dvc, params_raw)
    assert "train: writes models/train/run_id.txt but no out/metric/plot covers it" in problems
    assert "train: dep pipeline/no_such_module.py does not exist" in problems


def test_bytecode_beside_the_sources_is_not_a_stage_dependency() -> None:
    """A folder dependency (pipeline/models, pipeline/stream, ...) hashes its sources only: the __pycache__ that
    Python writes on import must not make `dvc status` report the stage as changed."""
    from dvc.repo import Repo

    repo = Repo(str(REPO))
    try:
        ignored = lambda rel: repo.dvcignore.is_ignored(repo.fs, repo.fs.join(repo.root_dir, rel))  # noqa: E731
        assert ignored("pipeline/models/__pycache__/specs.cpython-311.pyc")
        assert ignored("pipeline/stream/__pycache__")
        assert not ignored("pipeline/models/specs.py")
    finally:
        repo.close()
