"""Conversion of Ising configurations sampled elsewhere into a groklab dataset.

Two input formats are read:

- ``npz``: arrays ``spins`` (n, L, L) or (n, L*L) with values exactly -1 and +1,
  ``temperature`` (n,) and, optionally, ``label`` (n,). Other arrays are ignored
  and listed in the metadata. Loaded with ``allow_pickle=False``.
- ``pickle``: a list of ``(configuration, phase_label, temperature)`` tuples,
  each configuration (L, L) or flat (L*L,), a list or an array. Unpickling runs
  code stored in the file, so it happens only with ``trust_pickle=True``.

Energy and magnetisation are recomputed from the spins. Labels may follow
groklab's convention (0 ordered, 1 disordered) or the inverted one throughout;
inverted labels are converted and the convention is recorded.
"""

from __future__ import annotations

import hashlib
import io
import math
import pickle
import time
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from groklab.tasks.ising.dataset import FORMAT_VERSION, IsingDataset, library_versions
from groklab.tasks.ising.observables import (
    CRITICAL_TEMPERATURE,
    CRITICAL_TOLERANCE,
    energy_per_spin,
    magnetisation,
    phase_label,
)

ZIP_MAGIC = b"PK\x03\x04"
"""First bytes of a zip archive, and so of every ``.npz`` file."""

PICKLE_SUFFIXES = (".pkl", ".pickle", ".p")
"""File name endings taken as pickles even without a protocol 2+ header."""


class SourceFormat(str, Enum):
    """Layout of an outside dataset file."""

    NPZ = "npz"
    PICKLE = "pickle"


class LabelConvention(str, Enum):
    """Meaning of the labels in an outside dataset."""

    GROKLAB = "groklab"
    """0 = ordered (T < Tc), 1 = disordered (T > Tc)."""
    INVERTED = "inverted"
    """1 = ordered, 0 = disordered."""


def import_dataset(source: str | Path, *, trust_pickle: bool = False) -> IsingDataset:
    """Read an outside ``.npz`` or pickle file and return it as a validated dataset.

    Raises a one-line ValueError that names the sample index and value for every
    malformed input, and for a pickle when ``trust_pickle`` is False, in which
    case the file is not unpickled at all.
    """
    start = time.perf_counter()
    path = Path(source)
    raw = path.read_bytes()
    source_format = detect_format(path, raw[:4])
    if source_format is SourceFormat.PICKLE and not trust_pickle:
        raise ValueError(
            f"{path} is a pickle, and unpickling runs code stored in the file, so "
            "nothing was loaded; pass --trust-pickle (trust_pickle=True) only if you "
            "trust its origin"
        )
    try:
        spins, temperature, labels, extra = _read_source(raw, source_format)
        dataset, convention = _assemble(spins, temperature, labels)
    except ValueError as error:
        raise ValueError(f"invalid Ising data file {path}: {error}") from None
    dataset.metadata["source"] = {
        "path": str(path.resolve()),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "format": source_format.value,
        "n_samples": len(dataset),
        "label_convention": convention.value,
        "labels_given": labels is not None,
        "ignored_keys": extra,
        "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "import_seconds": time.perf_counter() - start,
    }
    return dataset


def detect_format(path: Path, head: bytes) -> SourceFormat:
    """Return the format of a file from its first bytes, else from its name."""
    if head.startswith(ZIP_MAGIC) or path.suffix == ".npz":
        return SourceFormat.NPZ
    if head.startswith(b"\x80") or path.suffix in PICKLE_SUFFIXES:
        return SourceFormat.PICKLE
    raise ValueError(
        f"{path} is neither an .npz archive nor a pickle; convert it to an .npz "
        "with arrays spins, temperature and optionally label"
    )


def _read_source(
    raw: bytes, source_format: SourceFormat
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any] | None, list[str]]:
    """Return (spins, temperature, labels or None, ignored npz keys) from file bytes."""
    if source_format is SourceFormat.NPZ:
        return _read_npz(raw)
    if source_format is SourceFormat.PICKLE:
        return _read_pickle(raw)
    allowed = ", ".join(f.value for f in SourceFormat)
    raise ValueError(
        f"source format {source_format!r} is unknown; use one of {allowed}"
    )


