"""Kill real ``groklab`` processes with SIGKILL and check that resuming them loses nothing.

Each case starts ``python -m groklab`` in a new process group and kills the
group at a random delay, when a file appears, or from inside a checkpoint write.
It then resumes the run and compares the folder with that of an uninterrupted
run of the same command. The files must be the same, ``metrics.csv`` byte for
byte and the tensors and metadata of every checkpoint exactly, because the runs
use one CPU thread, where the seed fixes every bit.

The random delays come from a seeded generator, and every failure message
lists the delays and the epoch each kill reached, so a failure can be replayed.
The cases of a group run side by side, one per available CPU.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import torch

from groklab.training.checkpoints import load_checkpoint

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not hasattr(os, "killpg") or not hasattr(signal, "SIGKILL"),
        reason="needs SIGKILL and os.killpg",
    ),
]

# Measured on a 2-core VM: one run trains for about 3 s after about 5 s of
# imports and set-up. Checkpoints at epochs 0-5, 12, 19, 26, 33, 40, 47,
# 54 and 60.
SETTINGS = [
    "p=31", "hidden=64", "epochs=60", "batch_size=32",
    "checkpoint_dense_until=5", "checkpoint_every=7", "checkpoint_log_points=0",
]
SET_OPTIONS = [word for pair in SETTINGS for word in ("--set", pair)]
TRAIN = ["train", "--task", "modadd", "--regime", "grok", *SET_OPTIONS, "--quiet"]
SWEEP = [
    "sweep", "--task", "modadd", "--regime", "grok", "--seeds", "0-1",
    "--max-members", "2", "--workers", "1", "--no-analysis", *SET_OPTIONS, "--quiet",
]
SWEEP_RUNS = ["seed0", "seed1"]
ENV = {**os.environ, "PYTHONHASHSEED": "0"}
TIMEOUT = 300
"""Seconds one groklab process may take before the test fails."""
LANES = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
"""Cases run at the same time: one per available CPU, at most 4."""

_draws = random.Random(8128)
RANDOM_KILLS = [(_draws.random(), _draws.random() if i % 2 else None) for i in range(4)]
"""Per case, where in the training window to kill the run and, in every other
case, where to kill the first resume too (fractions of the window)."""
SWEEP_KILLS = [_draws.random() for _ in range(2)]
"""Per case, where in the sweep's training window to kill it."""


@dataclass
class Reference:
    """An uninterrupted run and the seconds from its start to training and to exit."""

    path: Path
    training_starts: float
    exits: float

    def delay(self, fraction: float) -> float:
        """Return the delay at ``fraction`` of the way through the training window."""
        return self.training_starts + fraction * (self.exits - self.training_starts)


@dataclass
class Outcome:
    """What one case did to its folder, and how the final resume ended."""

    path: Path
    log: Path
    notes: list[str] = field(default_factory=list)
    """One line per process: when it was killed and the epoch it reached, or how it ended."""
    first_status: int | None = None
    """Exit status of the first, killed process: -SIGKILL when the kill hit it."""
    final_status: int | None = None
    resume_epochs: dict[str, int | None] = field(default_factory=dict)
    """Epoch of each sweep run's last.safetensors right after the kill (None: no file),
    where a case records it."""

    def assert_finished(self) -> None:
        assert self.final_status == 0, f"resume failed after: {self.notes}\n{self.log_text()}"

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def start(python_args: list[str], log: Path) -> subprocess.Popen:
    """Start ``python PYTHON_ARGS`` as the leader of a new process group.

    Its output and errors are appended to ``log``.
    """
    with open(log, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, *python_args], env=ENV, stdout=handle,
            stderr=subprocess.STDOUT, start_new_session=True,
        )


def start_groklab(args: list[str], log: Path) -> subprocess.Popen:
    """Start ``python -m groklab ARGS`` as the leader of a new process group."""
    return start(["-m", "groklab", *args], log)


def wait(process: subprocess.Popen) -> int:
    """Wait for ``process`` and return its exit status.

    A process that runs longer than TIMEOUT is killed with its group, and the
    test fails.
    """
    try:
        return process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError(f"{process.args} ran for more than {TIMEOUT} s") from None


def kill_group(process: subprocess.Popen) -> int:
    """SIGKILL the process group of ``process`` and return the leader's exit status.

    SIGKILL stops the leader and any worker it spawned before they run more
    code, so the folder stays as the kill left it. Only the leader is reaped.
    """
    os.killpg(process.pid, signal.SIGKILL)
    return process.wait()


