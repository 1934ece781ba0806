"""Datasets and backbones: the digits and .npz loaders, the frozen base-task networks
(small conv net, CIFAR ResNets), torchvision backbones with local weights, preprocessing on
the device, augmented views and stored dtypes."""

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cifar_images
from PIL import Image

from benchmarks import backbones, datasets, networks
from benchmarks.cache import Cache
from benchmarks.errors import UsageError
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
    first = backbones.base_task._extract(network, images)
    backbones.base_task._extract(network, images * 3)  # other statistics: would move train-mode BN
    second = backbones.base_task._extract(network, images)
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
        torch.nn.functional,
        "cross_entropy",
        lambda logits, labels: seen.append(labels.clone()) or original(logits, labels),
    )
    options = {"width": 2, "epochs": 1, "lr": 0.05, "weight_decay": 0.0, "batch_size": 8, "seed": 0}
    backbones.train_base_task(options, data, scenario, torch.device("cpu"), Progress(True))
    labels = torch.cat(seen)
    assert sorted(labels.unique().tolist()) == [0, 1]  # arrival ids of classes 3 and 1
    assert len(labels) == 24  # 12 images each of classes 3 and 1


# ---------------------------------------------------------------------------------------
# CIFAR ResNets, pretrained torchvision backbones, preprocessing, augmented views

CPU = torch.device("cpu")


def _cifar_like(num_classes=4, per_class=10):
    """uint8 32x32 noise images, 10 per class; the test split is the first 8 of them."""
    generator = np.random.RandomState(0)
    labels = np.repeat(np.arange(num_classes), per_class)
    images = generator.randint(0, 256, (len(labels), 3, 32, 32)).astype(np.uint8)
    names = [str(c) for c in range(num_classes)]
    return datasets.Data(images, labels, images[:8], labels[:8], names, "cifar-like", "toy")


def test_resnet32_and_resnet18_cifar_have_the_published_sizes():
    def parameters(network):
        return sum(p.numel() for p in network.parameters())

    # He et al. 2016, Table 6: ResNet-32 has 0.46M parameters (with its 10-way classifier,
    # 64 * 10 + 10 of them; option-A shortcuts have none).
    resnet32 = networks.build("resnet32", 3, 0)
    assert resnet32.out_features == 64
    assert round((parameters(resnet32) + 650) / 1e6, 2) == 0.46
    # The common CIFAR ResNet-18 has 11,173,962 parameters with its 10-way classifier.
    resnet18 = networks.build("resnet18_cifar", 3, 0)
    assert resnet18.out_features == 512
    assert parameters(resnet18) + 512 * 10 + 10 == 11_173_962
    features = resnet32(torch.rand(2, 3, 32, 32))
    assert features.shape == (2, 64) and (features >= 0).all()


def test_resnet_base_task_is_frozen_and_its_batch_norm_never_changes():
    data = _cifar_like()
    scenario = Scenario([0, 1, 2, 3], 2, 2)
    options = {
        "arch": "resnet32",
        "width": 4,
        "epochs": 1,
        "lr": 0.1,
        "weight_decay": 5e-4,
        "batch_size": 10,
        "augmentation": "auto",
        "seed": 0,
    }
    network = backbones.train_base_task(options, data, scenario, CPU, Progress(True))
    assert not network.training and not any(m.training for m in network.modules())
    assert not any(p.requires_grad for p in network.parameters())
    # Standardisation holds the base task's images' statistics (classes 0 and 1 only).
    base = data.train_inputs[data.train_targets < 2].astype(np.float64) / 255
    expected_mean = base.transpose(1, 0, 2, 3).reshape(3, -1).mean(1)
    np.testing.assert_allclose(network.standardize.mean.numpy(), expected_mean, rtol=1e-5)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    runner = backbones.Runner(network, backbones.Preprocessing(), CPU, batch_size=16)
    first = backbones.run_network(runner, data.train_inputs, Progress(True), "")
    backbones.run_network(runner, 255 - data.train_inputs, Progress(True), "")  # other stats
    second = backbones.run_network(runner, data.train_inputs, Progress(True), "")
    assert torch.equal(first, second)
    for key, value in network.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_device_preprocessing_matches_the_weights_own_transforms():
    from torchvision.models import ResNet18_Weights

    images, _ = cifar_images(1, seed=0)
    images = images[:4]
    transform = ResNet18_Weights.IMAGENET1K_V1.transforms()  # resize 256, crop 224, ImageNet
    preprocessing = backbones.torchvision_models._torchvision_recipe(
        "resnet18",
        {"weights": "IMAGENET1K_V1", "resize_size": 0, "crop_size": 0},
    ).preprocessing
    assert (preprocessing.resize, preprocessing.crop) == (256, 224)
    ours = preprocessing(torch.from_numpy(images))  # (4, 3, 224, 224), the whole batch at once
    reference = transform(torch.from_numpy(images))  # torchvision on uint8 tensors
    # torchvision resizes uint8 and rounds; we resize floats: at most half a grey level apart
    # (0.5 / 255 / 0.225 = 0.0087 after normalisation).
    assert ours.shape == reference.shape == (4, 3, 224, 224)
    assert (ours - reference).abs().max() < 0.01
    pil = torch.stack([transform(Image.fromarray(image.transpose(1, 2, 0))) for image in images])
    assert (ours - pil).abs().mean() < 0.01


