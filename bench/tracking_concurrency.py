#!/usr/bin/env python
"""Benchmark: does a tracking store keep every metric and artifact when several pipelines log at once? (not a test)

Usage:
    uv run python bench/tracking_concurrency.py                       # 2, 4, 8 workers; SQLite file and PostgreSQL server
    uv run python bench/tracking_concurrency.py --workers 2 8 --steps 50 --stores sqlite

Each worker is a separate process doing what a training stage does through pipeline.tracking.Run: start a run (~60
params), then `--steps` evaluation steps of 5 metrics (Run.step_metrics) and one JSON artifact each, then finish.
Stores: `sqlite` (every worker opens the same existing sqlite:/// file, the default `MLFLOW_TRACKING_URI`),
`sqlite-new` (the same, but the file does not exist yet: the workers race to create the schema) and `postgres`
(a throwaway PostgreSQL cluster on 127.0.0.1 behind `mlflow server --workers 2`, pipeline.tracking.server).
Counted afterwards through the store: runs FINISHED, metric points and artifacts found against those logged,
workers that failed (first error line kept). Writes bench/results/tracking_concurrency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

PARAMS = {"seed": 1, "train": {"model": {"name": "bench"}, **{f"p{i}": i for i in range(60)}}}


def worker(steps: int, index: int) -> None:
    """One simulated training run; exits non-zero (message on stderr) if the store refuses anything."""
    import numpy as np

    from pipeline.tracking import Run

    os.environ["DVC_EXP_NAME"] = f"bench-{index}"
    run = Run.start("bench", "bench", {**PARAMS, "seed": index}, {})
    for step in range(1, steps + 1):
        run.step_metrics({"train_loss": 1 / step, "train_accuracy": 0.5, "validation_loss": 1.0, "validation_accuracy": 0.5,
                          "learning_rate": 0.001}, step)  # fmt: skip
        run.json({"step": step, "matrix": np.eye(4, dtype=int).tolist()}, f"confusion/step_{step:06d}.json")
    run.finish()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(uri: str, workers: int, steps: int, artifact_root: Path, prepare: bool = True) -> dict:
    import mlflow

    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_ARTIFACT_ROOT": str(artifact_root)}
    if prepare:  # the store exists already (created by an earlier run), as it does after the first pipeline run
        mlflow.MlflowClient(tracking_uri=uri).search_experiments()
    began = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(i), "--steps", str(steps)], env=env,
                              stderr=subprocess.PIPE, text=True) for i in range(workers)]  # fmt: skip
    errors = [p.communicate(timeout=900)[1] for p in procs]
    seconds = time.perf_counter() - began
    failed = [next((line for line in reversed(e.strip().splitlines()) if "Error" in line), e.strip()[-300:])
              for p, e in zip(procs, errors, strict=True) if p.returncode != 0]  # fmt: skip
    row = {"workers": workers, "steps": steps, "seconds": round(seconds, 1), "failed_workers": len(failed),
           "first_error": failed[0][:300] if failed else ""}  # fmt: skip
    try:
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name("bench")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        points = sum(len(client.get_metric_history(r.info.run_id, k)) for r in runs for k in r.data.metrics)
        artifacts = sum(len(client.list_artifacts(r.info.run_id, "confusion")) for r in runs)
    except mlflow.exceptions.MlflowException as error:  # e.g. a schema left half-created by racing workers
        return {**row, "store_unreadable": str(error).splitlines()[0][:300]}
    except Exception as error:  # SQLAlchemy errors surface unwrapped from a broken SQLite file
        return {**row, "store_unreadable": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
    return {**row, "runs_finished": sum(r.info.status == "FINISHED" for r in runs), "metric_points": points,
            "metric_points_expected": workers * steps * 5, "artifacts": artifacts, "artifacts_expected": workers * steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--stores", nargs="+", default=["sqlite-new", "sqlite", "postgres"],
                        choices=["sqlite-new", "sqlite", "postgres"])
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.steps, args.worker)
        return
    from bench.common import machine_facts
    from pipeline.fileio import write_json
    from pipeline.tracking.server import PostgresCluster, start_server, stop_process

    results = {"machine": machine_facts(), "rows": []}
    for store in args.stores:
        for count in args.workers:
            folder = Path(tempfile.mkdtemp(prefix="kws-bench-", dir="/tmp"))
            folder.chmod(0o711)  # reachable by the postgres user when run as root
            if store.startswith("sqlite"):
                row = measure(f"sqlite:///{folder}/mlflow.db", count, args.steps, folder / "artifacts", store == "sqlite")
            else:
                cluster, process = PostgresCluster(folder / "pg", _free_port()), None
                try:
                    cluster.init()
                    cluster.start()
                    cluster.create_database("mlflow")
                    port = _free_port()
                    process = start_server(cluster.uri("mlflow"), folder / "artifacts", port, folder / "server.log")
                    row = measure(f"http://127.0.0.1:{port}", count, args.steps, folder / "artifacts")
                finally:
                    if process is not None:
                        stop_process(process)
                    cluster.stop()
            row["store"] = store
            print(json.dumps(row), flush=True)
            results["rows"].append(row)
            subprocess.run(["rm", "-rf", str(folder)], check=False)
    out = Path(__file__).resolve().parent / "results" / "tracking_concurrency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
