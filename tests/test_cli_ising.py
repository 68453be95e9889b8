"""The ising-data and ising-import commands, and training on a dataset file."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from groklab.cli import main
from groklab.tasks.ising.dataset import IsingDataSpec, load_dataset
from groklab.tasks.ising.observables import CRITICAL_TEMPERATURE
from cli_assertions import assert_one_line_error

TINY_SPEC = [
    "--set", "lattice=8", "--set", "n_temperatures=4", "--set", "n_near_tc=2",
    "--set", "samples_per_temperature=5",
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def outside_data(n: int = 60, lattice: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Return random (n, L, L) spins of -1/+1 and temperatures on both sides of Tc."""
    rng = np.random.default_rng(0)
    spins = rng.choice(np.array([-1, 1]), size=(n, lattice, lattice))
    temperature = np.repeat([1.5, 2.0, 2.5, 3.0], n // 4)
    return spins, temperature


def test_ising_data_writes_loadable_file(tmp_path: Path, capsys) -> None:
    out = tmp_path / "tiny.npz"
    assert main(["ising-data", "--out", str(out), "--quiet", *TINY_SPEC]) == 0
    printed = capsys.readouterr().out
    dataset = load_dataset(out)
    # 1.0, 1.83, 2.67, 3.5 and Tc +- 0.25: 3 temperatures in each phase, 5 samples each.
    assert len(dataset) == 30
    assert dataset.spins.dtype == np.int8
    assert dataset.spins.shape == (30, 8, 8)
    spec = IsingDataSpec(lattice=8, n_temperatures=4, n_near_tc=2,
                         samples_per_temperature=5)
    assert dataset.spec == spec
    assert dataset.metadata["config"] == spec.to_dict()
    assert set(dataset.metadata["versions"]) == {"mcising", "numpy", "groklab"}
    assert "samples: 30 on 8 x 8 lattices" in printed
    assert "temperatures: 6 from 1 to 3.5" in printed
    assert "class balance: 15 ordered (label 0), 15 disordered (label 1)" in printed
    assert "build seconds: " in printed
    assert f"SHA-256 of the file: {sha256(out)}" in printed


def test_ising_data_keeps_existing_file(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mine.npz"
    out.write_bytes(b"precious")
    args = ["ising-data", "--out", str(out), "--quiet", *TINY_SPEC]
    assert_one_line_error(capsys, main(args), "exists: pass --force")
    assert out.read_bytes() == b"precious"
    assert main([*args, "--force"]) == 0
    assert len(load_dataset(out)) == 30


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["--set", "n_near_tc=3"], "use an even n_near_tc"),
        (["--set", "lattice=x"], "invalid value 'x' for lattice"),
        (["--set", "size=4"], "unknown config key 'size'"),
        (["--set", "exclude_width=9"], "removes every grid temperature"),
    ],
)
def test_ising_data_bad_settings(tmp_path: Path, capsys, overrides, fragment) -> None:
    out = tmp_path / "d.npz"
    code = main(["ising-data", "--out", str(out), "--quiet", *TINY_SPEC, *overrides])
    assert_one_line_error(capsys, code, fragment)
    assert not out.exists()


def write_source(tmp_path: Path, kind: str, spins, temperature, labels) -> Path:
    if kind == "npz":
        path = tmp_path / "outside.npz"
        np.savez(path, spins=spins, temperature=temperature, label=labels)
    else:
        path = tmp_path / "outside.pkl"
        records = [(s.tolist(), int(y), float(t))
                   for s, y, t in zip(spins, labels, temperature)]
        path.write_bytes(pickle.dumps(records))
    return path


@pytest.mark.parametrize("kind", ["npz", "pickle"])
def test_ising_import_converts(tmp_path: Path, capsys, kind: str) -> None:
    spins, temperature = outside_data()
    labels = (temperature > CRITICAL_TEMPERATURE).astype(int)
    source = write_source(tmp_path, kind, spins, temperature, labels)
    out = tmp_path / "imported.npz"
    code = main(["ising-import", str(source), "--out", str(out), "--trust-pickle"])
    assert code == 0
    printed = capsys.readouterr().out
    dataset = load_dataset(out)
    np.testing.assert_array_equal(dataset.spins, spins)
    np.testing.assert_array_equal(dataset.label, labels)
    assert dataset.metadata["source"]["sha256"] == sha256(source)
    assert dataset.metadata["source"]["format"] == kind
    assert "class balance: 30 ordered (label 0), 30 disordered (label 1)" in printed
    assert f"SHA-256 of the file: {sha256(out)}" in printed


def test_ising_import_pickle_needs_trust(tmp_path: Path, capsys) -> None:
    spins, temperature = outside_data()
    labels = (temperature > CRITICAL_TEMPERATURE).astype(int)
    source = write_source(tmp_path, "pickle", spins, temperature, labels)
    out = tmp_path / "imported.npz"
    code = main(["ising-import", str(source), "--out", str(out)])
    assert_one_line_error(capsys, code, "nothing was loaded; pass --trust-pickle")
    assert not out.exists()


