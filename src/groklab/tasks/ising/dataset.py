"""The Ising phase-classification dataset: a temperature grid, sampled and cached.

A generated dataset is fully determined by an ``IsingDataSpec``. Its
fingerprint names the cache file, so changing any field, the sampler settings
or the mcising version builds a fresh file instead of reusing a stale one.
Imported datasets (see ``importer``) have no spec and record their source in
the metadata instead. Both kinds share one ``.npz`` layout and one loader. The
metadata of every file stores the SHA-256 of its arrays (``content_sha256``),
which the loader verifies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from groklab.config import require_int64
from groklab.tasks.ising import sampling
from groklab.tasks.ising.grid import temperature_grid
from groklab.tasks.ising.observables import energy_per_spin, magnetisation, phase_label
from groklab.training.runfolder import atomic_path

FORMAT_VERSION = 2
"""Version of the file layout, part of the fingerprint. Version 2 stores the spec
under ``config`` (generated data) or the origin under ``source`` (imported data)."""

ENERGY_TOLERANCE = 1e-9
"""Largest accepted gap between a stored energy per spin and one recomputed."""

ARRAY_DTYPES: dict[str, type] = {
    "spins": np.int8,
    "temperature": np.float64,
    "label": np.int64,
    "energy": np.float64,
    "magnetisation": np.float64,
}
"""Arrays stored in the cache file and their dtypes. All share the sample axis."""


@dataclass(frozen=True)
class IsingDataSpec:
    """Settings that fully determine an Ising dataset, validated on construction."""

    lattice: int = 16
    """Linear lattice size L. Each sample has L x L spins."""
    t_min: float = 1.0
    """Lowest temperature of the grid (k_B = J = 1)."""
    t_max: float = 3.5
    """Highest temperature of the grid, included."""
    n_temperatures: int = 26
    """Number of evenly spaced grid temperatures, both ends included."""
    n_near_tc: int = 6
    """Extra evenly spaced temperatures on [Tc - near_tc_width, Tc + near_tc_width].

    An odd count puts one of them at Tc, which is rejected unless excluded."""
    near_tc_width: float = 0.25
    """Half-width of the window of extra temperatures around Tc, clipped to the range."""
    exclude_width: float = 0.0
    """Grid temperatures with |T - Tc| below this are dropped; 0 keeps every point."""
    samples_per_temperature: int = 50
    """Stored configurations per grid temperature."""
    seed: int = 0
    """Root seed. Grid temperature i samples from a stream derived from (seed, i)."""
    algorithm: str = sampling.Algorithm.WOLFF.value
    """Monte Carlo update, a value of ``sampling.Algorithm``."""
    thermalisation_sweeps: int = sampling.THERMALISATION_SWEEPS
    """Sweeps discarded at each temperature before measuring (Wolff: cluster flips)."""

    def __post_init__(self) -> None:
        self._check_sizes()
        self.temperatures()  # raises a ValueError for an invalid or empty grid
        sampling.parse_algorithm(self.algorithm)

    def _check_sizes(self) -> None:
        """Raise a one-line ValueError for an invalid lattice, count or seed."""
        require_int64(self)
        if self.lattice < 2:
            raise ValueError(f"lattice {self.lattice} is too small; use at least 2")
        for name in ("n_temperatures", "samples_per_temperature"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)} is invalid; use >= 1")
        if self.thermalisation_sweeps < 0:
            raise ValueError(
                f"thermalisation_sweeps {self.thermalisation_sweeps} is negative; "
                "use 0 or more"
            )
        if self.seed < 0:
            raise ValueError(f"seed {self.seed} is invalid; use an integer >= 0")

    def temperatures(self) -> NDArray[np.float64]:
        """Return the ``grid.temperature_grid`` of the spec, shape (n_points,)."""
        return temperature_grid(
            self.t_min,
            self.t_max,
            self.n_temperatures,
            self.n_near_tc,
            self.near_tc_width,
            self.exclude_width,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> IsingDataSpec:
        """Build a spec from ``to_dict`` output, raising ValueError on unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown IsingDataSpec keys {unknown}; use only {sorted(known)}"
            )
        return cls(**values)

    def fingerprint(self) -> str:
        """Return 16 hex digits of a sha256 over spec, sampler settings and mcising."""
        payload = {
            "spec": self.to_dict(),
            "sampler": _sampler_settings(),
            "mcising": version("mcising"),
            "format": FORMAT_VERSION,
        }
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class IsingDataset:
    """Labelled Ising configurations. Every array has the sample axis first."""

    spins: NDArray[np.int8]  # sample L L, values -1 and +1
    temperature: NDArray[np.float64]  # sample
    label: NDArray[np.int64]  # sample, 0 ordered (T < Tc) or 1 disordered
    energy: NDArray[np.float64]  # sample, per spin in [-1, 1]
    magnetisation: NDArray[np.float64]  # sample, total (sum of spins)
    spec: IsingDataSpec | None
    """Spec that generated the samples; None for imported data."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """JSON-ready provenance. Generated data: ``config`` (the spec), versions and,
    per temperature, tau_int, interval and is_thermalized, plus the build time.
    Imported data: ``source`` and versions."""

    def __len__(self) -> int:
        return len(self.label)


def _sampler_settings() -> dict[str, float]:
    """Return the sampler defaults that shape the data but are not spec fields."""
    return {
        "series_sweeps": sampling.SERIES_SWEEPS,
        "tau_multiplier": sampling.TAU_MULTIPLIER,
        "min_interval": sampling.MIN_INTERVAL,
        "c_window": sampling.C_WINDOW,
    }


def temperature_seed(spec: IsingDataSpec, index: int) -> int:
    """Return the sampler seed of grid temperature ``index``, independent per index."""
    state = np.random.SeedSequence([spec.seed, index]).generate_state(1, np.uint64)
    return int(state[0])


def build_dataset(spec: IsingDataSpec, *, progress: bool = True) -> IsingDataset:
    """Sample every grid temperature of ``spec`` and return the labelled dataset."""
    start = time.perf_counter()
    grid = spec.temperatures()  # temperature
    bar = tqdm(grid, desc="Ising temperatures", disable=None if progress else True)
    parts = [
        sampling.sample_temperature(
            spec.lattice,
            float(t),
            spec.samples_per_temperature,
            seed=temperature_seed(spec, i),
            algorithm=spec.algorithm,
            thermalisation_sweeps=spec.thermalisation_sweeps,
        )
        for i, t in enumerate(bar)
    ]
    temperature = np.repeat(grid, spec.samples_per_temperature)
    return IsingDataset(
        spins=np.concatenate([p.spins for p in parts]),
        temperature=temperature,
        label=phase_label(temperature),
        energy=np.concatenate([p.energy for p in parts]),
        magnetisation=np.concatenate([p.magnetisation for p in parts]),
        spec=spec,
        metadata=_metadata(spec, parts, time.perf_counter() - start),
    )


def _metadata(
    spec: IsingDataSpec, parts: list[sampling.TemperatureSamples], seconds: float
) -> dict[str, Any]:
    """Return the JSON-ready provenance record of a build."""
    return {
        "format": FORMAT_VERSION,
        "config": spec.to_dict(),
        "fingerprint": spec.fingerprint(),
        "versions": library_versions(),
        "sampler": _sampler_settings(),
        "tau_int": [p.tau_int for p in parts],
        "interval": [p.interval for p in parts],
        "is_thermalized": [p.is_thermalized for p in parts],
        "build_seconds": seconds,
    }


def library_versions() -> dict[str, str]:
    """Return the versions of the libraries that shape a dataset file."""
    return {
        "mcising": version("mcising"),
        "numpy": np.__version__,
        "groklab": version("groklab"),
    }


def content_sha256(dataset: IsingDataset) -> str:
    """Return a SHA-256 of the dataset's arrays, independent of how the file was written.

    The file's own hash changes whenever the dataset is rebuilt, because its
    metadata records the build time; this one changes only with the samples.
    """
    return _arrays_sha256({name: getattr(dataset, name) for name in ARRAY_DTYPES})


def _arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """Return the SHA-256 of the arrays.

    Each array contributes its name, dtype, shape and bytes, in ARRAY_DTYPES order.
    """
    digest = hashlib.sha256()
    for name in ARRAY_DTYPES:
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_dataset(dataset: IsingDataset, path: str | Path) -> None:
    """Write ``dataset`` and its content SHA-256 to ``path`` (.npz) atomically.

    The file is written under a temporary name and renamed into place. An
    existing file at ``path`` is replaced, so callers that must not overwrite
    check first. Raises ValueError for imported data without a ``source`` record.
    """
    path = Path(path)
    arrays = {name: getattr(dataset, name) for name in ARRAY_DTYPES}
    metadata = {**dataset.metadata, "content_sha256": content_sha256(dataset)}
    if dataset.spec is not None:
        metadata["config"] = dataset.spec.to_dict()
    elif "source" not in metadata:
        raise ValueError(
            "dataset has neither a spec nor a 'source' record in its metadata; "
            "build it with build_dataset or import_dataset"
        )
    text = np.array(json.dumps(metadata))  # 0-d unicode array, loads without pickle
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, metadata=text, **arrays)


def load_dataset(path: str | Path) -> IsingDataset:
    """Read a file written by ``save_dataset``, checking its checksum, keys, shapes and values.

    The arrays must match the ``content_sha256`` in the metadata, which is not
    part of the returned metadata. Generated files must also match their spec's
    temperature grid. A missing, truncated, corrupt or otherwise invalid file
    raises a one-line ValueError naming the file.
    """
    path = Path(path)
    try:
        # Opening the file here guarantees it is closed whatever np.load raises.
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as npz:
            contents = {name: npz[name] for name in npz.files}
        return _dataset_from_arrays(contents)
    except Exception as error:  # Any failure to read means the file is unusable.
        reason = _first_line(error)
        raise ValueError(
            f"Ising dataset {path} is missing or invalid ({reason}); "
            "delete it to rebuild, or re-create it with groklab ising-data or "
            "ising-import"
        ) from error


def _first_line(error: BaseException) -> str:
    """Return the first line of ``error``'s message, or its type name when it has none."""
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _dataset_from_arrays(contents: dict[str, np.ndarray]) -> IsingDataset:
    """Return the dataset built from loaded arrays, raising ValueError if invalid."""
    expected = set(ARRAY_DTYPES) | {"metadata"}
    if set(contents) != expected:
        raise ValueError(f"keys {sorted(contents)} differ from {sorted(expected)}")
    metadata = json.loads(contents["metadata"].item())
    if not isinstance(metadata, dict):
        raise ValueError("metadata is not a JSON object")
    arrays = {name: contents[name] for name in ARRAY_DTYPES}
    _check_content_sha256(arrays, metadata.pop("content_sha256", None))
    check_arrays(arrays)
    if "config" in metadata:
        spec = IsingDataSpec.from_dict(metadata["config"])
        _check_against_spec(arrays, spec)
    elif isinstance(metadata.get("source"), dict):
        spec = None
    else:
        raise ValueError("metadata has neither a 'config' nor a 'source' record")
    return IsingDataset(**arrays, spec=spec, metadata=metadata)