def _resnet18_options(weights: Path, **extra) -> dict:
    return {
        "name": "resnet18",
        "weights": str(weights),
        "resize_size": 32,
        "crop_size": 32,
        "extract_batch_size": 0,
        "feature_dtype": "float32",
        "augment_views": 0,
        **extra,
    }


def test_local_weights_give_the_penultimate_features_of_that_network(resnet18_weights):
    from torchvision.models import resnet18

    data = _cifar_like()
    options = _resnet18_options(resnet18_weights)
    scenario = Scenario([0, 1, 2, 3], 2, 2)
    features = backbones.extract(options, data, scenario, CPU, Progress(True))
    reference = resnet18()
    reference.load_state_dict(torch.load(resnet18_weights, weights_only=True))
    reference.fc = torch.nn.Identity()
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    inputs = (torch.from_numpy(data.test_inputs).float() / 255 - mean) / std
    with torch.no_grad():
        expected = reference.eval()(inputs)  # (8, 512)
    assert features.train.shape == (40, 512) and features.train.dtype == torch.float32
    torch.testing.assert_close(features.test, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        ({"weights": "IMAGENET9K_V9"}, ["'IMAGENET9K_V9'", "DEFAULT", "IMAGENET1K_V1"]),
        ({"weights": "missing/weights.pth"}, ["'missing/weights.pth'", "no such file"]),
        ({"name": "torchvision", "model": "resnet19"}, ["'resnet19'", "resnet18"]),
    ],
)
@pytest.mark.bad_input
def test_bad_weights_and_models_are_named(options, fragments, tmp_path):
    table = {**_resnet18_options(tmp_path / "unused.pth"), **options}
    if table["name"] == "torchvision":
        table["weights"] = "DEFAULT"
    spec = backbones.BACKBONES[table["name"]]
    with pytest.raises(UsageError) as error:
        spec.check(_cifar_like(), table)
    for fragment in fragments:
        assert fragment in str(error.value)


@pytest.mark.bad_input
def test_weights_of_another_architecture_are_refused(tmp_path, resnet18_weights):
    options = {**_resnet18_options(resnet18_weights), "name": "resnet50"}
    with pytest.raises(UsageError, match="does not fit resnet50"):
        backbones.extract(options, _cifar_like(), Scenario([0, 1, 2, 3], 2, 2), CPU, Progress(True))


@pytest.mark.bad_input
def test_weights_that_cannot_be_downloaded_say_where_to_put_them(tmp_path, monkeypatch):
    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    options = {**_resnet18_options(Path("x.pth")), "weights": "IMAGENET1K_V1"}
    with pytest.raises(UsageError) as error:
        backbones.extract(options, _cifar_like(), Scenario([0, 1, 2, 3], 2, 2), CPU, Progress(True))
    message = str(error.value)
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert str(tmp_path / "hub" / "checkpoints") in message and "\n" not in message


def test_augmented_views_are_cached_beside_the_clean_view(tmp_path, resnet18_weights, monkeypatch):
    from torchvision.models.resnet import ResNet

    calls = []
    original = ResNet.forward
    monkeypatch.setattr(
        ResNet, "forward", lambda self, images: calls.append(len(images)) or original(self, images)
    )
    data, scenario, cache = _cifar_like(), Scenario([0, 1, 2, 3], 2, 2), Cache(tmp_path)
    clean = backbones.extract(_resnet18_options(resnet18_weights), data, scenario, CPU,
                              Progress(True), cache)  # fmt: skip
    assert clean.train_views is None and sum(calls) == 48
    calls.clear()
    options = _resnet18_options(resnet18_weights, augment_views=2)
    views = backbones.extract(options, data, scenario, CPU, Progress(True), cache)
    assert sum(calls) == 2 * 40  # only the views ran: the clean splits came from the cache
    assert views.train_views.shape == (2, 40, 512)
    assert torch.equal(views.train, clean.train)
    assert not torch.equal(views.train_views[0], views.train_views[1])
    assert not torch.equal(views.train_views[0], clean.train)
    calls.clear()
    again = backbones.extract(options, data, scenario, CPU, Progress(True), cache)
    assert calls == [] and torch.equal(again.train_views, views.train_views)


