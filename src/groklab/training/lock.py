"""Lock files that keep two groklab processes from writing one folder at once.

A process that writes a run, sweep, study or report folder first creates
``.groklab.lock`` in it: a JSON object with the host name, process id, process
start time and command line of the holder. Another process that finds the file
stops with FolderLockedError. A lock left behind by a process that no longer
runs on this host (killed, or lost in a crash) is removed and taken over with
one line on stderr. A lock written on another host cannot be checked, so it is
never removed automatically.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE = ".groklab.lock"

DAMAGED_LOCK_AGE = 10.0
"""Seconds after its last write from which an unreadable lock file counts as damaged.

A younger one may belong to a writer on a filesystem without hard links,
which fills the file after creating it.
"""

MAX_ATTEMPTS = 20
"""Number of times acquisition reads a lock file that keeps changing before it gives up."""

# errno values with which os.link reports a filesystem without hard links.
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EXDEV}


class FolderLockedError(ValueError):
    """Another process holds the lock of a folder that this process would write."""


# Depth of the locks this process holds, keyed by resolved folder and process
# id, so that a forked child never counts as the owner of its parent's locks.
_lock_depths: dict[tuple[str, int], int] = {}
_depths_mutex = threading.Lock()


def is_lock_entry(name: str) -> bool:
    """Return True for the lock file and for the temporary files it is created from."""
    return name == LOCK_FILE or name.startswith(LOCK_FILE + "-")


def folder_is_empty(path: Path) -> bool:
    """Return True when the folder ``path`` contains nothing but lock files."""
    return all(is_lock_entry(entry.name) for entry in Path(path).iterdir())


@contextmanager
def folder_lock(
    path: Path, label: str = "run folder", *, create: bool = True
) -> Iterator[Path]:
    """Hold the lock of the folder ``path`` while the block runs, and yield the path.

    Raises FolderLockedError, with ``label`` naming the folder, when a running
    process holds the lock. A process may lock a folder it already holds
    again, and only the outermost exit removes the lock. With ``create`` a
    missing folder is created, and removed on exit, with the parents this
    call created, if it is still empty. A path that is a file, or a missing
    folder without ``create``, is not locked: the block runs, so that the
    caller's own checks report the path.
    """
    path = Path(path)
    created = _make_folders(path) if create else []
    if not path.is_dir():
        yield path
        return
    key = (str(path.resolve()), os.getpid())
    with _depths_mutex:
        if key not in _lock_depths:
            try:
                _acquire(path, label)
            except BaseException:
                _remove_empty(created)
                raise
        _lock_depths[key] = _lock_depths.get(key, 0) + 1
    try:
        yield path
    finally:
        with _depths_mutex:
            _lock_depths[key] -= 1
            if _lock_depths[key] == 0:
                del _lock_depths[key]
                _release(path / LOCK_FILE)
        _remove_empty(created)


def _make_folders(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents, and return those created, outermost first."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    created = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue  # created by another process in the meantime
        created.append(folder)
    return created


def _remove_empty(created: list[Path]) -> None:
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            return  # not empty, or already gone


def _acquire(folder: Path, label: str) -> None:
    """Create the lock file in ``folder``, removing a stale one first."""
    lock = folder / LOCK_FILE
    content = json.dumps(_identity(), indent=2) + "\n"
    for _ in range(MAX_ATTEMPTS):
        raw = _read_bytes(lock)
        if raw is not None:
            _remove_if_stale(folder, lock, raw, label)
            continue
        try:
            if _create(folder, lock, content):
                return
        except FileNotFoundError:
            # Another process removed the folder it had created and left empty.
            folder.mkdir(parents=True, exist_ok=True)
    raise FolderLockedError(
        f"cannot lock {label} {folder}: its lock file {lock} changed {MAX_ATTEMPTS} "
        "times while groklab tried to take it: retry later"
    )


def _identity() -> dict[str, Any]:
    """Return the record that identifies this process in a lock file."""
    stat = _process_stat(os.getpid())
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "process_start": None if stat is None else stat[1],
        "command": " ".join(sys.argv)[:200],
    }


def _create(folder: Path, lock: Path, content: str) -> bool:
    """Create ``lock`` with ``content`` and return True, or return False if it exists.

    The content is written to a temporary file first and hard-linked to the
    lock's name, so the lock file is complete as soon as it is visible, and
    the link fails when the lock already exists.
    """
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=LOCK_FILE + "-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        os.chmod(tmp, 0o644)  # readable by other users of a shared folder
        try:
            os.link(tmp, lock)
        except FileExistsError:
            return False
        except OSError as err:
            if err.errno not in _NO_HARD_LINKS:
                raise
            return _create_exclusive(lock, content)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def _create_exclusive(lock: Path, content: str) -> bool:
    """Create ``lock`` with O_EXCL where hard links are not supported.

    Readers may see the file before its content, which DAMAGED_LOCK_AGE allows for.
    """
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    return True


def _remove_if_stale(folder: Path, lock: Path, raw: bytes, label: str) -> None:
    """Remove the lock file whose content is ``raw`` if its holder has ended.

    Raises FolderLockedError when the holder is running, runs on another host,
    or the file is unreadable but too young to count as damaged.
    """
    holder, problem = _parse(raw)
    if holder is None:
        age = _age(lock)
        if age is None:
            return  # removed meanwhile
        if age < DAMAGED_LOCK_AGE:
            raise FolderLockedError(
                f"lock file {lock} of {label} {folder} is unreadable ({problem}) and "
                f"{age:.0f} s old: retry in a few seconds, or delete it if no other "
                "groklab command is writing the folder"
            )
        note = (f"groklab: removed damaged lock file {lock} ({problem}), "
                f"last written {age:.0f} s ago")
    else:
        _check_not_running(holder, folder, lock, label)
        note = (f"groklab: recovered stale lock {lock} of process {holder['pid']}, "
                "which is no longer running")
    if _remove_exact(folder, lock, raw):
        print(note, file=sys.stderr)


def _check_not_running(holder: dict[str, Any], folder: Path, lock: Path, label: str) -> None:
    """Raise FolderLockedError unless the holder was a process of this host that has ended."""
    pid, host = holder["pid"], holder["host"]
    since = holder.get("started", "an unknown time")
    if host != socket.gethostname():
        raise FolderLockedError(
            f"{label} {folder} is locked by process {pid} on host {host} since {since}, "
            f"which cannot be checked from host {socket.gethostname()}: if that "
            f"process has ended, delete {lock} and retry"
        )
    if _is_running(pid, holder.get("process_start")):
        raise FolderLockedError(
            f"{label} {folder} is in use by process {pid} on host {host} since {since} "
            f"(lock file {lock}): wait for that process to finish or stop it"
        )


def _parse(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """Return the lock record in ``raw``, or None and what is wrong with it."""
    try:
        data = json.loads(raw.decode())
    except (ValueError, RecursionError):
        # ValueError covers invalid UTF-8, invalid JSON and too long integers.
        return None, "not JSON"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    pid, start = data.get("pid"), data.get("process_start")
    if type(pid) is not int or not 0 < pid < 2**31:
        return None, f"invalid pid {pid!r}"
    if not isinstance(data.get("host"), str):
        return None, "no host name"
    if start is not None and type(start) is not int:
        return None, f"invalid process_start {start!r}"
    return data, ""


def _is_running(pid: int, process_start: int | None) -> bool:
    """Return True when process ``pid`` of this host runs and started at ``process_start``.

    A different start time means the process id was reused by a newer
    process. Start times are compared only where /proc provides them (Linux).
    """
    if os.name == "nt":
        # NOTE: os.kill(pid, 0) would terminate the process on Windows, so there a
        # lock of this host is never recovered automatically.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # the process exists but belongs to another user
    stat = _process_stat(pid)
    if stat is None:
        return True
    state, started = stat
    if state in ("Z", "X"):
        return False  # ended, but not yet reaped by its parent
    return process_start is None or started == process_start


def _process_stat(pid: int) -> tuple[str, int] | None:
    """Return the state and start time of ``pid`` from /proc, or None without /proc.

    The start time is field 22 of /proc/PID/stat, in clock ticks after boot.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    fields = text[text.rindex(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _remove_exact(folder: Path, lock: Path, raw: bytes) -> bool:
    """Delete ``lock`` if it still contains ``raw``, and return whether this call deleted it.

    The check and the deletion hold an exclusive flock on the folder, so two
    processes that found the same stale lock cannot delete a fresh lock that
    one of them created in the meantime.
    """
    with _removal_guard(folder):
        if _read_bytes(lock) != raw:
            return False
        lock.unlink(missing_ok=True)
        return True


@contextmanager
def _removal_guard(folder: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``folder``, released by the kernel if this process dies."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            # NOTE: some network filesystems reject flock on a folder. Then two
            # processes that remove the same stale lock at the same moment are
            # not serialised, and both may end up believing they hold the lock.
            pass
        yield
    finally:
        os.close(fd)


def _release(lock: Path) -> None:
    """Delete ``lock`` if it still names this process as its holder."""
    raw = _read_bytes(lock)
    if raw is None:
        return
    holder, _ = _parse(raw)
    own = _identity()
    if holder is not None and all(
        holder.get(key) == own[key] for key in ("pid", "host", "process_start")
    ):
        lock.unlink(missing_ok=True)


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _age(path: Path) -> float | None:
    """Return the seconds since ``path`` was last written, or None if it is gone."""
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
