"""The contract every registered strategy keeps, trained by the engine on the Gaussian blobs.

Parametrised over `strategies.list_strategies()`, so a strategy is covered the moment it
registers. Each strategy runs with its defaults and with every other value of each of its
`Literal` hyperparameters (e.g. EWC's `mode`, LwF's `ce_scope`).
"""

from __future__ import annotations

import copy
import dataclasses
import typing

import pytest
import torch

import strategies
from benchmarks import engine
from strategies.base import HyperparameterError, build_config

# MAS's paper λ = 1 passes SGD's stability limit at lr 0.1 on the blobs (its Ω grows with
# the logits' size; tests/test_mas.py checks the limit): the contract runs it at λ = 0.01.
SETTINGS = {"mas": {"lambda": 0.01}}


def config_variants() -> list[tuple[str, dict]]:
    """(name, hyperparameters): the defaults, then each non-default value of a Literal field."""
    variants = []
    for name in strategies.list_strategies():
        variants.append((name, dict(SETTINGS.get(name, {}))))
        config_class = strategies.get_strategy(name).Config
        hints = typing.get_type_hints(config_class)
        for field in dataclasses.fields(config_class):
            if typing.get_origin(hints[field.name]) is typing.Literal:
                for value in typing.get_args(hints[field.name]):
                    if value != field.default:
                        variants.append(
                            (name, {**SETTINGS.get(name, {}), field.name.rstrip("_"): value})
                        )
    return variants


VARIANTS = config_variants()
VARIANT_IDS = [
    name + "".join(f"-{key}={value}" for key, value in hyperparameters.items())
    for name, hyperparameters in VARIANTS
]


def train(name, hyperparameters, blob_tensors, scenario, training, seed=0):
    """engine.run on the blobs; returns the result, the strategy and the trained head.

    The engine keeps its head to itself, so the strategy's `after_experience` is wrapped
    (on the instance) to hand the head out; it is the last hook to touch the head.
    """
    strategy = strategies.create(name, hyperparameters)
    strategy.validate(scenario.experience_sizes)
    heads = []
    after_experience = strategy.after_experience

    def recording(head, experience):
        after_experience(head, experience)
        heads.append(head)

    strategy.after_experience = recording
    result = engine.run(strategy, *blob_tensors, scenario, training, bias=True, seed=seed)
    return result, strategy, heads[-1]


_TRAINED: dict[tuple, tuple] = {}


@pytest.fixture(params=VARIANTS, ids=VARIANT_IDS)
def trained(request, blob_tensors, scenario_2_2, training):
    """One engine run per variant, shared by the read-only tests below (the fixtures are
    deterministic, so every test would train the same head)."""
    name, hyperparameters = request.param
    key = (name, tuple(sorted(hyperparameters.items())))
    if key not in _TRAINED:
        _TRAINED[key] = train(name, hyperparameters, blob_tensors, scenario_2_2, training)
    result, strategy, head = _TRAINED[key]
    return name, hyperparameters, result, strategy, head


def test_head_grows_to_all_seen_classes(trained):
    _, _, _, _, head = trained
    # scenario_2_2 brings 2 + 2 + 2 classes of 16-dimensional blob features.
    assert head.num_classes == 6
    assert tuple(head.weight.shape) == (6, 16)
    assert tuple(head.bias.shape) == (6,)


def test_logits_on_test_features_are_finite(trained, blob_tensors):
    _, _, _, strategy, head = trained
    test_features = blob_tensors[2]
    with torch.no_grad():
        logits = strategy.predict(head, test_features)
    assert tuple(logits.shape) == (len(test_features), 6)
    assert torch.isfinite(logits).all()


def test_current_experience_accuracy_beats_chance(trained):
    _, _, result, _, _ = trained
    for index, row in enumerate(result.accuracy_matrix):
        num_seen = 2 * (index + 1)  # two classes per experience
        assert row[index] > 1 / num_seen, f"R[{index}][{index}] = {row[index]}"


@pytest.mark.parametrize("name, hyperparameters", VARIANTS, ids=VARIANT_IDS)
def test_same_seed_gives_identical_results(
    name, hyperparameters, blob_tensors, scenario_2_2, training
):
    first, _, first_head = train(name, hyperparameters, blob_tensors, scenario_2_2, training)
    second, _, second_head = train(name, hyperparameters, blob_tensors, scenario_2_2, training)
    assert first.accuracy_matrix == second.accuracy_matrix
    # The matrix saturates near 1.0 on the blobs; the losses and the head are exact too.
    assert first.train_loss == second.train_loss
    assert torch.equal(first_head.weight, second_head.weight)
    assert torch.equal(first_head.bias, second_head.bias)


