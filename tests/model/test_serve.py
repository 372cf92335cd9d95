"""`mlflow models serve` on the registered pyfunc model: base64 wav in a `dataframe_split` request, label and scores out.

The README's request (checked here verbatim when curl is installed):

    curl -s -X POST http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
      -d "{\\"dataframe_split\\": {\\"columns\\": [\\"audio\\"], \\"data\\": [[\\"$(base64 -w0 clip.wav)\\"]]}}"
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import tone_clip
from tests.model.test_freeze import MODEL_NAME, frozen_tiny

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 90
CURL = ("curl -s -X POST http://127.0.0.1:{port}/invocations -H 'Content-Type: application/json' "
        """-d "{{\\"dataframe_split\\": {{\\"columns\\": [\\"audio\\"], \\"data\\": [[\\"$(base64 -w0 {wav})\\"]]}}}}\"""")  # fmt: skip


@pytest.fixture(scope="module")
def frozen(tiny_trained, mlflow_env, tmp_path_factory):
    return frozen_tiny(tiny_trained, tmp_path_factory)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _request(*wavs: bytes) -> dict:
    return {"dataframe_split": {"columns": ["audio"], "data": [[base64.b64encode(w).decode("ascii")] for w in wavs]}}


@pytest.fixture(scope="module")
def server(frozen, mlflow_env, tmp_path_factory):
    """The registered `challenger` served on a free local port; always stopped (its whole process group)."""
    folder = tmp_path_factory.mktemp("serve")
    bin_dir = Path(sys.executable).parent  # the venv's bin: `mlflow`, and what it starts, come from there
    env = {**os.environ, **mlflow_env, "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    port = _free_port()
    command = [str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{MODEL_NAME}@challenger", "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    log_path = folder / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow models serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no /ping after {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, port, folder
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the server's own group (start_new_session): uvicorn goes with it
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)


def _wav(clip: np.ndarray, rate: int = 16000) -> bytes:
    import io

    buffer = io.BytesIO()
    sf.write(buffer, clip, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_served_model_labels_base64_wavs(server, frozen):
    url, _, _ = server
    labels = frozen.params.labels
    import soxr

    yes = tone_clip("yes", 10, 7, slot=0)
    resampled = soxr.resample(yes, 16000, 22050)  # any rate is converted by the model
    status, body = _post(f"{url}/invocations", _request(_wav(yes), _wav(resampled, 22050)))
    assert status == 200, body
    rows = body["predictions"]
    assert len(rows) == 2
    for row in rows:
        assert row["label"] == "yes" and row["label"] in labels
        assert len(row["scores"]) == len(labels) and sum(row["scores"]) == pytest.approx(1.0, abs=1e-4)
        assert row["score"] == pytest.approx(max(row["scores"]))


def test_served_model_accepts_its_logged_example_and_rejects_garbage(server):
    import mlflow

    url, _, _ = server
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}@challenger/serving_input_example.json"))
    status, body = _post(f"{url}/invocations", json.loads(local.read_text()))
    assert status == 200 and len(body["predictions"]) == 1, body
    status, body = _post(f"{url}/invocations", _request(b"not a wav"))
    assert status == 400 and "cannot decode" in body.get("message", "") + body.get("stack_trace", ""), body


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("base64") is None, reason="curl/base64 not installed")
def test_readme_curl_command(server):
    _, port, folder = server
    sf.write(folder / "clip.wav", tone_clip("yes", 10, 7, slot=0), 16000, subtype="PCM_16")
    command = CURL.format(port=port, wav="clip.wav")
    done = subprocess.run(["bash", "-c", command], cwd=folder, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["predictions"][0]["label"] == "yes", done.stdout