def test_augment_is_a_padded_crop_and_flip():
    images = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    generator = torch.Generator().manual_seed(0)
    out = backbones.augment(images, generator)
    # Replay the draws: offsets in 0..2 (padding 1 at side 8), then the flips.
    replay = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 3, (2,), generator=replay)
    cols = torch.randint(0, 3, (2,), generator=replay)
    flips = torch.rand(2, generator=replay) < 0.5
    for i in range(2):
        padded = torch.nn.functional.pad(images[i], (1, 1, 1, 1))
        expected = padded[:, rows[i] : rows[i] + 8, cols[i] : cols[i] + 8]
        if flips[i]:
            expected = expected.flip(-1)
        assert torch.equal(out[i], expected)


def test_float16_features_are_stored_as_float16_and_served_as_float32(tmp_path, resnet18_weights):
    data, scenario, cache = _cifar_like(), Scenario([0, 1, 2, 3], 2, 2), Cache(tmp_path)
    full = backbones.extract(_resnet18_options(resnet18_weights), data, scenario, CPU,
                             Progress(True))  # fmt: skip
    options = _resnet18_options(resnet18_weights, feature_dtype="float16")
    half = backbones.extract(options, data, scenario, CPU, Progress(True), cache)
    assert half.train.dtype == torch.float32
    assert torch.equal(half.train, full.train.half().float())
    stored = torch.load(cache.directory / "features" / f"{half.cache['train']['key']}.pt",
                        weights_only=True)  # fmt: skip
    assert stored["tensors"]["features"].dtype == torch.float16


def test_image_files_of_different_sizes_are_resized_on_the_device(tmp_path, resnet18_weights):
    from test_image_datasets import write_image_folder

    write_image_folder(tmp_path, {"train": {"a": 3, "b": 2}, "test": {"a": 1, "b": 1}})
    data = datasets.load(
        {"name": "imagefolder", "root": str(tmp_path), "train_dir": "train", "test_dir": "test"}
    )
    options = _resnet18_options(resnet18_weights, resize_size=24, crop_size=16)
    features = backbones.extract(options, data, Scenario([0, 1], 2, 1), CPU, Progress(True))
    assert features.train.shape == (5, 512) and features.test.shape == (2, 512)
    # Each image alone (shorter side to 24, centre 16x16) gives the same features.
    recipe = backbones.torchvision_models._torchvision_recipe("resnet18", options)
    runner = backbones.Runner(recipe.build(Progress(True)), recipe.preprocessing, CPU, batch_size=1)
    for index in range(5):
        alone = runner(data.train_inputs.dataset()[index][None])
        torch.testing.assert_close(features.train[index : index + 1], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.bad_input
def test_base_task_refuses_image_files(tmp_path):
    from test_image_datasets import write_image_folder

    write_image_folder(tmp_path, {"train": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}})
    data = datasets.load(
        {"name": "imagefolder", "root": str(tmp_path), "train_dir": "train", "test_dir": "test"}
    )
    with pytest.raises(UsageError, match="needs a dataset held in memory"):
        backbones.BACKBONES["base-task"].check(data)


def test_timm_model_with_a_local_checkpoint(tmp_path):
    timm = pytest.importorskip("timm")
    network = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    path = tmp_path / "resnet10t.pth"
    torch.save(network.state_dict(), path)
    options = {
        "name": "timm",
        "model": "resnet10t",
        "pretrained": False,
        "weights": str(path),
        "resize_size": 32,
        "crop_size": 32,
        "extract_batch_size": 0,
        "feature_dtype": "float32",
        "augment_views": 0,
    }
    data = _cifar_like()
    features = backbones.extract(options, data, Scenario([0, 1, 2, 3], 2, 2), CPU, Progress(True))
    assert features.train.shape == (40, network.num_features)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_extraction_under_autocast_matches_the_cpu(resnet18_weights):
    data, scenario = _cifar_like(), Scenario([0, 1, 2, 3], 2, 2)
    options = _resnet18_options(resnet18_weights, resize_size=64, crop_size=64)
    on_cpu = backbones.extract(options, data, scenario, CPU, Progress(True))
    on_cuda = backbones.extract(options, data, scenario, torch.device("cuda"), Progress(True))
    assert on_cuda.train.device.type == "cuda" and on_cuda.train.dtype == torch.float32
    similarity = torch.nn.functional.cosine_similarity(on_cuda.train.cpu(), on_cpu.train)
    assert similarity.min() > 0.99  # bfloat16 / float16 autocast, channels-last
