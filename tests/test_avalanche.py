"""Cross-validation against Avalanche on the Gaussian blobs.

1. headbench's engine vs a stock Avalanche `Naive` driving our strategy through
   `strategies.avalanche.as_plugin`: identical accuracy matrices and per-class weight norms,
   bit for bit, once Avalanche draws the engine's minibatch order (`EngineOrder`; its
   DataLoader otherwise shuffles from the global generator). The arithmetic is then the
   same: same initial rows (the plugin's own random stream), same logits, same loss, same
   SGD steps.
2. Our naive, ewc and lwf vs Avalanche's own Naive, EWC and LwF configured to the same
   definition, with the same initial rows (`EngineInitialRows`, biases 0: Avalanche's
   nn.Linear draws them otherwise) and minibatch order.
3. `benchmarks.from_avalanche`: an Avalanche benchmark through headbench's engine.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

warnings.filterwarnings("ignore", module="avalanche")  # its import warns about torch's version

from avalanche.benchmarks import nc_benchmark  # noqa: E402
from avalanche.benchmarks.utils import (  # noqa: E402
    _make_taskaware_tensor_classification_dataset as tensor_dataset,
)
from avalanche.core import SupervisedPlugin  # noqa: E402
from avalanche.evaluation.metrics import accuracy_metrics  # noqa: E402
from avalanche.models import IncrementalClassifier  # noqa: E402
from avalanche.training import EWC, LwF, Naive  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin  # noqa: E402
from avalanche.training.regularization import LearningWithoutForgetting  # noqa: E402

import strategies  # noqa: E402
from benchmarks import engine  # noqa: E402
from benchmarks.scenario import Scenario  # noqa: E402
from strategies.avalanche import as_plugin, supported  # noqa: E402
from strategies.base import HyperparameterError, distillation_kl, initial_rows  # noqa: E402
from strategies.ewc import empirical_fisher  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:No loggers specified"),
    pytest.mark.filterwarnings("ignore:Using a non-tuple sequence"),  # inside Avalanche's EWC
]

ORDER = [4, 1, 5, 0, 3, 2]  # not sorted within an experience: arrival order matters
DIM = 16
TRAINING = {
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "batch_size": 16,
    "epochs": 2,
    "schedule": "constant",
}


class EngineOrder(SupervisedPlugin):
    """Feeds Avalanche the minibatches the engine draws: one `randperm` per epoch from a
    generator seeded with the run's seed, sliced in `batch_size` pieces."""

    def __init__(self, seed: int, batch_size: int) -> None:
        super().__init__()
        self.shuffle = torch.Generator().manual_seed(seed)
        self.batch_size = batch_size

    def before_training_epoch(self, strategy, **kwargs) -> None:
        dataset = strategy.adapted_dataset
        order = torch.randperm(len(dataset), generator=self.shuffle).tolist()
        strategy.dataloader = DataLoader(
            Subset(dataset, order), batch_size=self.batch_size, collate_fn=dataset.collate_fn
        )


class EngineInitialRows(SupervisedPlugin):
    """For stock strategies on contiguous class ids: the new rows the engine draws
    (`initial_rows` from a generator seeded like `torch.manual_seed(seed)`), biases 0."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.state = torch.Generator().manual_seed(seed).get_state()
        self.num_old = 0

    @torch.no_grad()
    def before_training_exp(self, strategy, **kwargs) -> None:
        linear = strategy.model[0].classifier
        num_seen = self.num_old + len(strategy.experience.classes_in_this_experience)
        saved = torch.random.get_rng_state()
        torch.random.set_rng_state(self.state)
        linear.weight[self.num_old : num_seen] = initial_rows(num_seen - self.num_old, DIM)
        self.state = torch.random.get_rng_state()
        torch.random.set_rng_state(saved)
        linear.bias[self.num_old : num_seen] = 0.0
        self.num_old = num_seen


def avalanche_benchmark(blob_tensors, remap_ids: bool):
    train_x, train_y, test_x, test_y = blob_tensors
    return nc_benchmark(
        tensor_dataset(train_x, train_y),
        tensor_dataset(test_x, test_y),
        n_experiences=3,
        task_labels=False,
        fixed_class_order=ORDER,
        class_ids_from_zero_from_first_exp=remap_ids,
    )


def engine_run(name, hyperparameters, blob_tensors, training=TRAINING, seed=0):
    """The engine on the blobs in ORDER, B2 Inc2 (targets remapped to arrival order)."""
    scenario = Scenario(ORDER, 2, 2)
    train_x, train_y, test_x, test_y = blob_tensors
    position = torch.argsort(torch.tensor(ORDER))  # original id -> arrival id
    strategy = strategies.create(name, hyperparameters)
    return engine.run(
        strategy,
        train_x,
        position[train_y],
        test_x,
        position[test_y],
        scenario,
        training,
        True,
        seed,
    )


def avalanche_run(make_strategy, benchmark, training=TRAINING, plugins=()):
    """Train a stock Avalanche strategy experience by experience; its accuracy matrix
    (rows of seen experiences only) from Avalanche's own per-experience accuracy."""
    model = nn.Sequential(IncrementalClassifier(DIM, initial_out_features=2))
    optimizer = torch.optim.SGD(
        model.parameters(), lr=training["lr"], momentum=training["momentum"]
    )
    strategy = make_strategy(
        model=model,
        optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=training["batch_size"],
        train_epochs=training["epochs"],
        eval_mb_size=1000,
        evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]),
        plugins=[*plugins, EngineOrder(0, training["batch_size"])],
    )
    matrix = []
    for index, experience in enumerate(benchmark.train_stream):
        strategy.train(experience)
        metrics = strategy.eval(benchmark.test_stream[: index + 1])
        key = "Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{:03d}"
        matrix.append([metrics[key.format(j)] for j in range(index + 1)])
    return matrix, model


