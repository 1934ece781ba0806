"""`transformers`: any Hugging Face text encoder (hub id or local directory) turns each
sentence into one vector (optional extra: pip install "headbench[text]").

Pooling of the last hidden state (batch, tokens, dim): `mean` over the attention mask
(sentence-transformers' mean pooling), `cls` the first token's vector, or `pooler` the
model's `pooler_output`. `normalize = "auto"` L2-normalises mean-pooled features only.
Mean pooling with normalisation is what `SentenceTransformer(...).encode()` computes for
all-MiniLM-L6-v2 (Reimers & Gurevych, EMNLP 2019), which truncates at 256 word pieces
(its sentence_bert_config.json): with `max_length = 256` the features are the same;
with the default 128 they are the same for every sentence of at most 128 word pieces.

Sentences are sorted by token length and padded per batch (dynamic padding), then the
features are put back in the dataset's order. Eval mode, no gradients, autocast on CUDA.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.backbones.checkpoints import download_messages
from benchmarks.backbones.core import (
    EXTRACTION_OPTIONS,
    Encode,
    Features,
    autocast,
    extract_with_cache,
    freeze,
    register,
)
from benchmarks.cache import Cache, file_sha256
from benchmarks.config import Option
from benchmarks.datasets import Data, Texts
from benchmarks.errors import UsageError
from benchmarks.progress import Progress
from benchmarks.scenario import Scenario

POOLINGS = ("mean", "cls", "pooler")


def _transformers():
    try:
        import transformers
    except ImportError:
        raise UsageError(
            "backbone 'transformers' needs the transformers package: "
            'pip install "headbench[text]"'
        ) from None
    return transformers


def directory_sha256(path: Path) -> str:
    """One digest of every file under `path`: its relative name and its SHA-256."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()} {file_sha256(file)}\n".encode())
    return digest.hexdigest()


def _hub_commit(model: str, revision: str) -> str:
    """The commit `revision` names: from the local Hugging Face cache if it holds the
    model (no network), else from the hub."""
    from huggingface_hub import hf_hub_download

    for local_files_only in (True, False):
        try:
            config = hf_hub_download(
                model, "config.json", revision=revision, local_files_only=local_files_only
            )
        except Exception:  # not cached, offline, no such repository or revision, a bad id
            continue
        return Path(config).parent.name  # the cache's layout: snapshots/<commit>/config.json
    raise UsageError(
        f"backbone.model = {model!r} (revision {revision!r}) is neither a local directory nor "
        "found in the Hugging Face cache or on the hub (offline?); point backbone.model at a "
        "local directory holding the model and its tokenizer"
    )


@dataclass(frozen=True)
class TextRecipe:
    """The `FeatureRecipe` of a Hugging Face encoder (see `core.FeatureRecipe`)."""

    source: str  # what from_pretrained loads: a local directory or a hub id
    revision: str | None  # the hub commit; None for a local directory
    pooling: str
    normalize: bool
    max_length: int
    identity: dict[str, Any]
    label: str
    default_batch: int = 64
    unit: str = "sentences"

    def preprocessing_key(self) -> dict[str, Any]:
        return {"pooling": self.pooling, "normalize": self.normalize, "max_length": self.max_length}

    def tokenizer(self) -> Any:
        """The model's own tokenizer; refused in one line if its folder has none."""
        transformers = _transformers()
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                self.source, revision=self.revision
            )
        except Exception as error:  # missing or unreadable tokenizer files
            tokenizer, reason = None, str(error).splitlines()[0] if str(error) else ""
        else:
            reason = "its vocabulary holds only special tokens"
        # transformers 5 builds an empty tokenizer where the files are missing.
        if tokenizer is None or len(tokenizer.get_vocab()) <= len(tokenizer.all_special_ids):
            raise UsageError(
                f"backbone.model = {self.source!r} has no usable tokenizer ({reason}); save it "
                "beside the model (tokenizer.save_pretrained(directory))"
            )
        if self.max_length > tokenizer.model_max_length:
            raise UsageError(
                f"backbone.max_length = {self.max_length} is not accepted; {self.source} "
                f"takes at most {tokenizer.model_max_length} tokens"
            )
        tokenizer.padding_side = "right"  # `cls` pooling reads position 0
        return tokenizer

    def start(self, device: torch.device, batch_size: int, progress: Progress) -> Encode:
        transformers = _transformers()
        tokenizer = self.tokenizer()
        try:
            with download_messages(progress):
                model, loading = transformers.AutoModel.from_pretrained(
                    self.source, revision=self.revision, output_loading_info=True
                )
        except Exception as error:  # no weights or config, or an architecture not in transformers
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UsageError(
                f"backbone.model = {self.source!r} cannot be loaded by transformers.AutoModel "
                f"({reason}); give a directory saved with model.save_pretrained"
            ) from None
        if self.pooling == "pooler" and getattr(model, "pooler", None) is None:
            raise UsageError(
                f"backbone.pooling = 'pooler' is not accepted; {self.source} has no pooler: "
                "use mean or cls"
            )
        # Weights missing from the checkpoint are initialised at random: refuse them, but
        # tolerate a missing pooler unless it is used.
        missing = [
            name
            for name in loading["missing_keys"]
            if self.pooling == "pooler" or not name.startswith("pooler.")
        ]
        if missing:
            raise UsageError(
                f"backbone.model = {self.source!r} lacks weights {sorted(missing)[:3]}, which "
                "transformers would initialise at random; give a complete checkpoint (or "
                "pooling mean or cls when only the pooler is missing)"
            )
        encoder = SentenceEncoder(freeze(model.float()).to(device), tokenizer, self, batch_size)
        return lambda texts, views, label: encoder(texts, progress, f"{label}: {self.label}")


