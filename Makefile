# Two commands do everything on a fresh machine with Python 3.11 and access to PyPI:
#   make run    installs the locked environment and runs the whole DVC pipeline
#   make test   installs the locked environment and runs the test suite
SHELL := /bin/bash
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
# uv from PATH, else the one pip bootstraps into this Python (`python3 -m uv`).
UV = $(shell command -v uv 2>/dev/null || echo python3 -m uv)

.PHONY: setup run test test-fast tracking-server
setup:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen

run: setup
	$(UV) run dvc repro

test: setup
	$(UV) run pytest

test-fast: setup
	$(UV) run pytest -m "not slow and not e2e"

# The `real` profile (needs ../shared/data): the real dev clips as the training source, split by speaker with
# its own salt (55/15/30), real background noise, the same frozen embedding with a lighter L2 (0.01) on the head;
# scored on the real clips of its speaker-disjoint testing set. Measured: adding the generated corpus lowered
# the real testing accuracy (92.9 % vs 93.9 % with the same head), so the generated voices get no weight here.
# Its other words stay at TF's 10 % at weight 1: the default's 30 % at weight 0.5 measured 93.7 % here (vs 94.6 %).
# The default's time masks on the embedding gave no gain here (94.02 vs 93.90 % over 6 head seeds), so they stay off,
# and so does the streaming threshold that follows them (0.85 -> 0.75, as measured without masks).
# The default's fine-tuned backbone (features.embedding.finetune.convs 9) lost here: its 538 real testing clips
# 93.87 % against 94.61 % with the pretrained one (dvc exp run, 2026-12-04), so this profile keeps it frozen.
REAL_SOURCES = [{kind: local, name: real_dev, path: ../shared/data/speech_commands_test_v0.02_dev, background_noise: ../shared/data/_background_noise_, split: {salt: real-speakers, validation_percentage: 15, testing_percentage: 30}}]
.PHONY: run-real
run-real: setup
	$(UV) run dvc exp run --force --name real -S 'data.sources=$(REAL_SOURCES)' -S 'evaluate.extra_sets=[]' -S train.model.l2=0.01 -S split.unknown_percentage=10 -S train.unknown_weight=1 -S train.neural_repeats=1 -S features.embedding.integer_views=false -S features.spec_augment.enabled=false -S train.hard_negatives.hours=0 -S evaluate.streaming.detection_threshold=0.75 -S features.embedding.finetune.convs=0

# A shared MLflow server on PostgreSQL (a local cluster in .mlflow-postgres/, artifacts proxied into mlartifacts-server/);
# then `export MLFLOW_TRACKING_URI=http://127.0.0.1:5000` on every machine that runs the pipeline.
tracking-server: setup
	$(UV) run kws tracking-server
