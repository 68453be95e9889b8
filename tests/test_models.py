import torch

from groklab.config import RunConfig
from groklab.models import IsingCNN, ModAddMLP, build_model


def test_mlp_gather_equals_one_hot_matmul():
    torch.manual_seed(0)
    model = ModAddMLP(7, 16).double()
    pairs = torch.tensor([[0, 0], [3, 5], [6, 6], [2, 1]])
    one_hot = torch.cat(
        [torch.nn.functional.one_hot(pairs[:, 0], 7), torch.nn.functional.one_hot(pairs[:, 1], 7)],
        dim=1,
    ).double()
    hidden = torch.relu(one_hot @ model.fc1.weight.T + model.fc1.bias)
    expected = hidden @ model.fc2.weight.T + model.fc2.bias
    assert torch.allclose(model(pairs), expected, atol=1e-12)


def test_mlp_init_xavier_with_zero_bias():
    model = ModAddMLP(113, 512)
    assert torch.all(model.fc1.bias == 0)
    expected_std = (2 / (226 + 512)) ** 0.5
    assert abs(model.fc1.weight.std().item() - expected_std) / expected_std < 0.02


def test_cnn_shapes_and_activations():
    model = IsingCNN(16)
    spins = torch.ones(5, 1, 16, 16)
    assert model(spins).shape == (5, 2)
    acts = model.activations(spins)
    assert acts["conv1"].shape == (5, 2 * 8 * 8)
    assert acts["conv2"].shape == (5, 4 * 4 * 4)
    assert acts["fc1"].shape == (5, 100)
    assert model.fc1.in_features == 64


def test_alpha_scales_every_parameter():
    small = build_model(RunConfig(task="ising", regime="steady", alpha=1.0, seed=3))
    large = build_model(RunConfig(task="ising", regime="grok", alpha=10.0, seed=3))
    for (name, a), (_, b) in zip(small.named_parameters(), large.named_parameters()):
        assert torch.allclose(b, 10 * a), name


def test_mlp_runs_under_vmap_with_stacked_params():
    from torch.func import functional_call, stack_module_state, vmap

    models = [ModAddMLP(7, 16) for _ in range(3)]
    params, _ = stack_module_state(models)
    pairs = torch.tensor([[0, 0], [3, 5], [6, 6], [2, 1]])

    def call(member_params, batch):
        return functional_call(models[0], member_params, (batch,))

    stacked = vmap(call, in_dims=(0, None))(params, pairs)
    for i, model in enumerate(models):
        assert torch.equal(stacked[i], model(pairs))
