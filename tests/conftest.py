"""Shared test helpers: tiny corpora written by the tests themselves, and params pointing into tmp dirs."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.config import Params, parse_params
from pipeline.runner import _interrupt

# Stages run their tasks in this process unless a test asks for Ray workers (tests/data/test_distributed.py):
# starting Ray costs 10-40 s on a loaded 2-core machine, once per stage.
os.environ.setdefault("KWS_WORKERS", "1")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
REAL_DEV = SHARED / "speech_commands_test_v0.02_dev"
REAL_NOISE = SHARED / "_background_noise_"
requires_shared = pytest.mark.skipif(not REAL_DEV.is_dir(), reason=f"real clips not present at {REAL_DEV}")


def pytest_configure(config: pytest.Config) -> None:
    """`kill` (SIGTERM, as a CI timeout sends) ends the suite like Ctrl-C: pytest then runs every fixture's
    teardown, so the Ray nodes, PostgreSQL clusters and servers that fixtures started are stopped, not orphaned."""
    signal.signal(signal.SIGTERM, _interrupt)  # the stages' own handler (pipeline/runner.py)


def speaker_id(index: int) -> str:
    """A stable 8-hex speaker id, like the real dataset's."""
    return hashlib.sha1(f"spk{index}".encode()).hexdigest()[:8]


def tone_clip(word: str, speaker: int, rep: int, samples: int = 16000, rate: int = 16000, slot: int | None = None) -> np.ndarray:
    """A distinct, non-silent 'word': a short chord whose pitch is set by the word's slot, shifted a little per speaker."""
    rng = np.random.default_rng(int(hashlib.sha1(f"{word}/{speaker}/{rep}".encode()).hexdigest()[:8], 16))
    t = np.arange(samples // 2) / rate
    slot = int(hashlib.sha1(word.encode()).hexdigest()[:8], 16) % 12 if slot is None else slot
    base = 250 + 300 * slot + 3 * speaker
    burst = sum(np.sin(2 * np.pi * base * k * t) / k for k in (1, 2, 3)) * np.hanning(len(t))
    clip = np.zeros(samples, dtype=np.float32)
    start = int(rng.integers(0, samples - len(t)))
    clip[start : start + len(t)] = 0.3 * burst / np.abs(burst).max()
    return clip + 0.001 * rng.standard_normal(samples).astype(np.float32)


def write_tone_corpus(root: Path, words: list[str], speakers: int, reps: int, noise_seconds: int = 4) -> Path:
    """A tiny dataset in the Speech Commands layout, with two background-noise files."""
    for word in words:
        for s in range(speakers):
            for r in range(reps):
                path = root / word / f"{speaker_id(s)}_nohash_{r}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, tone_clip(word, s, r, slot=words.index(word)), 16000, subtype="PCM_16")
    rng = np.random.default_rng(7)
    noise_dir = root / "_background_noise_"
    noise_dir.mkdir(parents=True, exist_ok=True)
    for name in ("white", "hum"):
        noise = 0.3 * rng.uniform(-1, 1, 16000 * noise_seconds)
        sf.write(noise_dir / f"{name}.wav", noise.astype(np.float32), 16000, subtype="PCM_16")
    return root


def make_params(tmp_path: Path, sources: list[dict] | None = None, **sections: dict) -> Params:
    """Params for a test: every path inside tmp_path, a local source by default."""
    raw = {
        "seed": 1,
        "paths": {name: str(tmp_path / name) for name in ("raw", "downloads", "split", "features", "reports")},
        "data": {
            "sources": sources or [{"kind": "local", "name": "tones", "path": str(tmp_path / "corpus")}],
        },
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return parse_params(raw)



def write_head_inputs(params: Params, clips: int, views: int = 2) -> None:
    """The train stage's inputs for a head on precomputed embeddings, without running split or features: noise
    clips labelled with every class in turn, training noise, random views and validation features (real shapes)."""
    rng = np.random.default_rng(0)
    split, feats = params.paths.split, params.paths.features
    split.mkdir(parents=True), feats.mkdir(parents=True)
    shape, classes = params.features.feature_shape, len(params.labels)
    np.save(split / "training_audio.npy", rng.integers(-3000, 3000, (clips, 16000)).astype(np.int16))
    np.save(split / "training_labels.npy", np.arange(clips) % classes)
    np.save(split / "background_training.npy", rng.integers(-3000, 3000, 48000).astype(np.int16))
    np.save(split / "validation_labels.npy", rng.integers(0, classes, 10).astype(np.int64))
    np.save(feats / "validation_features.npy", rng.standard_normal((10, *shape)).astype(np.float32))
    np.save(feats / "training_features.npy", rng.standard_normal((views, clips, *shape)).astype(np.float32))


TINY_WORDS = {"keywords": ["yes", "no"], "unknown_words": ["cat", "dog"]}
TINY_SPLIT = {"validation_percentage": 30, "testing_percentage": 30, "silence_percentage": 25, "unknown_percentage": 25}
TINY_TRAIN = {
    "steps": [150, 50], "learning_rate": [0.003, 0.001], "batch_size": 32, "eval_step_interval": 100,
    "save_step_interval": 50, "model": {"name": "tiny_conv"},  # no batch norm: learns in 200 steps
}  # fmt: skip
TINY_EVALUATE = {"streaming": {"recording_seconds": 60}}


def tiny_params_dict(root: Path, **overrides: dict) -> dict:
    """A whole params mapping for a tiny tone corpus under `root` (written as params.yaml by fixtures)."""
    raw = {
        "seed": 3,
        "paths": {name: str(root / name) for name in ("raw", "downloads", "split", "features", "reports", "checkpoints", "logs")},
        "data": {**TINY_WORDS, "sources": [{"kind": "local", "name": "tones", "path": str(root / "corpus")}]},
        "split": TINY_SPLIT,
        "train": TINY_TRAIN,
        "evaluate": TINY_EVALUATE,
    }
    raw["paths"]["model"] = str(root / "model")
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value}
    return raw


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A tiny tone corpus taken through download, split and features once per test session."""
    import yaml

    from pipeline.data.sources import fetch_sources
    from pipeline.data.split import run_split
    from pipeline.features.extract import run_features

    root = tmp_path_factory.mktemp("tiny")
    write_tone_corpus(root / "corpus", ["yes", "no", "cat", "dog"], speakers=20, reps=2, noise_seconds=20)
    raw = tiny_params_dict(root)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    params = parse_params(raw)
    fetch_sources(params, progress=False)
    run_split(params, progress=False)
    run_features(params)
    return root, params


@pytest.fixture(scope="session")
def mlflow_env(tmp_path_factory):
    """A private SQLite tracking store and artifact folder for the session."""
    import os

    root = tmp_path_factory.mktemp("mlflow")
    values = {"MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db", "MLFLOW_ARTIFACT_ROOT": str(root / "artifacts")}
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield values
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_trained(tiny_data, mlflow_env):
    """The tiny corpus with a trained tiny model (train stage library call) and its metrics."""
    from pipeline.train.run import run_train

    root, params = tiny_data
    metrics = run_train(params)
    return root, params, metrics
