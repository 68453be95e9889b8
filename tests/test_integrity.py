"""Integrity: checksummed checkpoints and datasets, resume fallback, atomic metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import groklab.training.ensemble as ensemble
import groklab.training.loop as loop
from groklab.config import ConfigError, RunConfig
from groklab.tasks.ising import dataset as ds
from groklab.tasks.ising.observables import energy_per_spin, magnetisation, phase_label
from groklab.tasks.loader import load_task
from groklab.training.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from groklab.training.ensemble import train_ensemble
from groklab.training.loop import train
from groklab.training.runfolder import METRIC_COLUMNS, list_checkpoints, read_metrics

# Checkpoints at 0, 1, 2, 5 and 8. A crash in epoch 7 leaves last.safetensors
# at epoch 5 and previous.safetensors at epoch 2.
CONFIG = dict(
    task="modadd", regime="grok", p=23, hidden=32, epochs=8, checkpoint_dense_until=2,
    checkpoint_every=3, checkpoint_log_points=0,
)
RESUME_FILES = ("last.safetensors", "previous.safetensors")


def crash_in_epoch(monkeypatch, epoch: int, error: BaseException) -> None:
    """Make loop.train_epoch raise ``error`` in the training pass of ``epoch``."""
    original = loop.train_epoch
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise error
        original(*args, **kwargs)

    monkeypatch.setattr(loop, "train_epoch", crashing)


def crashed_run(tmp_path: Path, monkeypatch) -> Path:
    """Return a run folder whose training crashed in epoch 7."""
    run = tmp_path / "crashed"
    crash_in_epoch(monkeypatch, 7, RuntimeError("simulated crash"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(RunConfig(**CONFIG), run, progress=False)
    monkeypatch.undo()
    return run


def flip_tensor_byte(path: Path) -> None:
    """Flip one byte in the middle of the tensor data, leaving the header intact."""
    data = bytearray(path.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    offset = 8 + header_len + (len(data) - 8 - header_len) // 2
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def epoch_of(path: Path) -> int:
    return load_checkpoint(path)[1]["epoch"]


def read_status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def assert_same_files(got: Path, expected: Path) -> None:
    """Assert equal metrics.csv text, checkpoint epochs and resume point tensors."""
    assert (got / "metrics.csv").read_text() == (expected / "metrics.csv").read_text()
    assert [e for e, _ in list_checkpoints(got)] == [e for e, _ in list_checkpoints(expected)]
    names = [*RESUME_FILES, "checkpoints/epoch_0000008.safetensors"]
    for name in names:
        got_tensors, got_meta = load_checkpoint(got / name)
        expected_tensors, expected_meta = load_checkpoint(expected / name)
        assert got_meta["epoch"] == expected_meta["epoch"], name
        assert sorted(got_tensors) == sorted(expected_tensors), name
        for key, value in got_tensors.items():
            assert torch.equal(value, expected_tensors[key]), f"{name} {key}"


# Checkpoints


def test_flipped_byte_fails_checksum(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"model/w": torch.arange(100.0)}, {"epoch": 0})
    flip_tensor_byte(path)
    with pytest.raises(CheckpointError, match="failed its SHA-256 check") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_checkpoint_named(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"model/w": torch.arange(100.0)}, {"epoch": 0})
    truncate(path)
    with pytest.raises(CheckpointError, match="corrupt or truncated") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_checksum_covers_names_and_shapes():
    from groklab.training.checkpoints import tensors_sha256

    base = tensors_sha256({"model/w": torch.arange(6.0)})
    assert tensors_sha256({"model/v": torch.arange(6.0)}) != base
    assert tensors_sha256({"model/w": torch.arange(6.0).reshape(2, 3)}) != base
    assert tensors_sha256({"model/w": torch.arange(6.0, dtype=torch.float64)}) != base
    assert tensors_sha256({"model/w": torch.arange(6.0)}) == base
    assert tensors_sha256({"model/w": torch.arange(6.0)}, '{"epoch": 4}') != base


def test_edited_metadata_fails_checksum(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"model/w": torch.ones(3)}, {"epoch": 4})
    data = path.read_bytes()
    assert data.count(b'\\"epoch\\": 4') == 1
    path.write_bytes(data.replace(b'\\"epoch\\": 4', b'\\"epoch\\": 7'))
    with pytest.raises(CheckpointError, match="failed its SHA-256 check") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


# Datasets


def tiny_dataset() -> ds.IsingDataset:
    """Return a valid imported-style dataset of random 4 x 4 lattices on both sides of Tc."""
    rng = np.random.default_rng(0)
    spins = rng.choice(np.array([-1, 1], dtype=np.int8), size=(40, 4, 4))
    temperature = np.repeat([1.5, 3.5], 20).astype(np.float64)
    return ds.IsingDataset(
        spins=spins,
        temperature=temperature,
        label=phase_label(temperature),
        energy=energy_per_spin(spins),
        magnetisation=magnetisation(spins),
        spec=None,
        metadata={"source": {"format": "test"}},
    )


def flip_spin_in_file(path: Path) -> None:
    """Rewrite the npz with one spin flipped and the metadata unchanged."""
    with np.load(path, allow_pickle=False) as npz:
        contents = {name: npz[name] for name in npz.files}
    contents["spins"][0, 0, 0] *= -1
    np.savez_compressed(path, **contents)


def test_dataset_metadata_stores_content_sha256(tmp_path):
    dataset = tiny_dataset()
    path = tmp_path / "data.npz"
    ds.save_dataset(dataset, path)
    with np.load(path, allow_pickle=False) as npz:
        stored = json.loads(npz["metadata"].item())["content_sha256"]
    assert stored == ds.content_sha256(dataset)
    assert "content_sha256" not in ds.load_dataset(path).metadata


def test_flipped_spin_fails_dataset_checksum(tmp_path):
    path = tmp_path / "data.npz"
    ds.save_dataset(tiny_dataset(), path)
    flip_spin_in_file(path)
    with pytest.raises(ValueError, match="content SHA-256 check failed") as info:
        ds.load_dataset(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_dataset_without_checksum_rejected(tmp_path):
    path = tmp_path / "data.npz"
    ds.save_dataset(tiny_dataset(), path)
    with np.load(path, allow_pickle=False) as npz:
        contents = {name: npz[name] for name in npz.files}
    metadata = json.loads(contents["metadata"].item())
    del metadata["content_sha256"]
    contents["metadata"] = np.array(json.dumps(metadata))
    np.savez_compressed(path, **contents)
    with pytest.raises(ValueError, match="no content_sha256") as info:
        ds.load_dataset(path)
    assert str(path) in str(info.value)


def test_corrupt_cache_rebuilt_with_notice(tmp_path, capsys):
    spec = ds.IsingDataSpec(
        lattice=4, t_min=1.5, t_max=3.0, n_temperatures=2, n_near_tc=0,
        samples_per_temperature=3,
    )
    built, path = ds.load_or_build(spec, tmp_path, progress=False)
    flip_spin_in_file(path)
    capsys.readouterr()
    again, again_path = ds.load_or_build(spec, tmp_path, progress=False)
    err = capsys.readouterr().err
    assert again_path == path
    assert f"cached Ising dataset {path} is invalid" in err
    assert "content SHA-256 check failed" in err
    assert "rebuilding it" in err
    np.testing.assert_array_equal(again.spins, built.spins)
    assert ds.load_dataset(path).spec == spec


def test_corrupt_data_file_reported_not_deleted(tmp_path):
    path = tmp_path / "mine.npz"
    ds.save_dataset(tiny_dataset(), path)
    flip_spin_in_file(path)
    before = path.read_bytes()
    config = RunConfig(
        task="ising", regime="grok", ising_lattice=4, ising_data_file=str(path),
        ising_train=20, ising_test=10,
    )
    with pytest.raises(ConfigError, match="content SHA-256 check failed") as info:
        load_task(config, tmp_path / "cache", progress=False)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before


# Resume fallback


def test_run_keeps_two_resume_points(tmp_path):
    run = train(RunConfig(**CONFIG), tmp_path / "run", progress=False)
    assert epoch_of(run / "last.safetensors") == 8
    assert epoch_of(run / "previous.safetensors") == 5
    assert not list(run.rglob(".tmp-*"))


def test_corrupt_last_falls_back_to_previous(tmp_path, monkeypatch, capsys):
    config = RunConfig(**CONFIG)
    straight = train(config, tmp_path / "straight", progress=False)
    run = crashed_run(tmp_path, monkeypatch)
    assert epoch_of(run / "last.safetensors") == 5
    flip_tensor_byte(run / "last.safetensors")
    capsys.readouterr()

    train(config, run, resume=True, progress=False)
    err = capsys.readouterr().err
    assert f"{run / 'last.safetensors'} is unusable (failed its SHA-256 check" in err
    assert "resuming from previous.safetensors at epoch 2" in err
    assert len(err.strip().splitlines()) == 1
    assert read_status(run)["state"] == "finished"
    assert read_status(run)["resumed_from"] == 2
    assert_same_files(run, straight)


def test_fallback_replaces_bad_last(tmp_path, monkeypatch, capsys):
    config = RunConfig(**CONFIG)
    run = crashed_run(tmp_path, monkeypatch)
    flip_tensor_byte(run / "last.safetensors")
    # The resumed run starts at epoch 3, so its fourth pass is epoch 6, after
    # the checkpoint of epoch 5 has rotated the resume points once.
    crash_in_epoch(monkeypatch, 4, RuntimeError("second crash"))
    with pytest.raises(RuntimeError, match="second crash"):
        train(config, run, resume=True, progress=False)
    assert epoch_of(run / "last.safetensors") == 5
    assert epoch_of(run / "previous.safetensors") == 2


def test_resume_removes_stale_temporary_files(tmp_path, monkeypatch):
    run = crashed_run(tmp_path, monkeypatch)
    stale = [
        run / ".tmp-last.safetensors-abc123",
        run / ".tmp-metrics.csv-abc123",
        run / "checkpoints" / ".tmp-epoch_0000008.safetensors-abc123",
    ]
    other = run / ".tmp-analysis.json-abc123"
    for path in [*stale, other]:
        path.write_bytes(b"half written")
    train(RunConfig(**CONFIG), run, resume=True, progress=False)
    for path in stale:
        assert not path.exists(), path.name
    assert other.exists()


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_missing_or_truncated_last_falls_back(tmp_path, monkeypatch, capsys, damage):
    config = RunConfig(**CONFIG)
    straight = train(config, tmp_path / "straight", progress=False)
    run = crashed_run(tmp_path, monkeypatch)
    if damage == "truncate":
        truncate(run / "last.safetensors")
    else:
        (run / "last.safetensors").unlink()
    capsys.readouterr()

    train(config, run, resume=True, progress=False)
    err = capsys.readouterr().err
    assert f"{run / 'last.safetensors'} is unusable" in err
    assert "resuming from previous.safetensors at epoch 2" in err
    assert_same_files(run, straight)


def test_both_resume_points_bad_restarts(tmp_path, monkeypatch, capsys):
    config = RunConfig(**CONFIG)
    straight = train(config, tmp_path / "straight", progress=False)
    run = crashed_run(tmp_path, monkeypatch)
    flip_tensor_byte(run / "last.safetensors")
    truncate(run / "previous.safetensors")
    capsys.readouterr()

    train(config, run, resume=True, progress=False)
    err = capsys.readouterr().err
    assert f"{run / 'last.safetensors'} is unusable" in err
    assert f"{run / 'previous.safetensors'} is unusable" in err
    assert "again from epoch 0" in err
    assert "resumed_from" not in read_status(run)
    assert_same_files(run, straight)


def test_old_format_resume_point_restarts(tmp_path, monkeypatch, capsys):
    from safetensors.torch import save_file

    config = RunConfig(**CONFIG)
    straight = train(config, tmp_path / "straight", progress=False)
    run = crashed_run(tmp_path, monkeypatch)
    (run / "previous.safetensors").unlink()
    metadata = {"format": "groklab-checkpoint-1", "meta": "{}"}
    save_file({"model/w": torch.ones(3)}, str(run / "last.safetensors"), metadata=metadata)
    capsys.readouterr()

    train(config, run, resume=True, progress=False)
    err = capsys.readouterr().err
    assert "old format groklab-checkpoint-1" in err
    assert "again from epoch 0" in err
    assert_same_files(run, straight)


def test_resume_point_past_metrics_skipped(tmp_path, monkeypatch, capsys):
    config = RunConfig(**CONFIG)
    straight = train(config, tmp_path / "straight", progress=False)
    run = crashed_run(tmp_path, monkeypatch)
    lines = (run / "metrics.csv").read_text().splitlines()
    (run / "metrics.csv").write_text("\n".join(lines[:5]) + "\n")  # epochs 0 to 3

    train(config, run, resume=True, progress=False)
    err = capsys.readouterr().err
    assert "is at epoch 5 but" in err
    assert "resuming from previous.safetensors at epoch 2" in err
    assert_same_files(run, straight)


# Atomic metrics


@pytest.mark.parametrize("error", [RuntimeError("simulated crash"), KeyboardInterrupt()])
def test_metrics_complete_after_crash(tmp_path, monkeypatch, error):
    run = tmp_path / "run"
    crash_in_epoch(monkeypatch, 7, error)
    with pytest.raises(type(error)):
        train(RunConfig(**CONFIG), run, progress=False)
    text = (run / "metrics.csv").read_text()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines[0] == ",".join(METRIC_COLUMNS)
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(7))
    assert all(len(line.split(",")) == len(METRIC_COLUMNS) for line in lines[1:])
    assert read_status(run)["epoch"] == 6
    assert not list(run.rglob(".tmp-*"))


def test_metrics_cover_resume_point_while_training(tmp_path, monkeypatch):
    run = tmp_path / "run"
    original = loop.train_epoch
    seen = []

    def checking(*args, **kwargs):
        rows = read_metrics(run / "metrics.csv")["epoch"]
        seen.append((int(rows[-1]), epoch_of(run / "last.safetensors")))
        original(*args, **kwargs)

    monkeypatch.setattr(loop, "train_epoch", checking)
    train(RunConfig(**CONFIG), run, progress=False)
    # Before epoch e trains, the file has been written at the newest checkpoint.
    assert seen == [(0, 0), (1, 1), (2, 2), (2, 2), (2, 2), (5, 5), (5, 5), (5, 5)]


def test_metrics_written_on_divergence(tmp_path):
    config = RunConfig(**{**CONFIG, "lr": 1e30, "epochs": 4})
    run = tmp_path / "run"
    with pytest.raises(loop.TrainingDiverged):
        train(config, run, progress=False)
    status = read_status(run)
    rows = read_metrics(run / "metrics.csv")["epoch"]
    assert status["state"] == "failed"
    assert int(rows[-1]) == status["epoch"]
    assert list(rows) == list(range(status["epoch"] + 1))


# Ensemble


def test_ensemble_member_falls_back(tmp_path, monkeypatch, capsys):
    base = dict(CONFIG, epochs=5, checkpoint_every=2)  # checkpoints 0, 1, 2, 4, 5
    configs = [RunConfig(**base, seed=1), RunConfig(**base, seed=2)]
    straight = [tmp_path / "straight0", tmp_path / "straight1"]
    train_ensemble(configs, straight, progress=False)
    resumed = [tmp_path / "resumed0", tmp_path / "resumed1"]
    original = ensemble._EnsembleRun._train_epoch
    calls = {"n": 0}

    def crashing(self):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("simulated crash")
        original(self)

    monkeypatch.setattr(ensemble._EnsembleRun, "_train_epoch", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_ensemble(configs, resumed, progress=False)
    monkeypatch.undo()
    for folder in resumed:
        rows = read_metrics(folder / "metrics.csv")["epoch"]
        assert list(rows) == [0, 1, 2, 3]
    flip_tensor_byte(resumed[0] / "last.safetensors")
    capsys.readouterr()

    outcomes = train_ensemble(configs, resumed, resume=True, progress=False)
    err = capsys.readouterr().err
    assert [o.state for o in outcomes] == ["finished", "finished"]
    assert f"{resumed[0] / 'last.safetensors'} is unusable" in err
    assert "resuming from previous.safetensors at epoch 1" in err
    # Member 1 steps back to its previous.safetensors, so both train together.
    assert "resuming 1 ensemble member(s) from epoch 1" in err
    assert read_status(resumed[0])["resumed_from"] == 1
    assert read_status(resumed[1])["resumed_from"] == 1
    for got, expected in zip(resumed, straight):
        assert (got / "metrics.csv").read_text() == (expected / "metrics.csv").read_text()
        for name in RESUME_FILES:
            got_tensors, _ = load_checkpoint(got / name)
            expected_tensors, _ = load_checkpoint(expected / name)
            assert sorted(got_tensors) == sorted(expected_tensors)
            for key, value in got_tensors.items():
                assert torch.equal(value, expected_tensors[key]), f"{got / name} {key}"
        assert not list(got.rglob(".tmp-*"))