def _check_content_sha256(arrays: dict[str, np.ndarray], stored: Any) -> None:
    """Raise ValueError unless ``stored`` is the SHA-256 of the arrays."""
    if stored is None:
        raise ValueError(
            "metadata has no content_sha256, so the file was written before groklab "
            "stored one or was not written by groklab"
        )
    computed = _arrays_sha256(arrays)
    if computed != stored:
        raise ValueError(
            f"content SHA-256 check failed (stored {str(stored)[:12]}..., computed "
            f"{computed[:12]}...), so the arrays are corrupt"
        )


def check_arrays(arrays: dict[str, np.ndarray]) -> None:
    """Raise ValueError unless the arrays form a consistent, labelled dataset.

    Checks dtypes, shapes (sample L L for spins, sample for the rest), spins in
    {-1, +1}, labels equal to the phase of each temperature, magnetisation equal
    to the sum of spins and energy within ``ENERGY_TOLERANCE`` of a recomputation.
    """
    spins = arrays["spins"]
    if spins.ndim != 3 or spins.shape[1] != spins.shape[2] or spins.shape[1] < 2:
        raise ValueError(f"spins have shape {spins.shape}, not (samples, L, L), L >= 2")
    if len(spins) == 0:
        raise ValueError("the dataset has no samples")
    for name, dtype in ARRAY_DTYPES.items():
        shape = spins.shape if name == "spins" else spins.shape[:1]
        array = arrays[name]
        if array.dtype != dtype or array.shape != shape:
            raise ValueError(f"{name} is {array.dtype}{array.shape}, not {shape}")
    if not np.all(np.abs(spins) == 1):
        raise ValueError("spins contain values other than -1 and +1")
    if not np.array_equal(arrays["label"], phase_label(arrays["temperature"])):
        raise ValueError("labels disagree with the temperatures")
    if not np.array_equal(arrays["magnetisation"], magnetisation(spins)):
        raise ValueError("magnetisation differs from the sum of the spins")
    gap = np.abs(arrays["energy"] - energy_per_spin(spins)).max()
    if not gap <= ENERGY_TOLERANCE:
        raise ValueError(f"energy differs from the spins' energy per spin by {gap:.3g}")