def _read_npz(
    raw: bytes,
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any] | None, list[str]]:
    """Return the arrays of an ``.npz`` file, spins reshaped to (n, L, L)."""
    if not raw.startswith(b"PK"):
        # Every zip file starts with "PK". Without it np.load would try other
        # formats and blame pickled data.
        raise ValueError("it is not an .npz archive (no zip header); convert it to an "
                         ".npz with arrays spins, temperature and optionally label")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            contents = {name: npz[name] for name in npz.files}
    except Exception as error:  # Any failure to parse means the file is unusable.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"cannot read the .npz file ({reason}); store plain numeric arrays"
        ) from error
    missing = sorted({"spins", "temperature"} - set(contents))
    if missing:
        raise ValueError(
            f"the .npz file has no array {missing[0]!r} (it has {sorted(contents)}); "
            "store spins, temperature and optionally label"
        )
    extra = sorted(set(contents) - {"spins", "temperature", "label"})
    n = _sample_count(contents["spins"])
    spins = _square_lattices(contents["spins"], n)
    temperature = _vector(contents["temperature"], "temperature", n)
    labels = _vector(contents["label"], "label", n) if "label" in contents else None
    return spins, temperature, labels, extra


def _sample_count(spins: NDArray[Any]) -> int:
    """Return the number of samples of an npz ``spins`` array of ndim 2 or 3."""
    if spins.ndim not in (2, 3):
        raise ValueError(
            f"spins have shape {spins.shape}; use (n, L, L) or flat (n, L*L)"
        )
    return spins.shape[0]


def _square_lattices(spins: NDArray[Any], n: int) -> NDArray[Any]:
    """Return (n, L, L) spins from (n, L, L) or (n, L*L), or raise a ValueError."""
    if spins.ndim == 3 and spins.shape[1] != spins.shape[2]:
        raise ValueError(
            f"spins have shape {spins.shape}; each lattice must be square (L, L)"
        )
    if spins.ndim == 2:
        side = math.isqrt(spins.shape[1])
        if side * side != spins.shape[1]:
            raise ValueError(
                f"spins have shape {spins.shape}; a flat lattice needs L*L values"
            )
        spins = spins.reshape(n, side, side)
    return spins


def _vector(array: NDArray[Any], name: str, n: int) -> NDArray[Any]:
    """Return ``array`` after checking it has shape (n,) and a numeric dtype."""
    if array.shape != (n,):
        raise ValueError(f"{name} has shape {array.shape}; use ({n},), one per sample")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise ValueError(f"{name} has dtype {array.dtype}; use numbers")
    if np.iscomplexobj(array):
        raise ValueError(f"{name} has dtype {array.dtype}; use real numbers")
    return array


def _read_pickle(
    raw: bytes,
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], list[str]]:
    """Return (spins (n, L, L), temperature, labels, []) from a trusted pickle."""
    try:
        records = pickle.loads(raw)  # noqa: S301 (trusted by the caller)
    except Exception as error:  # Any failure to unpickle means the file is unusable.
        reason = str(error).splitlines()[0][:120] if str(error) else ""
        raise ValueError(
            f"cannot unpickle the file ({type(error).__name__}: {reason}); "
            "check that it is a complete pickle"
        ) from error
    if not isinstance(records, (list, tuple)):
        raise ValueError(
            f"the pickle contains a {type(records).__name__}; expected a list of "
            "(configuration, phase_label, temperature) tuples"
        )
    lattices = [_pickled_lattice(i, record) for i, record in enumerate(records)]
    _check_same_lattice(lattices)
    spins = np.stack(lattices) if lattices else np.empty((0, 2, 2))
    labels = np.array([_number(i, r[1], "label") for i, r in enumerate(records)])
    temperature = np.array(
        [_number(i, r[2], "temperature") for i, r in enumerate(records)]
    )
    return spins, temperature, labels, []


def _pickled_lattice(index: int, record: Any) -> NDArray[Any]:
    """Return the (L, L) configuration of one pickled record, or raise a ValueError."""
    if not isinstance(record, (list, tuple)) or len(record) != 3:
        raise ValueError(
            f"sample {index} is {type(record).__name__} {_short(record)}; expected a "
            "(configuration, phase_label, temperature) tuple"
        )
    try:
        lattice = np.asarray(record[0])
    except ValueError:
        lattice = None
    if lattice is None or lattice.dtype == object:
        raise ValueError(
            f"sample {index}: the configuration is ragged or contains values that "
            "are not numbers; store L rows of L spins, each -1 or +1"
        )
    if lattice.dtype == np.bool_ or not np.issubdtype(lattice.dtype, np.number):
        raise ValueError(
            f"sample {index}: the configuration has dtype {lattice.dtype}; "
            "store numbers -1 and +1"
        )
    if lattice.ndim == 1:
        side = math.isqrt(lattice.size)
        if side * side != lattice.size:
            raise ValueError(
                f"sample {index}: a flat configuration of {lattice.size} values is not "
                "L*L; store (L, L) or L*L spins"
            )
        return lattice.reshape(side, side)
    if lattice.ndim != 2 or lattice.shape[0] != lattice.shape[1]:
        raise ValueError(
            f"sample {index}: configuration shape {lattice.shape} is not square; "
            "store (L, L) or L*L spins"
        )
    return lattice


