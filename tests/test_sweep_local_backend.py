"""The local sweep backend: interruption reaches running jobs, queued jobs never start."""

import os
import signal
import threading
import time
from pathlib import Path

from groklab.sweep.backends import LocalBackend


def wait_then_mark(started: str, marker: str, seconds: float) -> str:
    """Write ``started``, then sleep; write ``marker`` and return when interrupted."""
    Path(started).write_text(str(os.getpid()))
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        Path(marker).write_text("interrupted")
        return "interrupted"
    return "slept"


def close_when_started(backend: LocalBackend, started: Path) -> threading.Thread:
    def close() -> None:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        backend.close(cancel=True)

    thread = threading.Thread(target=close)
    thread.start()
    return thread


def test_local_cancel_interrupts_running_job(tmp_path):
    backend = LocalBackend(1)
    started, marker = tmp_path / "started", tmp_path / "marker"
    closer = close_when_started(backend, started)
    begin = time.monotonic()
    results = backend.map(
        wait_then_mark, [(str(started), str(marker), 120.0)], "jobs", False
    )
    closer.join()
    assert results == ["interrupted"]
    assert marker.read_text() == "interrupted"
    assert time.monotonic() - begin < 60


def test_local_cancel_starts_no_queued_job(tmp_path):
    backend = LocalBackend(1)
    first, second = tmp_path / "first", tmp_path / "second"
    closer = close_when_started(backend, first)
    arguments = [
        (str(first), str(tmp_path / "first-marker"), 120.0),
        (str(second), str(tmp_path / "second-marker"), 120.0),
    ]
    try:
        backend.map(wait_then_mark, arguments, "jobs", False)
    except RuntimeError:
        pass  # map submits the second job to the pool that close() shut down
    closer.join()
    assert (tmp_path / "first-marker").exists()
    assert not second.exists()


def test_local_workers_ignore_sigint(tmp_path):
    backend = LocalBackend(1)
    started, marker = tmp_path / "started", tmp_path / "marker"

    def interrupt_worker() -> None:
        while not started.exists():
            time.sleep(0.05)
        os.kill(int(started.read_text()), signal.SIGINT)

    thread = threading.Thread(target=interrupt_worker)
    thread.start()
    results = backend.map(wait_then_mark, [(str(started), str(marker), 2.0)], "jobs", False)
    thread.join()
    backend.close()
    assert results == ["slept"]
    assert not marker.exists()