def kill_after(args: list[str], delay: float, outcome: Outcome) -> int:
    """Run ``args`` and kill its process group after ``delay`` s; return the exit status."""
    process = start_groklab(args, outcome.log)
    time.sleep(delay)
    if process.poll() is not None:
        outcome.notes.append(
            f"{args[0]} exited with {process.returncode} before the kill at {delay:.2f} s"
        )
        return process.returncode
    status = kill_group(process)
    outcome.notes.append(f"{args[0]} killed at {delay:.2f} s ({describe(outcome.path)})")
    return status


def kill_on_file(args: list[str], path: Path, outcome: Outcome) -> int:
    """Run ``args`` and kill its process group once ``path`` exists; return the exit status."""
    process = start_groklab(args, outcome.log)
    started = time.monotonic()
    while not path.exists() and process.poll() is None:
        time.sleep(0.005)
    if process.poll() is not None:
        outcome.notes.append(f"{args[0]} exited with {process.returncode} before "
                             f"{path.name} appeared")
        return process.returncode
    status = kill_group(process)
    outcome.notes.append(f"{args[0]} killed at {time.monotonic() - started:.2f} s, when "
                         f"{path.name} appeared ({describe(outcome.path)})")
    return status


def finish(args: list[str], outcome: Outcome) -> None:
    """Run ``args`` to the end and record its exit status in ``outcome``."""
    outcome.final_status = wait(start_groklab(args, outcome.log))
    outcome.notes.append(f"{args[0]} ended with exit status {outcome.final_status}")


def describe(folder: Path) -> str:
    """Return the state and epoch of every status.json under ``folder``."""
    states = []
    for path in sorted(folder.rglob("status.json")):
        status = json.loads(path.read_text())
        where = path.parent.relative_to(folder).as_posix()
        label = "" if where == "." else f"{where}: "
        states.append(f"{label}{status.get('state')} at epoch {status.get('epoch')}")
    return "; ".join(states) or "no status.json yet"


def resume_epochs(sweep_dir: Path) -> dict[str, int | None]:
    """Return the epoch of each sweep run's last.safetensors, or None where it is missing."""
    epochs = {}
    for run in SWEEP_RUNS:
        last = sweep_dir / "runs" / run / "last.safetensors"
        epochs[run] = load_checkpoint(last)[1]["epoch"] if last.is_file() else None
    return epochs


def resume_args(run_dir: Path) -> list[str]:
    """Return the command that continues the run in ``run_dir``.

    A run killed before it wrote config.json has nothing to resume from, so
    its own command starts it again.
    """
    if (run_dir / "config.json").is_file():
        return ["train", "--resume", str(run_dir), "--quiet"]
    return [*TRAIN, "--out", str(run_dir)]


def run_cases(cases: dict[str, Callable[[], Outcome]]) -> dict[str, Outcome]:
    """Run the cases LANES at a time and return their outcomes by name."""
    with ThreadPoolExecutor(LANES) as pool:
        futures = {name: pool.submit(case) for name, case in cases.items()}
        return {name: future.result() for name, future in futures.items()}


def measure_reference(args: list[str], path: Path) -> Reference:
    """Run ``args`` uninterrupted and measure when training starts and when it exits.

    Training starts when the first config.json is written, after the imports
    and the data set-up.
    """
    log = path.parent / f"{path.name}.log"
    started = time.time()
    code = wait(start_groklab(args, log))
    exits = time.time() - started
    assert code == 0, log.read_text()
    first_header = min(p.stat().st_mtime for p in path.rglob("config.json"))
    return Reference(path, first_header - started, exits)


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, Reference]:
    """Return the uninterrupted ``train`` and ``sweep`` runs, measured side by side."""
    folder = tmp_path_factory.mktemp("references")
    commands = {
        "train": [*TRAIN, "--out", str(folder / "train")],
        "sweep": [*SWEEP, "--out", str(folder / "sweep")],
    }
    with ThreadPoolExecutor(LANES) as pool:
        futures = {name: pool.submit(measure_reference, args, folder / name)
                   for name, args in commands.items()}
        return {name: future.result() for name, future in futures.items()}


