"""Single-run resume: continuing from last.safetensors equals an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import groklab.training.loop as loop
from groklab.config import RunConfig
from groklab.training.checkpoints import RNG_KEY, load_checkpoint
from groklab.training.loop import train
from groklab.training.runfolder import RunFolderError, list_checkpoints, read_run

# Checkpoints at 0, 1, 2, 5 and 8: a crash in epoch 7 resumes from epoch 5
# and must drop the metrics row of epoch 6.
CONFIG = dict(
    task="modadd", regime="grok", p=23, hidden=32, epochs=8, checkpoint_dense_until=2,
    checkpoint_every=3, checkpoint_log_points=0,
)


def crash_in_epoch(monkeypatch, epoch: int) -> None:
    original = loop.train_epoch
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise RuntimeError("simulated crash")
        original(*args, **kwargs)

    monkeypatch.setattr(loop, "train_epoch", crashing)


def read_status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def straight_and_crashed(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """Return an uninterrupted run and one that crashed in epoch 7 (resume point 5)."""
    config = RunConfig(**CONFIG)
    straight = train(config, tmp_path / "straight", progress=False)
    crashed = tmp_path / "crashed"
    crash_in_epoch(monkeypatch, 7)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, crashed, progress=False)
    monkeypatch.undo()
    return straight, crashed


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    config = RunConfig(**CONFIG)
    straight, crashed = straight_and_crashed(tmp_path, monkeypatch)
    assert read_status(crashed)["state"] == "failed"
    assert len((crashed / "metrics.csv").read_text().splitlines()) == 1 + 7

    train(config, crashed, resume=True, progress=False)
    assert read_status(crashed)["state"] == "finished"
    assert read_status(crashed)["resumed_from"] == 5
    assert (crashed / "metrics.csv").read_text() == (straight / "metrics.csv").read_text()
    assert [e for e, _ in list_checkpoints(crashed)] == [0, 1, 2, 5, 8]
    for name in ("last.safetensors", "checkpoints/epoch_0000008.safetensors"):
        got, _ = load_checkpoint(crashed / name)
        expected, _ = load_checkpoint(straight / name)
        assert sorted(got) == sorted(expected)
        for key, value in got.items():
            torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-6)


def test_last_checkpoint_stores_data_order(tmp_path):
    run = train(RunConfig(**CONFIG), tmp_path / "run", progress=False)
    tensors, meta = load_checkpoint(run / "last.safetensors")
    generator = torch.Generator().manual_seed(1)
    for _ in range(8):
        torch.randperm(int(round(0.7 * 23**2)), generator=generator)
    assert meta["epoch"] == 8
    assert torch.equal(tensors[RNG_KEY], generator.get_state())


def test_resume_skips_finished_run(tmp_path):
    run = train(RunConfig(**CONFIG), tmp_path / "run", progress=False)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert train(RunConfig(**CONFIG), run, resume=True, progress=False) == run
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


def test_resume_rejects_other_config(tmp_path):
    run = train(RunConfig(**CONFIG), tmp_path / "run", progress=False)
    other = RunConfig(**{**CONFIG, "seed": 3})
    with pytest.raises(ValueError, match="trained with seed=0, not 3: use a new folder"):
        train(other, run, resume=True, progress=False)
    assert read_status(run)["state"] == "finished"


def test_resume_without_checkpoint_starts_fresh(tmp_path, monkeypatch):
    config = RunConfig(**CONFIG)
    run = tmp_path / "run"
    monkeypatch.setattr(loop, "save_epoch", lambda *args: None)
    crash_in_epoch(monkeypatch, 1)
    with pytest.raises(RuntimeError):
        train(config, run, progress=False)
    monkeypatch.undo()
    assert not (run / "last.safetensors").exists()
    train(config, run, resume=True, progress=False)
    straight = train(config, tmp_path / "straight", progress=False)
    assert (run / "metrics.csv").read_text() == (straight / "metrics.csv").read_text()
    assert "resumed_from" not in read_status(run)


def test_resume_into_missing_folder(tmp_path):
    run = train(RunConfig(**CONFIG), tmp_path / "new", resume=True, progress=False)
    assert read_status(run)["state"] == "finished"


def test_resume_keeps_foreign_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    with pytest.raises(RunFolderError, match="already exists: pass --force"):
        train(RunConfig(**CONFIG), folder, resume=True, progress=False)
    assert (folder / "notes.txt").read_text() == "precious"


@pytest.mark.parametrize("kept", ["config.json", "status.json"])
def test_resume_after_partial_header(tmp_path, kept):
    config = RunConfig(**CONFIG)
    straight = train(config, tmp_path / "straight", progress=False)
    run = tmp_path / "run"
    run.mkdir()
    # A kill between the two header writes leaves one of them behind.
    (run / kept).write_bytes((straight / kept).read_bytes())
    (run / ".tmp-metrics.csv-x1y2").write_text("epoch\n")
    train(config, run, resume=True, progress=False)
    assert read_status(run)["state"] == "finished"
    assert (run / "metrics.csv").read_text() == (straight / "metrics.csv").read_text()
    assert not list(run.glob(".tmp-*"))


def test_resume_without_status_file(tmp_path, monkeypatch):
    config = RunConfig(**CONFIG)
    straight, run = straight_and_crashed(tmp_path, monkeypatch)
    (run / "status.json").unlink()
    with pytest.raises(RunFolderError, match="unknown, not finished.*--resume"):
        read_run(run)
    train(config, run, resume=True, progress=False)
    assert read_status(run)["resumed_from"] == 5
    assert (run / "metrics.csv").read_text() == (straight / "metrics.csv").read_text()


def test_corrupt_status_names_fix(tmp_path):
    run = train(RunConfig(**CONFIG), tmp_path / "run", progress=False)
    (run / "status.json").write_text("xx")
    with pytest.raises(RunFolderError, match="delete it, and groklab train --resume"):
        read_run(run)
