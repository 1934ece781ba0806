"""new_label_detector (common practice: a frozen head plus one sigmoid detector per new
label): the frozen rows bit-identical (the copy-back after every step, same code path and
machine), the first experience exactly naive's, the decision rule and the calibrated
threshold on hand-made cases, the detectors' loss against torch's BCE, the pseudo-negatives'
moments within tolerances derived for n draws, and the refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_bad_input import arrays, assert_refused, bench

import strategies
from benchmarks import engine
from benchmarks.scenario import Scenario
from strategies.base import Experience, Head, HyperparameterError
from strategies.new_label_detector import calibrated_threshold, gaussian_samples


def recorded_run(hyperparameters, blob_tensors, scenario, training, seed=0, name=None):
    """engine.run, with copies of the head's parameters as each experience ends (and, in
    `strategy.starts`, as its training starts)."""
    strategy = strategies.create(name or "new_label_detector", hyperparameters)
    strategy.validate(scenario.experience_sizes)
    starts, ends = [], []
    before, after = strategy.before_experience, strategy.after_experience

    def recording_before(head, experience):
        before(head, experience)
        starts.append({k: v.detach().clone() for k, v in head.named_parameters()})

    def recording(head, experience):
        after(head, experience)
        ends.append({k: v.detach().clone() for k, v in head.named_parameters()})

    strategy.before_experience, strategy.after_experience = recording_before, recording
    result = engine.run(strategy, *blob_tensors, scenario, training, True, seed)
    strategy.starts = starts
    return result, strategy, ends


OPTIMIZERS = {
    "sgd-momentum-decay": {"momentum": 0.9, "weight_decay": 0.05},
    "adam-decay": {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.05},
}
SETTINGS = {
    "pseudo": {},
    "memory": {"memory_size": 12, "pseudo_negatives": 0.0},
    "calibrated": {"threshold": "calibrated"},
}


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
@pytest.mark.parametrize("options", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_head_and_earlier_detectors_stay_bit_identical(settings, options, blob_tensors, training):
    # One class per experience after a base of 2: four detectors accumulate on top.
    scenario = Scenario(list(range(6)), 2, 1)
    training = {**training, **options}
    _, strategy, ends = recorded_run(settings, blob_tensors, scenario, training)
    for index in range(1, scenario.num_experiences):
        num_old = scenario.boundaries[index]
        for name in ("weight", "bias"):
            assert torch.equal(ends[index][name][:num_old], ends[index - 1][name]), (name, index)
        # The detector itself trained.
        start = strategy.starts[index]["weight"][num_old:]
        assert not torch.equal(ends[index]["weight"][num_old:], start)


def test_rows_are_held_in_the_batched_seeds_path_too(blob_tensors, scenario_2_2, training):
    training = {**training, "weight_decay": 0.05}
    instances = [strategies.create("new_label_detector") for _ in range(2)]
    ends = {0: [], 1: []}
    for slot, strategy in enumerate(instances):
        after = strategy.after_experience

        def recording(head, experience, after=after, slot=slot):
            after(head, experience)
            ends[slot].append(head.weight.detach().clone())

        strategy.after_experience = recording
    engine.run_seeds(instances, *blob_tensors, scenario_2_2, training, True, [0, 1])
    for slot in (0, 1):
        for index in (1, 2):
            num_old = scenario_2_2.boundaries[index]
            assert torch.equal(ends[slot][index][:num_old], ends[slot][index - 1])


def test_the_first_experience_trains_exactly_as_naive(blob_tensors, scenario_2_2, training):
    _, _, detector_ends = recorded_run({}, blob_tensors, scenario_2_2, training)
    _, _, naive_ends = recorded_run({}, blob_tensors, scenario_2_2, training, name="naive")
    for name in ("weight", "bias"):
        assert torch.equal(detector_ends[0][name], naive_ends[0][name])


def hand_made(thresholds):
    """Two base classes and two detectors in 2 dimensions, weights set by hand:
    class 0: x₁; class 1: x₂; detector 2: x₁ + x₂ − 3; detector 3: −x₁ + x₂ − 1."""
    head = Head(2)
    head.append_rows(
        torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 1.0]]),
        torch.tensor([0.0, 0.0, -3.0, -1.0]),
    )
    strategy = strategies.create("new_label_detector")
    strategy.base_classes = 2
    strategy.threshold_logits = torch.tensor([math.log(t / (1 - t)) for t in thresholds])
    return strategy, head


@pytest.mark.parametrize(
    "thresholds, point, expected",
    [
        # detectors' logits (−1, −3): none exceeds p = 0.5 (logit 0): the head, argmax x₁
        ((0.5, 0.5), (2.0, 0.0), 0),
        # detector 2 has logit 1 > 0 and beats detector 3's −1
        ((0.5, 0.5), (2.0, 2.0), 2),
        # detector 3: logit 2 against detector 2's 0
        ((0.5, 0.5), (0.0, 3.0), 3),
        # detector 3 is most confident at logit 0, p = 0.5 exactly: not above 0.5, the head
        ((0.5, 0.5), (0.0, 1.0), 1),
        # t = 0.8: detector 2's p = σ(1) = 0.731 does not exceed it; the head ties x₁ = x₂ = 2
        # and takes the first class
        ((0.8, 0.8), (2.0, 2.0), 0),
        # t = 0.8: detector 3's p = σ(2) = 0.881 does
        ((0.8, 0.8), (0.0, 3.0), 3),
        # per-detector thresholds: detector 2 is the most confident (logit 2, p = 0.881 < 0.9)
        # and does not fire; detector 3 (logit 0) is not consulted: the head, argmax x₁ = 3
        ((0.9, 0.4), (3.0, 2.0), 0),
    ],
)
def test_decision_rule_on_a_hand_made_case(thresholds, point, expected):
    strategy, head = hand_made(thresholds)
    with torch.no_grad():
        scores = strategy.predict(head, torch.tensor([point]))
    assert torch.isfinite(scores).all()
    assert scores.argmax(dim=1).item() == expected


def test_prediction_before_any_detector_is_the_heads():
    strategy, head = hand_made((0.5, 0.5))
    strategy.base_classes = 4  # all four rows are the head's
    features = torch.tensor([[2.0, 2.0], [0.0, 3.0]])
    with torch.no_grad():
        assert torch.equal(strategy.predict(head, features), head(features))


def test_detector_loss_is_bce_of_the_new_columns(blob_tensors):
    # Experience with old classes 0, 1 (pseudo-negatives) and new classes 2, 3.
    strategy = strategies.create("new_label_detector")
    features, targets = blob_tensors[0][:200], blob_tensors[1][:200]  # classes 0..4
    strategy.num_old = 2
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(len(targets), 4, generator=generator)  # seen = 4
    targets = targets.clamp(max=3)
    loss = strategy.loss(logits, targets, features, Head(features.shape[1]))
    # Independently: detector c's labels are 1 on class c, 0 elsewhere (old classes too).
    expected = sum(
        F.binary_cross_entropy_with_logits(logits[:, c], (targets == c).float(), reduction="sum")
        for c in (2, 3)
    ) / len(targets)
    assert torch.allclose(loss, expected, rtol=1e-6, atol=0), (loss, expected)


def test_pseudo_negatives_have_the_stored_moments():
    # Σ with a correlation and one zero-variance direction (a constant feature).
    means = torch.tensor([[1.0, -2.0, 0.5], [4.0, 0.0, 0.0]], dtype=torch.float64)
    covariance = torch.tensor(
        [[2.0, 0.6, 0.0], [0.6, 0.5, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64
    )
    n = 20_000
    torch.manual_seed(0)
    samples, classes = gaussian_samples(means, covariance, n)
    assert samples.shape == (2 * n, 3) and torch.equal(
        classes, torch.arange(2).repeat_interleave(n)
    )
    variance = covariance.diagonal()
    for k in range(2):
        drawn = samples[classes == k]
        # Mean of n Gaussian draws: sd sqrt(Σ_jj / n); 5 sd (two-sided 6e-7 per coordinate).
        assert ((drawn.mean(0) - means[k]).abs() <= 5 * (variance / n).sqrt() + 1e-12).all()
        # Sample covariance entry: sd sqrt((Σ_ij² + Σ_ii Σ_jj) / n) (Isserlis); 5 sd.
        sample_covariance = torch.cov(drawn.T)
        sd = ((covariance.square() + variance[:, None] * variance[None, :]) / n).sqrt()
        assert ((sample_covariance - covariance).abs() <= 5 * sd + 1e-12).all()
        # The constant feature stays at its mean (float64 rounding only).
        assert torch.allclose(drawn[:, 2], means[k, 2].expand(n), atol=1e-12, rtol=0)


def test_stored_statistics_are_class_means_and_the_pooled_covariance(blob_tensors):
    strategy = strategies.create("new_label_detector")
    features, targets = blob_tensors[0], blob_tensors[1]
    head = Head(features.shape[1])
    for index, (low, high) in enumerate([(0, 2), (2, 4)]):
        chosen = (targets >= low) & (targets < high)
        experience = Experience(index, low, high, features[chosen], targets[chosen])
        strategy.expand(head, high - low)
        strategy.after_experience(head, experience)
    x, y = features[targets < 4].double().numpy(), targets[targets < 4].numpy()
    means = np.stack([x[y == c].mean(axis=0) for c in range(4)])
    residuals = x - means[y]
    np.testing.assert_allclose(strategy.means.numpy(), means, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        strategy.covariance.numpy(), residuals.T @ residuals / len(y), rtol=0, atol=1e-12
    )


def test_training_set_holds_pseudo_negatives_of_every_old_class(blob_tensors):
    strategy = strategies.create("new_label_detector", {"pseudo_negatives": 0.5})
    features, targets = blob_tensors[0], blob_tensors[1]  # 40 per class
    head = Head(features.shape[1])
    base = targets < 2
    strategy.after_experience(head, Experience(0, 0, 2, features[base], targets[base]))
    new = (targets >= 2) & (targets < 4)
    _, trained_targets = strategy.training_set(Experience(1, 2, 4, features[new], targets[new]))
    # r · n̄ = 0.5 · 40 = 20 draws for each old class, after the 80 new samples.
    assert torch.bincount(trained_targets).tolist() == [20, 20, 40, 40]


def test_calibrated_threshold_by_hand():
    # Scores −1, 0.5, 2, 2.5, 3: midpoints −0.25, 1.25, 2.25, 2.75 give TPR + TNR
    # 1 + 1/3, 1 + 2/3, 1/2 + 2/3, 1/2 + 1: the best is 1.25.
    positives, negatives = torch.tensor([2.0, 3.0]), torch.tensor([-1.0, 0.5, 2.5])
    assert calibrated_threshold(positives, negatives) == 1.25
    # Midpoints −2, 2, 4 give 1.5, 1, 1.5: the tie goes to the one nearest even odds.
    assert calibrated_threshold(torch.tensor([1.0, 5.0]), torch.tensor([-5.0, 3.0])) == -2.0
    assert calibrated_threshold(torch.tensor([1.0]), torch.tensor([])) == 0.0


def test_calibration_reads_no_test_data(blob_tensors, scenario_2_2, training):
    train_features, train_targets, test_features, test_targets = blob_tensors
    calibrated = {"threshold": "calibrated"}
    _, first, _ = recorded_run(calibrated, blob_tensors, scenario_2_2, training)
    other_test = (test_features + 1.0, test_targets)  # a different test set
    _, second, _ = recorded_run(
        calibrated, (train_features, train_targets, *other_test), scenario_2_2, training
    )
    assert torch.equal(first.threshold_logits, second.threshold_logits)
    assert len(first.threshold_logits) == 4  # one per detector, none for the base classes
    assert not torch.equal(first.threshold_logits, torch.zeros(4))  # chosen, not 0.5


@pytest.mark.parametrize("threshold", [0, 1, 1.5, -0.1, "calibrate", True])
@pytest.mark.bad_input
def test_threshold_outside_the_open_interval_is_refused(threshold):
    with pytest.raises(HyperparameterError, match="threshold"):
        strategies.create("new_label_detector", {"threshold": threshold})


@pytest.mark.bad_input
def test_a_detector_without_negatives_is_refused():
    strategy = strategies.create("new_label_detector", {"pseudo_negatives": 0})
    strategy.validate([2, 2, 2])  # each detector has the other new class as negatives
    with pytest.raises(HyperparameterError, match="experience 2's single new class"):
        strategy.validate([2, 2, 1])
    # With a memory the exemplars are negatives.
    strategies.create("new_label_detector", {"pseudo_negatives": 0, "memory_size": 10}).validate(
        [2, 1, 1]
    )


DETECTOR = ["--strategy", "new_label_detector", "--set", "training.epochs=1"]


@pytest.mark.parametrize(
    "options, message",
    [
        (
            ["--set", "strategies.new_label_detector.threshold=1.0"],
            "strategies.new_label_detector.threshold = 1.0 is not accepted; use a "
            "probability in (0, 1) or 'calibrated'",
        ),
        (
            ["--set", "strategies.new_label_detector.threshold=0"],
            "strategies.new_label_detector.threshold = 0.0 is not accepted",
        ),
        (
            [
                "--set",
                "scenario.increment=1",
                "--set",
                "strategies.new_label_detector.pseudo_negatives=0",
            ],
            "new_label_detector: experience 1's single new class has no negatives",
        ),
    ],
)
@pytest.mark.bad_input
def test_bad_detector_settings_are_one_line_exit_2_nothing_written(
    options, message, tmp_path, capsys
):
    config = bench(tmp_path, arrays())
    assert_refused(capsys, ["run", config, *DETECTOR, *options], tmp_path / "out", message)