@dataclass
class SentenceEncoder:
    """Runs a frozen encoder over sentences in length-sorted, dynamically padded batches."""

    model: torch.nn.Module
    tokenizer: Any
    recipe: TextRecipe
    batch_size: int  # halved on CUDA out-of-memory

    def tokenize(self, sentences: list[str]) -> dict[str, Tensor]:
        return self.tokenizer(
            sentences,
            padding=True,
            truncation=True,
            max_length=self.recipe.max_length,
            return_tensors="pt",
        )

    @torch.inference_mode()
    def pool(self, sentences: list[str]) -> Tensor:
        device = next(self.model.parameters()).device
        batch = {name: value.to(device) for name, value in self.tokenize(sentences).items()}
        with autocast(device):
            outputs = self.model(**batch)
        hidden = outputs.last_hidden_state.float()  # (batch, tokens, dim)
        if self.recipe.pooling == "mean":
            mask = batch["attention_mask"][..., None].float()  # (batch, tokens, 1)
            features = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)  # (batch, dim)
        elif self.recipe.pooling == "cls":
            features = hidden[:, 0]  # (batch, dim)
        else:
            features = outputs.pooler_output.float()  # (batch, dim)
        return F.normalize(features, dim=1) if self.recipe.normalize else features

    def __call__(self, texts: Texts, progress: Progress, description: str) -> Tensor:
        """Features (sentences, dim) in the order of `texts`."""
        lengths = self.tokenizer(
            list(texts.items), truncation=True, max_length=self.recipe.max_length
        )["input_ids"]
        order = np.argsort([-len(ids) for ids in lengths], kind="stable")  # longest first
        ordered = [texts.items[i] for i in order]
        outputs, start = [], 0
        with progress.bar(len(ordered), description, unit="sentences") as bar:
            while start < len(ordered):
                chunk = ordered[start : start + self.batch_size]
                try:
                    outputs.append(self.pool(chunk))  # (chunk, dim)
                except torch.OutOfMemoryError:
                    if self.batch_size == 1:
                        raise
                    self.batch_size //= 2
                    torch.cuda.empty_cache()
                    continue
                start += len(chunk)
                bar.update(len(chunk))
        features = torch.cat(outputs)  # (sentences, dim), longest first
        restored = torch.empty_like(features)
        restored[torch.from_numpy(order).to(features.device)] = features
        return restored  # (sentences, dim)


def text_recipe(options: dict[str, Any]) -> TextRecipe:
    """The recipe for a resolved `[backbone]` table of `transformers` (no model loaded)."""
    transformers = _transformers()
    model, pooling = options["model"], options["pooling"]
    normalize = pooling == "mean" if options["normalize"] == "auto" else options["normalize"]
    identity: dict[str, Any] = {"name": "transformers", "transformers": transformers.__version__}
    path = Path(model).expanduser()
    if path.is_dir():
        source, revision = str(path), None
        identity["files_sha256"] = directory_sha256(path)
    else:
        source, revision = model, _hub_commit(model, options["revision"])
        identity.update(model=model, revision=revision)
    return TextRecipe(
        source,
        revision,
        pooling,
        normalize,
        options["max_length"],
        identity,
        label=f"transformers {path.name if revision is None else model} ({pooling} pooling)",
    )


def _validate(options: dict[str, Any], data: Data) -> None:
    text_recipe(options).tokenizer()


@register(
    "transformers",
    "any Hugging Face text encoder by hub id or local directory (optional extra: pip install "
    '"headbench[text]"), mean / cls / pooler pooling of its last layer',
    {
        "model": Option(
            "sentence-transformers/all-MiniLM-L6-v2",
            str,
            "a Hugging Face hub id or a local directory holding the model and its tokenizer",
        ),
        "revision": Option("main", str, "hub branch, tag or commit (ignored for a directory)"),
        "pooling": Option(
            "mean",
            str,
            "mean (over the attention mask), cls (first token) or pooler (pooler_output)",
            choices=POOLINGS,
        ),
        "normalize": Option(
            "auto",
            (bool, str),
            "L2-normalise the features: true, false or auto (true for mean pooling only)",
            choices=("auto", True, False),
        ),
        "max_length": Option(128, int, "word pieces per sentence; longer ones are cut", minimum=1),
        "extract_batch_size": Option(
            0,
            int,
            "sentences per forward pass; 0 = automatic (64, 256 on CUDA; halved on out-of-memory)",
            minimum=0,
        ),
        "feature_dtype": EXTRACTION_OPTIONS["feature_dtype"],
    },
    validate=_validate,
    needs_text=True,
)
def transformers_backbone(
    options: dict,
    data: Data,
    scenario: Scenario,
    device: torch.device,
    progress: Progress,
    cache: Cache | None = None,
) -> Features:
    return extract_with_cache(text_recipe(options), options, data, device, progress, cache)
