"""Several seeds trained as one batched computation (`engine.run_seeds`) against the same
seeds run one after another (`engine.run`, the reference).

Each seed's gradient in the batched step is its own loss's gradient and the optimizer's
updates are elementwise, so every seed follows its own trajectory. The two paths are not
the same kernels: vmap's batched matrix products and reductions may sum in another order,
and which order depends on the CPU's vector width (on an AVX-512 machine even the plain
cross-entropy case differs in the last float32 digit). Bit-equality is therefore not
something torch promises here, and the weights are compared within a derived bound:

- one step's update differs between the paths by a few roundings of the sums it is made
  of: at most 4u of its size, u = 2**-24 (float32's unit roundoff), for the short sums of
  these small heads;
- heavy-ball momentum μ carries each step's update into every later step with weights
  μ^k, so one step's discrepancy reaches the weights at most 1/(1 − μ) times;
- the losses are convex in the head and lr is below SGD's stability limit, so earlier
  discrepancies are not amplified by later steps; over N steps they add up at most
  linearly, and no update is larger than the weights it changes (lr·|g| ≤ |θ| here).

Hence |Δθ| / |θ| ≤ 4u · N / (1 − μ), which `tolerance` computes from the run's own number
of steps (1.1e-3 for these runs, 3.9e-3 with BiC's second stage; the discrepancy reported
from an AVX-512 machine was 4e-7). The accuracy matrices must be equal in every case: the
blobs' classes are far apart, so no test prediction is within that bound of a tie. The
mean training loss moves with the weights: same bound.
"""

from __future__ import annotations

import math

import pytest

import strategies
from benchmarks import engine

# MAS at its paper λ = 1 passes SGD's stability limit on the blobs (tests/test_mas.py).
SETTINGS = {"mas": {"lambda": 0.01}}
CASES = [(name, SETTINGS.get(name, {}), "linear", {}) for name in strategies.list_strategies()] + [
    ("ewc", {"mode": "online", "lambda": 50.0}, "linear", {}),
    ("lwf", {"ce_scope": "seen", "t_squared": True}, "linear", {}),
    ("weight_aligning", {"memory_size": 12}, "linear", {}),
    ("replay", {"memory_size": 12, "memory_selection": "random"}, "linear", {}),
    ("replay", {"memory_size": 12}, "linear", {"class_weighting": "balanced"}),
    ("replay", {"memory_size": 12}, "linear", {"sampling": "class_balanced"}),
    ("naive", {}, "linear", {"optimizer": "adam", "lr": 0.01, "schedule": "cosine"}),
    ("naive", {}, "linear", {"weight_decay": 0.01}),
    ("naive", {}, "cosine", {}),
    ("ewc", {"lambda": 5.0}, "cosine", {}),
    ("lwf", {}, "cosine", {}),
    ("bic", {"memory_size": 12}, "cosine", {}),
    ("seq_star", {}, "cosine", {}),
    ("seq_star", {}, "linear", {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.01}),
    ("weight_aligning", {"freeze_old_rows": True}, "linear", {}),  # after_update + hold
    ("lwf", {"freeze_old_rows": True}, "cosine", {}),
    ("fetril", {"classifier": "sgd"}, "linear", {}),  # pseudo-features, head re-initialised
    ("si", {}, "cosine", {}),  # the path integral reads each slot's gradient, σ included
    ("si", {"freeze_old_rows": True}, "linear", {}),  # Δθ measured after the rows are held
    ("icarl", {"memory_size": 12}, "cosine", {}),  # the snapshot's σ in the old targets
    ("icarl", {"memory_size": 12, "classifier": "head"}, "linear", {"class_weighting": "balanced"}),
    ("der", {"capacity": 12, "plus": True}, "linear", {}),  # seed by seed (not batchable)
]
SEEDS = [0, 1, 2]
UNIT_ROUNDOFF = 2.0**-24  # float32


def tolerance(training: dict, num_train: int, experiences: int, extra_steps: int = 0) -> float:
    """4u · N / (1 − μ): the bound of the module docstring for N optimizer steps.

    N counts every experience as if it trained on twice the whole training set (an upper
    bound on its own share, with exemplars, the joint strategy's growing set or
    class-balanced oversampling), plus `extra_steps` of a second stage."""
    steps_per_epoch = math.ceil(2 * num_train / training["batch_size"])
    steps = experiences * training["epochs"] * steps_per_epoch + extra_steps
    momentum = training.get("momentum", 0.0) if training["optimizer"] == "sgd" else 0.9
    return 4 * UNIT_ROUNDOFF * steps / (1 - momentum)


def case_id(case) -> str:
    name, hyperparameters, head_kind, training = case
    options = {**hyperparameters, **training}
    return "-".join([name, head_kind] + [f"{k}={v}" for k, v in options.items()])


@pytest.fixture
def batched_calls(monkeypatch) -> list[int]:
    """The number of seeds of each batched loop the engine runs."""
    calls = []
    original = engine.batched_train_loop

    def counting(runs, *args):
        calls.append(len(runs))
        return original(runs, *args)

    monkeypatch.setattr(engine, "batched_train_loop", counting)
    return calls