def _check_same_lattice(lattices: list[NDArray[Any]]) -> None:
    """Raise a ValueError naming the first configuration whose size differs."""
    for index, lattice in enumerate(lattices):
        if lattice.shape != lattices[0].shape:
            raise ValueError(
                f"sample {index} has lattice shape {lattice.shape}, sample 0 has "
                f"{lattices[0].shape}; import one lattice size per dataset"
            )


def _number(index: int, value: Any, name: str) -> float:
    """Return ``value`` as a float, or raise a ValueError naming the sample."""
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(
            f"sample {index}: {name} {_short(value)} is not a number"
        ) from None


def _short(value: Any) -> str:
    """Return ``repr(value)`` cut to 40 characters for one-line messages."""
    try:
        text = repr(value).replace("\n", " ")
    except ValueError:
        # repr of an int with more digits than sys.get_int_max_str_digits() fails.
        return f"<{type(value).__name__} too large to print>"
    return text if len(text) <= 40 else text[:37] + "..."


def _assemble(
    spins: NDArray[Any], temperature: NDArray[Any], labels: NDArray[Any] | None
) -> tuple[IsingDataset, LabelConvention]:
    """Validate the arrays and return the dataset, in groklab's labels, and the
    convention the given labels followed (groklab's when none were given)."""
    if len(spins) == 0:
        raise ValueError("the input has no samples; import at least one configuration")
    if spins.shape[-1] < 2:
        raise ValueError(f"lattice size {spins.shape[-1]} is too small; use L >= 2")
    _check_spin_values(spins)
    temperature = _checked_temperature(temperature)
    expected = phase_label(temperature)  # sample
    convention = LabelConvention.GROKLAB
    if labels is not None:
        convention = _label_convention(np.asarray(labels, dtype=np.float64), expected,
                                       temperature)
    lattices = spins.astype(np.int8)  # sample L L
    dataset = IsingDataset(
        spins=lattices,
        temperature=temperature,
        label=expected,
        energy=energy_per_spin(lattices),
        magnetisation=magnetisation(lattices),
        spec=None,
        metadata={"format": FORMAT_VERSION, "versions": library_versions()},
    )
    return dataset, convention


def _check_spin_values(spins: NDArray[Any]) -> None:
    """Raise a ValueError naming the first sample with a spin other than -1 or +1."""
    if spins.dtype == np.bool_ or not np.issubdtype(spins.dtype, np.number):
        raise ValueError(f"spins have dtype {spins.dtype}; use numbers -1 and +1")
    if np.iscomplexobj(spins):
        raise ValueError(f"spins have dtype {spins.dtype}; use real numbers -1 and +1")
    bad = np.abs(spins) != 1  # sample L L
    if bad.any():
        index = int(np.argmax(bad.reshape(len(spins), -1).any(axis=1)))
        value = spins[index][bad[index]][0].item()
        raise ValueError(
            f"sample {index}: spin value {value!r} is not -1 or +1; groklab needs "
            "-1/+1 spins, so map a 0/1 encoding with 2 * s - 1 before importing"
        )


def _checked_temperature(temperature: NDArray[Any]) -> NDArray[np.float64]:
    """Return temperatures as float64, or raise naming the first invalid sample."""
    values = np.asarray(temperature, dtype=np.float64)  # sample
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(
            f"sample {index}: temperature {values[index].item()!r} is invalid; "
            "use finite values above 0"
        )
    at_tc = np.abs(values - CRITICAL_TEMPERATURE) < CRITICAL_TOLERANCE
    if at_tc.any():
        index = int(np.argmax(at_tc))
        raise ValueError(
            f"sample {index}: temperature {values[index].item()!r} is Tc, which has no "
            "phase label; drop the sample or move its temperature off Tc"
        )
    return values


def _label_convention(
    labels: NDArray[np.float64],
    expected: NDArray[np.int64],
    temperature: NDArray[np.float64],
) -> LabelConvention:
    """Return the convention every label follows, or raise naming the first outlier."""
    invalid = (labels != 0) & (labels != 1)
    if invalid.any():
        index = int(np.argmax(invalid))
        raise ValueError(
            f"sample {index}: label {labels[index].item()!r} is not 0 or 1; "
            "use 0/1 phase labels"
        )
    if np.array_equal(labels, expected):
        return LabelConvention.GROKLAB
    if np.array_equal(labels, 1 - expected):
        return LabelConvention.INVERTED
    follows_groklab = labels == expected
    index = int(np.argmax(follows_groklab != follows_groklab[0]))
    if follows_groklab[0]:
        first = "groklab's (0 = ordered)"
    else:
        first = "inverted (1 = ordered)"
    raise ValueError(
        f"sample {index}: label {int(labels[index])} at temperature "
        f"{temperature[index].item()!r} contradicts sample 0, which follows the "
        f"{first} convention; fix the labels so that one convention holds throughout"
    )
