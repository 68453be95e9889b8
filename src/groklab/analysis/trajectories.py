"""Embed the training trajectories of several runs in one InPCA space.

Every checkpoint of every run becomes one point: its model's predicted class
distributions on a fixed set of test inputs. All points share one matrix of
Bhattacharyya distances and one InPCA, so the coordinates of different runs
are directly comparable. The runs may differ in regime, seed, alpha and
width, but not in task or data, because the fixed inputs come from the test
split that they share.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from groklab.analysis.inpca import (
    bhattacharyya_distances,
    inpca,
    trajectory_probabilities,
)
from groklab.analysis.run import (
    _checked_checkpoints,
    _load_params,
    _load_run_data,
    _select,
)
from groklab.config import Task
from groklab.models import build_model
from groklab.training.runfolder import Run, read_run, versions

DISTANCE_DEFINITION = (
    "Bhattacharyya distance between the predicted class distributions: the mean "
    "over the fixed inputs of -log sum_c sqrt(p_c q_c), with p and q the softmax "
    "outputs of two checkpoints"
)

# Config fields that fix the test split of each task. ``ising_data_file`` is
# absent, because copies of one data file at different paths contain the same
# samples. The recorded content hash of the dataset is compared instead.
DATA_FIELDS = {
    Task.MODADD: ("task", "p", "train_fraction", "data_seed"),
    Task.ISING: ("task", "data_seed", "ising_lattice", "ising_train", "ising_test"),
}
# Fields of the sampled Ising grid, unused when a run trains on a data file.
ISING_GRID_FIELDS = (
    "ising_t_min",
    "ising_t_max",
    "ising_n_temperatures",
    "ising_n_near_tc",
    "ising_near_tc_width",
    "ising_exclude_width",
    "ising_samples_per_temperature",
)


def embed_trajectories(
    run_dirs: list[Path],
    *,
    n_inputs: int = 500,
    max_checkpoints: int = 40,
    seed: int = 0,
    n_components: int = 3,
    cache_dir: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Embed the checkpoints of ``run_dirs`` by one InPCA and return a JSON-ready dict.

    Each run contributes at most ``max_checkpoints`` checkpoints, evenly spread
    and always including its first and last. The fixed inputs are
    ``n_inputs`` test inputs drawn with ``seed``, or the whole test split when
    it is smaller. The probabilities of all checkpoints are held in memory
    together, 8 bytes x checkpoints x inputs x classes, for example 72 MB
    for 4 runs of 40 checkpoints on 500 modular-addition inputs (113 classes).
    The distance computation copies them twice, so peak use is about three
    times that.
    Raises ValueError when the runs differ in task or data, or when a setting
    is invalid.
    """
    _check_settings(n_inputs, max_checkpoints, n_components)
    runs = _read_runs(run_dirs)
    selections = [_select(_checked_checkpoints(run), max_checkpoints) for run in runs]
    n_points = sum(len(selected) for selected in selections)
    if n_components > n_points:
        raise ValueError(
            f"n_components {n_components} is out of range: the runs have {n_points} "
            f"selected checkpoints, so pass 1 to {n_points}"
        )
    data = _load_run_data(runs[0], progress, cache_dir)
    indices = _input_indices(len(data.test_inputs), n_inputs, seed)
    inputs = data.test_inputs[torch.from_numpy(indices)]
    bar = tqdm(
        list(zip(runs, selections)),
        desc="InPCA trajectories",
        disable=None if progress else True,
    )
    probs = np.concatenate(
        [_probabilities(run, selected, inputs) for run, selected in bar]
    )
    result = inpca(bhattacharyya_distances(probs), n_components)
    offsets = np.cumsum([0] + [len(selected) for selected in selections])
    bounds = zip(offsets[:-1], offsets[1:])
    records = [
        _run_record(run, selected, result.coordinates[start:stop], probs[start:stop])
        for run, selected, (start, stop) in zip(runs, selections, bounds)
    ]
    return {
        "task": runs[0].config.task.value,
        "runs": records,
        "n_components": n_components,
        "eigenvalues": result.eigenvalues.tolist(),
        "signs": [int(sign) for sign in result.signs],
        "component_kinds": [_component_kind(int(sign)) for sign in result.signs],
        "explained_fraction": result.explained_fraction.tolist(),
        "n_inputs": len(indices),
        "inputs": _input_description(data, indices, seed),
        "distance": DISTANCE_DEFINITION,
        "settings": {
            "n_inputs": n_inputs,
            "max_checkpoints": max_checkpoints,
            "seed": seed,
            "n_components": n_components,
        },
        "provenance": {
            "versions": versions(),
            "data": data.provenance,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }


def _check_settings(n_inputs: int, max_checkpoints: int, n_components: int) -> None:
    """Raise ValueError unless the three counts are integers in range."""
    minimums = {"n_inputs": 1, "max_checkpoints": 2, "n_components": 1}
    values = {
        "n_inputs": n_inputs,
        "max_checkpoints": max_checkpoints,
        "n_components": n_components,
    }
    for name, value in values.items():
        integral = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        if not integral or value < minimums[name]:
            raise ValueError(
                f"{name} {value!r} is invalid: pass an integer >= {minimums[name]}"
            )


def _read_runs(run_dirs: list[Path]) -> list[Run]:
    """Read the run folders and check that they are distinct and share their data."""
    run_dirs = [Path(run_dir) for run_dir in run_dirs]
    if not run_dirs:
        raise ValueError("run_dirs is empty: pass at least one run folder")
    seen: dict[Path, Path] = {}
    for run_dir in run_dirs:
        resolved = run_dir.resolve()
        if resolved in seen:
            raise ValueError(
                f"run folder {run_dir} is given twice (also as {seen[resolved]}): "
                "pass each run once"
            )
        seen[resolved] = run_dir
    runs = [read_run(run_dir) for run_dir in run_dirs]
    reference = _data_key(runs[0])
    for run in runs[1:]:
        key = _data_key(run)
        # The task comes first, so that runs of two tasks fail on the task.
        names = list(reference) + [name for name in key if name not in reference]
        for name in names:
            if reference.get(name) != key.get(name):
                raise ValueError(
                    f"runs {runs[0].path} and {run.path} differ in {name} "
                    f"({reference.get(name)} vs {key.get(name)}): embed only runs of "
                    "one task trained on the same data"
                )
    return runs


def _data_key(run: Run) -> dict[str, Any]:
    """Return the values that fix a run's test split, by name.

    Ising runs also contribute the recorded content hash of their dataset,
    or the data file's path when a run recorded no hash.
    """
    config = run.config.to_dict()
    key = {name: config[name] for name in DATA_FIELDS[run.config.task]}
    if run.config.task is Task.ISING:
        sampled = run.config.ising_data_file is None
        key["data_source"] = "sampled grid" if sampled else "data file"
        if sampled:
            key.update({name: config[name] for name in ISING_GRID_FIELDS})
        content = run.provenance.get("data", {}).get("dataset_content_sha256")
        key["dataset"] = content or run.config.ising_data_file
    return key


def _input_indices(n_test: int, n_inputs: int, seed: int) -> np.ndarray:
    """Return the sorted indices of min(n_inputs, n_test) inputs drawn with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_test, generator=generator)
    return np.sort(order[:n_inputs].numpy())


def _input_description(data, indices: np.ndarray, seed: int) -> dict[str, Any]:
    """Describe the fixed inputs so that they can be drawn again."""
    return {
        "split": "test",
        "dataset": data.provenance.get("dataset"),
        "n_test": len(data.test_inputs),
        "selection": (
            "the first n_inputs entries of torch.randperm(n_test) with a "
            "torch.Generator seeded with seed, sorted"
        ),
        "seed": seed,
        "indices": indices.tolist(),
    }


def _probabilities(
    run: Run, selected: list[tuple[int, Path]], inputs: torch.Tensor
) -> np.ndarray:
    """Return the (M, N, C) softmax outputs of the selected checkpoints of ``run``."""
    model = build_model(run.config)
    params = [_load_params(path, model) for _, path in selected]
    return trajectory_probabilities(model, params, inputs)


def _run_record(
    run: Run,
    selected: list[tuple[int, Path]],
    coordinates: np.ndarray,
    probs: np.ndarray,
) -> dict[str, Any]:
    """Return one run's part of the embedding."""
    config = run.config
    return {
        "name": config.name,
        "path": str(run.path),
        "regime": config.regime.value,
        "seed": config.seed,
        "alpha": config.alpha,
        "epochs": [int(epoch) for epoch, _ in selected],
        "coordinates": coordinates.tolist(),
        "distance_to_uniform": _distances_to_uniform(probs).tolist(),
        "config": config.to_dict(),
    }


def _distances_to_uniform(probs: np.ndarray) -> np.ndarray:
    """Compute each model's mean Bhattacharyya distance to the uniform distribution.

    ``probs`` has shape (M models, N inputs, C classes). Entry m is the mean
    over inputs of -log sum_c sqrt(p_mnc / C), which is 0 for a model that
    outputs 1/C everywhere and at most log(C) / 2 for a one-hot output.
    """
    n_classes = probs.shape[-1]
    coefficients = np.sqrt(probs).sum(axis=-1) / np.sqrt(n_classes)
    return -np.log(np.clip(coefficients, None, 1.0)).mean(axis=-1)


def _component_kind(sign: int) -> str:
    """Name a component by its eigenvalue's sign: negative is time-like."""
    return "time-like" if sign < 0 else "space-like"
