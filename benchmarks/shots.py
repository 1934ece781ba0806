"""Few-shot scenarios: which training samples each experience keeps.

`[scenario] shots = K` keeps K training samples of every class that arrives after the
first experience, `base_shots = K` of every class of the first one ("all", the default,
keeps them all). The samples are drawn once per seed, the same for every strategy run
with that seed, and each run record lists them (`train_subset`); the test split is
never touched. A class's K samples are the first K of a permutation of its training
samples (in dataset order) drawn by numpy's default generator seeded with (seed, the
dataset's class id): they depend on neither the class order nor the other classes, and
K = 5 keeps a subset of what K = 10 keeps.

`[scenario] protocol = "fscil_cifar100"` is the few-shot class-incremental protocol of
Tao et al., *Few-Shot Class-Incremental Learning*, CVPR 2020 (TOPIC), as CEC (Zhang et
al., *Few-Shot Incremental Learning with Continually Evolved Classifiers*, CVPR 2021)
and their successors run it on CIFAR-100: classes 0-59 with all their training images
first, then 8 sessions of 5 classes (60-64, 65-69, ...) with the 25 training images
that the published index lists name, the same for every seed. `FSCIL_CIFAR100` holds
those lists as data; `check_fscil` checks them against the dataset at plan time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.errors import UsageError
from benchmarks.scenario import Scenario, abridged

ALL = "all"

# The index lists `data/index_list/cifar100/session_{2..9}.txt` of TOPIC's repository
# (github.com/xyutao/fscil), as CEC ships them (github.com/icoz69/CEC-CVPR2021, commit
# 3a5d335, MIT licence, Copyright (c) 2021 icoz69): indices into CIFAR-100's training
# split in torchvision's order (the `train` pickle's rows), 25 per session, in file order.
# The index list's README: session_1.txt "stores all the base class training images";
# each later file "the 25 (5 classes and 5 shots per class) few-shot new class training
# images". session_1.txt (30,000 distinct indices, 173,394 bytes) is not copied: CEC's
# loader does not read it for CIFAR-100 and takes all training images of classes 0-59
# (`np.arange(base_class)`), as this protocol does.
FSCIL_CIFAR100_SESSIONS = [
    [29774, 33344, 4815, 6772, 48317, 29918, 33262, 5138, 7342, 47874, 28864, 32471, 4316,
     6436, 47498, 29802, 33159, 3730, 5093, 47740, 30548, 34549, 2845, 4996, 47866],
    [28855, 32834, 4603, 6914, 48126, 29932, 33300, 3860, 5424, 47055, 29434, 32604, 4609,
     6380, 47844, 30456, 34217, 4361, 6550, 46896, 29664, 32857, 4923, 7502, 47270],
    [31267, 34427, 4799, 6611, 47404, 28509, 31687, 3477, 5563, 48003, 29545, 33412, 5114,
     6808, 47692, 29209, 33265, 4131, 6401, 48102, 31290, 34432, 6060, 8451, 48279],
    [32337, 35646, 6022, 9048, 48584, 30768, 34394, 5091, 6510, 48023, 30310, 33230, 5098,
     6671, 48349, 29690, 33490, 4260, 5916, 47371, 31173, 34943, 4517, 6494, 47689],
    [30281, 33894, 3768, 6113, 48095, 28913, 32821, 6172, 8276, 48004, 31249, 34088, 5257,
     6961, 47534, 30404, 34101, 4985, 6899, 48115, 31823, 35148, 3922, 6548, 48127],
    [30815, 34450, 3481, 5089, 47913, 31683, 34591, 5251, 7608, 47984, 29837, 33823, 4615,
     6448, 47752, 31222, 34079, 5686, 7919, 48675, 28567, 32964, 5009, 6201, 47039],
    [29355, 33909, 3982, 5389, 47166, 31058, 35180, 5177, 6890, 48032, 31176, 35098, 5235,
     7861, 47830, 30874, 34639, 5266, 7489, 47323, 29960, 34050, 4988, 7434, 48208],
    [30463, 34580, 5230, 6813, 48605, 31702, 35249, 5854, 7765, 48444, 30380, 34028, 5211,
     7433, 47988, 31348, 34021, 4929, 7033, 47904, 30627, 33728, 4895, 6299, 47507],
]  # fmt: skip
# SHA-256 of each original file, session_1.txt .. session_9.txt (one index per line, "\n").
FSCIL_CIFAR100_SHA256 = [
    "5f402fb2c5260a05bb02ea000f9b9e32f23e305281969afa6ea47a9a22b69cf7",
    "654db7b72e383a1aac94a4e570ea26c9f3cb8b7bf95a7aff2a9e1626f4e0b330",
    "a466c0f920549096435c9b298e9f52f2b4a676db34f2c54de04f4147759a2eea",
    "c2d0f0a6db516358055d448b1dd8033a778ae7ba30de78adbd8ea2e1b94282b0",
    "2907fe7d341f9f4da0c2cdf59bcf33a50619f41e9ebd3232fe2c6c11bc30bfa4",
    "87f70d04e01acb3ba0bbce24f84bf78ee905721d3609e53c5f11bf92d3237197",
    "70131153942c3a30418843097a482d0e24dedbaa394876b101db205a5099a595",
    "8bcefabac5ff2d3086e3cc097b306713661f07aa670ef3935570226293e1c2f1",
    "242fd41330db6081d11216a8324f92aebd64545b2171bd567a162a7521a62ed7",
]
# What the protocol fixes: (scenario key, value) and the dataset's size.
FSCIL_CIFAR100_SCENARIO = {"initial_classes": 60, "increment": 5}
FSCIL_CIFAR100_TRAIN_SIZE = 50_000
FSCIL_CIFAR100_SHOTS = 5


# The [scenario] keys of few-shot streams and the values that keep every sample.
DEFAULTS = {"shots": ALL, "base_shots": ALL, "protocol": "none"}


@dataclass(frozen=True)
class TrainSubset:
    """Which training samples each experience keeps: drawn per seed, or published.

    `source` is "drawn" (`shots`, `base_shots`) or the protocol's name; `indices_for(seed)`
    gives, per experience, the sorted indices into the dataset's training split that it
    keeps, or None where it keeps all of its classes' samples.
    """

    source: str
    scenario: Scenario
    train_targets: np.ndarray  # (train,) arrival-order ids
    shots: int | str = ALL
    base_shots: int | str = ALL

    def indices_for(self, seed: int) -> list[np.ndarray | None]:
        if self.source == "fscil_cifar100":
            return [None, *(np.sort(np.array(s)) for s in FSCIL_CIFAR100_SESSIONS)]
        return draw(self.train_targets, self.scenario, self.shots, self.base_shots, seed)

    def record(self, seed: int) -> dict:
        """The run record's `train_subset`: the source and the kept indices per experience."""
        return {
            "source": self.source,
            "indices": [None if kept is None else kept.tolist() for kept in self.indices_for(seed)],
        }