def seen_rows(result: engine.RunResult) -> list[list[float]]:
    return [row[: index + 1] for index, row in enumerate(result.accuracy_matrix)]


# -------------------------------------------------------------------------------------
# 1. Our strategies inside Avalanche: exact agreement with the engine


def _variant(name: str, hyperparameters: dict, remap_ids: bool, slow: bool = False):
    label = "-".join(f"{key}={value}" for key, value in hyperparameters.items())
    return pytest.param(
        name,
        hyperparameters,
        remap_ids,
        id=f"{name}{'-' + label if label else ''}-{'remapped' if remap_ids else 'original'}-ids",
        marks=[pytest.mark.slow] if slow else [],
    )


PLUGIN_VARIANTS = [
    _variant("naive", {}, False),
    _variant("naive", {}, True),  # contiguous ids: Avalanche's rows are headbench's rows
    _variant("ewc", {"lambda": 100.0}, False),
    _variant("ewc", {"lambda": 100.0, "mode": "online", "gamma": 0.5}, False, slow=True),
    _variant("lwf", {}, False),
    _variant("weight_aligning", {}, False),  # after_update (clipping), after_experience
    _variant("seq_star", {}, False),  # old rows held: written back after each step
    _variant("weight_aligning", {"freeze_old_rows": True}, False, slow=True),
    _variant("ncm", {}, False),  # statistics only: no minibatch loop, predict from the means
    _variant("slda", {}, False, slow=True),
    _variant("fecam", {}, False, slow=True),
    _variant("mas", {"lambda": 0.01}, False),  # EWC's penalty, MAS's importance
    _variant("ridge", {}, False, slow=True),  # random projection: the plugin's random stream
]


@pytest.mark.parametrize("name, hyperparameters, remap_ids", PLUGIN_VARIANTS)
def test_plugin_in_avalanche_naive_equals_the_engine_exactly(
    name, hyperparameters, remap_ids, blob_tensors
):
    expected = engine_run(name, hyperparameters, blob_tensors)
    plugin = as_plugin(name, seed=0, **hyperparameters)
    matrix, model = avalanche_run(
        Naive, avalanche_benchmark(blob_tensors, remap_ids), plugins=[plugin]
    )
    assert matrix == seen_rows(expected)
    # The matrix saturates near 1.0 on the blobs; the trained rows are exact too.
    assert plugin.weight_norms == expected.weight_norms
    assert plugin.arrival == (list(range(6)) if remap_ids else ORDER)


