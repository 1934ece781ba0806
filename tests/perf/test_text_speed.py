"""Sentence encoding: length-sorted dynamic padding against unsorted fixed padding.

Skipped by default (`--benchmark-skip` in pyproject); run with `tox -e bench` or
`pytest tests/perf/test_text_speed.py --benchmark-only -s`. 2,000 generated sentences of
2 to 40 words go through a random BERT (hidden 128, 2 layers; local, no download) with
mean pooling, batch 64, max_length 128, in the same process: once as the `transformers`
backbone encodes them (sorted by token length, padded per batch) and once padded to
max_length in the dataset's order. Read `extra_info` (also printed): `sentences_per_second`
of both and `fixed_over_sorted`, the ratio of their times. Never assert on seconds.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from benchmarks.backbones import text
from benchmarks.datasets import Texts
from benchmarks.progress import Progress

transformers = pytest.importorskip(
    "transformers", reason='the transformers backbone needs pip install "headbench[text]"'
)

WORDS = [f"w{index}" for index in range(200)]
SENTENCES, BATCH, MAX_LENGTH = 2000, 64, 128


@pytest.fixture(scope="module")
def random_bert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS]))
    tokenizer = transformers.BertTokenizerFast.from_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=512,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return folder / "model"


def fixed_padding(model, tokenizer, sentences: list[str]) -> torch.Tensor:
    """The baseline: batches in the dataset's order, each padded to max_length."""
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(sentences), BATCH):
            batch = tokenizer(
                sentences[start : start + BATCH], padding="max_length", truncation=True,
                max_length=MAX_LENGTH, return_tensors="pt",
            )  # fmt: skip
            hidden = model(**batch).last_hidden_state  # (batch, max_length, dim)
            mask = batch["attention_mask"][..., None].float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)  # (batch, dim)
            outputs.append(torch.nn.functional.normalize(pooled, dim=1))
    return torch.cat(outputs)  # (sentences, dim)


def test_sorted_dynamic_padding_against_fixed_padding(benchmark, random_bert):
    rng = np.random.default_rng(0)
    sentences = [" ".join(rng.choice(WORDS, n)) for n in rng.integers(2, 41, SENTENCES)]
    options = {"model": str(random_bert), "pooling": "mean", "normalize": "auto",
               "max_length": MAX_LENGTH}  # fmt: skip
    encode = text.text_recipe(options).start(torch.device("cpu"), BATCH, Progress(True))
    model = transformers.AutoModel.from_pretrained(random_bert).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(random_bert)

    started = time.perf_counter()
    fixed = fixed_padding(model, tokenizer, sentences)
    fixed_seconds = time.perf_counter() - started
    result = benchmark.pedantic(lambda: encode(Texts(tuple(sentences)), 0, "bench"), rounds=3)
    assert torch.allclose(result, fixed, atol=1e-5)  # the same features, whatever the padding
    sorted_seconds = benchmark.stats.stats.mean
    info = {
        "sentences": SENTENCES,
        "sorted_sentences_per_second": round(SENTENCES / sorted_seconds),
        "fixed_sentences_per_second": round(SENTENCES / fixed_seconds),
        "fixed_over_sorted": round(fixed_seconds / sorted_seconds, 2),
    }
    benchmark.extra_info.update(info)
    print(info)