def assert_same_run(run_dir: Path, expected: Path, notes: list[str]) -> None:
    """Assert that ``run_dir`` contains the same finished run as ``expected``."""
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished", f"{run_dir}: {status} after: {notes}"
    got_metrics = (run_dir / "metrics.csv").read_bytes()
    assert got_metrics == (expected / "metrics.csv").read_bytes(), (
        f"{run_dir}: metrics.csv differs from the uninterrupted run's after: {notes}"
    )
    leftovers = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob(".tmp-*"))
    assert leftovers == [], f"{run_dir}: temporary files left behind after: {notes}"
    files = file_names(run_dir)
    assert files == file_names(expected), f"{run_dir}: files differ after: {notes}"
    for name in file_names(expected):
        if name.endswith(".safetensors"):
            assert_same_checkpoint(run_dir / name, expected / name, notes)


def file_names(run_dir: Path) -> list[str]:
    """Return the path of every file in ``run_dir``, relative to it."""
    return sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file())


def assert_same_checkpoint(path: Path, expected: Path, notes: list[str]) -> None:
    tensors, meta = load_checkpoint(path)
    expected_tensors, expected_meta = load_checkpoint(expected)
    assert meta == expected_meta, f"{path} metadata differs after: {notes}"
    assert sorted(tensors) == sorted(expected_tensors), f"{path} tensor names after: {notes}"
    for key, value in tensors.items():
        assert torch.equal(value, expected_tensors[key]), (
            f"{path} tensor {key} differs by up to "
            f"{max_difference(value, expected_tensors[key])} after: {notes}"
        )


def max_difference(got: torch.Tensor, expected: torch.Tensor) -> str:
    if got.shape != expected.shape:
        return f"a shape of {list(got.shape)}, not {list(expected.shape)}"
    return f"{(got.double() - expected.double()).abs().max().item():.3g}"


def kill_at_random(folder: Path, reference: Reference, fractions) -> Outcome:
    """Kill a run, and maybe its first resume, at the given fractions of the window."""
    run_fraction, resume_fraction = fractions
    outcome = Outcome(folder / "run", folder / "log.txt")
    command = [*TRAIN, "--out", str(outcome.path)]
    outcome.first_status = kill_after(command, reference.delay(run_fraction), outcome)
    if resume_fraction is not None:
        kill_after(resume_args(outcome.path), reference.delay(resume_fraction), outcome)
    finish(resume_args(outcome.path), outcome)
    return outcome


def kill_before_training(folder: Path) -> Outcome:
    """Kill a run 0.05 s after its start, long before it writes anything."""
    outcome = Outcome(folder / "run", folder / "log.txt")
    command = [*TRAIN, "--out", str(outcome.path)]
    outcome.first_status = kill_after(command, 0.05, outcome)
    finish(resume_args(outcome.path), outcome)
    return outcome


def kill_after_header(folder: Path) -> Outcome:
    """Kill a run once config.json and status.json exist, before the first metrics row.

    The run then builds its model and optimiser, which takes seconds while
    torch imports its compiler, so the kill lands in that window.
    """
    outcome = Outcome(folder / "run", folder / "log.txt")
    command = [*TRAIN, "--out", str(outcome.path)]
    outcome.first_status = kill_on_file(command, outcome.path / "status.json", outcome)
    finish(["train", "--resume", str(outcome.path), "--quiet"], outcome)
    return outcome


# Runs groklab's command line with a checkpoint write that SIGKILLs its own
# process. Its arguments are the checkpoint's file name, its epoch, when to die
# and then the groklab command line. With "inside" the process dies in the
# safetensors write, with half the temporary file on disk. With "before" it
# dies just before the write starts.
DIE_IN_CHECKPOINT = """
import json, os, signal, sys
from pathlib import Path

import groklab.training.checkpoints as checkpoints
import groklab.training.records as records
from groklab.cli import main

name, epoch, moment = sys.argv[1], int(sys.argv[2]), sys.argv[3]
save_file, save_checkpoint = checkpoints.save_file, records.save_checkpoint


def save_half_then_die(tensors, filename, metadata=None):
    save_file(tensors, filename, metadata=metadata)
    target = Path(filename).name.startswith(f".tmp-{name}-")
    if target and json.loads(metadata["meta"])["epoch"] == epoch:
        os.truncate(filename, os.path.getsize(filename) // 2)
        os.kill(os.getpid(), signal.SIGKILL)


def die_then_save(path, tensors, meta):
    if Path(path).name == name and meta["epoch"] == epoch:
        os.kill(os.getpid(), signal.SIGKILL)
    save_checkpoint(path, tensors, meta)


if moment == "inside":
    checkpoints.save_file = save_half_then_die
else:
    records.save_checkpoint = die_then_save
sys.exit(main(sys.argv[4:]))
"""

