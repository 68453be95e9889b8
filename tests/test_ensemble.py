"""Ensemble training: equivalence with separate runs, divergence, grouping, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import groklab.training.ensemble as ensemble
from groklab.config import RunConfig
from groklab.training.checkpoints import load_checkpoint
from groklab.training.ensemble import (
    ensemble_key,
    pack_configs,
    train_ensemble,
)
from groklab.training.loop import train
from groklab.training.runfolder import METRIC_COLUMNS, list_checkpoints, read_metrics
from groklab.training.stacked_adam import StackedAdam, fused_adam_available

# Members and separate runs agree up to float32 rounding: matrix products of a
# batch of members round differently from single ones. Parameters are O(1)
# to O(10) after alpha scaling, so a relative 1e-5 plus an absolute 1e-6
# covers the rounding after a few epochs and still catches any wrong step.
RTOL, ATOL = 1e-5, 1e-6

MODADD = dict(
    task="modadd", p=23, hidden=64, epochs=5, checkpoint_dense_until=2,
    checkpoint_every=2, checkpoint_log_points=0,
)
ISING = dict(
    task="ising", ising_lattice=8, ising_n_temperatures=6,
    ising_samples_per_temperature=20, ising_train=40, ising_test=60, hidden=10,
    batch_size=16, epochs=20, checkpoint_dense_until=3, checkpoint_every=5,
    checkpoint_log_points=0,
)


def modadd_members() -> list[RunConfig]:
    return [
        RunConfig(regime="grok", seed=1, **MODADD),
        RunConfig(regime="steady", seed=2, weight_decay=1e-3, **MODADD),
        RunConfig(regime="grok", seed=3, alpha=3.0, lr=1e-3, **MODADD),
    ]


def assert_same_run(member: Path, single: Path) -> None:
    """Assert equal metrics, checkpoint epochs and checkpoint tensors within tolerance."""
    got, expected = read_metrics(member / "metrics.csv"), read_metrics(single / "metrics.csv")
    for column in METRIC_COLUMNS:
        torch.testing.assert_close(
            torch.from_numpy(got[column]), torch.from_numpy(expected[column]),
            rtol=RTOL, atol=ATOL, msg=lambda m, c=column: f"{member} {c}: {m}",
        )
    member_epochs = [e for e, _ in list_checkpoints(member)]
    assert member_epochs == [e for e, _ in list_checkpoints(single)]
    paths = [p for _, p in list_checkpoints(member)] + [member / "last.safetensors"]
    for path in paths:
        got_tensors, got_meta = load_checkpoint(path)
        expected_tensors, expected_meta = load_checkpoint(single / path.relative_to(member))
        assert got_meta["epoch"] == expected_meta["epoch"]
        assert got_meta["config"] == expected_meta["config"]
        assert sorted(got_tensors) == sorted(expected_tensors)
        for name, value in got_tensors.items():
            torch.testing.assert_close(
                value, expected_tensors[name], rtol=RTOL, atol=ATOL,
                msg=lambda m, n=name: f"{path.name} {n}: {m}",
            )
    assert json.loads((member / "status.json").read_text())["state"] == "finished"


def train_separately(configs, root: Path, cache: Path) -> list[Path]:
    folders = [root / f"single{i}" for i in range(len(configs))]
    for config, folder in zip(configs, folders):
        train(config, folder, cache_dir=cache, progress=False)
    return folders


def test_modadd_members_match_single_runs(tmp_path):
    configs = modadd_members()
    folders = [tmp_path / f"member{i}" for i in range(3)]
    outcomes = train_ensemble(configs, folders, progress=False)
    assert [o.state for o in outcomes] == ["finished"] * 3
    assert [o.epoch for o in outcomes] == [5] * 3
    for member, single in zip(folders, train_separately(configs, tmp_path, tmp_path)):
        assert_same_run(member, single)
    header = json.loads((folders[1] / "config.json").read_text())
    assert header["config"]["seed"] == 2
    assert "torch" in header["provenance"]["versions"]


def test_ising_members_match_single_runs(tmp_path):
    configs = [
        RunConfig(regime="grok", seed=4, **ISING),
        RunConfig(regime="steady", seed=5, lr=3e-3, weight_decay=0.01, **ISING),
    ]
    folders = [tmp_path / f"member{i}" for i in range(2)]
    cache = tmp_path / "cache"
    outcomes = train_ensemble(configs, folders, cache_dir=cache, progress=False)
    assert [o.state for o in outcomes] == ["finished"] * 2
    for member, single in zip(folders, train_separately(configs, tmp_path, cache)):
        assert_same_run(member, single)


def test_diverged_member_dropped(tmp_path):
    configs = modadd_members()
    configs[1] = RunConfig(regime="steady", seed=2, lr=1e30, **MODADD)
    folders = [tmp_path / f"member{i}" for i in range(3)]
    outcomes = train_ensemble(configs, folders, progress=False)
    assert [o.state for o in outcomes] == ["finished", "failed", "finished"]
    assert "training diverged at epoch" in outcomes[1].message
    assert "Lower the learning rate (lr 1e+30)" in outcomes[1].message
    status = json.loads((folders[1] / "status.json").read_text())
    assert status["state"] == "failed"
    assert status["message"] == outcomes[1].message
    assert status["epoch"] == outcomes[1].epoch < 5
    singles = train_separately([configs[0], configs[2]], tmp_path, tmp_path)
    assert_same_run(folders[0], singles[0])
    assert_same_run(folders[2], singles[1])


@pytest.mark.parametrize(
    ("change", "field"),
    [({"hidden": 32}, "hidden"), ({"data_seed": 1}, "data_seed"),
     ({"batch_size": 32}, "batch_size"), ({"checkpoint_every": 3}, "checkpoint_every")],
)
def test_incompatible_members_rejected(tmp_path, change, field):
    configs = [RunConfig(regime="grok", **MODADD),
               RunConfig(regime="grok", **{**MODADD, **change})]
    with pytest.raises(ValueError, match=f"differ in {field} .*split them with pack_configs"):
        train_ensemble(configs, [tmp_path / "a", tmp_path / "b"], progress=False)
    assert not (tmp_path / "a").exists()


def test_shared_folder_rejected(tmp_path):
    configs = modadd_members()[:2]
    with pytest.raises(ValueError, match="give every member its own folder"):
        train_ensemble(configs, [tmp_path / "a", tmp_path / "a"], progress=False)


def test_pack_configs_groups_in_order():
    base = RunConfig(regime="grok", **MODADD)
    other = RunConfig(regime="grok", **{**MODADD, "hidden": 32})
    configs = [
        base, other, RunConfig(regime="steady", seed=1, **MODADD),
        RunConfig(regime="grok", seed=2, lr=1e-3, **MODADD), other, base,
    ]
    assert ensemble_key(configs[0]) == ensemble_key(configs[2])
    assert ensemble_key(configs[0]) != ensemble_key(configs[1])
    assert pack_configs(configs, 2) == [[0, 2], [3, 5], [1, 4]]
    assert pack_configs(configs, 10) == [[0, 2, 3, 5], [1, 4]]
    assert pack_configs([], 3) == []
    with pytest.raises(ValueError, match="invalid max_members 0"):
        pack_configs(configs, 0)


@pytest.mark.parametrize("fused", [True, False])
def test_stacked_adam_matches_torch_adam(fused):
    if fused and not fused_adam_available():
        pytest.skip("this torch build has no fused CPU Adam kernel")
    torch.manual_seed(0)
    lrs, decays = [1e-3, 5e-2, 1e-3], [0.0, 0.1, 3e-5]
    start = torch.randn(3, 7, 5)
    params = {"w": start.clone()}
    adam = StackedAdam(params, lrs, decays, fused=fused)
    singles = [start[i].clone().requires_grad_(True) for i in range(3)]
    optimizers = [torch.optim.Adam([p], lr=lr, weight_decay=wd)
                  for p, lr, wd in zip(singles, lrs, decays)]
    for _ in range(6):
        grad = torch.randn(3, 7, 5).transpose(1, 2).contiguous().transpose(1, 2)
        adam.step(params, {"w": grad})
        for i, (param, optimizer) in enumerate(zip(singles, optimizers)):
            param.grad = grad[i].clone()
            optimizer.step()
    for i, param in enumerate(singles):
        torch.testing.assert_close(params["w"][i], param.detach(), rtol=1e-6, atol=1e-7)
        state = optimizers[i].state[param]
        torch.testing.assert_close(adam.exp_avg["w"][i], state["exp_avg"], rtol=1e-6, atol=1e-9)


def crash_at_epoch(monkeypatch, epoch: int) -> None:
    """Make the ensemble raise in the training pass of ``epoch``."""
    original = ensemble._EnsembleRun._train_epoch
    calls = {"n": 0}

    def crashing(self):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise RuntimeError("simulated crash")
        original(self)

    monkeypatch.setattr(ensemble._EnsembleRun, "_train_epoch", crashing)


def crashed_ensemble(tmp_path: Path, monkeypatch, epoch: int):
    """Return (configs, uninterrupted folders, folders of a run that crashed in ``epoch``)."""
    configs = modadd_members()
    straight = [tmp_path / f"straight{i}" for i in range(3)]
    train_ensemble(configs, straight, progress=False)
    resumed = [tmp_path / f"resumed{i}" for i in range(3)]
    crash_at_epoch(monkeypatch, epoch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_ensemble(configs, resumed, progress=False)
    monkeypatch.undo()
    return configs, straight, resumed


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    configs, straight, resumed = crashed_ensemble(tmp_path, monkeypatch, 4)
    status = json.loads((resumed[0] / "status.json").read_text())
    assert status["state"] == "failed"
    assert "simulated crash" in status["message"]
    outcomes = train_ensemble(configs, resumed, resume=True, progress=False)
    assert [o.state for o in outcomes] == ["finished"] * 3
    assert json.loads((resumed[0] / "status.json").read_text())["resumed_from"] == 2
    for got, expected in zip(resumed, straight):
        assert_same_run(got, expected)
    again = train_ensemble(configs, resumed, resume=True, progress=False)
    assert [o.state for o in again] == ["skipped"] * 3


def test_resume_mixes_finished_and_new(tmp_path):
    configs = modadd_members()
    folders = [tmp_path / f"member{i}" for i in range(3)]
    train_ensemble(configs[:1], folders[:1], progress=False)
    before = (folders[0] / "metrics.csv").read_text()
    outcomes = train_ensemble(configs, folders, resume=True, progress=False)
    assert [o.state for o in outcomes] == ["skipped", "finished", "finished"]
    assert (folders[0] / "metrics.csv").read_text() == before


def test_resume_aligns_member_ahead(tmp_path, monkeypatch, capsys):
    configs, straight, resumed = crashed_ensemble(tmp_path, monkeypatch, 5)
    # Member 1 as if the kill came before its epoch-4 checkpoint: it is at
    # epoch 2, while the others are at epoch 4 with epoch 2 as previous.
    behind = resumed[1]
    (behind / "last.safetensors").write_bytes((behind / "previous.safetensors").read_bytes())
    (behind / "checkpoints" / "epoch_0000004.safetensors").unlink()
    capsys.readouterr()
    outcomes = train_ensemble(configs, resumed, resume=True, progress=False)
    assert [o.state for o in outcomes] == ["finished"] * 3
    assert "resuming 2 ensemble member(s) from epoch 2" in capsys.readouterr().err
    for got, expected in zip(resumed, straight):
        assert json.loads((got / "status.json").read_text())["resumed_from"] == 2
        assert (got / "metrics.csv").read_text() == (expected / "metrics.csv").read_text()
        got_tensors, _ = load_checkpoint(got / "last.safetensors")
        expected_tensors, _ = load_checkpoint(expected / "last.safetensors")
        for name, value in got_tensors.items():
            assert torch.equal(value, expected_tensors[name]), f"{got} {name}"


def test_resume_restarts_all_without_common_point(tmp_path, monkeypatch, capsys):
    configs, straight, resumed = crashed_ensemble(tmp_path, monkeypatch, 5)
    for name in ("last.safetensors", "previous.safetensors"):
        (resumed[1] / name).unlink()
    capsys.readouterr()
    outcomes = train_ensemble(configs, resumed, resume=True, progress=False)
    assert [o.state for o in outcomes] == ["finished"] * 3
    assert "resuming 2 ensemble member(s) from epoch 0" in capsys.readouterr().err
    for got, expected in zip(resumed, straight):
        assert (got / "metrics.csv").read_text() == (expected / "metrics.csv").read_text()
