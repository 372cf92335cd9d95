"""Where the heavy stages run: a Ray Data pipeline on a Ray cluster, a local Ray instance, or this process.

The corpus generation and feature stages hand `map_tasks` a worker class and a list of items. Each worker
process builds the class once (so it loads its TTS or embedding model once) and calls it on item after item;
results come back to the driver with their item index, so the output never depends on which worker ran what,
in which order, or how often a task was retried (a killed worker's task is rerun by Ray Data's actor pool:
`max_restarts` / `max_task_retries` default to unlimited there).

Runtime settings, from the environment (DVC tracks files, not variables, and none of these changes results):
* `RAY_ADDRESS`: an existing cluster (`ray://head:10001`, `127.0.0.1:6379`, `auto`); unset: a local instance.
* `KWS_WORKERS`: parallel workers (default: every CPU of the machine, or of the cluster); `1` without
  `RAY_ADDRESS` runs the same worker class in this process, without starting Ray.
A local instance binds 127.0.0.1 only, without dashboard or usage statistics, and is stopped when the stage ends.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, Protocol

import numpy as np
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import KwsError

log = logging.getLogger(__name__)
# no usage statistics; no `uv run` hook (it would ship this folder, .venv included, to every worker)
RAY_ENV = {"RAY_DISABLE_USAGE_STATS": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
PROBE_TIMEOUT_S = 5.0
LOCAL_OBJECT_STORE = 512 * 1024**2  # bytes: results stream back to the driver; Ray spills to disk beyond this


for _key, _value in RAY_ENV.items():  # Ray reads these when it is imported, so before any `import ray`
    os.environ.setdefault(_key, _value)


class ComputeError(KwsError):
    """The Ray cluster cannot be used."""


class ComputeSettings(BaseSettings):
    """Runtime settings of the heavy stages (see the module docstring)."""

    model_config = SettingsConfigDict(extra="ignore")
    ray_address: str | None = None
    kws_workers: int | None = Field(None, ge=1)


class Worker(Protocol):
    """Built once per worker process from picklable arguments; called on one item at a time."""

    def __call__(self, item: Any) -> Any: ...


class _Adapter:
    """Ray Data's callable class: one Worker per actor, items and results as pickled bytes (any Python value).
    A KwsError (a user's mistake, not worth a retry) travels back as the result: Ray's own wrapping of a
    worker's exception loses its type, and the driver must still print one line."""

    def __init__(self, worker_cls: type, args: tuple) -> None:
        self.worker = worker_cls(*args)

    def _run(self, blob: bytes) -> bytes:
        try:
            return pickle.dumps((True, self.worker(pickle.loads(blob))), protocol=5)
        except KwsError as error:
            return pickle.dumps((False, error), protocol=5)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = [self._run(blob) for blob in batch["item"]]
        return {"index": batch["index"], "result": np.array(results, dtype=object)}


def _unpack(blob: bytes) -> Any:
    """A worker's result, or the KwsError it raised, raised here."""
    ok, value = pickle.loads(blob)
    if not ok:
        raise value
    return value


def settings() -> ComputeSettings:
    """The compute settings of this process's environment; ComputeError names a malformed variable."""
    try:
        return ComputeSettings()
    except ValidationError as error:
        problem = error.errors()[0]
        raise ComputeError(f"{str(problem['loc'][0]).upper()}: {problem['msg']} (got {problem.get('input')!r})") from None


def plan_workers(items: int, workers: int | None = None, address: str | None = None,
                 local_default: int | None = None) -> tuple[int, bool]:  # fmt: skip
    """(workers, in_process) for `items` tasks: `workers`, else KWS_WORKERS, else every CPU of the cluster
    (RAY_ADDRESS) or `local_default` (None: every CPU of this machine); in-process when that is 1 locally."""
    env = settings()
    address = address if address is not None else env.ray_address
    wanted = workers or env.kws_workers
    if address:
        return max(1, min(wanted or 10**6, items)), False
    wanted = wanted or local_default or os.cpu_count() or 1
    count = max(1, min(wanted, items))
    return count, count == 1


def check_reachable(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast (ComputeError) when RAY_ADDRESS's host:port does not accept a connection: Ray itself retries
    an unreachable head for minutes. `auto` (a node's own cluster) is left to Ray."""
    if address == "auto":
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ComputeError(f"RAY_ADDRESS={address}: expected host:port, ray://host:port or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise ComputeError(f"RAY_ADDRESS={address}: nothing answers there ({error})") from None


@contextmanager
def ray_session(workers: int, address: str | None = None) -> Iterator[int]:
    """A connected Ray: the named cluster, one already initialised, or a local instance of `workers` CPUs.
    Yields the number of CPUs available; stops only an instance it started."""
    import ray

    logging.getLogger("ray").setLevel(logging.WARNING)
    started, temp = False, None
    if not ray.is_initialized():
        try:
            if address:
                check_reachable(address)
                loopback = address.split("://")[-1].startswith(("127.0.0.1:", "localhost:"))
                local_ip = {"_node_ip_address": "127.0.0.1"} if loopback and not address.startswith("ray://") else {}
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, **local_ip)
            else:
                temp = tempfile.mkdtemp(prefix="kws-ray-")  # short: Ray's socket paths must fit 107 characters
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                         object_store_memory=LOCAL_OBJECT_STORE, _node_ip_address="127.0.0.1", _temp_dir=temp)  # fmt: skip
        except ComputeError:
            raise
        except Exception as error:  # noqa: BLE001 - Ray raises bare Exception when a node misses its start deadline
            ray.shutdown()
            if temp:
                shutil.rmtree(temp, ignore_errors=True)
            raise ComputeError(f"RAY_ADDRESS={address or '(local)'}: cannot start or reach Ray ({error})") from None
        started = True
    try:
        yield int(ray.cluster_resources().get("CPU", workers))
    finally:
        if started:
            ray.shutdown()
        if temp:
            shutil.rmtree(temp, ignore_errors=True)  # the local instance's session logs and spilled objects


def _quiet_data_context() -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False


def map_tasks(worker_cls: type, args: tuple, items: Sequence[Any], workers: int | None = None,
              address: str | None = None, local_default: int | None = None) -> Iterator[tuple[int, Any]]:  # fmt: skip
    """(index, worker_cls(*args)(items[index])) for every item, in completion order.

    In this process when `plan_workers` says so; otherwise a Ray Data pipeline (`map_batches` over one-item
    blocks with an actor pool of `workers` processes, streaming results back). A KwsError raised by a worker
    is raised as itself; a worker process that dies is restarted and its task rerun by Ray."""
    count, in_process = plan_workers(len(items), workers, address, local_default)
    if not items:
        return
    address = address or settings().ray_address
    started = time.perf_counter()
    with ExitStack() as stack:
        if not in_process:
            try:
                cpus = stack.enter_context(ray_session(count, address))
            except ComputeError as error:
                if address:
                    raise
                log.warning("%s; running the tasks in this process instead (same results)", error)
                in_process = True
        if in_process:
            worker = worker_cls(*args)
            for index, item in enumerate(items):
                yield index, worker(item)
            return
        import ray

        _quiet_data_context()
        count = max(1, min(count, cpus, len(items)))
        rows = [{"index": i, "item": pickle.dumps(item, protocol=5)} for i, item in enumerate(items)]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _Adapter, fn_constructor_args=(worker_cls, args), batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=count), num_cpus=1,
        )  # fmt: skip
        log.info("ray: %d workers for %d tasks (started in %.1f s)", count, len(items), time.perf_counter() - started)
        for batch in dataset.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=1):
            for index, blob in zip(batch["index"], batch["result"], strict=True):
                yield int(index), _unpack(blob)
