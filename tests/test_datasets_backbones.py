"""The digits dataset, the .npz loader on valid input, and the frozen base-task backbone."""

import numpy as np
import torch

from benchmarks import backbones, datasets
from benchmarks.progress import Progress
from benchmarks.scenario import Scenario


def test_digits_split_is_stratified_fixed_and_disjoint():
    data = datasets.load({"name": "digits", "test_fraction": 0.3, "split_seed": 0})
    # scikit-learn ships 1797 digits, 8x8 grey levels 0..16, scaled here to [0, 1].
    assert len(data.train_targets) + len(data.test_targets) == 1797
    assert data.train_inputs.shape[1:] == (1, 8, 8) and data.train_inputs.max() <= 1.0
    from sklearn.datasets import load_digits

    per_class = np.bincount(load_digits().target)
    assert np.bincount(data.test_targets).tolist() == [round(0.3 * n) for n in per_class]
    again = datasets.load({"name": "digits", "test_fraction": 0.3, "split_seed": 0})
    assert again.fingerprint == data.fingerprint
    other = datasets.load({"name": "digits", "test_fraction": 0.3, "split_seed": 1})
    assert other.fingerprint != data.fingerprint


def test_npz_features_cast_to_float32_and_int64(tmp_path, blobs):
    path = tmp_path / "mixed.npz"
    arrays = dict(
        blobs,
        X_train=blobs["X_train"].astype(np.float64),
        y_train=blobs["y_train"].astype(np.int32),
    )
    np.savez(path, **arrays, class_names=np.array([f"c{i}" for i in range(6)]))
    data = datasets.load({"name": "features", "path": str(path)})
    assert data.train_inputs.dtype == np.float32 and data.train_targets.dtype == np.int64
    assert data.class_names == ["c0", "c1", "c2", "c3", "c4", "c5"]
    np.testing.assert_array_equal(data.train_inputs, blobs["X_train"])


def _tiny_images(num_classes=4, per_class=12):
    generator = np.random.RandomState(0)
    labels = np.repeat(np.arange(num_classes), per_class)
    images = generator.rand(len(labels), 1, 8, 8).astype(np.float32)
    images[np.arange(len(labels)), 0, labels, labels] += 2.0  # a class-specific bright pixel
    return datasets.Data(images, labels, images[:8], labels[:8], ["a", "b", "c", "d"], "tiny")


def test_base_task_backbone_is_frozen_and_its_batch_norm_never_changes():
    data = _tiny_images()
    scenario = Scenario([0, 1, 2, 3], 2, 2)
    options = {
        "width": 4,
        "epochs": 2,
        "lr": 0.05,
        "weight_decay": 5e-4,
        "batch_size": 8,
        "seed": 0,
    }
    network = backbones.train_base_task(
        options, data, scenario, torch.device("cpu"), Progress(True)
    )
    assert not network.training
    assert not any(p.requires_grad for p in network.parameters())
    before = {k: v.clone() for k, v in network.state_dict().items()}
    images = torch.from_numpy(data.train_inputs)
    first = backbones._extract(network, images)
    backbones._extract(network, images * 3)  # other statistics: would move train-mode BN
    second = backbones._extract(network, images)
    assert torch.equal(first, second)
    for key, value in network.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert first.shape == (len(images), 8) and (first >= 0).all()  # 2 * width, after a ReLU


def test_base_task_trains_only_on_the_first_experience_classes(monkeypatch):
    data = _tiny_images()
    scenario = Scenario([3, 1, 0, 2], 2, 2)  # base task: original classes 3 and 1
    seen = []
    original = torch.nn.functional.cross_entropy
    monkeypatch.setattr(
        backbones.F,
        "cross_entropy",
        lambda logits, labels: seen.append(labels.clone()) or original(logits, labels),
    )
    options = {"width": 2, "epochs": 1, "lr": 0.05, "weight_decay": 0.0, "batch_size": 8, "seed": 0}
    backbones.train_base_task(options, data, scenario, torch.device("cpu"), Progress(True))
    labels = torch.cat(seen)
    assert sorted(labels.unique().tolist()) == [0, 1]  # arrival ids of classes 3 and 1
    assert len(labels) == 24  # 12 images each of classes 3 and 1
