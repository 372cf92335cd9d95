"""A shared MLflow tracking server on PostgreSQL: a local cluster (initdb/pg_ctl, 127.0.0.1 only) and `mlflow server`
with proxied artifacts. `kws tracking-server` runs both; the tests start and stop them around a pipeline run."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.errors import KwsError

QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "DVC_NO_ANALYTICS": "1"}


class ServerError(KwsError):
    """PostgreSQL or the MLflow server could not be started (the message names the command and its log)."""


def pg_binary(name: str) -> str:
    """A PostgreSQL program: from PATH, else Debian's newest /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    if not versions:
        raise ServerError(f"PostgreSQL's {name} not found on PATH nor in /usr/lib/postgresql/*/bin: install PostgreSQL 15+")
    return versions[-1]


class PostgresCluster:
    """A PostgreSQL cluster in `folder` (data/, log, socket) listening on 127.0.0.1:`port`, trust auth for `user`.

    PostgreSQL refuses to run as root: under root the programs run as the `postgres` user (runuser) and the folder
    is handed to it, so it must be reachable by that user (e.g. not under a 0700 home).
    """

    def __init__(self, folder: Path, port: int, user: str = "kws"):
        self.folder, self.port, self.user = Path(folder).resolve(), port, user
        self.data, self.log = self.folder / "data", self.folder / "postgres.log"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ServerError(f"{Path(args[0]).name} failed ({last[0]}); see {self.log}")
        return done

    def init(self) -> None:
        """Create the cluster unless `folder/data` already holds one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            closed = [str(p) for p in self.folder.parents if not p.stat().st_mode & 0o001]
            if closed:
                raise ServerError(f"{self.folder}: {closed[0]} is closed to the postgres user (mode o-x); put the cluster "
                                  "elsewhere (e.g. under /tmp) or chmod o+x it")  # fmt: skip
            shutil.chown(self.folder, "postgres")
        if not (self.data / "PG_VERSION").is_file():
            self._run(pg_binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8", timeout=120)

    def start(self, timeout: float = 60) -> None:
        options = f"-k {self.folder} -p {self.port} -h 127.0.0.1"
        self._run(pg_binary("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "-t", str(int(timeout)),
                  "start", timeout=timeout + 10)  # fmt: skip

    def stop(self) -> None:
        if (self.data / "postmaster.pid").is_file():
            self._run(pg_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop", timeout=40)

    def create_database(self, name: str) -> None:
        """CREATE DATABASE `name` unless it exists."""
        psql = [pg_binary("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", "postgres", "-tAc"]
        found = self._run(*psql, f"SELECT 1 FROM pg_database WHERE datname = '{name}'").stdout.strip()
        if found != "1":
            self._run(*psql, f'CREATE DATABASE "{name}"')

    def uri(self, database: str) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{database}"  # the driver in our lock


def server_command(backend_uri: str, artifacts: Path, host: str = "127.0.0.1", port: int = 5000, workers: int = 2) -> list[str]:
    """`mlflow server` with `backend_uri` as its store and artifacts proxied (clients upload through the server)."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
            "--artifacts-destination", Path(artifacts).resolve().as_uri(), "--serve-artifacts",
            "--host", host, "--port", str(port), "--workers", str(workers)]  # fmt: skip


def wait_healthy(url: str, process: subprocess.Popen | None = None, timeout: float = 90) -> None:
    """Poll `url`/health until it answers (bounded); fail early if `process` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerError(f"mlflow server exited with code {process.returncode} before answering at {url}")
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise ServerError(f"mlflow server at {url} did not answer within {timeout:.0f} s")


def start_server(backend_uri: str, artifacts: Path, port: int, log: Path, workers: int = 2, timeout: float = 300) -> subprocess.Popen:
    """Start `mlflow server` in the background (output to `log`) and wait until it is healthy (at most `timeout` s:
    creating the schema in a new database took over 90 s on a busy 2-core machine)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(server_command(backend_uri, artifacts, port=port, workers=workers), stdout=out,
                                   stderr=subprocess.STDOUT, env={**os.environ, **QUIET}, start_new_session=True)  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, timeout)
    except ServerError as error:
        stop_process(process)
        last = (log.read_text(errors="replace").strip().splitlines() or ["empty log"])[-1]
        raise ServerError(f"{error}: {last} (log: {log})") from None
    return process


def stop_process(process: subprocess.Popen, timeout: float = 20) -> None:
    """Terminate a server and its workers (its own process group), then kill after `timeout`."""
    if process.poll() is not None:
        return
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)
    except ProcessLookupError:
        pass