CHECKPOINT_KILLS = {
    "inside-epoch-checkpoint": ("epoch_0000019.safetensors", 19, "inside"),
    "inside-last": ("last.safetensors", 26, "inside"),
    "between-epoch-checkpoint-and-last": ("last.safetensors", 33, "before"),
}


def kill_in_checkpoint(folder: Path, file_name: str, epoch: int, moment: str) -> Outcome:
    outcome = Outcome(folder / "run", folder / "log.txt")
    hook = ["-c", DIE_IN_CHECKPOINT, file_name, str(epoch), moment]
    outcome.first_status = wait(start([*hook, *TRAIN, "--out", str(outcome.path)],
                                      outcome.log))
    outcome.notes.append(f"run set to die {moment} writing {file_name} at epoch {epoch} "
                         f"exited with {outcome.first_status} ({describe(outcome.path)})")
    finish(resume_args(outcome.path), outcome)
    return outcome


def train_case_ids() -> dict[str, tuple]:
    ids = {}
    for run_fraction, resume_fraction in RANDOM_KILLS:
        name = f"random-{run_fraction:.3f}"
        if resume_fraction is not None:
            name += f"-resume-{resume_fraction:.3f}"
        ids[name] = (run_fraction, resume_fraction)
    return ids


TRAIN_CASES = train_case_ids()


@pytest.fixture(scope="module")
def train_kills(references, tmp_path_factory) -> dict[str, Outcome]:
    """Kill and resume one run per case: random delays, early kills, checkpoint writes."""
    cases = {}
    for name, fractions in TRAIN_CASES.items():
        folder = tmp_path_factory.mktemp(name)
        cases[name] = partial(kill_at_random, folder, references["train"], fractions)
    cases["before-training"] = partial(kill_before_training, tmp_path_factory.mktemp("early"))
    cases["after-header"] = partial(kill_after_header, tmp_path_factory.mktemp("header"))
    for name, hook in CHECKPOINT_KILLS.items():
        cases[name] = partial(kill_in_checkpoint, tmp_path_factory.mktemp(name), *hook)
    return run_cases(cases)


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_random_kill_resumes_exactly(references, train_kills, case):
    outcome = train_kills[case]
    outcome.assert_finished()
    assert_same_run(outcome.path, references["train"].path, outcome.notes)


def test_random_kills_hit_running_runs(train_kills):
    # A kill after the run exited tests nothing. The delays lie inside the
    # training window measured in this session, so most kills land before exit.
    killed = [name for name in TRAIN_CASES
              if train_kills[name].first_status == -signal.SIGKILL]
    notes = {name: train_kills[name].notes for name in TRAIN_CASES}
    assert len(killed) >= len(TRAIN_CASES) // 2, notes


def test_kill_before_training_restarts(references, train_kills):
    outcome = train_kills["before-training"]
    assert outcome.first_status == -signal.SIGKILL, outcome.notes
    outcome.assert_finished()
    assert_same_run(outcome.path, references["train"].path, outcome.notes)
    status = json.loads((outcome.path / "status.json").read_text())
    assert "resumed_from" not in status, outcome.notes


def test_kill_after_header_resumes(references, train_kills):
    outcome = train_kills["after-header"]
    assert outcome.first_status == -signal.SIGKILL, outcome.notes
    outcome.assert_finished()
    assert_same_run(outcome.path, references["train"].path, outcome.notes)


@pytest.mark.parametrize("case", list(CHECKPOINT_KILLS))
def test_kill_in_checkpoint_write(references, train_kills, case):
    outcome = train_kills[case]
    assert outcome.first_status == -signal.SIGKILL, (
        f"the run did not die in the checkpoint write: {outcome.notes}\n{outcome.log_text()}"
    )
    outcome.assert_finished()
    assert_same_run(outcome.path, references["train"].path, outcome.notes)


def kill_sweep(folder: Path, reference: Reference, fraction: float) -> Outcome:
    """Kill a sweep's driver and worker at ``fraction`` of the window, then re-run it."""
    outcome = Outcome(folder / "sweep", folder / "log.txt")
    command = [*SWEEP, "--out", str(outcome.path)]
    outcome.first_status = kill_after(command, reference.delay(fraction), outcome)
    finish(command, outcome)
    return outcome