def test_ising_import_keeps_existing_file(tmp_path: Path, capsys) -> None:
    spins, temperature = outside_data()
    source = write_source(tmp_path, "npz", spins, temperature, temperature > 2.5)
    out = tmp_path / "mine.npz"
    out.write_bytes(b"precious")
    code = main(["ising-import", str(source), "--out", str(out)])
    assert_one_line_error(capsys, code, "exists: pass --force")
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("zero spin", "sample 7: spin value 0 is not -1 or +1"),
        ("mixed labels", "sample 45: label 0 at temperature 3.0 contradicts sample 0"),
        ("missing", "cannot access"),
    ],
)
def test_ising_import_malformed(tmp_path: Path, capsys, damage, fragment) -> None:
    spins, temperature = outside_data()
    labels = (temperature > CRITICAL_TEMPERATURE).astype(int)
    if damage == "zero spin":
        spins[7, 3, 3] = 0
    if damage == "mixed labels":
        labels[45] = 0
    source = write_source(tmp_path, "npz", spins, temperature, labels)
    if damage == "missing":
        source.unlink()
    out = tmp_path / "imported.npz"
    code = main(["ising-import", str(source), "--out", str(out)])
    assert_one_line_error(capsys, code, fragment)
    assert not out.exists()


TINY_TRAIN = [
    "train", "--task", "ising", "--regime", "grok", "--epochs", "2", "--quiet",
    "--set", "hidden=10", "--set", "ising_train=20", "--set", "ising_test=30",
]


@pytest.fixture
def imported_file(tmp_path: Path) -> Path:
    spins, temperature = outside_data()
    labels = (temperature > CRITICAL_TEMPERATURE).astype(int)
    source = write_source(tmp_path, "npz", spins, temperature, labels)
    out = tmp_path / "imported.npz"
    assert main(["ising-import", str(source), "--out", str(out)]) == 0
    return out


def test_train_on_imported_file(tmp_path: Path, imported_file: Path) -> None:
    run = tmp_path / "run"
    code = main([
        *TINY_TRAIN, "--out", str(run), "--cache-dir", str(tmp_path / "cache"),
        "--set", "ising_lattice=8", "--set", f"ising_data_file={imported_file}",
    ])
    assert code == 0
    recorded = json.loads((run / "config.json").read_text())
    data = recorded["provenance"]["data"]
    assert recorded["config"]["ising_data_file"] == str(imported_file)
    assert data["dataset"] == str(imported_file.resolve())
    assert data["dataset_sha256"] == sha256(imported_file)
    assert data["dataset_source"]["format"] == "npz"
    assert recorded["provenance"]["n_train"] == 20
    assert recorded["provenance"]["n_test"] == 30
    assert not (tmp_path / "cache").exists()  # nothing was sampled


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["--set", "ising_lattice=16"],
         "its lattice is 8 x 8 but ising_lattice is 16; set ising_lattice=8"),
        (["--set", "ising_lattice=8", "--set", "ising_test=50"],
         "ising_train + ising_test (50) must not exceed the 60 sampled"),
        (["--set", "ising_lattice=8", "--set", "ising_data_file=missing.npz"],
         "missing.npz': file not found"),
    ],
)
def test_train_rejects_unfit_file(tmp_path, capsys, imported_file, overrides, fragment):
    capsys.readouterr()
    run = tmp_path / "run"
    code = main([*TINY_TRAIN, "--out", str(run), "--set",
                 f"ising_data_file={imported_file}", *overrides])
    assert_one_line_error(capsys, code, fragment)
    assert not run.exists()


def test_train_rejects_odd_near_tc_count(tmp_path, capsys) -> None:
    code = main([*TINY_TRAIN, "--out", str(tmp_path / "run"),
                 "--set", "ising_n_near_tc=3"])
    assert_one_line_error(capsys, code, "use an even n_near_tc")


def test_ising_data_missing_folder(tmp_path, capsys):
    out = tmp_path / "nodir" / "x.npz"
    code = main(["ising-data", "--out", str(out), "--quiet", *TINY_SPEC])
    err = capsys.readouterr().err
    assert code == 2
    assert "nodir of --out not found" in err
    assert len(err.strip().splitlines()) == 1


def test_train_rejects_raw_data_file(tmp_path, capsys):
    raw = tmp_path / "raw.npz"
    np.savez(raw, spins=np.ones((4, 8, 8), dtype=np.int8), temperature=np.full(4, 1.5))
    code = main(["train", "--task", "ising", "--regime", "steady", "--epochs", "1",
                 "--out", str(tmp_path / "r"), "--quiet", "--set", "ising_lattice=8",
                 "--set", f"ising_data_file={raw}", "--set", "ising_train=2",
                 "--set", "ising_test=2"])
    err = capsys.readouterr().err
    assert code == 2
    assert "convert outside data with groklab ising-import" in err
    assert "delete it" not in err