@pytest.mark.parametrize("name", strategies.list_strategies())
def test_different_seed_gives_a_different_head(name, blob_tensors, scenario_2_2, training):
    # The seed draws the initial rows and the minibatch order. A statistics-only strategy
    # (`trains_head = False`) has neither: its head is computed from the data, and the one
    # seeded draw there is (ridge's random projection) is checked in test_ridge.py.
    if not strategies.get_strategy(name).trains_head:
        pytest.skip("statistics-only: the seed draws no initial rows and no minibatch order")
    settings = SETTINGS.get(name, {})
    _, _, head_0 = train(name, settings, blob_tensors, scenario_2_2, training, seed=0)
    _, _, head_1 = train(name, settings, blob_tensors, scenario_2_2, training, seed=1)
    assert not torch.equal(head_0.weight, head_1.weight)


def test_state_dict_round_trips(trained, blob_tensors):
    name, hyperparameters, _, strategy, head = trained
    state = strategy.state_dict()
    fresh = strategies.create(name, hyperparameters)
    fresh.load_state_dict(state)

    reloaded = fresh.state_dict()
    assert reloaded.keys() == state.keys()
    for key, value in state.items():
        # Buffers are tensors; `get_extra_state` may carry plain Python values too.
        if isinstance(value, torch.Tensor):
            assert torch.equal(reloaded[key], value), key
        else:
            assert reloaded[key] == value, key

    # Move the head away from any anchor or snapshot, so penalties and distillation terms
    # are non-zero and the carried state shows in the loss.
    moved = copy.deepcopy(head)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        moved.weight.add_(0.5 * torch.randn(moved.weight.shape, generator=generator))
        moved.bias.add_(0.5 * torch.randn(moved.bias.shape, generator=generator))
    features, targets = blob_tensors[2], blob_tensors[3]
    # A batch of the last experience's classes, as the loss sees during training.
    last = targets >= 4
    features, targets = features[last], targets[last]
    with torch.no_grad():
        expected = strategy.loss(moved(features), targets, features, moved)
        actual = fresh.loss(moved(features), targets, features, moved)
    assert torch.equal(actual, expected), f"{actual.item()} != {expected.item()}"
    # Statistics-only strategies score from their buffers, not from the head.
    with torch.no_grad():
        assert torch.equal(fresh.predict(moved, features), strategy.predict(moved, features))


@pytest.mark.parametrize("name", strategies.list_strategies())
@pytest.mark.bad_input
def test_unknown_hyperparameter_is_refused_with_the_accepted_keys(name):
    config_class = strategies.get_strategy(name).Config
    # Config keys are the field names with a trailing underscore dropped (`lambda_`).
    accepted = [field.name.rstrip("_") for field in dataclasses.fields(config_class)]
    with pytest.raises(HyperparameterError) as error:
        build_config(name, config_class, {"learning_rte": 0.1})
    message = str(error.value)
    assert f"strategies.{name}.learning_rte" in message
    assert "accepted:" in message
    for key in accepted or ["none"]:
        assert key in message.split("accepted:")[1]
    with pytest.raises(HyperparameterError, match="learning_rte"):
        strategies.create(name, {"learning_rte": 0.1})


@pytest.mark.parametrize(
    "name, key, value, accepted",
    [
        ("ewc", "lambda", "big", "float"),
        ("ewc", "lambda", True, "float"),  # a bool is not a number here
        ("lwf", "temperature", float("nan"), "float"),  # nor is a non-finite float
        ("ewc", "mode", "offline", "'separate' | 'online'"),
        ("lwf", "ce_scope", "all", "'seen' | 'new'"),
        ("weight_aligning", "align_bias", 1, "bool"),
    ],
)
@pytest.mark.bad_input
def test_wrong_type_is_refused_naming_the_key_and_the_accepted_type(name, key, value, accepted):
    config_class = strategies.get_strategy(name).Config
    with pytest.raises(HyperparameterError) as error:
        build_config(name, config_class, {key: value})
    message = str(error.value)
    assert f"strategies.{name}.{key}" in message
    assert repr(value) in message
    assert accepted in message


def test_build_config_accepts_and_coerces_a_valid_value():
    # An integer is a valid float (TOML writes `lambda = 100`); it is stored as a float.
    config = build_config("ewc", strategies.get_strategy("ewc").Config, {"lambda": 100})
    assert config.lambda_ == 100.0 and isinstance(config.lambda_, float)