def test_plugin_keeps_a_batch_norm_backbone_frozen(blob_tensors):
    torch.manual_seed(1)
    backbone = nn.Sequential(nn.Linear(DIM, DIM), nn.BatchNorm1d(DIM))
    with torch.no_grad():  # non-trivial running statistics, as a pretrained backbone has
        backbone[1].running_mean.uniform_(-1, 1)
        backbone[1].running_var.uniform_(0.5, 2)
    before = {key: value.clone() for key, value in backbone.state_dict().items()}
    model = nn.Sequential(backbone, IncrementalClassifier(DIM, initial_out_features=2))
    plugin = as_plugin("naive")
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        train_mb_size=16,
        train_epochs=2,
        evaluator=EvaluationPlugin(loggers=[]),
        plugins=[plugin, EngineOrder(0, 16)],
    )
    benchmark = avalanche_benchmark(blob_tensors, remap_ids=False)
    for experience in benchmark.train_stream:
        strategy.train(experience)
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not any(p.requires_grad for p in backbone.parameters())

    # The head trained on what the frozen backbone computes in eval mode: the engine on
    # those features gives the same head (rounding: the backbone ran per minibatch).
    backbone.eval()
    with torch.no_grad():
        features = [backbone(x) for x in (blob_tensors[0], blob_tensors[2])]
    expected = engine_run("naive", {}, (features[0], blob_tensors[1], features[1], blob_tensors[3]))
    assert torch.allclose(
        torch.tensor(plugin.weight_norms[-1]), torch.tensor(expected.weight_norms[-1]), atol=1e-5
    )


@pytest.mark.parametrize(
    "name, hyperparameters, reason",
    [
        ("joint", {}, "trains on all seen data"),
        ("replay", {}, "exemplar memory"),
        ("naive", {"memory_size": 20}, "exemplar memory"),
        ("bic", {}, "exemplar memory"),
        ("fetril", {}, "builds its own training set"),
        ("gdumb", {}, "builds its own training set"),
        ("si", {}, "reads each optimizer step's gradients"),
        ("icarl", {}, "exemplar memory"),
        ("der", {}, "writes its own memory from inside its loss"),
    ],
)
@pytest.mark.bad_input
def test_strategies_avalanche_cannot_run_are_refused_naming_the_supported(
    name, hyperparameters, reason
):
    with pytest.raises(HyperparameterError) as error:
        as_plugin(name, **hyperparameters)
    message = str(error.value)
    assert reason in message and repr(name) in message
    listed = message.split("supported inside Avalanche: ")[1].split(", ")
    assert listed == supported()
    assert {"naive", "ewc", "lwf", "weight_aligning", "ncm", "slda", "ridge"} <= set(listed)
    assert not {"joint", "replay", "bic", "fetril", "gdumb", "si", "icarl", "der"} & set(listed)


@pytest.mark.bad_input
def test_a_model_without_one_incremental_classifier_is_refused(blob_tensors):
    model = nn.Sequential(nn.Linear(DIM, 6))
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        evaluator=EvaluationPlugin(loggers=[]),
        plugins=[as_plugin("naive")],
    )
    benchmark = avalanche_benchmark(blob_tensors, remap_ids=True)
    with pytest.raises(ValueError, match="exactly one IncrementalClassifier.*Sequential has 0"):
        strategy.train(benchmark.train_stream[0])


@pytest.mark.bad_input
def test_unknown_strategy_or_hyperparameter_is_refused():
    with pytest.raises(HyperparameterError, match="unknown strategy 'ewk'"):
        as_plugin("ewk")
    with pytest.raises(HyperparameterError, match="strategies.ewc.lamda"):
        as_plugin("ewc", lamda=1.0)


# -------------------------------------------------------------------------------------
# 2. Our naive, ewc and lwf vs Avalanche's own strategies


def test_our_naive_equals_avalanche_naive_exactly(blob_tensors):
    expected = engine_run("naive", {}, blob_tensors)
    matrix, model = avalanche_run(
        Naive, avalanche_benchmark(blob_tensors, remap_ids=True), plugins=[EngineInitialRows(0)]
    )
    assert matrix == seen_rows(expected)
    norms = model[0].classifier.weight.detach().norm(dim=1).tolist()
    assert norms == expected.weight_norms[-1]


