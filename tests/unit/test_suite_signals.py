"""The suite itself: a SIGTERM (a CI timeout, `kill`) still runs the fixtures' teardowns, so the Ray nodes and
database clusters they start are not left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO

FIXTURE_TEST = '''
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def service():
    Path("started").write_text("")
    yield
    Path("stopped").write_text("")


def test_waits(service):
    time.sleep(60)
'''


def test_sigterm_runs_fixture_teardown(tmp_path: Path) -> None:
    (tmp_path / "test_waits.py").write_text(FIXTURE_TEST)
    # the suite's conftest as a plugin, so the temporary test runs under exactly its hooks
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
               "--rootdir", str(tmp_path), "test_waits.py"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert process.poll() is None, process.communicate()[0].decode()
            assert time.monotonic() < deadline, "the test never started"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    finally:
        process.kill()
    assert (tmp_path / "stopped").exists(), output
    assert process.returncode != 0  # an interrupted suite is not a green one
