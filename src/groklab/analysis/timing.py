"""Grokking times read off accuracy curves.

A run groks when test accuracy catches up long after train accuracy has
saturated. The times here are thresholds relative to each curve's own maximum,
so they apply unchanged to tasks whose best accuracy is below 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class GrokkingTimes:
    """Epochs at which a run fits its training set, fits its test set and starts
    to generalise; ``None`` where the curve never crosses the threshold."""

    epoch_train_fit: int | None
    epoch_test_fit: int | None
    epoch_test_onset: int | None

    @property
    def delay(self) -> int | None:
        """Return epochs from train fit to test fit; large for a grokking run."""
        if self.epoch_train_fit is None or self.epoch_test_fit is None:
            return None
        return self.epoch_test_fit - self.epoch_train_fit

    def to_dict(self) -> dict[str, int | None]:
        """Return the three epochs and the delay as a JSON-friendly dict."""
        return {**asdict(self), "delay": self.delay}


def grokking_times(
    epochs: ArrayLike,
    train_acc: ArrayLike,
    test_acc: ArrayLike,
    *,
    fit_fraction: float = 0.9,
    onset_fraction: float = 0.01,
    chance: float | None = None,
) -> GrokkingTimes:
    """Return the train-fit, test-fit and test-onset epochs of one run.

    ``epochs`` are the (not necessarily contiguous) epochs at which the
    accuracies were measured, in increasing order. A curve fits at the first
    epoch where it reaches ``fit_fraction`` times its maximum (>=); test accuracy
    sets in at the first epoch where it exceeds ``onset_fraction`` times its
    maximum (>). NaN accuracies never count, neither for the maximum nor as a
    crossing. A curve that is all NaN or never above zero has no crossings.

    Because the thresholds are relative, a run that never learns would still
    "fit" at its best epoch. With ``chance`` (the accuracy of guessing) given,
    a curve whose maximum stays below halfway from chance to 1 has no fit
    epoch, and a test curve that never exceeds chance has no onset.
    """
    epochs_arr, train, test = _validated_curves(epochs, train_acc, test_acc)
    train_learned = _learned(train, chance)
    test_learned = _learned(test, chance)
    test_onset = _first_epoch(epochs_arr, test, onset_fraction, strict=True)
    if chance is not None and not np.nanmax(test, initial=-np.inf) > chance:
        test_onset = None
    return GrokkingTimes(
        epoch_train_fit=_first_epoch(epochs_arr, train, fit_fraction, strict=False)
        if train_learned else None,
        epoch_test_fit=_first_epoch(epochs_arr, test, fit_fraction, strict=False)
        if test_learned else None,
        epoch_test_onset=test_onset,
    )


def _learned(acc: np.ndarray, chance: float | None) -> bool:
    """Return False when ``acc`` never gets halfway from ``chance`` to 1."""
    if chance is None:
        return True
    finite = acc[np.isfinite(acc)]
    return finite.size > 0 and finite.max() >= chance + (1 - chance) / 2


def _validated_curves(
    epochs: ArrayLike, train_acc: ArrayLike, test_acc: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the three inputs as 1-D arrays after checking they match."""
    arrays = [np.asarray(x).ravel() for x in (epochs, train_acc, test_acc)]
    lengths = [a.size for a in arrays]
    if lengths[0] == 0:
        raise ValueError("epochs is empty: pass at least one measured epoch")
    if len(set(lengths)) != 1:
        raise ValueError(
            f"lengths of epochs, train_acc, test_acc are {lengths}: "
            "pass one accuracy per epoch"
        )
    epochs_arr = arrays[0].astype(np.int64)
    return epochs_arr, arrays[1].astype(np.float64), arrays[2].astype(np.float64)


def _first_epoch(
    epochs: np.ndarray, acc: np.ndarray, fraction: float, *, strict: bool
) -> int | None:
    """Return the first epoch whose accuracy crosses ``fraction`` x the maximum."""
    if np.all(np.isnan(acc)) or np.nanmax(acc) <= 0:
        return None
    threshold = fraction * np.nanmax(acc)
    hits = acc > threshold if strict else acc >= threshold
    indices = np.flatnonzero(hits)
    return int(epochs[indices[0]]) if indices.size else None