@pytest.mark.parametrize("mode", ["separate", "online"])
def test_our_ewc_equals_avalanche_ewc_with_per_sample_fisher(mode, blob_tensors):
    """Avalanche's penalty is ewc_lambda · Σ F (θ − θ*)², ours λ/2 · Σ F (θ − θ*)², so
    ewc_lambda = λ/2; its Fisher squares minibatch gradients, which equals our per-sample
    Fisher at minibatch size 1 (next test: not otherwise). Tolerance 1e-5 on the norms:
    the Fisher is summed in another order (per batch vs one matrix product)."""
    lam, gamma = 1000.0, 0.5
    training = {**TRAINING, "batch_size": 1, "epochs": 1, "lr": 0.05}
    ours = {"lambda": lam, "mode": mode, **({"gamma": gamma} if mode == "online" else {})}
    expected = engine_run("ewc", ours, blob_tensors, training)
    theirs = {"ewc_lambda": lam / 2, "mode": mode}
    if mode == "online":
        theirs["decay_factor"] = gamma

    def make(**kwargs):
        return EWC(**theirs, **kwargs)

    matrix, model = avalanche_run(
        make,
        avalanche_benchmark(blob_tensors, remap_ids=True),
        training,
        plugins=[EngineInitialRows(0)],
    )
    assert matrix == seen_rows(expected)
    norms = model[0].classifier.weight.detach().norm(dim=1)
    assert torch.allclose(norms, torch.tensor(expected.weight_norms[-1]), rtol=1e-5, atol=0)
    # The penalty acts: naive ends 100 tolerances away (the comparison is not vacuous).
    naive = torch.tensor(engine_run("naive", {}, blob_tensors, training).weight_norms[-1])
    assert ((norms - naive).abs() / naive).max() > 100 * 1e-5


def test_avalanche_ewc_fisher_is_the_mean_of_squared_minibatch_gradients(blob_tensors):
    batch_size = 16
    training = {**TRAINING, "batch_size": batch_size, "epochs": 1}
    benchmark = avalanche_benchmark(blob_tensors, remap_ids=True)
    model = nn.Sequential(IncrementalClassifier(DIM, initial_out_features=2))
    strategy = EWC(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        criterion=nn.CrossEntropyLoss(),
        ewc_lambda=1.0,
        train_mb_size=batch_size,
        train_epochs=1,
        evaluator=EvaluationPlugin(loggers=[]),
        plugins=[EngineInitialRows(0), EngineOrder(0, training["batch_size"])],
    )
    strategy.train(benchmark.train_stream[0])
    ewc_plugin = next(p for p in strategy.plugins if hasattr(p, "importances"))
    theirs = ewc_plugin.importances[0]["0.classifier.weight"].data  # (2, dim)

    # Independently: the closed-form gradient of the minibatch-mean cross-entropy,
    # mean_b (p − e_y) xᵀ, over Avalanche's unshuffled batches, squared and averaged.
    dataset = benchmark.train_stream[0].dataset
    features = torch.stack([dataset[i][0] for i in range(len(dataset))])  # (80, dim)
    targets = torch.tensor([dataset[i][1] for i in range(len(dataset))])  # (80,)
    weight, bias = model[0].classifier.weight.detach(), model[0].classifier.bias.detach()
    squared = []
    for batch in torch.arange(len(targets)).split(batch_size):
        residual = F.softmax(features[batch] @ weight.T + bias, dim=1)  # (batch, 2)
        residual[torch.arange(len(batch)), targets[batch]] -= 1
        squared.append((residual.T @ features[batch] / len(batch)).square())  # (2, dim)
    minibatch_fisher = torch.stack(squared).mean(dim=0)
    assert torch.allclose(theirs, minibatch_fisher, rtol=1e-4, atol=1e-9)

    # Ours, the per-sample empirical Fisher, on the same head and data. With equal batch
    # sizes, Jensen gives mean_b (mean g)² ≤ mean_b mean g² = ours, elementwise; here the
    # minibatch estimate is far smaller.
    head = strategies.Head(DIM)
    head.append_rows(weight, bias)
    ours = empirical_fisher(head, features, targets)["weight"]
    assert (theirs <= ours * (1 + 1e-5)).all()
    # On the blobs a class's gradients point alike, so the gap is modest (ratio ≈ 1.28 of
    # the sums at batch 16); uncorrelated gradients would shrink it towards 1/16.
    ratio = (ours.sum() / theirs.sum()).item()
    assert ratio > 1.1, f"per-sample / minibatch Fisher = {ratio}"


