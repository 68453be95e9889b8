import math

import pytest

from groklab.config import (
    AnalysisConfig,
    ConfigError,
    Regime,
    RunConfig,
    Task,
    apply_overrides,
)


def test_task_defaults_resolve():
    grok = RunConfig(task="modadd", regime="grok")
    assert grok.task is Task.MODADD
    assert grok.regime is Regime.GROK
    assert grok.alpha == 10.0
    assert grok.lr == 5e-3
    assert grok.weight_decay == 3e-5
    assert grok.batch_size == 64
    assert grok.hidden == 512
    ising = RunConfig(task="ising", regime="steady")
    assert ising.alpha == 1.0
    assert ising.lr == 1e-4
    assert ising.weight_decay == 0.1
    assert ising.batch_size == 300


def test_round_trip_through_dict():
    config = RunConfig(task="ising", regime="grok", seed=4, epochs=7)
    again = RunConfig.from_dict(config.to_dict())
    assert again == config
    assert again.to_dict()["task"] == "ising"


def test_overrides_parse_types():
    config = apply_overrides(
        RunConfig, {"task": "modadd", "regime": "steady"}, ["lr=1e-3", "p=7", "seed=2"]
    )
    assert config.lr == 1e-3
    assert config.p == 7
    assert config.seed == 2
    analysis = apply_overrides(AnalysisConfig, {}, ["pruning_orders=magnitude,fisher"])
    assert analysis.pruning_orders == ["magnitude", "fisher"]


@pytest.mark.parametrize(
    "pairs, fragment",
    [
        (["lr"], "expected KEY=VALUE"),
        (["=3"], "expected KEY=VALUE"),
        (["learning_rate=3"], "unknown config key 'learning_rate'"),
        (["lr=fast"], "invalid value 'fast' for lr"),
        (["epochs=2.5"], "invalid value '2.5' for epochs"),
        (["p=1"], "invalid p 1"),
        (["alpha=0"], "invalid alpha 0"),
        (["alpha=nan"], "invalid alpha nan"),
        (["epochs=0"], "invalid epochs 0"),
        (["ising_lattice=10"], "multiple of 4"),
        (["task=mnist"], "unknown task 'mnist'"),
        (["regime=fast"], "unknown regime 'fast'"),
    ],
)
def test_bad_overrides_name_value(pairs, fragment):
    with pytest.raises(ConfigError) as info:
        apply_overrides(RunConfig, {"task": "modadd", "regime": "grok"}, pairs)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"task": "modadd", "regime": "grok", "colour": 1}, "unknown config key 'colour'"),
        ({"task": "modadd", "regime": "grok", "epochs": "10"}, "invalid type for epochs"),
        ({"task": "modadd", "regime": "grok", "alpha": True}, "invalid type for alpha"),
        ({"regime": "grok"}, "invalid config"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_from_dict_rejects_bad_data(data, fragment):
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(data)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "pairs",
    [["fisher_form=empirical"], ["pruning_orders=random"], ["tolerance=1"], ["top_k=0"],
     ["memory_mb=8"], ["fisher_chunk_size=0"], ["pruning_checkpoints=-1"],
     ["pruning_over_time_fractions=3"]],
)
def test_analysis_config_validation(pairs):
    with pytest.raises(ConfigError):
        apply_overrides(AnalysisConfig, {}, pairs)


def test_run_name_carries_task_regime_alpha_seed():
    config = RunConfig(task="modadd", regime="steady", seed=3)
    assert config.name == "modadd-steady-a0.1-s3"
    assert math.isclose(config.alpha, 0.1)


def test_modulus_upper_limit():
    from groklab.config import MAX_MODULUS

    RunConfig(task="modadd", regime="grok", p=MAX_MODULUS)
    with pytest.raises(ConfigError, match="invalid p 4097: use a modulus <= 4096"):
        RunConfig(task="modadd", regime="grok", p=MAX_MODULUS + 1)
