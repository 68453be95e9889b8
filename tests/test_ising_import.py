"""Import of outside Ising data (.npz and pickle) into groklab's dataset file."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from groklab.tasks.ising.dataset import load_dataset, save_dataset
from groklab.tasks.ising.importer import import_dataset
from groklab.tasks.ising.observables import CRITICAL_TEMPERATURE

TC = CRITICAL_TEMPERATURE
TEMPERATURES = np.array([1.5, 1.5, 2.0, 2.5, 3.0, 3.5])
GROKLAB_LABELS = np.array([0, 0, 0, 1, 1, 1])  # 0 below Tc = 2.269, 1 above


def random_spins(n: int = 6, lattice: int = 4, seed: int = 0) -> np.ndarray:
    """Return (n, L, L) int64 spins of -1 and +1."""
    rng = np.random.default_rng(seed)
    return rng.choice(np.array([-1, 1]), size=(n, lattice, lattice))


def plain_energy(lattice: np.ndarray) -> float:
    """Return -(1/2N) sum over the 2N periodic bonds of s_i s_j, by explicit loops."""
    side = lattice.shape[0]
    total = 0.0
    for i in range(side):
        for j in range(side):
            s = float(lattice[i, j])
            total += s * lattice[(i + 1) % side, j] + s * lattice[i, (j + 1) % side]
    return -total / (2 * side * side)


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def write_pickle(path: Path, records: object) -> Path:
    path.write_bytes(pickle.dumps(records))
    return path


def records_of(spins, labels, temperatures) -> list[tuple]:
    """Return the published layout: (configuration, phase_label, temperature) tuples."""
    rows = zip(spins, labels, temperatures)
    return [(s.tolist(), int(y), float(t)) for s, y, t in rows]


def test_npz_round_trip(tmp_path: Path) -> None:
    spins = random_spins()
    source = write_npz(tmp_path / "in.npz", spins=spins.astype(np.float32),
                       temperature=TEMPERATURES, label=GROKLAB_LABELS)
    dataset = import_dataset(source)
    save_dataset(dataset, tmp_path / "out.npz")
    loaded = load_dataset(tmp_path / "out.npz")
    assert loaded.spec is None
    assert loaded.spins.dtype == np.int8
    np.testing.assert_array_equal(loaded.spins, spins)
    np.testing.assert_array_equal(loaded.temperature, TEMPERATURES)
    np.testing.assert_array_equal(loaded.label, GROKLAB_LABELS)
    expected_energy = [plain_energy(s) for s in spins]
    np.testing.assert_allclose(loaded.energy, expected_energy, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(loaded.magnetisation, spins.sum(axis=(1, 2)))
    source_record = loaded.metadata["source"]
    assert source_record["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert source_record["path"] == str(source.resolve())
    assert source_record["format"] == "npz"
    assert source_record["n_samples"] == 6
    assert source_record["label_convention"] == "groklab"
    assert "imported_at" in source_record
    assert set(loaded.metadata["versions"]) == {"mcising", "numpy", "groklab"}


def test_npz_flat_without_labels(tmp_path: Path) -> None:
    spins = random_spins(lattice=5)
    source = write_npz(tmp_path / "in.npz", spins=spins.reshape(6, 25),
                       temperature=TEMPERATURES, extra=np.zeros(3))
    dataset = import_dataset(source)
    np.testing.assert_array_equal(dataset.spins, spins)
    np.testing.assert_array_equal(dataset.label, GROKLAB_LABELS)
    assert dataset.metadata["source"]["labels_given"] is False
    assert dataset.metadata["source"]["ignored_keys"] == ["extra"]


def test_pickle_round_trip(tmp_path: Path) -> None:
    spins = random_spins(seed=1)
    records = records_of(spins, GROKLAB_LABELS, TEMPERATURES)
    records[1] = (np.asarray(records[1][0]).ravel(), *records[1][1:])  # a flat array
    source = write_pickle(tmp_path / "in.pkl", records)
    dataset = import_dataset(source, trust_pickle=True)
    save_dataset(dataset, tmp_path / "out.npz")
    loaded = load_dataset(tmp_path / "out.npz")
    np.testing.assert_array_equal(loaded.spins, spins)
    np.testing.assert_array_equal(loaded.temperature, TEMPERATURES)
    np.testing.assert_array_equal(loaded.label, GROKLAB_LABELS)
    np.testing.assert_allclose(loaded.energy, [plain_energy(s) for s in spins],
                               rtol=0, atol=1e-12)
    assert loaded.metadata["source"]["format"] == "pickle"
    assert loaded.metadata["source"]["label_convention"] == "groklab"


@pytest.mark.parametrize("kind", ["npz", "pickle"])
def test_inverted_labels_converted(tmp_path: Path, kind: str) -> None:
    spins = random_spins(seed=2)
    inverted = 1 - GROKLAB_LABELS
    if kind == "npz":
        source = write_npz(tmp_path / "in.npz", spins=spins, temperature=TEMPERATURES,
                           label=inverted)
    else:
        source = write_pickle(tmp_path / "in.pkl",
                              records_of(spins, inverted, TEMPERATURES))
    dataset = import_dataset(source, trust_pickle=True)
    np.testing.assert_array_equal(dataset.label, GROKLAB_LABELS)
    assert dataset.metadata["source"]["label_convention"] == "inverted"


def test_untrusted_pickle_not_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "created-by-unpickling"

    class CreatesFolder:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    source = write_pickle(tmp_path / "in.pkl", CreatesFolder())
    with pytest.raises(ValueError, match="nothing was loaded.*--trust-pickle") as info:
        import_dataset(source)
    assert "\n" not in str(info.value)
    assert not marker.exists()
    # The same file does run code once trusted, which is why the flag exists.
    with pytest.raises(ValueError, match="the pickle contains a NoneType"):
        import_dataset(source, trust_pickle=True)
    assert marker.is_dir()


def _npz(**arrays):
    return ("npz", arrays)


def _pickle(records):
    return ("pickle", records)


SPINS = random_spins(seed=3)
SPINS_WITH_0 = SPINS.copy()
SPINS_WITH_0[3, 1, 2] = 0
SPINS_WITH_2 = SPINS.copy()
SPINS_WITH_2[4, 0, 0] = 2
NAN_T = TEMPERATURES.copy()
NAN_T[2] = np.nan
TC_T = TEMPERATURES.copy()
TC_T[4] = TC
MIXED = GROKLAB_LABELS.copy()
MIXED[4] = 0  # sample 4 is at T = 3.0, disordered
RAGGED = records_of(SPINS, GROKLAB_LABELS, TEMPERATURES)
RAGGED[1] = ([[1, 1, 1, 1], [1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]], 0, 1.5)
SMALLER = records_of(SPINS, GROKLAB_LABELS, TEMPERATURES)
SMALLER[2] = (np.ones((3, 3)), 0, 2.0)

MALFORMED = {
    "not square": (_npz(spins=np.ones((6, 4, 3)), temperature=TEMPERATURES),
                   "shape (6, 4, 3); each lattice must be square"),
    "flat not square": (_npz(spins=np.ones((6, 15)), temperature=TEMPERATURES),
                        "shape (6, 15); a flat lattice needs L*L values"),
    "wrong ndim": (_npz(spins=np.ones((6, 2, 2, 2)), temperature=TEMPERATURES),
                   "shape (6, 2, 2, 2); use (n, L, L) or flat (n, L*L)"),
    "temperature shape": (_npz(spins=SPINS, temperature=TEMPERATURES[:5]),
                          "temperature has shape (5,); use (6,)"),
    "missing key": (_npz(spins=SPINS), "no array 'temperature'"),
    "object array": (_npz(spins=SPINS, temperature=np.array([None] * 6)),
                     "cannot read the .npz file"),
    "ragged": (_pickle(RAGGED), "sample 1: the configuration is ragged"),
    "pickled 3-d": (_pickle([(np.ones((2, 2, 2)), 0, 1.0)]),
                    "sample 0: configuration shape (2, 2, 2) is not square"),
    "lattice sizes": (_pickle(SMALLER), "sample 2 has lattice shape (3, 3)"),
    "not a tuple": (_pickle([SPINS[0]]), "sample 0 is ndarray"),
    "not a list": (_pickle({"spins": SPINS}), "the pickle contains a dict"),
    "spin 0": (_npz(spins=SPINS_WITH_0, temperature=TEMPERATURES),
               "sample 3: spin value 0 is not -1 or +1; groklab needs -1/+1"),
    "spin 2": (_pickle(records_of(SPINS_WITH_2, GROKLAB_LABELS, TEMPERATURES)),
               "sample 4: spin value 2 is not -1 or +1"),
    "nan temperature": (_npz(spins=SPINS, temperature=NAN_T),
                        "sample 2: temperature nan is invalid"),
    "zero temperature": (_pickle(records_of(SPINS, GROKLAB_LABELS, [1.0] * 5 + [0])),
                         "sample 5: temperature 0.0 is invalid"),
    "temperature at Tc": (_npz(spins=SPINS, temperature=TC_T),
                          "sample 4: temperature 2.269185314213022 is Tc"),
    "label 2": (_npz(spins=SPINS, temperature=TEMPERATURES, label=GROKLAB_LABELS * 2),
                "sample 3: label 2.0 is not 0 or 1"),
    "mixed labels": (_npz(spins=SPINS, temperature=TEMPERATURES, label=MIXED),
                     "sample 4: label 0 at temperature 3.0 contradicts sample 0"),
    "mixed inverted": (_pickle(records_of(SPINS, 1 - MIXED, TEMPERATURES)),
                       "sample 4: label 1 at temperature 3.0 contradicts sample 0, "
                       "which follows the inverted"),
    "empty npz": (_npz(spins=np.ones((0, 4, 4)), temperature=np.ones(0)),
                  "the input has no samples"),
    "empty pickle": (_pickle([]), "the input has no samples"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_rejected(tmp_path: Path, case: str) -> None:
    (kind, content), message = MALFORMED[case]
    if kind == "npz":
        source = write_npz(tmp_path / "in.npz", **content)
    else:
        source = write_pickle(tmp_path / "in.pkl", content)
    with pytest.raises(ValueError) as info:
        import_dataset(source, trust_pickle=True)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_format_rejected(tmp_path: Path) -> None:
    source = tmp_path / "spins.csv"
    source.write_text("1,-1\n-1,1\n")
    with pytest.raises(ValueError, match="neither an .npz archive nor a pickle"):
        import_dataset(source, trust_pickle=True)


def test_complex_values_rejected(tmp_path: Path) -> None:
    spins = random_spins()
    temperatures = np.linspace(1.0, 3.5, len(spins))
    complex_t = write_npz(tmp_path / "t.npz", spins=spins, temperature=temperatures + 5j)
    with pytest.raises(ValueError, match="temperature has dtype complex128; use real"):
        import_dataset(complex_t)
    complex_s = write_npz(tmp_path / "s.npz", spins=spins * 1j, temperature=temperatures)
    with pytest.raises(ValueError, match="spins have dtype complex128; use real"):
        import_dataset(complex_s)


def test_random_bytes_named_not_npz(tmp_path: Path) -> None:
    source = tmp_path / "noise.npz"
    source.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ValueError, match="is not an .npz archive") as info:
        import_dataset(source)
    assert str(source) in str(info.value)
    assert "pickle" not in str(info.value)