def test_our_lwf_equals_avalanche_lwf_with_seen_scope_and_no_t_squared(blob_tensors):
    """Avalanche's LwF: cross-entropy over all seen classes plus α · KL at T over the old
    classes, without T². Ours with ce_scope="seen", t_squared=False is that definition.
    Tolerance 1e-5 on the norms: Avalanche computes the KL from probabilities, ours from
    log-probabilities (`log_target`), so the last bits differ."""
    expected = engine_run("lwf", {"ce_scope": "seen", "alpha": 1.0}, blob_tensors)
    matrix, model = avalanche_run(
        lambda **kwargs: LwF(alpha=1.0, temperature=2.0, **kwargs),
        avalanche_benchmark(blob_tensors, remap_ids=True),
        plugins=[EngineInitialRows(0)],
    )
    assert matrix == seen_rows(expected)
    norms = model[0].classifier.weight.detach().norm(dim=1)
    assert torch.allclose(norms, torch.tensor(expected.weight_norms[-1]), rtol=1e-5, atol=0)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_avalanche_distillation_has_no_t_squared_factor(temperature):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 5, generator=generator)
    old_logits = torch.randn(8, 3, generator=generator)
    padded = torch.cat([old_logits, torch.zeros(8, 2)], dim=1)  # the old model's 5 units
    theirs = LearningWithoutForgetting(temperature=temperature)._distillation_loss(
        logits, padded, active_units={0, 1, 2}
    )
    plain = distillation_kl(logits[:, :3], old_logits, temperature, t_squared=False)
    hinton = distillation_kl(logits[:, :3], old_logits, temperature, t_squared=True)
    assert torch.allclose(theirs, plain, rtol=1e-5)
    assert torch.allclose(hinton, temperature**2 * theirs, rtol=1e-5)


# -------------------------------------------------------------------------------------
# 3. Avalanche benchmarks through headbench's engine


@pytest.mark.parametrize("remap_ids", [False, True])
def test_from_avalanche_keeps_the_class_order_and_equals_the_engine(remap_ids, blob_tensors):
    import benchmarks

    features = benchmarks.from_avalanche(avalanche_benchmark(blob_tensors, remap_ids))
    assert features.scenario.class_order == (list(range(6)) if remap_ids else ORDER)
    assert features.scenario.experience_sizes == [2, 2, 2]
    # Every sample is kept once, with its arrival-order id: class ORDER[k] becomes k.
    position = torch.argsort(torch.tensor(ORDER))
    for split, (inputs, labels) in {
        "train": blob_tensors[:2],
        "test": blob_tensors[2:],
    }.items():
        got_inputs = getattr(features, f"{split}_features")
        got_targets = getattr(features, f"{split}_targets")
        assert len(got_targets) == len(labels)
        # The blobs' inputs are distinct, so matching rows pairs each sample with itself.
        match = (got_inputs[:, None, :] == inputs[None, :, :]).all(dim=2).float().argmax(dim=1)
        assert torch.equal(got_inputs, inputs[match])
        assert torch.equal(got_targets, position[labels[match]])
    # Same data, order and seed: the same run as the engine on the blobs themselves.
    result, expected = features.run("naive", TRAINING), engine_run("naive", {}, blob_tensors)
    assert result.accuracy_matrix == expected.accuracy_matrix
    assert result.weight_norms == expected.weight_norms


def test_from_avalanche_passes_inputs_through_the_frozen_backbone(blob_tensors):
    import benchmarks

    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(DIM, 8), nn.BatchNorm1d(8), nn.ReLU())
    backbone.train()
    features = benchmarks.from_avalanche(
        avalanche_benchmark(blob_tensors, remap_ids=True), backbone=backbone, batch_size=7
    )
    backbone.eval()  # what from_avalanche must have used: batch-norm running statistics
    with torch.no_grad():
        expected = backbone(blob_tensors[0])  # (240, 8)
    position = torch.argsort(torch.tensor(ORDER))
    for label in range(6):  # samples keep their dataset order within a class
        got = features.train_features[features.train_targets == position[label]]
        assert torch.allclose(got, expected[blob_tensors[1] == label], atol=1e-6)


@pytest.mark.bad_input
def test_from_avalanche_refuses_uneven_increments(blob_tensors):
    import benchmarks
    from benchmarks.errors import UsageError

    train_x, train_y, test_x, test_y = blob_tensors
    uneven = nc_benchmark(
        tensor_dataset(train_x, train_y),
        tensor_dataset(test_x, test_y),
        n_experiences=3,
        task_labels=False,
        fixed_class_order=ORDER,
        per_exp_classes={1: 1, 2: 3},
    )
    with pytest.raises(UsageError, match=r"experiences bring \[2, 1, 3\] classes"):
        benchmarks.from_avalanche(uneven)


def test_headbench_imports_avalanche_only_in_the_adapter_and_the_bridge():
    import subprocess
    import sys

    code = (
        "import sys, benchmarks, benchmarks.cli, benchmarks.engine, strategies, reports;"
        "strategies.list_strategies(); print('avalanche' in sys.modules)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert output.stdout.strip() == "False", output.stderr
