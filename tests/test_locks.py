"""Folder locks: a second writer is rejected, and a lock of a dead process is recovered."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from cli_assertions import assert_one_line_error
from groklab.cli import main
from groklab.config import RunConfig
from groklab.training.ensemble import train_ensemble
from groklab.training.lock import LOCK_FILE, FolderLockedError, folder_lock
from groklab.training.runfolder import check_run_dir, prepare_run_dir, read_run

TINY_TRAIN = [
    "--task", "modadd", "--regime", "grok", "--epochs", "4",
    "--set", "p=23", "--set", "hidden=32", "--set", "checkpoint_dense_until=2",
    "--set", "checkpoint_every=3", "--set", "checkpoint_log_points=0", "--quiet",
]
TINY_SWEEP = [
    "--task", "modadd", "--grid", "alpha=0.3,3", "--seeds", "0",
    "--set", "p=13", "--set", "hidden=16", "--set", "epochs=4",
    "--workers", "1", "--no-analysis", "--quiet",
]

# Enters folder_lock on argv[1], writes argv[2] once it holds the lock, and
# sleeps until it is killed.
HOLDER = """
import sys, time
from pathlib import Path
from groklab.training.lock import folder_lock

with folder_lock(Path(sys.argv[1])):
    Path(sys.argv[2]).write_text("ready")
    time.sleep(600)
"""

# Imports the training code, writes argv[1], waits for the file argv[2] to
# appear and then runs the command line with the remaining arguments, so
# that two such processes start training at the same moment.
RACER = """
import sys, time
from pathlib import Path
import groklab.cli, groklab.training.loop

Path(sys.argv[1]).write_text("ready")
while not Path(sys.argv[2]).exists():
    time.sleep(0.002)
sys.exit(groklab.cli.main(sys.argv[3:]))
"""

# Writes argv[3], waits for the file argv[2], then tries to lock argv[1]. The
# winner holds the lock for two seconds, so every other process finds it held.
# Exit status 0 means this process won, 3 that it found the lock held.
RECOVERER = """
import sys, time
from pathlib import Path
from groklab.training.lock import FolderLockedError, folder_lock

Path(sys.argv[3]).write_text("ready")
while not Path(sys.argv[2]).exists():
    time.sleep(0.001)
try:
    with folder_lock(Path(sys.argv[1])):
        time.sleep(2)
except FolderLockedError:
    sys.exit(3)
"""


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, f"process {process.pid} exited early"
        assert time.monotonic() < deadline, f"{path} did not appear in {seconds} s"
        time.sleep(0.02)


@contextmanager
def holder(folder: Path):
    """Run a process that holds the lock of ``folder``, yield it and kill it on exit."""
    ready = folder.parent / f"{folder.name}.ready"
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(ready)])
    try:
        wait_for(ready, process)
        yield process
    finally:
        process.kill()
        process.wait()


def dead_pid() -> int:
    """Return the id of a process that has ended and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(folder: Path, **fields) -> Path:
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": "earlier",
              "process_start": None, "command": "test"}
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    lock.write_text(json.dumps({**record, **fields}))
    return lock


def file_times(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns
            for p in folder.rglob("*") if p.is_file()}


def own_process_start() -> int:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[19])


# --- the lock itself ---------------------------------------------------------


def test_lock_file_names_holder(tmp_path):
    folder = tmp_path / "run"
    with folder_lock(folder):
        record = json.loads((folder / LOCK_FILE).read_text())
        (folder / "result.txt").write_text("kept")
    assert record["pid"] == os.getpid()
    assert record["host"] == socket.gethostname()
    assert "started" in record
    assert "command" in record
    assert not (folder / LOCK_FILE).exists()
    assert (folder / "result.txt").read_text() == "kept"


def test_lock_removed_after_exception(tmp_path):
    folder = tmp_path / "made" / "run"
    with pytest.raises(RuntimeError, match="inside"):
        with folder_lock(folder):
            assert (folder / LOCK_FILE).is_file()
            raise RuntimeError("inside")
    assert not folder.exists()
    assert not folder.parent.exists()


def test_existing_folder_kept_after_exception(tmp_path):
    with pytest.raises(RuntimeError):
        with folder_lock(tmp_path):
            raise RuntimeError("inside")
    assert tmp_path.is_dir()
    assert list(tmp_path.iterdir()) == []


