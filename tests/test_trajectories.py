"""InPCA trajectories of tiny real runs, checked against an independent evaluation."""

import json
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex

from groklab.analysis.trajectories import embed_trajectories
from groklab.config import RunConfig
from groklab.models import build_model
from groklab.report.trajectory_figure import plot_inpca_trajectories
from groklab.tasks.loader import load_task
from groklab.training.checkpoints import load_checkpoint, model_tensors
from groklab.training.loop import train
from groklab.training.runfolder import list_checkpoints

# Checkpoints at epochs 0 to 4. The test split of p = 11 has 36 pairs.
TINY = dict(task="modadd", p=11, hidden=16, epochs=4, checkpoint_log_points=0)
TINY_ISING = dict(
    task="ising", ising_lattice=8, ising_n_temperatures=6,
    ising_samples_per_temperature=20, ising_train=40, ising_test=60, hidden=10,
    lr=1e-3, epochs=2, checkpoint_log_points=0,
)
N_INPUTS = 20
# Four runs of five checkpoints each.
N_POINTS = 20


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Train grok, steady, an exact copy of steady and a narrower steady seed 1."""
    root = tmp_path_factory.mktemp("trajectories")
    configs = {
        "grok": RunConfig(regime="grok", **TINY),
        "steady": RunConfig(regime="steady", **TINY),
        "steady_copy": RunConfig(regime="steady", **TINY),
        "steady_seed1": RunConfig(regime="steady", seed=1, **{**TINY, "hidden": 8}),
    }
    return {
        label: train(config, root / label, progress=False)
        for label, config in configs.items()
    }


@pytest.fixture(scope="module")
def embedding(runs):
    return embed_trajectories(
        list(runs.values()), n_inputs=N_INPUTS, n_components=N_POINTS
    )


def checkpoint_probabilities(run_dir, indices):
    """Evaluate every checkpoint of ``run_dir`` on the chosen test inputs directly."""
    config = RunConfig.from_dict(
        json.loads((run_dir / "config.json").read_text())["config"]
    )
    inputs = load_task(config, progress=False).test_inputs[indices]
    model = build_model(config)
    probs = []
    for _, path in list_checkpoints(run_dir):
        model.load_state_dict(model_tensors(load_checkpoint(path)[0]))
        with torch.no_grad():
            probs.append(torch.softmax(model(inputs).double(), dim=-1).numpy())
    return np.stack(probs)


def signed_squared_distances(embedding):
    """Return sum_k s_k (x_ik - x_jk)^2 over all checkpoints of all runs."""
    points = np.concatenate([np.array(run["coordinates"]) for run in embedding["runs"]])
    differences = points[:, None, :] - points[None, :, :]
    return np.einsum("ijk,k->ij", differences**2, np.array(embedding["signs"]))


def run_named(embedding, label, runs):
    return next(r for r in embedding["runs"] if r["path"] == str(runs[label]))


def test_embedding_reproduces_bhattacharyya(runs, embedding):
    indices = embedding["inputs"]["indices"]
    probs = np.concatenate(
        [checkpoint_probabilities(run_dir, indices) for run_dir in runs.values()]
    )
    roots = np.sqrt(probs)
    coefficients = np.einsum("anc,bnc->abn", roots, roots)
    expected = -np.log(np.minimum(coefficients, 1.0)).mean(axis=-1)
    reproduced = signed_squared_distances(embedding)
    np.testing.assert_allclose(reproduced, expected, rtol=0, atol=1e-9)
    assert expected.max() > 0.1


def test_embedding_runs_in_order(runs, embedding):
    assert [run["path"] for run in embedding["runs"]] == [str(d) for d in runs.values()]
    for run in embedding["runs"]:
        assert run["epochs"] == [0, 1, 2, 3, 4]
        assert np.array(run["coordinates"]).shape == (5, N_POINTS)
    grok = run_named(embedding, "grok", runs)
    assert grok["name"] == "modadd-grok-a10-s0"
    assert grok["regime"] == "grok"
    assert grok["alpha"] == 10.0
    assert grok["seed"] == 0
    assert run_named(embedding, "steady_seed1", runs)["seed"] == 1


def test_identical_runs_identical_trajectories(runs, embedding):
    steady = np.array(run_named(embedding, "steady", runs)["coordinates"])
    copy = np.array(run_named(embedding, "steady_copy", runs)["coordinates"])
    grok = np.array(run_named(embedding, "grok", runs)["coordinates"])
    # Duplicated points leave eigenvalues at rounding level, whose coordinates
    # are rounding noise, so only the components above it are compared.
    eigenvalues = np.abs(embedding["eigenvalues"])
    leading = eigenvalues > 1e-9 * eigenvalues[0]
    assert leading.sum() >= 3
    np.testing.assert_allclose(copy[:, leading], steady[:, leading], rtol=0, atol=1e-9)
    distances = signed_squared_distances(embedding)
    # Rows 5-9 are the steady run and rows 10-14 its copy.
    pairs = np.arange(5, 10)
    np.testing.assert_allclose(distances[pairs, pairs + 5], 0.0, rtol=0, atol=1e-12)
    assert np.abs(grok - steady).max() > 0.1


def test_first_checkpoint_is_initial_model(runs, embedding):
    indices = embedding["inputs"]["indices"]
    for label in ("grok", "steady"):
        config = RunConfig(regime=label, **TINY)
        inputs = load_task(config, progress=False).test_inputs[indices]
        with torch.no_grad():
            logits = build_model(config)(inputs).double()
        probs = torch.softmax(logits, dim=-1).numpy()
        n_classes = probs.shape[-1]
        expected = -np.log(np.sqrt(probs / n_classes).sum(axis=-1)).mean()
        recorded = run_named(embedding, label, runs)["distance_to_uniform"]
        assert recorded[0] == pytest.approx(expected, rel=1e-9, abs=1e-15)
    steady = run_named(embedding, "steady", runs)["distance_to_uniform"]
    grok = run_named(embedding, "grok", runs)["distance_to_uniform"]
    assert steady[0] < 1e-4
    assert grok[0] > 0.5


def test_components_match_spectrum(embedding):
    eigenvalues = np.array(embedding["eigenvalues"])
    assert eigenvalues.shape == (N_POINTS,)
    assert np.all(np.diff(np.abs(eigenvalues)) <= 1e-15)
    for k, kind in enumerate(embedding["component_kinds"]):
        time_like = eigenvalues[k] < 0
        assert kind == ("time-like" if time_like else "space-like")
        assert embedding["signs"][k] == (-1 if time_like else 1)
    expected = np.abs(eigenvalues) / np.abs(eigenvalues).sum()
    np.testing.assert_allclose(embedding["explained_fraction"], expected, rtol=1e-12)


def test_embedding_is_plain_json(embedding):
    decoded = json.loads(json.dumps(embedding, allow_nan=False))
    assert decoded == embedding
    assert decoded["n_inputs"] == N_INPUTS
    assert decoded["task"] == "modadd"
    assert decoded["settings"]["n_components"] == N_POINTS
    assert "torch" in decoded["provenance"]["versions"]
    assert decoded["runs"][0]["config"]["p"] == 11


def test_inputs_are_seeded_test_subset(runs, embedding):
    indices = embedding["inputs"]["indices"]
    assert len(indices) == N_INPUTS
    assert len(set(indices)) == N_INPUTS
    assert indices == sorted(indices)
    assert 0 <= min(indices)
    assert max(indices) < 36
    assert embedding["inputs"]["n_test"] == 36
    other = embed_trajectories([runs["grok"]], n_inputs=N_INPUTS, seed=1)
    assert other["inputs"]["indices"] != indices
    again = embed_trajectories([runs["grok"]], n_inputs=N_INPUTS, seed=0)
    assert again["inputs"]["indices"] == indices


def test_inputs_capped_at_test_split(runs):
    embedding = embed_trajectories([runs["grok"]], n_inputs=1000)
    assert embedding["n_inputs"] == 36
    assert embedding["inputs"]["indices"] == list(range(36))
    assert embedding["settings"]["n_inputs"] == 1000


def test_max_checkpoints_keeps_first_and_last(runs):
    embedding = embed_trajectories(
        [runs["grok"], runs["steady"]], n_inputs=N_INPUTS, max_checkpoints=3
    )
    for run in embedding["runs"]:
        assert run["epochs"] == [0, 2, 4]
        assert np.array(run["coordinates"]).shape == (3, 3)
    assert len(embedding["eigenvalues"]) == 6


def edited_copy(run_dir, destination, section, name, value):
    """Copy a run folder and overwrite one entry of its config.json."""
    shutil.copytree(run_dir, destination)
    path = destination / "config.json"
    header = json.loads(path.read_text())
    header[section][name] = value
    path.write_text(json.dumps(header))
    return destination


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("p", 13, r"differ in p \(11 vs 13\)"),
        ("data_seed", 1, r"differ in data_seed \(0 vs 1\)"),
        ("train_fraction", 0.5, r"differ in train_fraction \(0\.7 vs 0\.5\)"),
        ("task", "ising", r"differ in task \(modadd vs ising\)"),
    ],
)
def test_mismatched_data_raises(runs, tmp_path, name, value, match):
    other = edited_copy(runs["steady"], tmp_path / "other", "config", name, value)
    with pytest.raises(ValueError, match=match):
        embed_trajectories([runs["grok"], other])


def test_ising_dataset_hash_compared(tmp_path):
    cache = tmp_path / "cache"
    grok = train(RunConfig(regime="grok", **TINY_ISING), tmp_path / "grok",
                 cache_dir=cache, progress=False)
    steady = train(RunConfig(regime="steady", **TINY_ISING), tmp_path / "steady",
                   cache_dir=cache, progress=False)
    embedding = embed_trajectories([grok, steady], n_inputs=N_INPUTS, cache_dir=cache)
    assert embedding["task"] == "ising"
    assert [run["epochs"] for run in embedding["runs"]] == [[0, 1, 2], [0, 1, 2]]
    header = json.loads((steady / "config.json").read_text())
    data = {**header["provenance"]["data"], "dataset_content_sha256": "0" * 64}
    other = edited_copy(steady, tmp_path / "other", "provenance", "data", data)
    with pytest.raises(ValueError, match="differ in dataset"):
        embed_trajectories([grok, other], cache_dir=cache)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"n_inputs": 0}, "n_inputs 0 is invalid"),
        ({"max_checkpoints": 1}, "max_checkpoints 1 is invalid: pass an integer >= 2"),
        ({"n_components": 0}, "n_components 0 is invalid"),
        ({"n_components": 2.5}, "n_components 2.5 is invalid"),
        ({"n_components": 11}, "n_components 11 is out of range: .* pass 1 to 10"),
    ],
)
def test_bad_settings_raise(runs, options, match):
    with pytest.raises(ValueError, match=match):
        embed_trajectories([runs["grok"], runs["steady"]], **options)


def test_run_folders_checked(runs):
    with pytest.raises(ValueError, match="run_dirs is empty"):
        embed_trajectories([])
    with pytest.raises(ValueError, match="is given twice"):
        embed_trajectories([runs["grok"], runs["grok"] / ".." / "grok"])


# Figure


def test_figure_one_line_per_run(embedding):
    fig = plot_inpca_trajectories(embedding)
    try:
        assert len(fig.axes) == 2
        regimes = [run["regime"] for run in embedding["runs"]]
        for ax in fig.axes:
            assert len(ax.lines) == len(regimes)
            colors = [to_hex(line.get_color()) for line in ax.lines]
            expected = ["#c0392b" if r == "grok" else "#2471a3" for r in regimes]
            assert colors == expected
            widths = [line.get_linewidth() for line in ax.lines]
            assert widths[0] > max(widths[1:])
            assert len(set(widths[1:])) == 1
        first = fig.axes[0].lines[0]
        coordinates = np.array(embedding["runs"][0]["coordinates"])
        np.testing.assert_allclose(first.get_xdata(), coordinates[:, 0])
        np.testing.assert_allclose(first.get_ydata(), coordinates[:, 1])
        np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), coordinates[:, 2])
    finally:
        plt.close(fig)


def test_figure_labels_component_kinds(embedding):
    fig = plot_inpca_trajectories(embedding)
    try:
        kinds = embedding["component_kinds"]
        left, right = fig.axes
        assert kinds[0] in left.get_xlabel()
        assert kinds[1] in left.get_ylabel()
        assert kinds[2] in right.get_ylabel()
        assert right.get_ylabel().startswith("InPCA 3: ")
    finally:
        plt.close(fig)


def test_figure_marks_fit_epochs(embedding):
    grok = embedding["runs"][0]
    timings = {grok["name"]: {"epoch_train_fit": 2, "epoch_test_fit": 3.4}}
    plain = plot_inpca_trajectories(embedding)
    marked = plot_inpca_trajectories(embedding, timings)
    try:
        plain_offsets = {
            tuple(np.round(c.get_offsets()[0], 12)) for c in plain.axes[0].collections
        }
        new = [
            c.get_offsets()[0]
            for c in marked.axes[0].collections
            if tuple(np.round(c.get_offsets()[0], 12)) not in plain_offsets
        ]
        coordinates = np.array(grok["coordinates"])
        assert len(marked.axes[0].collections) == len(plain.axes[0].collections) + 2
        np.testing.assert_allclose(new[0], coordinates[2, :2])
        np.testing.assert_allclose(new[1], coordinates[3, :2])
        labels = marked.axes[0].get_legend_handles_labels()[1]
        assert "train fit" in labels
        assert "test fit" in labels
    finally:
        plt.close(plain)
        plt.close(marked)


def test_figure_two_components_one_panel(runs):
    embedding = embed_trajectories(
        [runs["grok"], runs["steady"]], n_inputs=N_INPUTS, n_components=2
    )
    fig = plot_inpca_trajectories(embedding)
    try:
        assert len(fig.axes) == 1
        assert len(fig.axes[0].lines) == 2
    finally:
        plt.close(fig)


def test_figure_rejects_one_component(runs):
    embedding = embed_trajectories([runs["grok"]], n_inputs=N_INPUTS, n_components=1)
    with pytest.raises(ValueError, match="embedding has 1 component"):
        plot_inpca_trajectories(embedding)
