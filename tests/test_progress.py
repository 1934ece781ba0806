"""Progress inside a run: the engine reports each experience and, for strategies that train
the head, each epoch; the bar shows the latest report after its run count; --quiet prints
nothing."""

from __future__ import annotations

import strategies
from benchmarks import engine
from benchmarks.progress import Progress


def reports(name, blob_tensors, scenario, training, seeds=(0,)):
    seen: list[str] = []
    instances = [strategies.create(name) for _ in seeds]
    engine.run_seeds(
        instances, *blob_tensors, scenario, training, True, list(seeds), progress=seen.append
    )
    return seen


def expected_reports(experiences, epochs, seeds=1):
    lines = []
    for k in range(1, experiences + 1):
        lines.append(f"experience {k}/{experiences}")
        lines += [
            f"experience {k}/{experiences}, epoch {e}/{epochs}" for e in range(1, epochs + 1)
        ] * seeds
    return lines


def test_gradient_strategy_reports_every_experience_and_epoch(blob_tensors, scenario_2_2, training):
    assert reports("naive", blob_tensors, scenario_2_2, training) == expected_reports(3, 5)


def test_batched_seeds_report_each_epoch_once(blob_tensors, scenario_2_2, training):
    # Two seeds trained as one vmapped loop: one report per epoch, not one per seed.
    seen = reports("naive", blob_tensors, scenario_2_2, training, seeds=(0, 1))
    assert seen == expected_reports(3, 5)


def test_analytic_strategy_reports_experiences_only(blob_tensors, scenario_2_2, training):
    assert reports("ridge", blob_tensors, scenario_2_2, training) == [
        "experience 1/3",
        "experience 2/3",
        "experience 3/3",
    ]


def test_the_bar_shows_the_latest_report_after_its_count(capsys):
    progress = Progress()
    for _ in progress.iterate(["a", "b"], "runs", total=2):
        progress.status("experience 2/10, epoch 3/5")
    text = capsys.readouterr().err
    assert "runs:" in text
    assert "experience 2/10, epoch 3/5" in text
    # The report redraws the bar's line: it follows the run count on the same line.
    line = next(part for part in text.split("\r") if "experience 2/10" in part)
    assert line.index("/2") < line.index("experience 2/10, epoch 3/5")


def test_quiet_prints_nothing(capsys):
    progress = Progress(quiet=True)
    for _ in progress.iterate(["a"], "runs", total=1):
        progress.status("experience 1/1, epoch 1/1")
    progress.log("a line")
    assert capsys.readouterr().err == ""