def test_lock_reentrant_in_one_process(tmp_path):
    with folder_lock(tmp_path):
        with folder_lock(Path(os.path.relpath(tmp_path))):
            assert (tmp_path / LOCK_FILE).is_file()
        assert (tmp_path / LOCK_FILE).is_file()
    assert not (tmp_path / LOCK_FILE).exists()


def test_lock_without_create_skips_missing_folder(tmp_path):
    with folder_lock(tmp_path / "missing", create=False):
        pass
    assert not (tmp_path / "missing").exists()


def test_lock_held_by_other_process(tmp_path):
    folder = tmp_path / "run"
    with holder(folder) as process:
        with pytest.raises(FolderLockedError) as caught:
            with folder_lock(folder, "sweep folder"):
                pass
        message = str(caught.value)
        assert message.startswith(f"sweep folder {folder} is in use by process {process.pid}")
        assert str(folder / LOCK_FILE) in message
        assert (folder / LOCK_FILE).is_file()
    assert isinstance(caught.value, ValueError)


def test_stale_lock_recovered(tmp_path, capsys):
    pid = dead_pid()
    lock = write_lock(tmp_path, pid=pid)
    with folder_lock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert err == (f"groklab: recovered stale lock {lock} of process {pid}, "
                   "which is no longer running\n")
    assert not lock.exists()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc")
def test_reused_pid_recovered(tmp_path, capsys):
    lock = write_lock(tmp_path, pid=os.getpid(), process_start=own_process_start() + 1)
    with folder_lock(tmp_path):
        pass
    assert "recovered stale lock" in capsys.readouterr().err
    assert not lock.exists()


def test_live_pid_without_start_time_holds(tmp_path):
    write_lock(tmp_path, pid=os.getppid(), process_start=None)
    with pytest.raises(FolderLockedError, match=f"in use by process {os.getppid()}"):
        with folder_lock(tmp_path):
            pass


def test_stale_lock_recovered_by_one_of_many(tmp_path):
    folder, go = tmp_path / "run", tmp_path / "go"
    write_lock(folder, pid=dead_pid())
    processes = []
    for index in range(6):
        ready = tmp_path / f"ready{index}"
        command = [sys.executable, "-c", RECOVERER, str(folder), str(go), str(ready)]
        processes.append((subprocess.Popen(command, stderr=subprocess.DEVNULL), ready))
    for process, ready in processes:
        wait_for(ready, process)
    go.write_text("go")
    codes = sorted(process.wait(timeout=120) for process, _ in processes)
    assert codes == [0, 3, 3, 3, 3, 3]
    assert not (folder / LOCK_FILE).exists()


def test_other_host_lock_rejected(tmp_path):
    lock = write_lock(tmp_path, pid=dead_pid(), host="other-node.invalid")
    with pytest.raises(FolderLockedError) as caught:
        with folder_lock(tmp_path):
            pass
    message = str(caught.value)
    assert "on host other-node.invalid" in message
    assert f"delete {lock}" in message
    assert lock.is_file()


def test_garbled_lock_rejected_while_young(tmp_path):
    lock = tmp_path / LOCK_FILE
    lock.write_text("{not json")
    with pytest.raises(FolderLockedError, match="is unreadable \\(not JSON\\)"):
        with folder_lock(tmp_path):
            pass
    assert lock.read_text() == "{not json"


GARBLED_LOCKS = {
    "invalid JSON": "{not json",
    "not an object": "[]",
    "text pid": '{"pid": "x", "host": "h"}',
    "empty": "",
    "deep nesting": "[" * 100000,
    "huge integer": "9" * 5000,
}


@pytest.mark.parametrize("content", GARBLED_LOCKS.values(), ids=GARBLED_LOCKS.keys())
def test_garbled_lock_recovered_when_old(tmp_path, capsys, content):
    lock = tmp_path / LOCK_FILE
    lock.write_text(content)
    old = time.time() - 60
    os.utime(lock, (old, old))
    with folder_lock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert err.startswith(f"groklab: removed damaged lock file {lock}")
    assert len(err.splitlines()) == 1


def test_only_lock_counts_as_empty(tmp_path):
    run_dir = tmp_path / "run"
    with folder_lock(run_dir):
        check_run_dir(run_dir, force=False)


def test_force_replacement_keeps_lock(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY_TRAIN, "--out", str(run_dir)]) == 0
    with folder_lock(run_dir):
        prepare_run_dir(run_dir, force=True)
        assert [p.name for p in run_dir.iterdir()] == [LOCK_FILE]
    assert list(run_dir.iterdir()) == []


