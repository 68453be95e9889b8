import pytest
import torch

from groklab.config import RunConfig
from groklab.models import build_model
from groklab.training.checkpoints import (
    CheckpointError,
    checkpoint_epochs,
    load_checkpoint,
    pack_state,
    save_checkpoint,
    unpack_state,
)


def test_schedule_dense_then_sparse():
    assert checkpoint_epochs(10, 3, 4) == [0, 1, 2, 3, 7, 10]
    assert checkpoint_epochs(5, 10, 3) == [0, 1, 2, 3, 4, 5]
    assert checkpoint_epochs(1, 0, 1) == [0, 1]


def test_schedule_log_points_fill_gap():
    epochs = checkpoint_epochs(20000, 20, 200, log_points=40)
    assert epochs[:21] == list(range(21))
    assert epochs[-1] == 20000
    between = [e for e in epochs if 20 < e < 220]
    assert len(between) >= 10
    assert len(epochs) == len(set(epochs))
    assert checkpoint_epochs(10, 3, 4, log_points=0) == [0, 1, 2, 3, 7, 10]


def test_round_trip_with_optimizer(tmp_path):
    config = RunConfig(task="ising", regime="grok", seed=1)
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.ones(2, 1, 16, 16)).sum().backward()
    optimizer.step()
    meta = {"epoch": 3, "config": config.to_dict()}
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, pack_state(model, optimizer), meta)

    tensors, loaded_meta = load_checkpoint(path)
    assert loaded_meta == meta
    fresh = build_model(RunConfig(task="ising", regime="grok", seed=2))
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    unpack_state(tensors, fresh, fresh_opt)
    for (name, a), (_, b) in zip(model.named_parameters(), fresh.named_parameters()):
        assert torch.equal(a, b), name
        assert torch.equal(optimizer.state[a]["exp_avg"], fresh_opt.state[b]["exp_avg"])
        assert float(fresh_opt.state[b]["step"]) == 1.0
    assert not list(tmp_path.glob(".tmp-*"))


def test_missing_file_named(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_truncated_file_detected(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"model/w": torch.ones(100)}, {"epoch": 0})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_foreign_safetensors_rejected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.ones(3)}, str(path))
    with pytest.raises(CheckpointError, match="not a groklab-checkpoint-2 file"):
        load_checkpoint(path)


def test_format_1_file_rejected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "old.safetensors"
    metadata = {"format": "groklab-checkpoint-1", "meta": "{}"}
    save_file({"model/w": torch.ones(3)}, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="old format groklab-checkpoint-1") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert "re-create it with groklab train" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_checksum_rejected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "c.safetensors"
    metadata = {"format": "groklab-checkpoint-2", "meta": "{}"}
    save_file({"model/w": torch.ones(3)}, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="has no SHA-256") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
