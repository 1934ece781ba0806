"""The shipped text configs run end to end on files in the releases' own layouts.

Generated stand-ins: a data_full.json with CLINC150's 150 intents and BANKING77's
train.csv/test.csv with its 77, two utterances per intent and split, and a tiny random
BERT saved with `save_pretrained` (tests/test_text_backbone.py). The checks are the
protocol the configs promise: 15 × 10, 7 × 11 and 140 + 10 × 1 experiences, intents as
class names in the records, seed-1993 order.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("transformers", reason="the text configs need the text extra")

from test_text_backbone import save_tiny_bert  # noqa: E402

from benchmarks.cli import main  # noqa: E402


def clinc_release(folder):
    intents = [f"intent_{k:03d}" for k in range(150)]
    content = {
        split: [[f"alpha beta {k} {split}", name] for k, name in enumerate(intents) for _ in "ab"]
        for split in ("train", "val", "test")
    }
    for split in ("oos_train", "oos_val", "oos_test"):
        content[split] = [["gamma delta", "oos"]]
    folder.mkdir()
    (folder / "data_full.json").write_text(json.dumps(content), encoding="utf-8")
    return intents


def banking_release(folder):
    intents = [f"category_{k:02d}" for k in range(77)]
    folder.mkdir()
    for split in ("train", "test"):
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "category"])
            for name in intents:
                writer.writerows([[f"alpha {name}", name], [f"beta {name}", name]])
    return intents


@pytest.mark.parametrize(
    ("config", "release", "experiences"),
    [
        ("clinc150_task15", clinc_release, [10] * 15),
        ("banking77_task7", banking_release, [11] * 7),
        ("clinc150_b140_inc1", clinc_release, [140] + [1] * 10),
    ],
)
def test_a_shipped_text_config_runs_on_the_release_layout(
    config, release, experiences, tmp_path, capsys
):
    intents = release(tmp_path / "data")
    model = save_tiny_bert(tmp_path / "bert")
    out = tmp_path / "out"
    argv = [
        "run",
        config,
        "--set", f'dataset.root="{tmp_path / "data"}"',
        "--set", "dataset.verify_checksums=false",
        "--set", "dataset.download=false",
        "--set", f'backbone.model="{model}"',
        "--set", "backbone.max_length=16",
        "--set", "training.epochs=1",
        "--strategy", "naive",
        "--strategy", "seq_star",
        "--seeds", "0",
        "--quiet",
        "--out", str(out),
        "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    assert sorted(r["strategy"] for r in records) == ["naive", "seq_star"]
    for record in records:
        assert record["class_names"] == intents  # ids by sorted name; no "oos"
        order = np.random.RandomState(1993).permutation(len(intents)).tolist()
        assert record["class_order"] == order
        sizes = [len(row) for row in record["accuracy_matrix"]]
        assert sizes == [len(experiences)] * len(experiences)
    # The report names the intents: the setup line's first three in order of arrival, and
    # the old-label check's table its classes by intent name.
    first = ", ".join(intents[c] for c in order[:3])
    assert main(["report", str(out)]) == 0, capsys.readouterr().err
    report = (out / "report" / "report.md").read_text()
    assert f"(first {first}, …)" in report
    old_label = report[report.index("Old-label check") :]
    rows = [line for line in old_label.splitlines() if line.startswith("| ")]
    assert any(f" {name} " in row for row in rows for name in intents), rows[:5]
