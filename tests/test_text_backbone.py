"""The `transformers` backbone on a tiny random BERT written by the test (no download)."""

import sys

import numpy as np
import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason='the transformers backbone needs pip install "headbench[text]"'
)

from benchmarks import backbones  # noqa: E402
from benchmarks.backbones import text  # noqa: E402
from benchmarks.cache import Cache  # noqa: E402
from benchmarks.config import resolve_table  # noqa: E402
from benchmarks.datasets import Data, Texts  # noqa: E402
from benchmarks.errors import UsageError  # noqa: E402
from benchmarks.progress import Progress  # noqa: E402
from benchmarks.scenario import Scenario  # noqa: E402

CPU = torch.device("cpu")
WORDS = (
    "the a cat dog bird fish sat ran flew swam on under over mat tree river red blue green "
    "small big fast slow today yesterday my your card account money transfer balance"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
HIDDEN = 32
# Batched, padded and one-sentence-alone runs sum the same float32 products in other orders:
# each dot product of <= 37 terms may differ by ~37 * 2^-24 ~ 2e-6 relative, through two
# layers and layer norms of O(1) values; 1e-5 on features of norm ~1 (or ~sqrt(32) for
# unnormalised ones, hence rtol) bounds that with room and still fails on any wrong token.
ATOL, RTOL = 1e-5, 1e-5


def save_tiny_bert(directory, seed=0, pooler=True, tokenizer=True):
    """A randomly initialised 2-layer BERT and its WordPiece tokenizer, saved to `directory`."""
    vocab = directory.parent / f"{directory.name}-vocab"
    vocab.mkdir(exist_ok=True)
    (vocab / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    config = transformers.BertConfig(
        vocab_size=len(SPECIAL) + len(WORDS),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    transformers.BertModel(config, add_pooling_layer=pooler).save_pretrained(directory)
    if tokenizer:
        transformers.BertTokenizerFast.from_pretrained(vocab).save_pretrained(directory)
    return directory


@pytest.fixture
def tiny_bert(tmp_path):
    return save_tiny_bert(tmp_path / "tiny-bert")


def sentences(count, seed=0, longest=12):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, longest + 1, count)  # shuffled lengths: sorting must be undone
    return [" ".join(rng.choice(WORDS, n)) for n in lengths]


def text_data(train, test):
    return Data(
        Texts(tuple(train)),
        np.arange(len(train)) % 2,
        Texts(tuple(test)),
        np.arange(len(test)) % 2,
        ["even", "odd"],
        fingerprint="tiny-text",
        name="tiny-text",
    )


def options(model, **overrides):
    table = {"model": str(model), "extract_batch_size": 4, **overrides}
    spec = backbones.BACKBONES["transformers"]
    return {"name": "transformers", **resolve_table("backbone", table, spec.options)}


def extract(model, data, cache=None, **overrides):
    return backbones.extract(options(model, **overrides), data, Scenario([0, 1], 2, 1), CPU,
                             Progress(True), cache)  # fmt: skip


def alone(model_dir, sentence, max_length=128):
    """The model run on one sentence, unpadded: (last hidden state, pooler output) in numpy."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir).eval()
    ids = tokenizer(sentence, truncation=True, max_length=max_length)["input_ids"]
    with torch.no_grad():
        outputs = model(input_ids=torch.tensor([ids]))
    return outputs.last_hidden_state[0].numpy(), outputs.pooler_output[0].numpy()


@pytest.fixture
def forwards(monkeypatch):
    """Sentences per encoder forward pass, counted as they run."""
    calls = []
    original = transformers.BertModel.forward

    def counted(self, input_ids=None, **kwargs):
        calls.append(len(input_ids))
        return original(self, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(transformers.BertModel, "forward", counted)
    return calls


def test_mean_pooling_is_the_normalised_masked_mean_of_each_sentence_alone(tiny_bert):
    train, test = sentences(11, seed=1), sentences(5, seed=2)
    features = extract(tiny_bert, text_data(train, test))
    for split, texts in ((features.train, train), (features.test, test)):
        expected = np.stack([alone(tiny_bert, s)[0].mean(0) for s in texts])  # (n, dim)
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        np.testing.assert_allclose(split.numpy(), expected, atol=ATOL, rtol=RTOL)
    assert split.shape == (5, HIDDEN) and features.val is None


def test_mean_pooling_equals_sentence_transformers_encode(tiny_bert):
    pytest.importorskip("sentence_transformers", reason="compares with sentence-transformers")
    try:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import (
            Normalize,
            Pooling,
            Transformer,
        )
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Normalize, Pooling, Transformer
    train = sentences(13, seed=3)
    reference = SentenceTransformer(
        modules=[
            Transformer(str(tiny_bert), max_seq_length=128),
            Pooling(HIDDEN, "mean"),
            Normalize(),
        ],
        device="cpu",
    ).encode(train, batch_size=4, convert_to_numpy=True)
    ours = extract(tiny_bert, text_data(train, train[:2])).train.numpy()
    np.testing.assert_allclose(ours, reference, atol=ATOL, rtol=RTOL)


def test_cls_and_pooler_pooling_are_not_normalised_by_default(tiny_bert):
    train = sentences(7, seed=4)
    data = text_data(train, train[:2])
    cls = extract(tiny_bert, data, pooling="cls").train.numpy()
    pooler = extract(tiny_bert, data, pooling="pooler").train.numpy()
    by_hand = [alone(tiny_bert, s) for s in train]
    np.testing.assert_allclose(cls, [h[0] for h, _ in by_hand], atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(pooler, [p for _, p in by_hand], atol=ATOL, rtol=RTOL)
    normalised = extract(tiny_bert, data, pooling="cls", normalize=True).train.numpy()
    np.testing.assert_allclose(
        normalised, cls / np.linalg.norm(cls, axis=1, keepdims=True), atol=1e-6
    )


def test_features_come_back_in_the_dataset_order(tiny_bert):
    train = sentences(10, seed=5)
    permutation = np.random.default_rng(0).permutation(10)
    first = extract(tiny_bert, text_data(train, train[:1])).train
    permuted = extract(tiny_bert, text_data([train[i] for i in permutation], train[:1])).train
    torch.testing.assert_close(permuted, first[permutation], atol=ATOL, rtol=RTOL)


def test_sentences_are_cut_at_max_length(tiny_bert):
    # [CLS] + 3 words + [SEP] = 5 word pieces: the other words are cut.
    long, short = "the cat sat on the mat", "the cat sat"
    features = extract(tiny_bert, text_data([long, short], [short]), max_length=5)
    torch.testing.assert_close(features.train[0], features.train[1], atol=ATOL, rtol=RTOL)
    untruncated = extract(tiny_bert, text_data([long, short], [short]))
    assert not torch.allclose(untruncated.train[0], untruncated.train[1], atol=1e-3)


def test_second_extraction_reads_the_cache_and_runs_no_forward(tiny_bert, tmp_path, forwards):
    data = text_data(sentences(9, seed=6), sentences(3, seed=7))
    cache = Cache(tmp_path / "cache")
    first = extract(tiny_bert, data, cache)
    assert sum(forwards) == 9 + 3  # each sentence once
    forwards.clear()
    again = extract(tiny_bert, data, cache)
    assert forwards == [] and torch.equal(again.train, first.train)
    assert {entry["source"] for entry in again.cache.values()} == {"cache"}


def test_cache_key_changes_with_the_model_files_and_the_pooling(tiny_bert, tmp_path, forwards):
    data = text_data(sentences(6, seed=8), sentences(2, seed=9))
    cache = Cache(tmp_path / "cache")
    extract(tiny_bert, data, cache)
    for overrides in ({"pooling": "cls"}, {"max_length": 8}, {"normalize": False}):
        forwards.clear()
        extract(tiny_bert, data, cache, **overrides)
        assert sum(forwards) == 8, overrides  # computed again: another key
    forwards.clear()
    save_tiny_bert(tiny_bert, seed=1)  # other weights in the same directory
    changed = extract(tiny_bert, data, cache)
    assert sum(forwards) == 8 and {e["source"] for e in changed.cache.values()} == {"computed"}


def test_identity_of_a_directory_is_the_digest_of_its_files(tiny_bert):
    before = text.text_recipe(options(tiny_bert)).identity
    (tiny_bert / "notes.txt").write_text("any file counts")
    assert text.text_recipe(options(tiny_bert)).identity != before
    assert "model" not in before and len(before["files_sha256"]) == 64


def one_line(error):
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.bad_input
def test_without_transformers_the_extra_is_named(tiny_bert, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import raises ImportError
    with pytest.raises(UsageError) as error:
        extract(tiny_bert, text_data(["a"], ["a"]))
    assert 'pip install "headbench[text]"' in one_line(error)


@pytest.mark.bad_input
def test_a_model_not_found_offline_says_to_give_a_local_directory(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UsageError) as error:
        extract("no-such-org/no-such-model", text_data(["a"], ["a"]))
    message = one_line(error)
    assert "'no-such-org/no-such-model'" in message and "local directory" in message


@pytest.mark.bad_input
def test_a_model_folder_without_a_tokenizer_is_refused(tmp_path):
    folder = save_tiny_bert(tmp_path / "untokenized", tokenizer=False)
    spec = backbones.BACKBONES["transformers"]
    with pytest.raises(UsageError) as error:
        spec.check(text_data(["a"], ["a"]), options(folder))
    assert "no usable tokenizer" in one_line(error)


@pytest.mark.bad_input
def test_pooler_is_refused_when_the_model_has_none(tmp_path):
    folder = save_tiny_bert(tmp_path / "poolerless", pooler=False)
    with pytest.raises(UsageError) as error:
        extract(folder, text_data(["a cat"], ["a dog"]), pooling="pooler")
    assert "pooler.dense" in one_line(error) and "at random" in one_line(error)
    distil = tmp_path / "distil"
    transformers.DistilBertModel(
        transformers.DistilBertConfig(
            vocab_size=40, dim=HIDDEN, n_layers=1, n_heads=2, hidden_dim=37
        )  # fmt: skip
    ).save_pretrained(distil)
    transformers.BertTokenizerFast.from_pretrained(tmp_path / "poolerless-vocab").save_pretrained(
        distil
    )
    with pytest.raises(UsageError) as error:
        extract(distil, text_data(["a cat"], ["a dog"]), pooling="pooler")
    assert "has no pooler" in one_line(error)


@pytest.mark.parametrize(
    ("key", "value", "accepted"),
    [("pooling", "max", "'mean', 'cls', 'pooler'"), ("normalize", "yes", "'auto', True, False")],
)
@pytest.mark.bad_input
def test_unknown_option_values_are_refused_in_one_line(tiny_bert, key, value, accepted):
    with pytest.raises(UsageError) as error:
        options(tiny_bert, **{key: value})
    assert accepted in one_line(error) and repr(value) in one_line(error)


@pytest.mark.bad_input
def test_max_length_beyond_the_tokenizer_is_refused(tiny_bert):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_bert)
    tokenizer.model_max_length = 16
    tokenizer.save_pretrained(tiny_bert)
    with pytest.raises(UsageError) as error:
        extract(tiny_bert, text_data(["a"], ["a"]), max_length=17)
    assert "at most 16 tokens" in one_line(error)


@pytest.mark.bad_input
def test_image_backbones_refuse_sentences_and_transformers_refuses_images():
    sentences_data = text_data(["a cat"], ["a dog"])
    with pytest.raises(UsageError) as error:
        backbones.BACKBONES["resnet18"].check(sentences_data)
    assert "gives sentences" in one_line(error) and "'transformers'" in one_line(error)
    images = Data(
        np.zeros((2, 3, 8, 8), np.uint8), np.array([0, 1]), np.zeros((2, 3, 8, 8), np.uint8),
        np.array([0, 1]), ["a", "b"], fingerprint="images",
    )  # fmt: skip
    with pytest.raises(UsageError) as error:
        backbones.BACKBONES["transformers"].check(images)
    assert "gives images" in one_line(error)


@pytest.fixture
def text_config(tiny_bert, tmp_path, monkeypatch):
    """A config whose dataset (registered for the test) gives sentences of 4 classes."""
    from benchmarks import datasets

    train = sentences(40, seed=10)
    data = Data(
        Texts(tuple(train)), np.arange(40) % 4, Texts(tuple(train[:20])), np.arange(20) % 4,
        ["a", "b", "c", "d"], fingerprint="tiny-text-cli",
    )  # fmt: skip
    spec = datasets.DatasetSpec("tiny-text", "sentences for the test", {}, lambda options: data)
    monkeypatch.setitem(datasets.DATASETS, "tiny-text", spec)
    config = tmp_path / "text.toml"
    config.write_text(f"""
[dataset]
name = "tiny-text"
[backbone]
name = "transformers"
model = "{tiny_bert}"
[scenario]
class_order = "identity"
initial_classes = 2
increment = 2
[training]
epochs = 1
seeds = [0]
[strategies.naive]
""")
    return config


def test_a_text_run_from_the_command_line_caches_its_features(text_config, tmp_path, capsys):
    from benchmarks.cli import main

    argv = ["run", str(text_config), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "first")]) == 0
    log = capsys.readouterr().err
    assert "features train: computed with transformers tiny-bert" in log and "sentences/s" in log
    assert main([*argv, "--out", str(tmp_path / "second")]) == 0
    assert "features train: from the cache" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("backbone.pooling=max", "backbone.pooling"),
        ("backbone.name=torchvision", "gives sentences"),
    ],
)
@pytest.mark.bad_input
def test_bad_text_configs_exit_2_with_one_line(text_config, tmp_path, capsys, override, named):
    from benchmarks.cli import main

    argv = ["run", str(text_config), "--out", str(tmp_path / "out"), "--set", override]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert named in error and "\n" not in error and not (tmp_path / "out").exists()


def test_a_hub_id_is_keyed_by_the_commit_its_revision_resolves_to(tiny_bert, tmp_path, monkeypatch):
    """A model in the Hugging Face cache (its on-disk layout), read offline by hub id."""
    import shutil

    import huggingface_hub

    commit = "0123456789abcdef0123456789abcdef01234567"
    repository = tmp_path / "hub" / "models--test-org--tiny-bert"
    shutil.copytree(tiny_bert, repository / "snapshots" / commit)
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    identity = text.text_recipe(options("test-org/tiny-bert")).identity
    assert identity["model"] == "test-org/tiny-bert" and identity["revision"] == commit
    data = text_data(sentences(5, seed=11), sentences(2, seed=12))
    by_id = extract("test-org/tiny-bert", data)
    torch.testing.assert_close(by_id.train, extract(tiny_bert, data).train, atol=0, rtol=0)
