"""Grokking times on hand-made accuracy curves with known results."""

import numpy as np
import pytest

from groklab.analysis.timing import GrokkingTimes, grokking_times


def test_grokking_curve_has_long_delay():
    epochs = [0, 10, 20, 30, 40, 50, 60]
    train = [0.1, 0.95, 1.0, 1.0, 1.0, 1.0, 1.0]
    test = [0.0, 0.0, 0.005, 0.02, 0.5, 0.92, 1.0]
    times = grokking_times(epochs, train, test)
    # Train first reaches 0.9 at epoch 10 and test at epoch 50. The onset
    # threshold is 0.01: 0.005 is below it and 0.02 above -> epoch 30.
    assert times == GrokkingTimes(10, 50, 30)
    assert times.delay == 40


def test_steady_curve_has_small_delay():
    epochs = np.arange(1, 6)
    train = [0.3, 0.6, 0.85, 0.95, 0.97]
    test = [0.25, 0.55, 0.8, 0.9, 0.95]
    times = grokking_times(epochs, train, test)
    # 0.9 x 0.97 = 0.873 -> train at 4, and 0.9 x 0.95 = 0.855 -> test at 4.
    assert times.to_dict() == {
        "epoch_train_fit": 4,
        "epoch_test_fit": 4,
        "epoch_test_onset": 1,
        "delay": 0,
    }


def test_threshold_is_relative_and_inclusive():
    # Max 0.5, so fit at >= 0.45 (exactly reached at epoch 7) and onset > 0.005.
    times = grokking_times(
        [3, 7, 11], [0.45, 0.45, 0.5], [0.005, 0.45, 0.5], fit_fraction=0.9
    )
    assert times.epoch_train_fit == 3
    assert times.epoch_test_fit == 7
    assert times.epoch_test_onset == 7


def test_nan_accuracies_are_ignored():
    epochs = [0, 5, 10, 15]
    train = [0.2, np.nan, 1.0, 1.0]
    test = [np.nan, 0.0, 0.95, np.nan]
    times = grokking_times(epochs, train, test)
    assert times == GrokkingTimes(10, 10, 10)


def test_never_learning_curve_gives_none():
    times = grokking_times([0, 1], [0.0, 1.0], [0.0, 0.0])
    assert times.epoch_test_fit is None
    assert times.epoch_test_onset is None
    assert times.delay is None
    assert times.to_dict()["delay"] is None


def test_custom_fractions():
    epochs = [0, 1, 2, 3]
    acc = [0.1, 0.4, 0.6, 1.0]
    times = grokking_times(epochs, acc, acc, fit_fraction=0.5, onset_fraction=0.4)
    assert times == GrokkingTimes(2, 2, 2)


@pytest.mark.parametrize(
    "epochs, train, test",
    [([], [], []), ([0, 1], [0.5], [0.5, 0.6]), ([0], [0.5], [0.5, 0.6])],
)
def test_bad_input_raises(epochs, train, test):
    with pytest.raises(ValueError):
        grokking_times(epochs, train, test)


def test_chance_floor_hides_unlearned_fits():
    epochs = np.arange(6)
    train = np.array([0.0, 0.3, 0.6, 0.9, 1.0, 1.0])
    test = np.array([0.008, 0.006, 0.004, 0.003, 0.002, 0.0065])
    times = grokking_times(epochs, train, test, chance=1 / 113)
    assert times.epoch_train_fit == 3
    assert times.epoch_test_fit is None
    assert times.epoch_test_onset is None
    assert times.delay is None
    without_floor = grokking_times(epochs, train, test)
    assert without_floor.epoch_test_fit == 0


def test_chance_floor_keeps_real_fits():
    epochs = np.arange(5)
    test = np.array([0.5, 0.6, 0.8, 0.95, 0.96])
    times = grokking_times(epochs, test, test, chance=0.5)
    assert times.epoch_test_fit == 3
    assert times.epoch_test_onset == 0
