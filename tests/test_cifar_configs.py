"""The shipped CIFAR-100 configs: valid as shipped, and run end to end by name on the
generated `cifar-100-python/` folder with a tiny backbone in place of the real one."""

from __future__ import annotations

import json

import pytest

from benchmarks import run
from benchmarks.cli import main

# name -> (initial classes B, increment, backbone): B0 uses a pretrained backbone, B50 a
# backbone trained on the base task (the frozen-backbone protocol of FeTrIL, FeCAM, ACIL).
SHIPPED = {
    "cifar100_b0_inc10": (10, 10, "vit_b_16"),
    "cifar100_b0_inc5": (5, 5, "vit_b_16"),
    "cifar100_b50_inc10": (50, 10, "base-task"),
    "cifar100_b50_inc5": (50, 5, "base-task"),
}
GENERATED = ["dataset.download=false", "dataset.verify_checksums=false"]


def overrides(root) -> list[str]:
    return [f"dataset.root={json.dumps(str(root))}", *GENERATED]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_cifar100_config_plans_with_the_published_protocol(name, cifar100_root, tmp_path):
    plan = run.plan(name, overrides(cifar100_root), ["naive"], "0", "cpu", str(tmp_path / "out"))
    initial, increment, backbone = SHIPPED[name]
    assert plan.config["dataset"]["name"] == "cifar100"
    assert plan.config["backbone"]["name"] == backbone
    assert plan.scenario.experience_sizes == [initial] + [increment] * (
        (100 - initial) // increment
    )
    assert plan.scenario.class_order[:4] == [68, 56, 78, 8]  # icarl1993
    assert not (tmp_path / "out").exists()


def run_by_name(capsys, name: str, out, *extra: str) -> list[dict]:
    argv = ["run", name, "--out", str(out), "--quiet", "--device", "cpu", "--strategy", "naive"]
    argv += ["--seeds", "0", "--set", "training.epochs=1"]
    for item in extra:
        argv += ["--set", item]
    code = main(argv)
    assert code == 0, capsys.readouterr().err
    return [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]


def test_b50_base_task_config_runs_by_name(capsys, cifar100_root, tmp_path):
    tiny = ["backbone.arch=resnet32", "backbone.width=4", "backbone.epochs=1"]
    records = run_by_name(
        capsys, "cifar100_b50_inc10", tmp_path / "out", *overrides(cifar100_root), *tiny
    )
    (record,) = records
    assert record["benchmark"] == "cifar100_b50_inc10"
    assert [len(classes) for classes in record["experiences"]] == [50, 10, 10, 10, 10, 10]
    assert record["test_counts"] == [50, 10, 10, 10, 10, 10]  # one test image per class
    assert record["features_cache"]["train"]["source"] == "computed"


def test_b0_pretrained_config_runs_by_name_with_a_local_resnet(
    capsys, cifar100_root, resnet18_weights, tmp_path
):
    swap = [
        "backbone.name=resnet18",
        f"backbone.weights={json.dumps(str(resnet18_weights))}",
        "backbone.resize_size=32",
        "backbone.crop_size=32",
    ]
    records = run_by_name(
        capsys, "cifar100_b0_inc10", tmp_path / "out", *overrides(cifar100_root), *swap
    )
    (record,) = records
    assert record["config"]["backbone"]["name"] == "resnet18"
    assert record["experiences"][0] == [68, 56, 78, 8, 23, 84, 90, 65, 74, 76]
    assert len(record["accuracy_matrix"]) == 10


def refused(capsys, argv: list[str], out) -> str:
    try:
        code = main([*argv, "--out", str(out), "--quiet", "--device", "cpu"])
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    assert code == 2 and not captured.out, captured
    # The generated folder runs with verify_checksums = false, which warns (one line per
    # split read) before the error: the error itself is one line.
    warning = "headbench: warning: dataset.verify_checksums = false: "
    errors = [line for line in captured.err.splitlines() if not line.startswith(warning)]
    assert len(errors) == 1 and "Traceback" not in captured.err, captured.err
    assert not out.exists()
    return errors[0]


@pytest.mark.bad_input
def test_missing_cifar_files_stop_the_run_with_one_line(capsys, tmp_path):
    argv = ["run", "cifar100_b50_inc10", "--set", f"dataset.root={json.dumps(str(tmp_path))}"]
    err = refused(capsys, [*argv, "--set", "dataset.download=false"], tmp_path / "out")
    assert str(tmp_path / "cifar-100-python" / "train") in err
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in err


@pytest.mark.bad_input
def test_weights_that_cannot_be_downloaded_leave_no_results_folder(
    capsys, cifar100_root, tmp_path, monkeypatch
):
    import urllib.error

    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    swap = ["--set", "backbone.name=resnet18", "--set", "backbone.weights=IMAGENET1K_V1"]
    argv = ["run", "cifar100_b0_inc10", *sum((["--set", o] for o in overrides(cifar100_root)), [])]
    err = refused(capsys, [*argv, *swap], tmp_path / "out")
    assert "resnet18-f37072fd.pth" in err and str(tmp_path / "hub" / "checkpoints") in err
