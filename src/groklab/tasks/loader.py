"""Load a task's tensors for a run config: one entry point for both tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from groklab.config import ConfigError, RunConfig, Task, check_ising_split
from groklab.tasks.modadd import split_table


@dataclass
class TaskData:
    """Train and test tensors, plus per-test-sample physics for Ising."""

    train_inputs: torch.Tensor
    train_targets: torch.Tensor
    test_inputs: torch.Tensor
    test_targets: torch.Tensor
    test_observables: dict[str, np.ndarray] = field(default_factory=dict)
    """Ising only: ``energy`` (per spin), ``abs_magnetisation`` (per spin), ``temperature``."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Data origin: dataset file, its SHA-256 hashes, sampler versions."""
    dataset: Any = None
    """Ising only: the whole IsingDataset the split was drawn from."""
    split: tuple[np.ndarray, np.ndarray] | None = None
    """Ising only: (train, test) sample indices into ``dataset``."""


def default_cache_dir() -> Path:
    """Return the folder for cached Ising datasets: ``$GROKLAB_CACHE`` or ~/.cache/groklab."""
    import os

    root = os.environ.get("GROKLAB_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "groklab"


def load_task(
    config: RunConfig, cache_dir: Path | None = None, *, progress: bool = True
) -> TaskData:
    """Build or load the data of ``config.task``; Ising datasets are cached on disk."""
    if config.task is Task.MODADD:
        data = split_table(config.p, config.train_fraction, config.data_seed)
        return TaskData(
            data.train_inputs,
            data.train_targets,
            data.test_inputs,
            data.test_targets,
            provenance={"dataset": f"modadd p={config.p} split seed={config.data_seed}"},
        )
    if config.task is Task.ISING:
        return _load_ising(config, cache_dir or default_cache_dir(), progress)
    raise ValueError(f"unknown task {config.task!r}: use modadd or ising")


def ising_spec(config: RunConfig):
    """Return the Ising dataset spec that ``config`` requests."""
    from groklab.tasks.ising.dataset import IsingDataSpec

    return IsingDataSpec(
        lattice=config.ising_lattice,
        t_min=config.ising_t_min,
        t_max=config.ising_t_max,
        n_temperatures=config.ising_n_temperatures,
        n_near_tc=config.ising_n_near_tc,
        near_tc_width=config.ising_near_tc_width,
        exclude_width=config.ising_exclude_width,
        samples_per_temperature=config.ising_samples_per_temperature,
        seed=config.data_seed,
    )


def content_sha256(dataset) -> str:
    """Return :func:`groklab.tasks.ising.dataset.content_sha256` of ``dataset``.

    Kept here so that importing this module does not import the Ising sampler.
    """
    from groklab.tasks.ising.dataset import content_sha256 as dataset_content_sha256

    return dataset_content_sha256(dataset)


def _load_ising(config: RunConfig, cache_dir: Path, progress: bool) -> TaskData:
    from groklab.tasks.ising.dataset import dataset_sha256, split_indices

    dataset, path = _ising_dataset(config, cache_dir, progress)
    train, test = split_indices(
        len(dataset.label), config.ising_train, config.ising_test, config.data_seed
    )
    if len(np.unique(dataset.label[train])) < 2:
        raise ConfigError(
            f"the Ising training split ({len(train)} samples) contains one phase only: "
            "use data with temperatures on both sides of Tc or raise ising_train"
        )
    spins = torch.from_numpy(dataset.spins.astype(np.float32)).unsqueeze(1)
    labels = torch.from_numpy(dataset.label.astype(np.int64))
    n_sites = config.ising_lattice**2
    observables = {
        "energy": dataset.energy[test],
        "abs_magnetisation": np.abs(dataset.magnetisation[test]) / n_sites,
        "temperature": dataset.temperature[test],
    }
    provenance = {
        "dataset": str(Path(path).resolve()),
        "dataset_sha256": dataset_sha256(path),
        "dataset_content_sha256": content_sha256(dataset),
        "dataset_metadata": {
            k: v for k, v in dataset.metadata.items() if not isinstance(v, (list, dict))
        },
        "dataset_versions": dataset.metadata.get("versions", {}),
    }
    if "source" in dataset.metadata:
        provenance["dataset_source"] = dataset.metadata["source"]
    return TaskData(
        spins[train], labels[train], spins[test], labels[test], observables, provenance,
        dataset=dataset, split=(train, test),
    )


def _ising_dataset(config: RunConfig, cache_dir: Path, progress: bool):
    """Return (dataset, file): ``config.ising_data_file`` if set, else the cached build.

    A data file must have the config's lattice and enough samples for the split.
    """
    from groklab.tasks.ising.dataset import load_dataset, load_or_build

    if config.ising_data_file is None:
        return load_or_build(ising_spec(config), cache_dir, progress=progress)
    path = Path(config.ising_data_file)
    if not path.is_file():
        raise ConfigError(
            f"invalid ising_data_file {str(path)!r}: file not found; write one with "
            "groklab ising-data or ising-import"
        )
    try:
        dataset = load_dataset(path)
    except ValueError as err:
        # load_dataset's advice to delete and rebuild suits the cache only; a data
        # file is the user's own and cannot be rebuilt.
        raise ConfigError(
            f"invalid ising_data_file {str(path)!r}: it is not a valid groklab dataset "
            f"({str(err).split(';')[0]}); convert outside data with groklab ising-import "
            "or restore the file"
        ) from None
    lattice = dataset.spins.shape[-1]
    if lattice != config.ising_lattice:
        raise ConfigError(
            f"invalid ising_data_file {str(path)!r}: its lattice is "
            f"{lattice} x {lattice} but ising_lattice is {config.ising_lattice}; "
            f"set ising_lattice={lattice}"
        )
    check_ising_split(config, len(dataset))
    return dataset, path
