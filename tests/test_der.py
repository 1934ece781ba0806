"""DER / DER++ (Buzzega et al., NeurIPS 2020): the masked MSE by hand, the loss against
torch.nn.functional on a memory the draws cannot change, reservoir sampling by hand and by
exact counting (every sample kept with probability M/n), the memory through the engine,
the class-balanced option, bad input, and the digits demo through `headbench`."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import strategies
from benchmarks import engine
from benchmarks.cli import main
from strategies.base import Experience, Head, HyperparameterError
from strategies.der import dark_mse, reservoir_slots


def test_masked_mse_by_hand():
    outputs = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]])
    stored = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 2.0]])  # row 0 stored with 2 columns
    columns = torch.tensor([2, 3])
    # Entries compared: 1², 2² (row 0); 1², 2², 3² (row 1): 19 over 5.
    assert dark_mse(outputs, stored, columns).item() == pytest.approx(19 / 5)
    # With every column present it is F.mse_loss (mammoth's).
    full = torch.tensor([3, 3])
    assert dark_mse(outputs, stored, full).item() == pytest.approx(F.mse_loss(outputs, stored))
    # A stored vector narrower than the head: only its columns are compared.
    wider = torch.cat([outputs, torch.full((2, 2), 100.0)], dim=1)
    assert dark_mse(wider, stored, columns).item() == pytest.approx(19 / 5)


def test_reservoir_by_hand():
    # M = 3, a batch of 5 from the stream's start: the first three fill slots 0, 1, 2; the
    # fourth (n = 4) draws ⌊0.5·4⌋ = 2 < 3 and replaces slot 2; the fifth (n = 5) draws
    # ⌊0.9·5⌋ = 4 ≥ 3 and is not stored.
    uniforms = torch.tensor([0.7, 0.1, 0.3, 0.5, 0.9], dtype=torch.float64)
    assert reservoir_slots(0, 3, uniforms) == [(0, 0), (1, 1), (2, 3)]
    # Later in the stream, nothing has room: n = 11 draws ⌊0.2·11⌋ = 2.
    assert reservoir_slots(10, 3, torch.tensor([0.2, 0.99], dtype=torch.float64)) == [(2, 0)]


@pytest.mark.parametrize("batches", [[6], [2, 4], [1, 1, 1, 1, 1, 1]])
def test_reservoir_keeps_every_sample_with_probability_m_over_n(batches):
    # Exact counting over every equally likely draw: the k-th sample (k = 1..n, k > M) draws
    # r uniformly from {0, ..., k − 1}; feeding u = (r + ½)/k makes ⌊u·k⌋ = r. Over all
    # 4·5·6 = 120 outcomes for n = 6, M = 3, each sample must be in memory in 120·3/6 = 60.
    capacity, total = 3, 6
    ranges = [range(k) for k in range(capacity + 1, total + 1)]
    kept = [0] * total
    outcomes = 0
    for draws in itertools.product(*ranges):
        uniforms = [0.5] * capacity + [
            (r + 0.5) / k for r, k in zip(draws, range(4, 7), strict=True)
        ]
        memory = [None] * capacity
        seen = 0
        for size in batches:
            batch = torch.tensor(uniforms[seen : seen + size], dtype=torch.float64)
            for slot, position in reservoir_slots(seen, capacity, batch):
                memory[slot] = seen + position
            seen += size
        for sample in memory:
            kept[sample] += 1
        outcomes += 1
    assert outcomes == 120
    assert kept == [60] * total


def der_with_memory(hyperparameters, features, targets, logits, columns):
    strategy = strategies.create("der", hyperparameters)
    strategy.memory_features, strategy.memory_targets = features, targets
    strategy.memory_logits, strategy.memory_columns = logits, columns
    strategy.num_seen = torch.tensor(len(targets))
    strategy.random_state = torch.Generator().manual_seed(0).get_state()
    return strategy


@pytest.mark.parametrize("plus", [False, True])
def test_loss_equals_an_independent_computation(plus):
    # The memory holds as many samples as the batch, so each draw takes all of them (in
    # some order) and the means over the draw do not depend on it.
    generator = torch.Generator().manual_seed(0)
    head = Head(3)
    head.append_rows(torch.randn(4, 3, generator=generator))
    memory_features = torch.randn(3, 3, generator=generator)
    memory_targets = torch.tensor([0, 1, 3])
    stored = torch.randn(3, 4, generator=generator)
    stored[:2, 2:] = 0.0  # stored when the head had 2 classes
    columns = torch.tensor([2, 2, 4])
    alpha, beta = 0.3, 0.5
    strategy = der_with_memory(
        {"alpha": alpha, "beta": beta, "plus": plus, "capacity": 10},
        memory_features,
        memory_targets,
        stored,
        columns,
    )
    features = torch.randn(3, 3, generator=generator)
    targets = torch.tensor([2, 3, 3])
    logits = head(features)
    loss = strategy.loss(logits, targets, features, head)

    with torch.no_grad():
        outputs = head(memory_features)
        squares = [
            ((outputs[i, :c] - stored[i, :c]) ** 2).sum() for i, c in enumerate(columns.tolist())
        ]
        expected = F.cross_entropy(logits, targets) + alpha * sum(squares) / columns.sum()
        if plus:
            expected = expected + beta * F.cross_entropy(outputs, memory_targets)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_the_step_stores_its_samples_with_the_logits_of_that_step():
    torch.manual_seed(0)
    strategy = strategies.create("der", {"capacity": 100})
    head = Head(3)
    strategy.expand(head, 2)
    features, targets = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    strategy.before_experience(head, Experience(0, 0, 2, features, targets))
    logits = head(features)
    strategy.loss(logits, targets, features, head)
    assert torch.equal(strategy.memory_features, features)
    assert torch.equal(strategy.memory_targets, targets)
    assert torch.equal(strategy.memory_logits, logits.detach())
    assert strategy.memory_columns.tolist() == [2] * 4 and int(strategy.num_seen) == 4
    # The head grows: stored vectors are padded, their column count stays.
    strategy.expand(head, 1)
    strategy.before_experience(head, Experience(1, 2, 3, features, targets))
    assert strategy.memory_logits.shape == (4, 3)
    assert torch.equal(strategy.memory_logits[:, 2], torch.zeros(4))
    assert strategy.memory_columns.tolist() == [2] * 4


def test_memory_through_the_engine(blob_tensors, scenario_2_2, training):
    # Every presentation is a sample of the stream: epochs × training samples in all.
    strategy = strategies.create("der", {"capacity": 12})
    strategy.validate(scenario_2_2.experience_sizes)
    engine.run(strategy, *blob_tensors, scenario_2_2, training, True, 0)
    assert int(strategy.num_seen) == training["epochs"] * len(blob_tensors[1])
    assert len(strategy.memory_targets) == 12
    assert set(strategy.memory_columns.tolist()) <= {2, 4, 6}
    assert strategy.memory_logits.shape == (12, 6)


def test_class_balanced_memory_through_the_engine(blob_tensors, scenario_2_2, training):
    strategy = strategies.create("der", {"capacity": 12, "sampling": "class_balanced"})
    engine.run(strategy, *blob_tensors, scenario_2_2, training, True, 0)
    # GDumb's rule: 12 / 6 classes = 2 of each once all have arrived.
    assert torch.bincount(strategy.memory_targets, minlength=6).tolist() == [2] * 6


@pytest.mark.bad_input
def test_capacity_below_the_number_of_classes_is_refused(scenario_2_2):
    strategy = strategies.create("der", {"capacity": 5})
    with pytest.raises(HyperparameterError, match="use capacity >= 6"):
        strategy.validate(scenario_2_2.experience_sizes)


@pytest.mark.parametrize(
    "hyperparameters, message",
    [
        ({"capacity": 0}, "strategies.der.capacity = 0 must be >= 1"),
        ({"alpha": -1.0}, "strategies.der.alpha = -1.0 must be >= 0"),
        ({"sampling": "fifo"}, "'reservoir' | 'class_balanced'"),
    ],
)
@pytest.mark.bad_input
def test_bad_hyperparameters_are_refused(hyperparameters, message):
    with pytest.raises(HyperparameterError, match=message):
        strategies.create("der", hyperparameters)


TINY_DIGITS = ["--seeds", "0", "--set", "training.epochs=1", "--set", "backbone.epochs=1"]
TINY_DIGITS += ["--set", "backbone.width=4", "--quiet", "--device", "cpu"]


def test_the_digits_demo_runs_der_plus_plus_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    argv = ["run", "digits_b5_inc1", "--strategy", "der", "--out", str(out), *TINY_DIGITS]
    code = main([*argv, "--set", "strategies.der.plus=true"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (record,) = [json.loads(path.read_text()) for path in (out / "runs").glob("*.json")]
    assert record["strategy"] == "der" and record["display_name"] == "DER++"
    assert record["config"]["strategies"]["der"]["plus"] is True
    assert len(record["accuracy_matrix"]) == 6
    assert "DER++" in captured.out


@pytest.mark.bad_input
def test_capacity_below_the_classes_through_the_cli_is_one_line_and_exit_2(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    argv = ["run", "digits_b5_inc1", "--strategy", "der", "--out", str(out), *TINY_DIGITS]
    code = main([*argv, "--set", "strategies.der.capacity=5"])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "use capacity >= 10" in lines[0], captured.err
    assert not Path(out / "runs").exists() or not list((out / "runs").iterdir())