def create(name: str, hyperparameters: dict, scenario) -> strategies.Strategy:
    strategy = strategies.create(name, hyperparameters)
    strategy.validate(scenario.experience_sizes)
    return strategy


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_batched_seeds_equal_seeds_run_one_by_one(
    case, blob_tensors, scenario_2_2, training, batched_calls
):
    name, hyperparameters, head_kind, options = case
    training = {**training, **options}
    bias = head_kind == "linear"
    reference = [
        engine.run(
            create(name, hyperparameters, scenario_2_2),
            *blob_tensors,
            scenario_2_2,
            training,
            bias,
            seed,
            head_kind,
        )
        for seed in SEEDS
    ]
    assert batched_calls == []  # one seed never takes the batched path
    batched = engine.run_seeds(
        [create(name, hyperparameters, scenario_2_2) for _ in SEEDS],
        *blob_tensors,
        scenario_2_2,
        training,
        bias,
        SEEDS,
        head_kind,
    )
    # Per instance: fetril trains the head only with classifier = "sgd". A strategy whose
    # loss changes its state (der's memory) is not batchable: its seeds run one by one.
    instance = create(name, hyperparameters, scenario_2_2)
    trains_head = instance.trains_head
    in_one_batch = trains_head and instance.batchable
    assert batched_calls == ([3] * scenario_2_2.num_experiences if in_one_batch else [])
    num_train, experiences = len(blob_tensors[1]), scenario_2_2.num_experiences
    # BiC's stage 2: 200 epochs per experience on its held-out tenth (one class-balanced
    # slice, at most a tenth of the training set plus one sample per class).
    held_out = num_train // 10 + scenario_2_2.num_classes
    stage_2 = experiences * 200 * math.ceil(held_out / training["batch_size"])
    bound = tolerance(training, num_train, experiences, stage_2 if name == "bic" else 0)
    assert bound < 1e-2  # a bound this loose would no longer test anything
    for one, together in zip(reference, batched, strict=True):
        assert together.accuracy_matrix == one.accuracy_matrix
        for a, b in zip(one.weight_norms, together.weight_norms, strict=True):
            assert b == pytest.approx(a, rel=bound)
        assert together.newest_share == one.newest_share
        for a, b in zip(one.train_loss, together.train_loss, strict=True):
            assert (a is None and b is None) or math.isclose(a, b, rel_tol=bound)
    # The seeds really differ, so equality above is not one run copied three times.
    assert len({str(r.weight_norms) for r in reference}) == len(SEEDS) or not trains_head


def test_seeds_that_disagree_on_their_loss_state_run_one_after_another(
    blob_tensors, scenario_2_2, training, batched_calls
):
    """Two EWC configs differ in λ, which the loss reads from the config (not a buffer):
    vmap would evaluate both with the first λ, so the engine trains them in turn."""
    configs = [{"lambda": 1.0}, {"lambda": 1000.0}]
    reference = [
        engine.run(create("ewc", c, scenario_2_2), *blob_tensors, scenario_2_2, training, True, 0)
        for c in configs
    ]
    together = engine.run_seeds(
        [create("ewc", c, scenario_2_2) for c in configs],
        *blob_tensors,
        scenario_2_2,
        training,
        True,
        [0, 0],
    )
    assert batched_calls == []
    assert [r.accuracy_matrix for r in together] == [r.accuracy_matrix for r in reference]
    assert reference[0].weight_norms != reference[1].weight_norms


@pytest.mark.bad_input
def test_run_seeds_refuses_mismatched_inputs(blob_tensors, scenario_2_2, training):
    with pytest.raises(ValueError, match="2 strategies for 3 seeds"):
        engine.run_seeds(
            [strategies.create("naive")] * 2, *blob_tensors, scenario_2_2, training, True, SEEDS
        )
    with pytest.raises(ValueError, match="instances of one strategy"):
        engine.run_seeds(
            [strategies.create("naive"), strategies.create("ewc")],
            *blob_tensors,
            scenario_2_2,
            training,
            True,
            [0, 1],
        )


def test_cli_batch_seeds_writes_the_same_records_and_reproduces_them(
    tmp_path, blobs_npz, capsys, batched_calls
):
    """`headbench run --batch-seeds` against the same command without it: the same
    accuracy matrices; each record names its batch, and `reproduce` re-runs it as one
    (3 strategies that train, 3 experiences: 3 batched loops per command)."""
    import json

    from conftest import write_config

    from benchmarks.cli import main

    config = write_config(tmp_path, blobs_npz, "[strategies.naive]\n[strategies.ewc]\n")
    outputs = {}
    for flag in ([], ["--batch-seeds"]):
        out = tmp_path / ("batched" if flag else "sequential")
        code = main(["run", str(config), "--out", str(out), "--quiet", "--seeds", "0-2", *flag])
        assert code == 0, capsys.readouterr().err
        runs = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
        outputs[bool(flag)] = {(r["strategy"], r["seed"]): r for r in runs}
    assert batched_calls == [3] * 6  # 2 strategies x 3 experiences, 3 seeds each
    assert outputs[True].keys() == outputs[False].keys() and len(outputs[True]) == 6
    for key, record in outputs[True].items():
        assert record["seed_batch"] == [0, 1, 2]
        assert "seed_batch" not in outputs[False][key]
        assert record["accuracy_matrix"] == outputs[False][key]["accuracy_matrix"]
        assert record["run_id"] == outputs[False][key]["run_id"]  # same run, same id
    capsys.readouterr()
    code = main(["reproduce", str(tmp_path / "batched"), "--quiet"])
    assert code == 0
    assert "6 of 6 runs reproduced" in capsys.readouterr().out
    assert batched_calls == [3] * 12  # reproduce ran each batch once, not once per record
