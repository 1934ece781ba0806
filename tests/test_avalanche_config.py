"""Avalanche benchmarks in both forms: Avalanche's real SplitCIFAR100, built offline on the
generated CIFAR-100 folder, through `benchmarks.from_avalanche`; and the config form
(`[dataset] name = "avalanche"`) end to end through `headbench run`, on a factory module
each test writes, with an independent nearest-class-mean check and every refusal.

Golden values come from the generated files, numpy and hand-written orders, never from
the code under test.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_blobs, write_cifar100
from torch import nn

warnings.filterwarnings("ignore", module="avalanche")  # its import warns about torch's version

from avalanche.benchmarks.classic import SplitCIFAR100  # noqa: E402

import benchmarks  # noqa: E402
from benchmarks import datasets, run  # noqa: E402
from benchmarks.cli import main  # noqa: E402
from benchmarks.errors import UsageError  # noqa: E402

# The factory's class order: not the identity, and not sorted within an experience.
ORDER = [4, 1, 5, 0, 3, 2]
# Avalanche's default CIFAR-100 eval transform: ToTensor, then these (its ccifar100.py).
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

FACTORY = '''
"""A user's module with Avalanche benchmark factories over an .npz of blob features."""
import numpy as np
import torch
from avalanche.benchmarks import nc_benchmark
from avalanche.benchmarks.scenarios.supervised import class_incremental_benchmark
from avalanche.benchmarks.utils import (
    _make_taskaware_tensor_classification_dataset as tensors,
)

ORDER = {order}
NOT_CALLABLE = 3


def _split(path):
    arrays = np.load(path)
    return [torch.from_numpy(arrays[key]) for key in ("X_train", "y_train", "X_test", "y_test")]


def blobs(path, n_experiences=3):
    x, y, test_x, test_y = _split(path)
    return nc_benchmark(
        tensors(x, y), tensors(test_x, test_y), n_experiences=n_experiences,
        task_labels=False, fixed_class_order=ORDER,
    )


def per_class_incremental(path):
    x, y, test_x, test_y = _split(path)
    return class_incremental_benchmark(
        {{"train": tensors(x, y), "test": tensors(test_x, test_y)}},
        class_order=ORDER, num_experiences=3,
    )


def task_incremental(path):
    x, y, test_x, test_y = _split(path)
    return nc_benchmark(
        tensors(x, y), tensors(test_x, test_y), n_experiences=3, task_labels=True,
        class_ids_from_zero_in_each_exp=True, fixed_class_order=ORDER,
    )


def uneven(path):
    x, y, test_x, test_y = _split(path)
    return nc_benchmark(
        tensors(x, y), tensors(test_x, test_y), n_experiences=3, task_labels=False,
        fixed_class_order=ORDER, per_exp_classes={{1: 1, 2: 3}},
    )


def normalised_images(path):
    x, y, test_x, test_y = _split(path)
    images = x[:, :12].reshape(-1, 3, 2, 2)  # the blobs as 3x2x2 "images", values < 0 too
    test_images = test_x[:, :12].reshape(-1, 3, 2, 2)
    return nc_benchmark(
        tensors(images, y), tensors(test_images, test_y), n_experiences=3, task_labels=False,
        fixed_class_order=ORDER,
    )


def broken(path):
    raise RuntimeError("the factory failed\\nsecond line")


def not_a_benchmark(path):
    import types

    return types.SimpleNamespace(train_stream=[])