# A sweep command line run as a script file. Spawned sweep workers import the
# parent's script, so each worker installs the hook too. The worker about to
# write run folder seed1's checkpoint of the chosen epoch SIGKILLs its process
# group, driver included, after seed0 has saved that epoch.
DIE_BETWEEN_MEMBERS = """
import os, signal, sys
from pathlib import Path

import groklab.training.records as records

RUN, EPOCH = "seed1", {epoch}
save_checkpoint = records.save_checkpoint


def die_then_save(path, tensors, meta):
    path = Path(path)
    in_run = path.parent.name == "checkpoints" and path.parent.parent.name == RUN
    if in_run and meta["epoch"] == EPOCH:
        os.killpg(0, signal.SIGKILL)
    save_checkpoint(path, tensors, meta)


records.save_checkpoint = die_then_save

if __name__ == "__main__":
    from groklab.cli import main

    sys.exit(main(sys.argv[1:]))
"""


BETWEEN_MEMBERS = {0: None, 26: 19}
"""Epochs at which to kill a sweep between its members' checkpoints, each with the
epoch seed1 resumes from. At epoch 26 seed0 resumes a checkpoint ahead of seed1. At
epoch 0 seed1 has no resume point and restarts while seed0 resumes."""


def kill_sweep_between_members(folder: Path, epoch: int) -> Outcome:
    """Kill a sweep between two members' checkpoints of ``epoch``, then re-run it."""
    outcome = Outcome(folder / "sweep", folder / "log.txt")
    script = folder / "die_between_members.py"
    script.write_text(DIE_BETWEEN_MEMBERS.format(epoch=epoch))
    command = [*SWEEP, "--out", str(outcome.path)]
    process = start([str(script), *command], outcome.log)
    outcome.first_status = wait(process)
    outcome.resume_epochs = resume_epochs(outcome.path)
    outcome.notes.append(f"sweep set to die before seed1's epoch {epoch} checkpoint exited "
                         f"with {outcome.first_status} ({describe(outcome.path)})")
    finish(command, outcome)
    return outcome


def sweep_case_ids() -> dict[str, float]:
    return {f"random-{fraction:.3f}": fraction for fraction in SWEEP_KILLS}


SWEEP_CASES = sweep_case_ids()


@pytest.fixture(scope="module")
def sweep_kills(references, tmp_path_factory) -> dict[str, Outcome]:
    """Kill and re-run one sweep per case: random delays, and between two members."""
    cases = {
        name: partial(kill_sweep, tmp_path_factory.mktemp(name), references["sweep"],
                      fraction)
        for name, fraction in SWEEP_CASES.items()
    }
    for epoch in BETWEEN_MEMBERS:
        name = f"between-members-{epoch}"
        cases[name] = partial(kill_sweep_between_members, tmp_path_factory.mktemp(name), epoch)
    return run_cases(cases)


def assert_same_sweep(outcome: Outcome, expected: Path) -> None:
    """Assert that the re-run sweep matches the uninterrupted one, run folders included."""
    outcome.assert_finished()
    leftovers = sorted(p.relative_to(outcome.path).as_posix()
                       for p in outcome.path.rglob(".tmp-*"))
    assert leftovers == [], f"temporary files left behind after: {outcome.notes}"
    assert file_names(outcome.path) == file_names(expected), outcome.notes
    for run in SWEEP_RUNS:
        assert_same_run(outcome.path / "runs" / run, expected / "runs" / run, outcome.notes)
    with open(outcome.path / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    states = [(row["run"], row["state"]) for row in rows]
    assert states == [(f"runs/{run}", "finished") for run in SWEEP_RUNS], outcome.notes
    table = (outcome.path / "results.csv").read_bytes()
    assert table == (expected / "results.csv").read_bytes(), outcome.notes


@pytest.mark.parametrize("case", list(SWEEP_CASES))
def test_killed_sweep_reruns_exactly(references, sweep_kills, case):
    assert_same_sweep(sweep_kills[case], references["sweep"].path)


@pytest.mark.parametrize("epoch", list(BETWEEN_MEMBERS))
def test_sweep_killed_between_members(references, sweep_kills, epoch):
    outcome = sweep_kills[f"between-members-{epoch}"]
    assert outcome.first_status == -signal.SIGKILL, f"{outcome.notes}\n{outcome.log_text()}"
    expected_epochs = {"seed0": epoch, "seed1": BETWEEN_MEMBERS[epoch]}
    assert outcome.resume_epochs == expected_epochs, outcome.notes
    assert_same_sweep(outcome, references["sweep"].path)
