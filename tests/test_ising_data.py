"""Ising sampling, temperature grid, dataset build, cache and split."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from groklab.tasks.ising import dataset as ds
from groklab.tasks.ising.dataset import (
    IsingDataSpec,
    build_dataset,
    dataset_sha256,
    load_dataset,
    load_or_build,
    save_dataset,
    split_indices,
)
from groklab.tasks.ising.grid import temperature_grid
from groklab.tasks.ising.observables import (
    CRITICAL_TEMPERATURE,
    energy_per_spin,
    magnetisation,
)
from groklab.tasks.ising.sampling import (
    Algorithm,
    core_algorithm_name,
    parse_algorithm,
    sample_temperature,
)

TC = CRITICAL_TEMPERATURE
# Six grid temperatures: 1.5, 2.0, Tc - 0.25, 2.5, Tc + 0.25 and 3.0.
SMALL = IsingDataSpec(
    lattice=8,
    t_min=1.5,
    t_max=3.0,
    n_temperatures=4,
    n_near_tc=2,
    samples_per_temperature=10,
)


@pytest.fixture(scope="module")
def default_dataset() -> ds.IsingDataset:
    """Return the default 32 x 50 build on 16 x 16 lattices (about a second)."""
    return build_dataset(IsingDataSpec(), progress=False)


@pytest.fixture(scope="module")
def small_dataset() -> ds.IsingDataset:
    return build_dataset(SMALL, progress=False)


# Sampling


def test_sampling_reproducible_per_seed() -> None:
    a = sample_temperature(8, 2.5, 20, seed=3)
    b = sample_temperature(8, 2.5, 20, seed=3)
    c = sample_temperature(8, 2.5, 20, seed=4)
    np.testing.assert_array_equal(a.spins, b.spins)
    np.testing.assert_array_equal(a.energy, b.energy)
    assert a.interval == b.interval
    assert not np.array_equal(a.spins, c.spins)


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_samples_shapes_and_observables(algorithm: Algorithm) -> None:
    samples = sample_temperature(
        6, 2.0, 12, seed=1, algorithm=algorithm, series_sweeps=200
    )
    assert samples.spins.shape == (12, 6, 6)
    assert samples.spins.dtype == np.int8
    assert samples.energy.shape == samples.magnetisation.shape == (12,)
    assert samples.energy.dtype == samples.magnetisation.dtype == np.float64
    # mcising's reported observables, converted, equal a recomputation from spins.
    recomputed = energy_per_spin(samples.spins)
    np.testing.assert_allclose(samples.energy, recomputed, atol=1e-12)
    np.testing.assert_array_equal(samples.magnetisation, magnetisation(samples.spins))


def test_magnetisation_plausible_on_16x16() -> None:
    cold = sample_temperature(16, 1.0, 50, seed=0)
    hot = sample_temperature(16, 3.5, 50, seed=0)
    assert np.mean(np.abs(cold.magnetisation)) / 256 > 0.9
    assert np.mean(np.abs(hot.magnetisation)) / 256 < 0.3
    assert cold.is_thermalized
    assert hot.is_thermalized


def test_wolff_interval_grows_with_temperature() -> None:
    # Wolff clusters span the lattice below Tc but contain a few spins far above
    # it, so far more cluster flips separate independent samples when hot.
    cold = sample_temperature(16, 1.2, 5, seed=2)
    hot = sample_temperature(16, 3.5, 5, seed=2)
    assert cold.tau_int < 1.0 < 5.0 < hot.tau_int
    assert cold.interval < hot.interval


def test_hot_samples_decorrelated() -> None:
    # Compare the |spin overlap| of consecutive samples with that of two independent
    # runs (about 0.065 here). An interval of 2 tau_int gives 0.2 to 0.35.
    def spins(seed: int) -> np.ndarray:
        return sample_temperature(16, 3.5, 200, seed=seed).spins.reshape(200, -1)

    run, independent = spins(5).astype(float), spins(105)
    consecutive = np.abs(np.mean(run[1:] * run[:-1], axis=1)).mean()
    baseline = np.abs(np.mean(run * independent, axis=1)).mean()
    assert consecutive < 1.3 * baseline


def test_ordered_samples_take_both_signs() -> None:
    # Metropolis at T = 1 practically never reverses an ordered 8 x 8 lattice, so
    # both signs must come from the random global sign.
    cold = sample_temperature(8, 1.0, 40, seed=0, algorithm="metropolis")
    signs = np.sign(cold.magnetisation)
    assert (signs > 0).any()
    assert (signs < 0).any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 0.0}, "temperature 0.0"),
        ({"temperature": float("inf")}, "temperature inf"),
        ({"n_samples": 0}, "n_samples 0"),
        ({"lattice": 1}, "lattice 1"),
        ({"seed": -1}, "seed -1"),
        ({"algorithm": "heatbath"}, "'heatbath' is unknown; use one of wolff"),
        ({"min_interval": 0}, "min_interval 0"),
        ({"series_sweeps": 10}, "series_sweeps 10"),
    ],
)
def test_sampler_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    arguments = {"lattice": 8, "temperature": 2.0, "n_samples": 2, "seed": 0}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        sample_temperature(**arguments)


def test_algorithm_dispatch() -> None:
    assert parse_algorithm("swendsen_wang") is Algorithm.SWENDSEN_WANG
    assert [core_algorithm_name(a) for a in Algorithm] == [
        "wolff",
        "swendsen_wang",
        "metropolis",
    ]
    with pytest.raises(ValueError, match="'sw' is unknown"):
        core_algorithm_name("sw")  # type: ignore[arg-type]


# Grid


def test_default_grid_denser_near_tc() -> None:
    grid = temperature_grid(1.0, 3.5, 26)
    assert grid[0] == 1.0
    assert grid[-1] == 3.5
    assert np.all(np.diff(grid) > 0)
    # Within 0.25 of Tc: 2.1, 2.2, 2.3, 2.4, 2.5 from the 0.1 spacing, plus 6 more.
    assert np.sum(np.abs(grid - TC) <= 0.25 + 1e-12) == 5 + 6
    for offset in (-0.25, -0.15, -0.05, 0.05, 0.15, 0.25):
        assert np.min(np.abs(grid - (TC + offset))) < 1e-12, offset
    assert (grid < TC).sum() == 13 + 3  # 1.0 ... 2.2, then Tc - 0.25 ... Tc - 0.05
    assert (grid > TC).sum() == 13 + 3


def test_grid_without_extra_points_is_linspace() -> None:
    grid = temperature_grid(1.0, 3.5, 26, n_near_tc=0)
    np.testing.assert_array_equal(grid, np.linspace(1.0, 3.5, 26))


def test_grid_excludes_window() -> None:
    grid = temperature_grid(1.0, 3.5, 26, exclude_width=0.3)
    assert np.abs(grid - TC).min() >= 0.3
    # All 6 window points and 2.0 ... 2.5 lie within 0.3 of Tc = 2.269.
    expected = [t for t in np.linspace(1.0, 3.5, 26) if abs(t - TC) >= 0.3]
    np.testing.assert_array_equal(grid, expected)
    assert len(grid) == 20


def test_grid_never_contains_tc() -> None:
    with pytest.raises(ValueError, match="is Tc.*use an even n_near_tc"):
        temperature_grid(1.0, 3.5, 26, n_near_tc=5)
    grid = temperature_grid(1.0, 3.5, 26, n_near_tc=5, exclude_width=0.01)
    assert np.abs(grid - TC).min() >= 0.01
    assert len(grid) == 26 + 4
    with pytest.raises(ValueError, match="is Tc.*change t_min, t_max or n_temp"):
        temperature_grid(TC - 1.0, TC + 1.0, 3, n_near_tc=0)


def test_grid_merges_points_within_1e_9() -> None:
    # Even points Tc - 0.3, Tc - 0.1, Tc + 0.1, Tc + 0.3; the window adds Tc +- w.
    low, high = TC - 0.3, TC + 0.3
    near = temperature_grid(low, high, 4, n_near_tc=2, near_tc_width=0.1 + 4e-10)
    apart = temperature_grid(low, high, 4, n_near_tc=2, near_tc_width=0.1 + 4e-9)
    assert len(near) == 4
    assert len(apart) == 6


def test_grid_clips_window_to_range() -> None:
    grid = temperature_grid(1.0, 2.3, 14, n_near_tc=6, near_tc_width=0.25)
    assert grid.max() == 2.3
    window = np.linspace(TC - 0.25, 2.3, 6)
    for t in window:
        assert np.min(np.abs(grid - t)) < 1e-12, t
    outside = temperature_grid(3.0, 3.5, 6, n_near_tc=6)
    np.testing.assert_array_equal(outside, np.linspace(3.0, 3.5, 6))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"t_min": 0.0}, r"range \[0.0, 3.5\] is invalid"),
        ({"t_max": 0.5}, r"range \[1.0, 0.5\] is invalid"),
        ({"t_max": float("inf")}, r"range \[1.0, inf\] is invalid"),
        ({"n_temperatures": 0}, "n_temperatures 0 is invalid"),
        ({"n_near_tc": -2}, "n_near_tc -2 is invalid"),
        ({"near_tc_width": -0.1}, "near_tc_width -0.1 is invalid"),
        ({"exclude_width": float("nan")}, "exclude_width nan is invalid"),
        ({"exclude_width": 3.0}, "removes every grid temperature"),
    ],
)
def test_grid_rejects_bad_input(kwargs: dict, message: str) -> None:
    arguments = {"t_min": 1.0, "t_max": 3.5, "n_temperatures": 26} | kwargs
    with pytest.raises(ValueError, match=message) as info:
        temperature_grid(**arguments)
    assert "\n" not in str(info.value)


# Spec


def test_spec_grid_and_round_trip() -> None:
    spec = IsingDataSpec()
    grid = spec.temperatures()
    assert grid.shape == (26 + 6,)
    assert grid[0] == 1.0
    assert grid[-1] == 3.5
    even = dataclasses.replace(spec, n_near_tc=0).temperatures()
    np.testing.assert_allclose(np.diff(even), 0.1, atol=1e-12)
    np.testing.assert_array_equal(grid, temperature_grid(1.0, 3.5, 26, 6, 0.25, 0.0))
    assert IsingDataSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match=r"unknown IsingDataSpec keys \['size'\]"):
        IsingDataSpec.from_dict({**spec.to_dict(), "size": 4})


def test_fingerprint_stable_and_field_sensitive() -> None:
    fingerprint = IsingDataSpec().fingerprint()
    assert len(fingerprint) == 16
    assert int(fingerprint, 16) >= 0
    assert IsingDataSpec().fingerprint() == fingerprint
    assert IsingDataSpec(seed=1).fingerprint() != fingerprint
    assert IsingDataSpec(t_max=3.6).fingerprint() != fingerprint
    assert IsingDataSpec(n_near_tc=4).fingerprint() != fingerprint
    assert IsingDataSpec(exclude_width=0.1).fingerprint() != fingerprint


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"t_min": 0.0}, r"range \[0.0, 3.5\]"),
        ({"t_min": 3.0, "t_max": 2.0}, r"range \[3.0, 2.0\]"),
        ({"lattice": 1}, "lattice 1"),
        ({"n_temperatures": 0}, "n_temperatures 0"),
        ({"samples_per_temperature": 0}, "samples_per_temperature 0"),
        ({"seed": -2}, "seed -2"),
        ({"algorithm": "glauber"}, "'glauber' is unknown"),
        (
            {
                "t_min": CRITICAL_TEMPERATURE - 1,
                "t_max": CRITICAL_TEMPERATURE + 1,
                "n_temperatures": 3,
            },
            "is Tc.*change t_min, t_max or n_temperatures",
        ),
        ({"n_near_tc": 3}, "is Tc.*use an even n_near_tc"),
        ({"n_near_tc": -1}, "n_near_tc -1 is invalid"),
        ({"near_tc_width": 0.0}, "near_tc_width 0.0 is invalid"),
        ({"exclude_width": 5.0}, "exclude_width 5.0 removes every grid temperature"),
    ],
)
def test_spec_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IsingDataSpec(**kwargs)


# Dataset


def test_dataset_shapes_and_labels(small_dataset: ds.IsingDataset) -> None:
    data = small_dataset
    assert len(data) == 60
    assert data.spins.shape == (60, 8, 8)
    assert data.spins.dtype == np.int8
    expected = {"temperature": np.float64, "label": np.int64}
    expected |= {"energy": np.float64, "magnetisation": np.float64}
    for name, dtype in expected.items():
        array = getattr(data, name)
        assert array.shape == (60,), name
        assert array.dtype == dtype, name
    np.testing.assert_array_equal(
        data.temperature, np.repeat(SMALL.temperatures(), 10)
    )
    np.testing.assert_array_equal(data.label, data.temperature > CRITICAL_TEMPERATURE)
    assert len(data.metadata["tau_int"]) == len(data.metadata["interval"]) == 6
    assert data.metadata["config"] == SMALL.to_dict()
    assert set(data.metadata["versions"]) == {"mcising", "numpy", "groklab"}


def test_dataset_reproducible_per_seed(small_dataset: ds.IsingDataset) -> None:
    again = build_dataset(SMALL, progress=False)
    other = build_dataset(dataclasses.replace(SMALL, seed=1), progress=False)
    np.testing.assert_array_equal(again.spins, small_dataset.spins)
    np.testing.assert_array_equal(again.energy, small_dataset.energy)
    assert not np.array_equal(other.spins, small_dataset.spins)
    seeds = {ds.temperature_seed(SMALL, i) for i in range(SMALL.n_temperatures)}
    assert len(seeds) == SMALL.n_temperatures


def test_default_dataset_physics(default_dataset: ds.IsingDataset) -> None:
    data = default_dataset
    assert len(data) == 1600
    assert np.all(np.abs(data.energy) <= 1.0)
    np.testing.assert_allclose(data.energy, energy_per_spin(data.spins), atol=1e-12)
    grid = data.spec.temperatures()
    abs_m = np.abs(data.magnetisation) / 256
    mean_abs_m = [abs_m[data.temperature == t].mean() for t in grid]
    even = np.linspace(1.0, 3.5, 26)  # the evenly spaced part of the grid
    mean_e = np.array([data.energy[data.temperature == t].mean() for t in even])
    assert mean_abs_m[0] > 0.9
    assert mean_abs_m[-1] < 0.3
    # Energy rises with T. Comparing grid points 0.2 apart keeps sampling noise out.
    assert np.all(np.diff(mean_e[::2]) > 0)
    interval = np.array(data.metadata["interval"])
    assert interval[grid > 3.0].min() > interval[grid < 1.5].max()
    assert all(data.metadata["is_thermalized"])


# Cache


def test_save_load_round_trip(small_dataset: ds.IsingDataset, tmp_path) -> None:
    path = tmp_path / "data.npz"
    save_dataset(small_dataset, path)
    assert [p.name for p in tmp_path.iterdir()] == ["data.npz"]
    loaded = load_dataset(path)
    for name in ds.ARRAY_DTYPES:
        original = getattr(small_dataset, name)
        np.testing.assert_array_equal(getattr(loaded, name), original)
        assert getattr(loaded, name).dtype == original.dtype
    assert loaded.spec == SMALL
    assert loaded.metadata == small_dataset.metadata
    assert len(dataset_sha256(path)) == 64


def test_load_or_build_reuses_cache(monkeypatch, tmp_path) -> None:
    data, path = load_or_build(SMALL, tmp_path / "cache", progress=False)
    assert path == tmp_path / "cache" / f"ising-{SMALL.fingerprint()}.npz"
    digest = dataset_sha256(path)

    def fail(*args, **kwargs):
        raise AssertionError("the cached dataset was rebuilt")

    monkeypatch.setattr(ds, "build_dataset", fail)
    again, again_path = load_or_build(SMALL, tmp_path / "cache", progress=False)
    assert again_path == path
    assert dataset_sha256(path) == digest
    np.testing.assert_array_equal(again.spins, data.spins)


def test_load_or_build_replaces_corrupt_cache(tmp_path) -> None:
    path = tmp_path / f"ising-{SMALL.fingerprint()}.npz"
    path.write_bytes(b"not a zip file")
    data, built = load_or_build(SMALL, tmp_path, progress=False)
    assert built == path
    assert load_dataset(path).spec == SMALL
    assert len(data) == 60


def _corrupt(kind: str, valid: bytes, path) -> None:
    """Write a broken variant ``kind`` of the valid file bytes to ``path``."""
    if kind == "truncated":
        path.write_bytes(valid[: len(valid) // 2])
    elif kind == "garbage":
        path.write_bytes(b"\x00" * 100)
    elif kind == "wrong_keys":
        np.savez(path, spins=np.ones((2, 8, 8), np.int8))


@pytest.mark.parametrize("kind", ["truncated", "garbage", "wrong_keys", "missing"])
def test_bad_files_raise_value_error(
    kind: str, small_dataset: ds.IsingDataset, tmp_path
) -> None:
    good = tmp_path / "good.npz"
    save_dataset(small_dataset, good)
    bad = tmp_path / "bad.npz"
    _corrupt(kind, good.read_bytes(), bad)
    with pytest.raises(ValueError, match="delete it to rebuild") as info:
        load_dataset(bad)
    assert str(bad) in str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_file_spins_rejected(
    small_dataset: ds.IsingDataset, tmp_path
) -> None:
    spins = small_dataset.spins.copy()
    spins[0, 0, 0] = 0
    broken = dataclasses.replace(small_dataset, spins=spins)
    save_dataset(broken, tmp_path / "broken.npz")
    with pytest.raises(ValueError, match="spins contain values"):
        load_dataset(tmp_path / "broken.npz")


# Split


def test_split_disjoint_sized_seeded() -> None:
    train, test = split_indices(100, 60, 30, seed=0)
    assert len(train) == 60
    assert len(test) == 30
    assert not set(train) & set(test)
    assert set(train) | set(test) <= set(range(100))
    again = split_indices(100, 60, 30, seed=0)
    other = split_indices(100, 60, 30, seed=1)
    np.testing.assert_array_equal(again[0], train)
    np.testing.assert_array_equal(again[1], test)
    assert not np.array_equal(other[0], train)


def test_split_rejects_oversized_request() -> None:
    with pytest.raises(ValueError, match="exceeds the 100 samples.*samples_per_temp"):
        split_indices(100, 80, 30, seed=0)
