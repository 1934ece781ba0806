"""SEQ* (Zheng, Qiu & Ma, ACL 2024) and the `freeze_old_rows` flag: the old classes' rows,
biases and a cosine head's σ stay bit-identical (a copy written back after every step, on
the same code path and machine), the new rows train, the first experience is naive's, and
one SGD trajectory checked against a scalar recursion written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

import strategies
from benchmarks import engine
from strategies.base import CosineHead, Head
from strategies.seq_star import SeqStar

HELD = ("weight", "bias", "scale")


def recorded_run(name, hyperparameters, blob_tensors, scenario, training, head_kind, seed=0):
    """engine.run, with copies of the head as each experience starts training (after
    `expand`) and as it ends (after `after_experience`)."""
    strategy = strategies.create(name, hyperparameters)
    starts, ends = [], []
    before, after = strategy.before_experience, strategy.after_experience

    def snapshot(head):
        return {k: v.detach().clone() for k, v in head.named_parameters()}

    def recording_before(head, experience):
        before(head, experience)
        starts.append(snapshot(head))

    def recording_after(head, experience):
        after(head, experience)
        ends.append(snapshot(head))

    strategy.before_experience, strategy.after_experience = recording_before, recording_after
    bias = head_kind == "linear"
    result = engine.run(strategy, *blob_tensors, scenario, training, bias, seed, head_kind)
    return result, starts, ends


def assert_old_rows_held(starts, ends, scenario):
    """After experience i ≥ 1 the first num_old rows (and σ) equal those of experience i − 1
    bit for bit; the new rows moved from their initial values."""
    for index in range(1, scenario.num_experiences):
        num_old = scenario.boundaries[index]
        for name in set(ends[index]) & set(HELD):
            trained, previous = ends[index][name], ends[index - 1][name]
            if name == "scale":
                assert torch.equal(trained, previous), f"σ moved in experience {index}"
            else:
                assert torch.equal(trained[:num_old], previous), f"old {name}, exp. {index}"
        new_rows = ends[index]["weight"][num_old:]
        assert not torch.equal(new_rows, starts[index]["weight"][num_old:])


OPTIMIZERS = {
    "sgd-momentum-decay": {"momentum": 0.9, "weight_decay": 0.05},
    "adam-decay": {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.05},
}


@pytest.mark.parametrize("head_kind", ["linear", "cosine"])
@pytest.mark.parametrize("options", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_old_rows_biases_and_scale_stay_bit_identical(
    options, head_kind, blob_tensors, scenario_2_2, training
):
    training = {**training, **options}
    result, starts, ends = recorded_run(
        "seq_star", {}, blob_tensors, scenario_2_2, training, head_kind
    )
    assert_old_rows_held(starts, ends, scenario_2_2)
    # So the old classes' logits on every input are unchanged: among old classes no
    # prediction can change; forgetting can only come from a new class outscoring them.
    features = blob_tensors[2]
    head = CosineHead(features.shape[1]) if head_kind == "cosine" else Head(features.shape[1])
    logits = []
    for index, end in enumerate(ends):
        with torch.no_grad():
            logits.append(torch.func.functional_call(head, end, (features,)))
        if index > 0:
            num_old = scenario_2_2.boundaries[index]
            assert torch.equal(logits[index][:, :num_old], logits[index - 1])
    # The same optimizer moves the old rows of naive: weight decay and momentum (and the
    # cross-entropy's gradient) act on every row unless they are written back.
    _, _, naive_ends = recorded_run("naive", {}, blob_tensors, scenario_2_2, training, head_kind)
    assert not torch.equal(naive_ends[1]["weight"][:2], naive_ends[0]["weight"])


@pytest.mark.parametrize("head_kind", ["linear", "cosine"])
def test_the_first_experience_trains_exactly_as_naive(
    head_kind, blob_tensors, scenario_2_2, training
):
    star, _, star_ends = recorded_run(
        "seq_star", {}, blob_tensors, scenario_2_2, training, head_kind
    )
    naive, _, naive_ends = recorded_run(
        "naive", {}, blob_tensors, scenario_2_2, training, head_kind
    )
    assert star.accuracy_matrix[0] == naive.accuracy_matrix[0]
    assert star.train_loss[0] == naive.train_loss[0]
    for name, value in naive_ends[0].items():
        assert torch.equal(star_ends[0][name], value), name
    # Afterwards they part: naive trains the old rows too.
    assert not torch.equal(star_ends[1]["weight"], naive_ends[1]["weight"])


def test_seq_star_with_the_flag_off_is_naive(blob_tensors, scenario_2_2, training):
    off, _, off_ends = recorded_run(
        "seq_star", {"freeze_old_rows": False}, blob_tensors, scenario_2_2, training, "linear"
    )
    naive, _, naive_ends = recorded_run("naive", {}, blob_tensors, scenario_2_2, training, "linear")
    assert off.accuracy_matrix == naive.accuracy_matrix
    assert torch.equal(off_ends[-1]["weight"], naive_ends[-1]["weight"])


FLAGGED = [
    ("naive", {}, "linear"),
    ("replay", {"memory_size": 12}, "linear"),
    ("ewc", {"lambda": 5000.0}, "linear"),  # stiff on old rows, which the flag holds anyway
    ("ewc", {"lambda": 100.0}, "cosine"),
    ("lwf", {"ce_scope": "seen"}, "cosine"),
    ("weight_aligning", {}, "linear"),  # after_update (clipping) and the hold, both
    ("bic", {"memory_size": 12}, "linear"),
]


@pytest.mark.parametrize("name, hyperparameters, head_kind", FLAGGED)
def test_the_flag_holds_old_rows_on_other_strategies(
    name, hyperparameters, head_kind, blob_tensors, scenario_2_2, training
):
    training = {**training, "weight_decay": 0.05}
    flagged = {**hyperparameters, "freeze_old_rows": True}
    result, starts, ends = recorded_run(
        name, flagged, blob_tensors, scenario_2_2, training, head_kind
    )
    assert_old_rows_held(starts, ends, scenario_2_2)
    assert all(row[index] > 0.5 for index, row in enumerate(result.accuracy_matrix))
    # Off by default.
    assert strategies.create(name, hyperparameters).config.freeze_old_rows is False


def test_ewc_with_held_rows_skips_the_stability_check():
    # The penalty's curvature lies on old rows (and σ), which the flag holds; new rows
    # carry no Fisher, so no parameter the optimizer keeps can be excited.
    ewc = strategies.create("ewc", {"freeze_old_rows": True})
    ewc.importance_weight = torch.full((2, 3), 10.0)
    assert ewc.stability_error(0.1, 0.9) is None
    unheld = strategies.create("ewc")
    unheld.importance_weight = torch.full((2, 3), 10.0)
    assert unheld.stability_error(0.1, 0.9) is not None


class RecordingSeqStar(SeqStar):
    """Records the head as `recorded_run` does, in attributes the engine's batching test
    ignores (a leading underscore), so seeds still train as one batch."""

    def __init__(self) -> None:
        super().__init__()
        self._starts, self._ends = [], []

    def before_experience(self, head, experience):
        super().before_experience(head, experience)
        self._starts.append({k: v.detach().clone() for k, v in head.named_parameters()})

    def after_experience(self, head, experience):
        super().after_experience(head, experience)
        self._ends.append({k: v.detach().clone() for k, v in head.named_parameters()})


def test_batched_seeds_hold_old_rows_bit_identically(
    blob_tensors, scenario_2_2, training, monkeypatch
):
    # run_seeds writes the held rows back on views of each seed's slot of the stacked
    # heads; the trained slots are then copied into the seeds' heads.
    training = {**training, "optimizer": "adam", "lr": 0.01, "weight_decay": 0.05}
    runs = [RecordingSeqStar() for _ in range(2)]
    calls = []
    original = engine.batched_train_loop

    def counting(seed_runs, *args):
        calls.append(len(seed_runs))
        return original(seed_runs, *args)

    monkeypatch.setattr(engine, "batched_train_loop", counting)
    engine.run_seeds(runs, *blob_tensors, scenario_2_2, training, False, [0, 1], "cosine")
    assert calls == [2, 2, 2]  # every experience took the batched path
    for strategy in runs:
        assert_old_rows_held(strategy._starts, strategy._ends, scenario_2_2)


def hand_recursion(w0, b0, w1, b1, x, steps, lr, momentum, decay):
    """SGD with momentum and weight decay on the new row (w1, b1) of a 1-d, 2-class head
    whose old row (w0, b0) is fixed, one sample x of the new class per step, written out
    from torch.optim.SGD's documented update: g ← ∇ + decay·θ; v ← g (first step),
    v ← momentum·v + g after; θ ← θ − lr·v. For z = (w0·x + b0, w1·x + b1) and target 1,
    ∂(−log softmax(z)_1)/∂z_1 = p_1 − 1 = −1 / (1 + exp(z_1 − z_0))."""
    velocity = None
    for _ in range(steps):
        residual = -1.0 / (1.0 + math.exp((w1 * x + b1) - (w0 * x + b0)))
        gradient = (residual * x + decay * w1, residual + decay * b1)
        if velocity is None:
            velocity = gradient
        else:
            velocity = tuple(momentum * v + g for v, g in zip(velocity, gradient, strict=True))
        w1, b1 = w1 - lr * velocity[0], b1 - lr * velocity[1]
    return w1, b1


@pytest.mark.parametrize("name", ["seq_star", "naive"])
def test_a_one_dimensional_toy_follows_the_hand_recursion(name):
    w0, b0, w1, b1, x = 0.75, 0.25, -0.5, 0.0, 2.0
    lr, momentum, decay, steps = 0.5, 0.9, 0.1, 4
    head = Head(1)
    head.append_rows(torch.tensor([[w0]]), torch.tensor([b0]))  # the old class 0
    head.append_rows(torch.tensor([[w1]]), torch.tensor([b1]))  # the new class 1
    strategy = strategies.create(name)
    strategy.hold_old_rows(head, 1)
    training = {
        **dict(optimizer="sgd", lr=lr, momentum=momentum, weight_decay=decay),
        **dict(batch_size=1, schedule="constant"),
    }
    features, targets = torch.tensor([[x]]), torch.tensor([1])
    engine.train_loop(
        list(head.parameters()),
        lambda f, t: strategy.loss(head(f), t, f, head),
        strategy.after_step if strategy.needs_after_step() else None,
        head,
        features,
        targets,
        training,
        [torch.tensor([0])] * steps,
    )
    if name == "seq_star":
        assert head.weight[0].item() == w0 and head.bias[0].item() == b0  # bit for bit
        expected = hand_recursion(w0, b0, w1, b1, x, steps, lr, momentum, decay)
        # float32 against float64: a few roundings per step, relative 1e-5 is ample.
        assert head.weight[1].item() == pytest.approx(expected[0], rel=1e-5)
        assert head.bias[1].item() == pytest.approx(expected[1], rel=1e-5)
    else:  # naive: decay, momentum and the gradient p_0·x move the old row
        assert head.weight[0].item() != w0 and head.bias[0].item() != b0


@pytest.mark.parametrize("head_kind", ["linear", "cosine"])
@pytest.mark.parametrize(
    "name, hyperparameters",
    [("ewc", {}), ("lwf", {"ce_scope": "seen"})],
    ids=["ewc", "lwf"],
)
def test_penalties_on_held_rows_only_leave_seq_star_unchanged(
    name, hyperparameters, head_kind, blob_tensors, scenario_2_2, training
):
    # EWC's penalty reaches only rows that have a Fisher (the old ones) and σ; LwF's
    # distillation reads only the old classes' logits, which depend on the old rows and σ
    # alone. With those held, the new rows get cross-entropy's gradient alone (plus exact
    # zeros), so the run is SEQ*'s bit for bit, though the loss values differ.
    flagged = {**hyperparameters, "freeze_old_rows": True}
    result, _, ends = recorded_run(name, flagged, blob_tensors, scenario_2_2, training, head_kind)
    star, _, star_ends = recorded_run(
        "seq_star", {}, blob_tensors, scenario_2_2, training, head_kind
    )
    assert result.accuracy_matrix == star.accuracy_matrix
    for key, value in star_ends[-1].items():
        assert torch.equal(ends[-1][key], value), key