def draw(
    train_targets: np.ndarray,
    scenario: Scenario,
    shots: int | str,
    base_shots: int | str,
    seed: int,
) -> list[np.ndarray | None]:
    """Per experience, the sorted training indices it keeps (None: all); see the module."""
    kept: list[np.ndarray | None] = []
    for index in range(scenario.num_experiences):
        count = base_shots if index == 0 else shots
        if count == ALL:
            kept.append(None)
            continue
        chosen = []
        for label in range(scenario.boundaries[index], scenario.boundaries[index + 1]):
            members = np.flatnonzero(train_targets == label)  # (class size,) dataset order
            generator = np.random.default_rng([seed, scenario.class_order[label]])
            chosen.append(members[generator.permutation(len(members))[:count]])
        kept.append(np.sort(np.concatenate(chosen)))
    return kept


def plan(
    table: dict,
    scenario: Scenario,
    train_labels: np.ndarray,
    class_names: Sequence[str],
    strategies: dict[str, bool],
    backbone: str,
) -> TrainSubset | None:
    """The TrainSubset a resolved [scenario] table asks for, checked; None without one.

    Args:
        table: the resolved [scenario] table.
        scenario: its Scenario.
        train_labels: (train,) the dataset's own class ids of the training split.
        class_names: the dataset's class names, by class id.
        strategies: name -> whether it trains on all seen data (joint).
        backbone: the backbone's registry name.

    Raises:
        UsageError: a strategy that needs all the data, shots larger than a class, base
            shots with a backbone trained on the base task, or a protocol whose
            conditions the config or the dataset do not meet.
    """
    shots, base_shots, protocol = table["shots"], table["base_shots"], table["protocol"]
    if shots == ALL and base_shots == ALL and protocol == "none":
        return None
    asked = (
        f"scenario.protocol = {protocol!r}"
        if protocol != "none"
        else " and ".join(
            f"scenario.{key} = {value}"
            for key, value in (("shots", shots), ("base_shots", base_shots))
            if value != ALL
        )
    )
    whole = [name for name, all_seen in strategies.items() if all_seen]
    if whole:
        raise UsageError(
            f"{asked} with strategy {whole[0]}: it trains on all the data seen so far (the "
            "upper bound), which a few-shot stream withholds; leave it out (--strategy) or "
            "drop the shots"
        )
    targets = scenario.remap(train_labels)  # (train,) arrival-order ids
    if protocol == "fscil_cifar100":
        if shots != ALL or base_shots != ALL:
            raise UsageError(
                "scenario.protocol = 'fscil_cifar100' fixes the training samples (all of the "
                "first 60 classes, then 5 per class); leave scenario.shots and base_shots out"
            )
        check_fscil(table, scenario, train_labels)
        return TrainSubset(protocol, scenario, targets)
    if base_shots != ALL and backbone == "base-task":
        raise UsageError(
            f"scenario.base_shots = {base_shots} with backbone 'base-task': the backbone is "
            "trained once on all of the first experience's data, not on each seed's shots; "
            "use a pretrained backbone or leave base_shots out"
        )
    sizes = np.bincount(targets, minlength=scenario.num_classes)  # (classes,) arrival order
    for key, count, first, last in (
        ("base_shots", base_shots, 0, scenario.boundaries[1]),
        ("shots", shots, scenario.boundaries[1], scenario.num_classes),
    ):
        if count == ALL or first == last:
            continue
        smallest = first + int(np.argmin(sizes[first:last]))
        if sizes[smallest] < count:
            label = scenario.class_order[smallest]
            raise UsageError(
                f"scenario.{key} = {count} is more than class {label} "
                f"({class_names[label]!r}) has: {sizes[smallest]} training samples; use at "
                f"most {sizes[smallest]}"
            )
    return TrainSubset("drawn", scenario, targets, shots, base_shots)


