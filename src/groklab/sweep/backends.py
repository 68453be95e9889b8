"""Backends that run sweep jobs: a local process pool, or the tasks of a Ray cluster.

Both backends run the same job functions (:mod:`groklab.sweep.jobs`) and
return results in submission order, so the sweep's output does not depend on
the backend or on the order in which jobs finish.
"""

from __future__ import annotations

import logging
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any

from tqdm.auto import tqdm

from groklab.config import ConfigError

logger = logging.getLogger(__name__)

BACKENDS = ("local", "ray")


class SweepError(ValueError):
    """A sweep cannot start or continue: a folder conflict or an unusable backend."""


def available_cpus() -> int:
    """Return the CPUs this process may run on (its affinity mask where there is one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class LocalBackend:
    """Runs jobs in a pool of ``workers`` spawned processes on this machine.

    Workers ignore SIGINT, so a Ctrl-C interrupts only the driver, which then
    stops the running jobs through :meth:`close`. A worker whose driver dies
    (SIGKILL) stops its job and exits instead of training on unattended.
    """

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or available_cpus()
        self._pool: ProcessPoolExecutor | None = None

    def map(
        self, fn: Callable, arguments: Sequence[tuple], desc: str, progress: bool
    ) -> list[Any]:
        """Run ``fn(*args)`` for every tuple in ``arguments``; return results in order.

        At most ``workers`` jobs are submitted at a time, so no job waits in the
        pool's queue, where an interruption could no longer cancel it.
        """
        if not arguments:
            return []
        if self._pool is None:
            # Spawned, not forked: a forked child would inherit the parent's torch
            # thread pool state, which is not fork-safe. Started on first use, so
            # a sweep with nothing to do starts no process.
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=get_context("spawn"),
                initializer=_init_worker,
            )
        queue = list(enumerate(arguments))
        in_flight: dict[Future, int] = {}
        results: list[Any] = [None] * len(arguments)
        bar = _bar(len(arguments), desc, progress)
        try:
            while queue or in_flight:
                while queue and len(in_flight) < self.workers:
                    index, args = queue.pop(0)
                    in_flight[self._pool.submit(_run_job, fn, args)] = index
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    # Raises the job's exception at once.
                    results[in_flight.pop(future)] = future.result()
                bar.update(len(done))
        finally:
            bar.close()
        return results

    def close(self, *, cancel: bool = False) -> None:
        """Shut the pool down; with ``cancel``, interrupt the running jobs first.

        An interrupted job marks its unfinished runs ``interrupted`` before its
        worker exits, so this waits for the workers either way.
        """
        if self._pool is None:
            return
        if cancel:
            # NOTE: ProcessPoolExecutor has no public way to signal its workers
            # before Python 3.14, so this reads its private process table. The
            # SIGTERM becomes a KeyboardInterrupt in the job (see _on_sigterm).
            for process in list(getattr(self._pool, "_processes", {}).values()):
                if process.is_alive():
                    process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=cancel)


# Whether this worker process is inside a job; read by its signal handler.
_job_running = False


def _init_worker() -> None:
    """Set up a pool worker: ignore Ctrl-C, stop jobs on SIGTERM, watch the driver."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    threading.Thread(target=_watch_driver, daemon=True).start()


def _on_sigterm(signum: int, frame: Any) -> None:
    # An idle worker ignores SIGTERM: the pool's shutdown ends it.
    if _job_running:
        raise KeyboardInterrupt


def _run_job(fn: Callable, args: tuple) -> Any:
    global _job_running
    _job_running = True
    try:
        return fn(*args)
    finally:
        _job_running = False


def _watch_driver(grace: float = 60.0) -> None:
    """Stop this worker's job and exit once the driver process has died.

    The job gets ``grace`` seconds to mark its runs interrupted.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    multiprocessing.connection.wait([parent.sentinel])
    if _job_running:
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _job_running and time.monotonic() < deadline:
            time.sleep(0.1)
    os._exit(1)


class RayBackend:
    """Runs each job as one Ray task needing one CPU on the cluster at ``address``.

    The workers read and write the sweep folder by its path, so every node must
    see the same filesystem at the same path and have groklab installed.
    ``workers`` caps the tasks in flight; without it the cluster's free CPUs
    decide.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise SweepError(
                "--backend ray needs the ray package, which is not installed: "
                "install groklab[ray] (pip install 'groklab[ray]')"
            ) from None
        self._ray = ray
        self.workers = workers
        self.address = address
        if address is not None:
            _check_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = address or "a new local instance"
            raise SweepError(
                f"cannot connect to Ray at {where}: {_first_line(err)}. Start a cluster "
                "with ray start --head and pass its address to --address, and set "
                "RAY_AUTH_MODE=token if the cluster uses token authentication"
            ) from None
        self._remote: dict[Callable, Any] = {}

    def map(
        self, fn: Callable, arguments: Sequence[tuple], desc: str, progress: bool
    ) -> list[Any]:
        """Run ``fn(*args)`` as Ray tasks; return results in order.

        A task's exception is re-raised as the original exception, not as
        Ray's wrapper, so its one-line message reaches the command line.
        """
        if not arguments:
            return []
        ray = self._ray
        remote = self._remote.setdefault(fn, ray.remote(num_cpus=1, max_retries=0)(fn))
        cap = self.workers or len(arguments) or 1
        queue = list(enumerate(arguments))
        in_flight: dict[Any, int] = {}
        results: list[Any] = [None] * len(arguments)
        bar = _bar(len(arguments), desc, progress)
        try:
            while queue or in_flight:
                while queue and len(in_flight) < cap:
                    index, args = queue.pop(0)
                    in_flight[remote.remote(*args)] = index
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    results[in_flight.pop(ref)] = self._get(ref)
                bar.update(len(done))
        except BaseException:
            for ref in in_flight:
                ray.cancel(ref)
            raise
        finally:
            bar.close()
        return results

    def _get(self, ref: Any) -> Any:
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise

    def close(self, *, cancel: bool = False) -> None:
        """Disconnect from the cluster; a cluster started by ``ray.init`` is stopped."""
        self._ray.shutdown()


def check_backend_options(name: str, address: str | None, workers: int | None) -> None:
    """Raise ConfigError for backend options that cannot work together; starts nothing."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise ConfigError(f"invalid --workers {workers}: use an integer >= 1")
    if name == "local" and address is not None:
        raise ConfigError(
            f"--address {address} applies only to --backend ray: drop it or add "
            "--backend ray"
        )


def make_backend(name: str, address: str | None, workers: int | None):
    """Return a started backend, or raise SweepError naming the fix."""
    check_backend_options(name, address, workers)
    if name == "ray":
        return RayBackend(address, workers)
    return LocalBackend(workers)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Raise SweepError when nothing accepts TCP connections at ``HOST:PORT``.

    ``ray.init`` retries an unreachable address for minutes before it gives
    up, so a closed port is reported here at once. Addresses of another form
    (``auto``, ``ray://...``) are left to Ray.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise SweepError(
            f"cannot connect to Ray at {address}: {err.strerror or err}. Start a cluster "
            "with ray start --head and pass the address it prints to --address"
        ) from None


def _bar(total: int, desc: str, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, disable=None if progress else True,
                unit="job", dynamic_ncols=True)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
