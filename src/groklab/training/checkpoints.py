"""Checkpoints as safetensors files that describe themselves.

Each file contains the model parameters under ``model/<name>`` (and, for the
resume point ``last.safetensors``, Adam's state under ``optim/<name>/<key>``
and the data-order generator's state under ``rng/data_order``) plus string metadata:
the epoch, the resolved config and that epoch's metrics, as JSON, and a SHA-256
over the tensors and that JSON, which :func:`load_checkpoint` verifies. Files are written to a
temporary name and renamed into place, so a crash never leaves a half-written
checkpoint under the final name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from groklab.training.runfolder import atomic_path

FORMAT = "groklab-checkpoint-2"
"""Value of the ``format`` metadata key. Format 2 added the ``sha256`` key."""
OLD_FORMATS = ("groklab-checkpoint-1",)
RNG_KEY = "rng/data_order"
"""Tensor name of the data-order generator's state (``torch.Generator.get_state``)."""
ADAM_KEYS = ("step", "exp_avg", "exp_avg_sq")


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, truncated or not a groklab checkpoint.

    ``reason`` is a short description of the problem without the path or the
    fix, for messages that name the file and the fix themselves.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


def checkpoint_epochs(
    epochs: int, dense_until: int, every: int, log_points: int = 0
) -> list[int]:
    """Return the epochs to checkpoint.

    Every epoch up to ``dense_until``, then every ``every`` epochs, plus
    ``log_points`` log-spaced epochs between ``dense_until`` and the end, and
    always the last epoch. The log-spaced epochs keep the transition out of
    the dense phase sampled.
    """
    dense = range(0, min(dense_until, epochs) + 1)
    sparse = range(dense_until + every, epochs + 1, every) if dense_until < epochs else []
    spaced = set()
    if log_points > 0 and dense_until < epochs:
        spaced = set(np.round(np.geomspace(max(dense_until, 1), epochs, log_points)).astype(int))
    return sorted(set(dense) | set(sparse) | {int(e) for e in spaced} | {epochs})


def checkpoint_path(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"epoch_{epoch:07d}.safetensors"


def tensors_sha256(tensors: dict[str, torch.Tensor], meta: str = "") -> str:
    """Return the SHA-256 hex digest over the tensors in name order and the ``meta`` text.

    Each tensor contributes its name, dtype, shape and raw bytes, so a renamed,
    reshaped or retyped tensor changes the digest as much as a changed value.
    ``meta`` is the checkpoint's JSON metadata (epoch, config, metrics), so an
    edited epoch fails the check too.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\n{tensor.dtype}\n{list(tensor.shape)}\n".encode())
        digest.update(tensor.numpy().reshape(-1).view(np.uint8))
    digest.update(b"meta\n" + meta.encode())
    return digest.hexdigest()


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``tensors``, their SHA-256 and JSON ``meta`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta_json = json.dumps(meta, sort_keys=True)
    metadata = {
        "format": FORMAT,
        "meta": meta_json,
        "sha256": tensors_sha256(contiguous, meta_json),
    }
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=metadata)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint and verify its SHA-256.

    Raises CheckpointError naming the file when it is missing, truncated, not
    a groklab checkpoint of the current format, or fails the checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} not found: check the run folder path", "file not found"
        )
    try:
        tensors = load_file(path)
        metadata = _read_metadata(path)
        _check_format(path, metadata.get("format"))
        _check_sha256(path, metadata.get("sha256"), tensors, metadata["meta"])
        return tensors, json.loads(metadata["meta"])
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(err).__name__}): "
            "delete it or re-run training",
            f"corrupt or truncated, {type(err).__name__}",
        ) from None


def _read_metadata(path: Path) -> dict[str, str]:
    """Return the ``__metadata__`` entry of a safetensors file's JSON header."""
    with open(path, "rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_len))
    return header.get("__metadata__") or {}


def _check_format(path: Path, found: str | None) -> None:
    if found == FORMAT:
        return
    if found in OLD_FORMATS:
        raise CheckpointError(
            f"checkpoint {path} has the old format {found}, which has no checksum: "
            "re-create it with groklab train, or resume the run with groklab train "
            "--resume, which restarts it",
            f"old format {found} without a checksum",
        )
    raise CheckpointError(
        f"checkpoint {path} is not a {FORMAT} file: re-create it with groklab train",
        f"not a {FORMAT} file",
    )


def _check_sha256(
    path: Path, stored: str | None, tensors: dict[str, torch.Tensor], meta: str
) -> None:
    if stored is None:
        raise CheckpointError(
            f"checkpoint {path} has no SHA-256 in its metadata, so it is corrupt or was "
            "not written by groklab: re-create it with groklab train",
            "no SHA-256 in the metadata",
        )
    computed = tensors_sha256(tensors, meta)
    if computed != stored:
        raise CheckpointError(
            f"checkpoint {path} failed its SHA-256 check (stored {stored[:12]}..., "
            f"computed {computed[:12]}...): the file is corrupt. Train the run again "
            "with groklab train --force, or resume it if this is its resume point",
            f"failed its SHA-256 check, stored {stored[:12]}..., computed {computed[:12]}...",
        )


def model_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return the ``model/`` entries of a checkpoint, keyed by parameter name."""
    return {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}


def pack_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Flatten model parameters, Adam state and the generator state into named tensors.

    Adam's state is present only for parameters that have taken a step, so a
    checkpoint of epoch 0 has no ``optim/`` entries.
    """
    tensors = {f"model/{n}": p.detach() for n, p in model.named_parameters()}
    if optimizer is not None:
        names = {id(p): n for n, p in model.named_parameters()}
        for param, state in optimizer.state.items():
            for key, value in state.items():
                value = torch.as_tensor(value)
                tensors[f"optim/{names[id(param)]}/{key}"] = value.reshape(-1)
    if generator is not None:
        tensors[RNG_KEY] = generator.get_state()
    return tensors


def unpack_state(
    tensors: dict[str, torch.Tensor],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
) -> None:
    """Load the output of :func:`pack_state` back into the given objects.

    Raises CheckpointError when a generator is given but the tensors contain
    no generator state.
    """
    model.load_state_dict(model_tensors(tensors), strict=True)
    if optimizer is not None:
        for name, param in model.named_parameters():
            state = {}
            for key in ADAM_KEYS:
                value = tensors.get(f"optim/{name}/{key}")
                if value is not None:
                    state[key] = value.reshape(()) if key == "step" else value.view_as(param)
            if state:
                optimizer.state[param] = state
    if generator is not None:
        generator.set_state(generator_state(tensors))


def generator_state(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Return the saved data-order generator state, or raise CheckpointError."""
    state = tensors.get(RNG_KEY)
    if state is None:
        raise CheckpointError(
            f"the checkpoint has no {RNG_KEY} tensor (written before groklab stored "
            "the data order), so the run cannot continue exactly: train again with --force"
        )
    return state
