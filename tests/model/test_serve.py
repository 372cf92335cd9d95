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
    assert status == 400 and "row 0: audio: cannot read audio; the 9 bytes is not wav/flac" in body["message"], body


def test_served_model_refuses_empty_audio_with_the_reason(server):
    """Fault: a 0-frame wav got HTTP 200 and `_silence_ 0.934`."""
    url, _, _ = server
    status, body = _post(f"{url}/invocations", _request(_wav(np.zeros(0, np.float32))))
    assert status == 400 and body["message"].endswith("Error: row 0: audio: the audio holds no samples (0 frames)"), body
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"


def test_served_model_streams_a_long_capture_and_names_its_labels(server, frozen):
    """Fault: a 3 s capture with the word at 2-3 s was cut to its first (silent) second and answered `_silence_` with
    no note. Now it is streamed like `kws stream`: detections over the recording, the strongest window, a note."""
    url, _, _ = server
    capture = np.concatenate([0.001 * np.random.default_rng(0).standard_normal(32000).astype(np.float32),
                              tone_clip("yes", 10, 7, slot=0)])  # fmt: skip
    status, body = _post(f"{url}/invocations", _request(_wav(capture), _wav(tone_clip("no", 11, 3, slot=1))))
    assert status == 200, body
    long, short = body["predictions"]
    assert long["labels"] == short["labels"] == frozen.params.labels
    assert long["seconds"] == 3.0 and long["label"] == "yes"
    assert [d["label"] for d in long["detections"]] == ["yes"] and 2.0 < long["detections"][0]["time_s"] <= 3.0
    assert long["notes"][-1].startswith("3.00 s is longer than the model's 1 s window: streamed (windows)")
    assert short["seconds"] == 1.0 and short["detections"] == [] and short["notes"] == [] and short["label"] == "no"


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("base64") is None, reason="curl/base64 not installed")
def test_readme_curl_command(server):
    _, port, folder = server
    sf.write(folder / "clip.wav", tone_clip("yes", 10, 7, slot=0), 16000, subtype="PCM_16")
    command = CURL.format(port=port, wav="clip.wav")
    done = subprocess.run(["bash", "-c", command], cwd=folder, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["predictions"][0]["label"] == "yes", done.stdout