# --- commands ----------------------------------------------------------------


def test_second_train_rejected(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY_TRAIN, "--out", str(run_dir)]) == 0
    capsys.readouterr()
    before = file_times(run_dir)
    with holder(run_dir) as process:
        code = main(["train", *TINY_TRAIN, "--out", str(run_dir), "--force"])
        assert_one_line_error(capsys, code, f"is in use by process {process.pid}")
        after = file_times(run_dir)
        after.pop(LOCK_FILE)
        assert after == before
    assert (run_dir / LOCK_FILE).is_file()  # left by the killed holder


def test_second_train_message_names_lock(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with holder(run_dir):
        code = main(["train", *TINY_TRAIN, "--out", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"(lock file {run_dir / LOCK_FILE})" in err
    assert [p.name for p in run_dir.iterdir()] == [LOCK_FILE]


def test_locked_sweep_rejected(tmp_path, capsys):
    out = tmp_path / "sweep"
    with holder(out) as process:
        code = main(["sweep", *TINY_SWEEP, "--out", str(out)])
        assert_one_line_error(capsys, code, f"sweep folder {out} is in use by process "
                                            f"{process.pid}")
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]


def test_locked_ensemble_member_locks_none(tmp_path):
    configs = [RunConfig("modadd", "grok", seed=s, p=23, hidden=32, epochs=2)
               for s in (0, 1)]
    folders = [tmp_path / "a", tmp_path / "b"]
    with holder(folders[1]):
        with pytest.raises(FolderLockedError, match="run folder .*b is in use"):
            train_ensemble(configs, folders, progress=False)
    assert not folders[0].exists()


def test_train_recovers_stale_lock(tmp_path, capsys):
    run_dir = tmp_path / "run"
    pid = dead_pid()
    lock = write_lock(run_dir, pid=pid)
    assert main(["train", *TINY_TRAIN, "--out", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert f"recovered stale lock {lock} of process {pid}" in err
    assert read_run(run_dir).status["state"] == "finished"
    assert not lock.exists()


def test_sweep_rerun_recovers_stale_lock(tmp_path, capsys):
    out = tmp_path / "sweep"
    lock = write_lock(out, pid=dead_pid())
    assert main(["sweep", *TINY_SWEEP, "--out", str(out)]) == 0
    assert "recovered stale lock" in capsys.readouterr().err
    assert not lock.exists()
    assert (out / "results.csv").is_file()


@pytest.mark.slow
def test_resume_after_sigkill_recovers_lock(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", "--task", "modadd", "--regime", "grok", "--epochs", "20",
            "--set", "p=23", "--set", "hidden=32", "--set", "checkpoint_dense_until=2",
            "--set", "checkpoint_every=5", "--set", "checkpoint_log_points=0",
            "--quiet", "--out", str(run_dir)]
    process = subprocess.Popen([sys.executable, "-m", "groklab", *args])
    try:
        wait_for(run_dir / "last.safetensors", process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == process.pid
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"recovered stale lock {run_dir / LOCK_FILE} of process {process.pid}" in err
    assert read_run(run_dir).status["state"] == "finished"
    assert not (run_dir / LOCK_FILE).exists()


@pytest.mark.slow
def test_simultaneous_trains_one_wins(tmp_path):
    run_dir = tmp_path / "run"
    go = tmp_path / "go"
    processes = []
    for index in range(2):
        ready = tmp_path / f"ready{index}"
        process = subprocess.Popen(
            [sys.executable, "-c", RACER, str(ready), str(go),
             "train", *TINY_TRAIN, "--out", str(run_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        processes.append((process, ready))

    try:
        for process, ready in processes:
            wait_for(ready, process)
        go.write_text("go")
        results = [(p, *p.communicate(timeout=300)) for p, _ in processes]
    finally:
        for process, _ in processes:
            process.kill()
            process.wait()

    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 2], results
    winner = next(p for p, _, _ in results if p.returncode == 0)
    loser_err = next(err for p, _, err in results if p.returncode == 2)
    assert len(loser_err.strip().splitlines()) == 1, loser_err
    assert f"is in use by process {winner.pid}" in loser_err

    run = read_run(run_dir)
    assert run.status["state"] == "finished"
    assert list(run.metrics["epoch"]) == [0, 1, 2, 3, 4]
    assert not (run_dir / LOCK_FILE).exists()