def _check_against_spec(arrays: dict[str, np.ndarray], spec: IsingDataSpec) -> None:
    """Raise ValueError unless lattice, sample count and temperatures match ``spec``."""
    grid = np.repeat(spec.temperatures(), spec.samples_per_temperature)  # sample
    shape = (len(grid), spec.lattice, spec.lattice)
    if arrays["spins"].shape != shape:
        raise ValueError(f"spins have shape {arrays['spins'].shape}, not {shape}")
    if not np.array_equal(arrays["temperature"], grid):
        raise ValueError("temperatures differ from the spec's grid")


def dataset_sha256(path: str | Path) -> str:
    """Return the sha256 hex digest of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_or_build(
    spec: IsingDataSpec, cache_dir: str | Path, *, progress: bool = True
) -> tuple[IsingDataset, Path]:
    """Return the dataset of ``spec`` and its cache file, building it if needed.

    The file is ``cache_dir / ising-<fingerprint>.npz``. A file that is missing,
    invalid (a failed checksum included) or built from another spec is rebuilt
    and replaced, and a replaced file is reported on stderr.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"ising-{spec.fingerprint()}.npz"
    if path.exists():
        try:
            dataset = load_dataset(path)
            problem = None if dataset.spec == spec else "built from another spec"
        except ValueError as error:
            problem = _first_line(error.__cause__ or error)
        if problem is None:
            return dataset, path
        print(
            f"groklab: cached Ising dataset {path} is invalid ({problem}); rebuilding it",
            file=sys.stderr,
        )
    dataset = build_dataset(spec, progress=progress)
    save_dataset(dataset, path)
    return dataset, path


def split_indices(
    n_total: int, n_train: int, n_test: int, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Return disjoint, sorted (train, test) sample indices drawn at random.

    The same arguments give the same split.
    """
    if n_train < 0 or n_test < 0:
        raise ValueError(
            f"split sizes ({n_train}, {n_test}) are invalid; use counts >= 0"
        )
    if n_train + n_test > n_total:
        raise ValueError(
            f"n_train + n_test = {n_train + n_test} exceeds the {n_total} samples; "
            "raise samples_per_temperature or lower the split sizes"
        )
    order = np.random.default_rng(seed).permutation(n_total)
    train = np.sort(order[:n_train]).astype(np.int64)
    test = np.sort(order[n_train : n_train + n_test]).astype(np.int64)
    return train, test
