import pytest
import torch

from groklab.tasks.modadd import addition_table, split_table


def test_table_labels_and_order():
    pairs, targets = addition_table(7)
    assert pairs.shape == (49, 2)
    assert torch.equal(targets, (pairs[:, 0] + pairs[:, 1]) % 7)
    assert pairs[8].tolist() == [1, 1]
    assert len({tuple(p) for p in pairs.tolist()}) == 49


def test_split_sizes_and_disjointness():
    data = split_table(113, 0.7, seed=0)
    assert len(data.train_inputs) == round(0.7 * 113 * 113)
    assert len(data.train_inputs) + len(data.test_inputs) == 113 * 113
    train = {tuple(p) for p in data.train_inputs.tolist()}
    test = {tuple(p) for p in data.test_inputs.tolist()}
    assert not train & test
    assert len(train | test) == 113 * 113
    assert torch.equal(data.train_targets, data.train_inputs.sum(1) % 113)
    assert torch.equal(data.test_targets, data.test_inputs.sum(1) % 113)


def test_split_seeding():
    first, again = split_table(13, 0.5, seed=3), split_table(13, 0.5, seed=3)
    other = split_table(13, 0.5, seed=4)
    assert torch.equal(first.train_inputs, again.train_inputs)
    assert not torch.equal(first.train_inputs, other.train_inputs)


@pytest.mark.parametrize("p, fraction", [(1, 0.7), (2, 0.0), (2, 1.0), (2, 0.1)])
def test_split_rejects_bad_input(p, fraction):
    with pytest.raises(ValueError):
        split_table(p, fraction, seed=0)
