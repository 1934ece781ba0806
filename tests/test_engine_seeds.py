"""Several seeds trained as one batched computation (`engine.run_seeds`) against the same
seeds run one after another (`engine.run`, the reference).

Each seed's gradient in the batched step is its own loss's gradient and the optimizer's
updates are elementwise, so every seed follows its own trajectory. Where vmap's batched
kernels do the same arithmetic (cross-entropy, EWC's penalty and the distillation of
linear heads, WA's clipping: the `EXACT` cases) the weights are equal bit for bit; where
they reduce in another order (weighted cross-entropy, the cosine head's normalisation,
BiC's corrected logits) the weights differ by float32 rounding, compared at relative
1e-6. The accuracy matrices must be equal in every case: the blobs' classes are far apart,
so no test prediction is within rounding of a tie. The mean training loss is summed in
another order by the batched reduction: relative 1e-5.
"""

from __future__ import annotations

import math

import pytest

import strategies
from benchmarks import engine

CASES = [(name, {}, "linear", {}) for name in strategies.list_strategies()] + [
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
]
SEEDS = [0, 1, 2]
INEXACT = {"bic", "cosine", "class_weighting=balanced", "weight_aligning-linear-memory_size=12"}


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
    trains_head = strategies.get_strategy(name).trains_head
    assert batched_calls == ([3] * scenario_2_2.num_experiences if trains_head else [])
    for one, together in zip(reference, batched, strict=True):
        assert together.accuracy_matrix == one.accuracy_matrix
        if any(part in case_id(case) for part in INEXACT):
            for a, b in zip(one.weight_norms, together.weight_norms, strict=True):
                assert b == pytest.approx(a, rel=1e-6)
        else:
            assert together.weight_norms == one.weight_norms
        assert together.newest_share == one.newest_share
        for a, b in zip(one.train_loss, together.train_loss, strict=True):
            assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-5)
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