def check_fscil(table: dict, scenario: Scenario, train_labels: np.ndarray) -> None:
    """The protocol's scenario, and its index lists against the dataset: each session's 25
    indices must be 5 training samples of each of its 5 classes (60 + 5 (s - 1) ...)."""
    for key, value in FSCIL_CIFAR100_SCENARIO.items():
        if table[key] != value:
            raise UsageError(
                f"scenario.{key} = {table[key]!r} contradicts scenario.protocol = "
                f"'fscil_cifar100' (60 base classes, then 8 sessions of 5, classes in id "
                f"order); set {key} = {value!r}"
            )
    if len(train_labels) != FSCIL_CIFAR100_TRAIN_SIZE or scenario.num_classes != 100:
        raise UsageError(
            f"scenario.protocol = 'fscil_cifar100' indexes CIFAR-100's training split "
            f"(50000 samples, 100 classes); this dataset has {len(train_labels)} training "
            f"samples and {scenario.num_classes} classes"
        )
    if scenario.class_order != list(range(100)):
        order = table["class_order"]
        shown = repr(order) if isinstance(order, str) else abridged(order)
        raise UsageError(
            f"scenario.class_order = {shown} contradicts scenario.protocol = "
            "'fscil_cifar100' (classes arrive in id order); set class_order = 'identity'"
        )
    for session, indices in enumerate(FSCIL_CIFAR100_SESSIONS, start=1):
        classes, counts = np.unique(train_labels[indices], return_counts=True)
        expected = scenario.original_classes(session)
        if classes.tolist() != expected or set(counts.tolist()) != {FSCIL_CIFAR100_SHOTS}:
            found = dict(zip(classes.tolist(), counts.tolist(), strict=True))
            raise UsageError(
                f"scenario.protocol = 'fscil_cifar100': the index list of session "
                f"{session + 1} gives samples per class {found} of this dataset, not 5 of "
                f"each of classes {expected}; it needs CIFAR-100's training split in "
                "torchvision's order"
            )