'''


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path, dict]:
    """(module name, .npz path, its arrays): a factory module on sys.path over blob features
    that overlap (spread 2), so a nearest-class-mean classifier makes mistakes."""
    name = f"headbench_factory_{tmp_path.name.replace('-', '_')}"
    arrays = make_blobs(spread=2.0)
    npz = tmp_path / "blobs.npz"
    np.savez(npz, **arrays)
    (tmp_path / f"{name}.py").write_text(FACTORY.format(order=ORDER))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield name, npz, arrays
    sys.modules.pop(name, None)


def write_avalanche_config(directory: Path, callable_: str, npz: Path, extra: str = "") -> Path:
    path = directory / "avalanche.toml"
    path.write_text(
        textwrap.dedent(f"""
        [dataset]
        name = "avalanche"
        benchmark = "{callable_}"
        arguments = {{ path = "{npz}" }}
        [training]
        epochs = 2
        batch_size = 32
        seeds = [0]
        [strategies.naive]
        [strategies.ncm]
        {extra}
        """)
    )
    return path


def call(argv: list) -> int:
    try:
        return main([str(arg) for arg in argv])
    except SystemExit as exit:  # argparse refusals exit from inside main
        return exit.code


def assert_refused(capsys, argv: list, out: Path, *fragments: str) -> str:
    """Exit status 2, one line on stderr naming `fragments`, no traceback, nothing written."""
    code = call([*argv, "--out", out])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.err.startswith("headbench: error:") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err and not captured.out
    missing = [fragment for fragment in fragments if fragment not in captured.err]
    assert not missing, (missing, captured.err)
    assert not out.exists()
    return captured.err


# -------------------------------------------------------------------------------------
# Avalanche's SplitCIFAR100 on the generated folder


@pytest.fixture
def cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The generated `cifar-100-python/` under tmp_path, readable by Avalanche's SplitCIFAR100.

    SplitCIFAR100 constructs torchvision's CIFAR100 with download=True, which checks the
    published MD5s and otherwise downloads; a generated copy cannot have those digests and
    these machines have no network. Only the integrity check is replaced (by "the file
    exists"); reading the pickles is torchvision's own code.
    """
    import torchvision.datasets.cifar as cifar_module

    monkeypatch.setattr(
        cifar_module, "check_integrity", lambda path, md5=None: os.path.isfile(path)
    )
    return write_cifar100(tmp_path)


def test_split_cifar100_through_from_avalanche_keeps_order_experiences_and_targets(cifar, tmp_path):
    benchmark = SplitCIFAR100(n_experiences=5, seed=1234, dataset_root=tmp_path)
    generator = torch.Generator().manual_seed(0)
    linear = nn.Linear(3 * 32 * 32, 4)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(4, 3 * 32 * 32, generator=generator) / 32)
        linear.bias.zero_()
    backbone = nn.Sequential(nn.Flatten(), linear)
    features = benchmarks.from_avalanche(benchmark, backbone=backbone, batch_size=64)

    scenario = features.scenario
    assert scenario.class_order == list(benchmark.classes_order)
    assert scenario.class_order != list(range(100))  # seed 1234 shuffles
    assert scenario.experience_sizes == [20] * 5
    for index, experience in enumerate(benchmark.train_stream):
        assert sorted(scenario.original_classes(index)) == sorted(
            experience.classes_in_this_experience
        )
    # Three training and one test image per class, whichever experience it arrives in.
    assert torch.bincount(features.train_targets).tolist() == [3] * 100
    assert torch.bincount(features.test_targets).tolist() == [1] * 100

    # Known images, by hand: Avalanche's eval transform (ToTensor, Normalize with its
    # CIFAR-100 statistics) then the backbone; the arrival id is the label's position in
    # classes_order.
    images, labels = cifar["train"]
    mean = torch.tensor(CIFAR100_MEAN)[:, None, None]
    std = torch.tensor(CIFAR100_STD)[:, None, None]
    for index in (0, 1, 150, 299):
        pixels = torch.from_numpy(images[index]).float() / 255  # (3, 32, 32)
        with torch.no_grad():
            expected = linear(((pixels - mean) / std).flatten())  # (4,)
        row = (features.train_features - expected).abs().amax(dim=1).argmin()
        assert torch.allclose(features.train_features[row], expected, atol=1e-4)
        assert features.train_targets[row].item() == benchmark.classes_order.index(labels[index])


def icarl_order() -> list[int]:
    """PyCIL's CIFAR-100 order, from numpy itself (not from headbench)."""
    return np.random.RandomState(1993).permutation(100).tolist()


def split_cifar100_config(root: Path, **scenario) -> dict:
    """A raw config (as read from TOML): SplitCIFAR100 in PyCIL's order, 10 experiences."""
    arguments = {
        "n_experiences": 10,
        "fixed_class_order": icarl_order(),
        "dataset_root": str(root),
    }
    return {
        "dataset": {
            "name": "avalanche",
            "benchmark": "avalanche.benchmarks.classic:SplitCIFAR100",
            "arguments": arguments,
        },
        "scenario": scenario,
    }


def test_split_cifar100_config_form_gives_the_raw_images_and_the_benchmark_order(cifar, tmp_path):
    plan = run.plan_config(
        split_cifar100_config(tmp_path), "split", [], ["ncm"], device="cpu", use_cache=False
    )
    data = plan.data
    # The transforms are dropped: the pickled uint8 pixels, as the cifar100 dataset gives
    # them, not Avalanche's normalised floats. Samples are held class by class.
    for split in ("train", "test"):
        images, labels = cifar[split]
        inputs, targets = getattr(data, f"{split}_inputs"), getattr(data, f"{split}_targets")
        assert inputs.dtype == np.uint8 and inputs.shape == (len(labels), 3, 32, 32)
        assert targets.tolist() == sorted(labels.tolist())
        for label in (0, 57, 99):
            np.testing.assert_array_equal(inputs[targets == label], images[labels == label])
    assert plan.scenario.class_order == icarl_order()
    assert plan.scenario.experience_sizes == [10] * 10
    # The resolved config holds the explicit order and sizes (and the few-shot keys at their
    # defaults, which records leave out: run.LATER_KEYS).
    assert plan.config["scenario"] == {
        "class_order": icarl_order(),
        "initial_classes": 10,
        "increment": 10,
        "shots": "all",
        "base_shots": "all",
        "protocol": "none",
    }
    # A [scenario] that agrees with the benchmark is accepted, in any form.
    for agreeing in ({"class_order": "icarl1993"}, {"class_order": "benchmark"}, {"increment": 10}):
        config = split_cifar100_config(tmp_path, **agreeing)
        assert run.plan_config(config, "s", [], ["ncm"], use_cache=False).scenario == plan.scenario
    with pytest.raises(UsageError, match=r"class_order = 'podnet'.* \[87, 0, 52.*\[68, 56, 78"):
        run.plan_config(split_cifar100_config(tmp_path, class_order="podnet"), "s", [], ["ncm"])


def test_split_cifar100_config_runs_through_the_cli_on_the_raw_pixels(cifar, tmp_path, capsys):
    """The README's example config on the generated folder, backbone `identity`: the
    features are the pickled pixels, so NCM's accuracy can be recomputed from the files."""
    arguments = (
        f'n_experiences = 10, fixed_class_order = {icarl_order()}, dataset_root = "{tmp_path}"'
    )
    config = tmp_path / "split_cifar100.toml"
    config.write_text(
        "[dataset]\n"
        'name = "avalanche"\n'
        'benchmark = "avalanche.benchmarks.classic:SplitCIFAR100"\n'
        f"arguments = {{ {arguments} }}\n"
        "[training]\nseeds = [0]\n[strategies.ncm]\n"
    )
    out = tmp_path / "out"
    code = call(["run", config, "--out", out, "--quiet", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    (record,) = [json.loads(path.read_text()) for path in (out / "runs").glob("*.json")]
    assert record["class_order"] == icarl_order()
    assert record["experiences"] == [icarl_order()[i : i + 10] for i in range(0, 100, 10)]
    assert [len(row) for row in record["accuracy_matrix"]] == [10] * 10
    # Nearest class mean by cosine on the pixels, in numpy from the generated files.
    (train, train_labels), (test, test_labels) = cifar["train"], cifar["test"]
    train = train.reshape(len(train), -1).astype(np.float64)
    test = test.reshape(len(test), -1).astype(np.float64)
    means = np.stack([train[train_labels == c].mean(axis=0) for c in range(100)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    predicted = (test / np.linalg.norm(test, axis=1, keepdims=True) @ means.T).argmax(axis=1)
    expected = float((predicted == test_labels).mean())
    assert record["metrics"]["final_accuracy"] == pytest.approx(expected, abs=1e-12)


@pytest.mark.bad_input
def test_transforms_that_cannot_be_dropped_are_refused(cifar, tmp_path, monkeypatch):
    from avalanche.benchmarks import nc_benchmark
    from avalanche.benchmarks.utils import _make_taskaware_classification_dataset
    from torchvision.datasets import CIFAR100
    from torchvision.transforms import ToTensor

    def with_transform():  # torchvision's own transform, inside the wrapped dataset
        train, test = (
            CIFAR100(str(tmp_path), train=t, transform=ToTensor()) for t in (True, False)
        )
        return nc_benchmark(train, test, n_experiences=2, task_labels=False, seed=0)

    def frozen():  # an Avalanche transform frozen into the data
        train, test = (
            _make_taskaware_classification_dataset(
                CIFAR100(str(tmp_path), train=t), transform=ToTensor()
            ).freeze_transforms()
            for t in (True, False)
        )
        return nc_benchmark(train, test, n_experiences=2, task_labels=False, seed=0)

    module = type(sys)("headbench_transforms")
    module.with_transform, module.frozen = with_transform, frozen
    monkeypatch.setitem(sys.modules, "headbench_transforms", module)
    for name, fragment in (("with_transform", "CIFAR100 applies"), ("frozen", "frozen transforms")):
        with pytest.raises(UsageError) as error:
            datasets.load(
                {"name": "avalanche", "benchmark": f"headbench_transforms:{name}", "arguments": {}}
            )
        message = str(error.value)
        assert fragment in message and "ToTensor()" in message and "\n" not in message
        assert "from_avalanche" in message


# -------------------------------------------------------------------------------------
# The config form end to end on a factory module


def nearest_class_mean_final_accuracy(arrays: dict) -> tuple[float, list[float]]:
    """Cosine similarity to each class's mean training feature (SimpleCIL), in numpy:
    (accuracy over all test samples, accuracy on each experience's classes)."""
    train, labels = arrays["X_train"].astype(np.float64), arrays["y_train"]
    means = np.stack([train[labels == c].mean(axis=0) for c in range(6)])  # (6, 16)
    test = arrays["X_test"].astype(np.float64)
    scores = (test / np.linalg.norm(test, axis=1, keepdims=True)) @ (
        means / np.linalg.norm(means, axis=1, keepdims=True)
    ).T  # (test, 6)
    correct = scores.argmax(axis=1) == arrays["y_test"]
    groups = [[4, 1], [5, 0], [3, 2]]
    per_experience = [correct[np.isin(arrays["y_test"], g)].mean() for g in groups]
    return float(correct.mean()), per_experience


def test_config_form_runs_through_the_cli_with_the_factory_order(factory, tmp_path, capsys):
    name, npz, arrays = factory
    config = write_avalanche_config(tmp_path, f"{name}:blobs", npz)
    out = tmp_path / "out"
    code = call(["run", config, "--out", out, "--quiet", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    records = {
        record["strategy"]: record
        for record in (json.loads(p.read_text()) for p in (out / "runs").glob("*.json"))
    }
    assert sorted(records) == ["naive", "ncm"]
    for record in records.values():
        assert record["class_order"] == ORDER
        assert record["experiences"] == [[4, 1], [5, 0], [3, 2]]
        assert record["config"]["dataset"] == {
            "name": "avalanche",
            "benchmark": f"{name}:blobs",
            "arguments": {"path": str(npz)},
        }
        assert record["config"]["scenario"] == {
            "class_order": ORDER,
            "initial_classes": 2,
            "increment": 2,
        }
        matrix = record["accuracy_matrix"]
        assert [len(row) for row in matrix] == [3, 3, 3]
        assert all(matrix[i][j] is None for i in range(3) for j in range(3) if j > i)
        assert record["test_counts"] == [40, 40, 40]
    expected, per_experience = nearest_class_mean_final_accuracy(arrays)
    assert 0.5 < expected < 0.95  # overlapping blobs: a check with mistakes in it
    assert records["ncm"]["metrics"]["final_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert records["ncm"]["accuracy_matrix"][2] == pytest.approx(per_experience, abs=1e-12)

    # The record's config plans again: its explicit order agrees with the benchmark.
    record = records["ncm"]
    again = run.plan_config(record["config"], "again", ["ncm"], use_cache=False)
    assert again.scenario.class_order == ORDER
    _, written = run.run_identity(again, "ncm", record["seed"])
    assert written["scenario"] == record["config"]["scenario"]


def test_class_incremental_benchmark_classes_arrive_sorted_within_an_experience(factory):
    # class_incremental_benchmark keeps no classes_order: within an experience classes
    # arrive as classes_in_this_experience lists them (the Avalanche plugin's rule).
    name, npz, arrays = factory
    table = {"name": "avalanche", "arguments": {"path": str(npz)}}
    data = datasets.load({**table, "benchmark": f"{name}:per_class_incremental"})
    assert data.experiences == ((1, 4), (0, 5), (2, 3))
    # Features as they are, held class by class (the class order is not in the data).
    order = np.argsort(arrays["y_train"], kind="stable")
    np.testing.assert_array_equal(data.train_inputs, arrays["X_train"][order])
    assert data.train_inputs.dtype == np.float32 and data.train_targets.tolist() == sorted(
        arrays["y_train"].tolist()
    )
    reordered = datasets.load({**table, "benchmark": f"{name}:blobs"})
    assert reordered.experiences == ((4, 1), (5, 0), (3, 2))
    assert reordered.fingerprint == data.fingerprint  # one feature-cache entry for both


@pytest.mark.parametrize(
    ("setting", "fragments"),
    [
        (
            "scenario.class_order=[0,1,2,3,4,5]",
            ["scenario.class_order = [0, 1, 2, 3, 4, 5]", "[4, 1, 5, 0, 3, 2]", '"benchmark"'],
        ),
        ('scenario.class_order="seed:3"', ["'seed:3'", "[4, 1, 5, 0, 3, 2]"]),
        ("scenario.initial_classes=3", ["scenario.initial_classes = 3", "brings 2 classes"]),
        ("scenario.increment=1", ["scenario.increment = 1", "bring 2 classes", "[2, 2, 2]"]),
    ],
    ids=["explicit-order", "seeded-order", "initial-classes", "increment"],
)
@pytest.mark.bad_input
def test_a_scenario_that_contradicts_the_benchmark_is_refused(
    setting, fragments, factory, tmp_path, capsys
):
    name, npz, _ = factory
    config = write_avalanche_config(tmp_path, f"{name}:blobs", npz)
    assert_refused(capsys, ["run", config, "--set", setting], tmp_path / "out", *fragments)


@pytest.mark.parametrize(
    "setting",
    ['scenario.class_order="benchmark"', "scenario.class_order=[4,1,5,0,3,2]"],
)
def test_a_scenario_that_agrees_with_the_benchmark_runs(setting, factory, tmp_path, capsys):
    name, npz, _ = factory
    config = write_avalanche_config(tmp_path, f"{name}:blobs", npz)
    argv = ["run", config, "--set", setting, "--set", "scenario.initial_classes=2"]
    code = call([*argv, "--strategy", "ncm", "--out", tmp_path / "out", "--quiet"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("", ['dataset "avalanche" needs dataset.benchmark', "SplitCIFAR100"]),
        ("no_colon", ["'no_colon'", '"package.module:callable"']),
        ("no_such_module_anywhere:make", ["'no_such_module_anywhere'", "cannot be imported"]),
        ("{name}:missing", ["no attribute 'missing'", '"package.module:callable"']),
        ("{name}:NOT_CALLABLE", ["NOT_CALLABLE", "not a callable"]),
        ("{name}:broken", ["RuntimeError: the factory failed", "dataset.arguments"]),
        ("{name}:not_a_benchmark", ["'SimpleNamespace'", "no test_stream", "Avalanche benchmark"]),
        ("{name}:task_incremental", ["classes [0, 1]", "more than one experience"]),
        ("{name}:uneven", ["experiences bring [2, 1, 3] classes"]),
        ("{name}:normalised_images", ["already normalised", "uint8 or [0, 1]"]),
    ],
    ids=[
        "empty",
        "no-colon",
        "no-module",
        "no-attribute",
        "not-callable",
        "call-raises",
        "not-a-benchmark",
        "class-in-two-experiences",
        "uneven-increments",
        "normalised-images",
    ],
)
@pytest.mark.bad_input
def test_a_bad_benchmark_exits_2_with_one_line(spec, fragments, factory, tmp_path, capsys):
    # (not named `benchmark`: pytest-benchmark would take that parameter for its fixture)
    name, npz, _ = factory
    config = write_avalanche_config(tmp_path, spec.format(name=name), npz)
    argv = ["run", config, "--strategy", "ncm"]
    assert_refused(capsys, argv, tmp_path / "out", *fragments)


@pytest.mark.bad_input
def test_bad_arguments_and_a_benchmark_order_elsewhere_are_refused(factory, tmp_path, capsys):
    name, npz, _ = factory
    config = write_avalanche_config(tmp_path, f"{name}:blobs", npz)
    assert_refused(
        capsys,
        ["run", config, "--set", "dataset.arguments.n_experience=3"],
        tmp_path / "out",
        "unexpected keyword argument 'n_experience'",
    )
    assert_refused(
        capsys,
        ["run", config, "--set", "dataset.arguments=3"],
        tmp_path / "out",
        "dataset.arguments = 3",
        "dict",
    )
    features = tmp_path / "features.toml"
    features.write_text(f'[dataset]\nname = "features"\npath = "{npz}"\n')
    assert_refused(
        capsys,
        ["run", features, "--set", 'scenario.class_order="benchmark"'],
        tmp_path / "out",
        '"benchmark"',
        'dataset "avalanche"',
    )


def test_headbench_list_datasets_shows_the_avalanche_dataset_and_its_keys(capsys):
    assert call(["list", "datasets"]) == 0
    text = capsys.readouterr().out
    assert "  avalanche: any Avalanche class-incremental benchmark" in text
    assert "    benchmark = ''" in text and "    arguments = {}" in text


def test_the_readme_example_config_plans_with_the_benchmark_order(cifar, tmp_path):
    """The SplitCIFAR100 config of docs/avalanche.md, verbatim but for the data folder: it
    plans (the ResNet-18 is neither downloaded nor run while planning) with Avalanche's own
    order."""
    import tomllib

    readme = (Path(__file__).parents[1] / "docs" / "avalanche.md").read_text()
    (block,) = [b for b in readme.split("```toml\n") if b.startswith("# split_cifar100.toml")]
    block = block.split("```")[0]
    raw = tomllib.loads(block)
    assert raw["backbone"]["name"] == "resnet18"
    raw["dataset"]["arguments"]["dataset_root"] = str(tmp_path)
    plan = run.plan_config(raw, "split_cifar100", list(raw["strategies"]), use_cache=False)
    expected = SplitCIFAR100(n_experiences=10, seed=1234, dataset_root=tmp_path).classes_order
    assert plan.scenario.class_order == list(expected)
    assert plan.scenario.experience_sizes == [10] * 10
    assert sorted(plan.config["strategies"]) == ["naive", "ncm"]
