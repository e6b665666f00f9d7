"""Building a fine-tuning run: the model (+ ``[MASK]``, + LoRA), tokenised conversations, the planned
sample streams (validation split, epochs to cover ``max_steps``), the SFT collators and the Trainer."""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections import Counter
from dataclasses import dataclass

import torch
from transformers import set_seed
from transformers.utils import logging as hf_logging

from meap.config import SFTConfig
from meap.errors import UserError, warn
from meap.models import load_for_training, mask_row_trained, resolve_model_dir
from meap.sft.collator import MeapSFTCollator
from meap.sft.formats import read_conversations
from meap.sft.stream import SFTStream
from meap.sft.template import tokenize_conversation
from meap.tokens import add_mask_token, fit_mask_embedding, mask_token_id, vocabulary_sha256
from meap.train.arguments import launched_world_size, make_trainer, training_arguments
from meap.train.build import Run, check_warmup, packed_attention, probe_schedule, validation_batches


def build_sft_run(config: SFTConfig, progress: bool = True) -> Run:
    """Model (+ ``[MASK]``, + LoRA), tokenised conversations, the seeded stream, SFT collators, Trainer."""
    hf_logging.disable_progress_bar()
    output = config.resolved_output()
    skipped: list[str] | None = [] if config.skip_bad_lines else None
    conversations = read_conversations(config.data, config.format or None, skipped)  # before any loading
    if skipped:
        warn(f"{len(skipped)} bad records skipped (--skip-bad-lines); the first: {skipped[0]}")
    model, tokenizer, mask_id, newly_added = _model(config)
    where = ", ".join(config.data) or "builtin"
    segments = [_tokenized(tokenizer, turns, f"{where}: conversation {n}") for n, turns in enumerate(conversations)]
    collator = _collator(config, model, tokenizer, mask_id)
    split = _split(config, collator, segments, where)
    kinds = sum((split.kinds[i] for i in split.train), Counter())
    meap_share = _meap_share(config, where, kinds, len(split.train), split.longest)  # refuses before anything runs
    world_size = launched_world_size()
    samples_per_step = config.micro_batch_size * config.grad_accum_steps * world_size
    train_stream, max_steps = _train_stream(config, [segments[i] for i in split.train], split, samples_per_step, where)
    val_batch, val_batches = validation_batches(len(split.val), config, world_size)
    eval_on = bool(config.eval_every and val_batches)
    if config.eval_every and config.val_fraction and not eval_on:
        warn(
            f"{where}: {len(split.val)} of {len(split.kept)} conversations held out (val_fraction "
            f"{config.val_fraction}), fewer than one per process; validation is off (raise --val-fraction)"
        )
    val_stream = SFTStream([segments[i] for i in split.val], shuffle=False)
    val_stream.truncate(val_batches * val_batch * world_size)
    check_warmup(config, max_steps)
    check_forgetting_risk(config, len(split.train), max_steps, where)

    args = training_arguments(config, output, eval_on, max_steps, val_batch)
    set_seed(config.seed)  # LoRA's initialisation
    if config.lora_r:
        model = _with_lora(model, config, mask_id if newly_added else None)
    average = sum(split.lengths[i] for i in split.train) / len(split.train)
    trainer = make_trainer(
        config,
        output,
        args,
        model,
        train_stream,
        val_stream if eval_on else None,
        collator,
        dataclasses.replace(collator, mask_ratio=0.0, packing=False, count_tokens=False),  # validation: clean
        tokens_per_step=None,
        seq_len=round(average),
        progress=progress,
        probes=probe_schedule(config, tokenizer, config.max_length),
    )
    if config.lora_r and trainer.is_deepspeed_enabled:  # FSDP: refused by SFTConfig.problems
        raise UserError("lora_r: LoRA runs merge the adapter on one process; use DDP, not DeepSpeed")
    facts = {
        "conversations": {"train": len(split.train), "val": len(split.val), "skipped": len(segments) - len(split.kept)},
        "rows": dict(kinds),
        "val_rows": dict(sum((split.kinds[i] for i in split.val), Counter())),
        "meap_share": meap_share,
        "skipped_records": len(skipped or []),
        "tokenizer_sha256": vocabulary_sha256(tokenizer),
    }
    return Run(config, output, trainer, tokenizer, samples_per_step, max_steps, facts)


def _model(config: SFTConfig):
    """(model, tokenizer, the ``[MASK]`` id, whether the tokenizer lacked it): the model to fine-tune, its
    directory resolved once, checked against ``max_length``, with a ``[MASK]`` row fit to train."""
    model_dir = str(resolve_model_dir(config.model))
    model, tokenizer = load_for_training(model_dir, config.attn_implementation)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and config.max_length > limit:
        raise UserError(
            f"max_length: {config.max_length} is above the maximum of model `{config.model}` ({limit} tokens)"
        )
    newly_added = mask_token_id(tokenizer) is None
    try:
        mask_id = add_mask_token(tokenizer, model)
    except ValueError as error:  # a tokenizer with more tokens than the model has rows
        raise UserError(f"{config.model}: {error}") from None
    if not newly_added and config.effective_mask_ratio() > 0 and not mask_row_trained(model_dir):
        fit_mask_embedding(model, mask_id, initialise=True)  # an NTP run's [MASK] row: never trained, still its init
    return model, tokenizer, mask_id, newly_added


def _collator(config: SFTConfig, model, tokenizer, mask_id: int) -> MeapSFTCollator:
    eos = tokenizer.eos_token_id
    return MeapSFTCollator(
        mask_id,
        eos,
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
        config.effective_mask_ratio(),
        config.min_answer_tokens,
        config.layout,
        config.max_length,
        config.seed,
        packing=config.packing,
        packed_attention=packed_attention(model, config.packing),
        count_tokens=True,
    )


@dataclass
class _Split:
    """The conversations' rows as the collator makes them, and the seeded train / validation split."""

    lengths: list[int]  # tokens of each conversation's rows (0: no answer token within max_length)
    kinds: list[Counter]  # each conversation's row kinds
    longest: int  # the longest original + masked copy a conversation trained as NTP would take
    kept: list[int]
    train: list[int]
    val: list[int]


def _split(config: SFTConfig, collator: MeapSFTCollator, segments: list, where: str) -> _Split:
    # Lengths and kinds of a conversation's rows do not depend on the mask, so one draw tells both.
    lengths, row_kinds, longest = [], [], 0
    for n, conversation in enumerate(segments):
        try:
            rows = collator.rows({"segments": conversation})
        except ValueError as error:  # e.g. every answer rendered away by a chat template
            raise UserError(f"{where}: conversation {n}: {error}") from None
        lengths.append(sum(len(row["input_ids"]) for row in rows))
        row_kinds.append(Counter(row["kind"] for row in rows))
        if rows and rows[0]["kind"] == "ntp-fallback":  # what original + masked copy would take (EOS included)
            longest = max(longest, 2 * (sum(len(ids) for ids, _ in conversation) + 1))
    kept = [i for i, length in enumerate(lengths) if length > 0]
    if len(kept) < len(segments):
        warn(
            f"{where}: {len(segments) - len(kept)} conversations have no answer token within max_length "
            f"({config.max_length}); skipped"
        )
    order = torch.randperm(len(kept), generator=torch.Generator().manual_seed(config.seed)).tolist()
    num_val = round(len(kept) * config.val_fraction)
    val_ids, train_ids = [kept[i] for i in order[:num_val]], sorted(kept[i] for i in order[num_val:])
    if not train_ids:
        raise UserError(f"{where}: no conversation left to train on")
    return _Split(lengths, row_kinds, longest, kept, train_ids, val_ids)


def _train_stream(config: SFTConfig, train: list, split: _Split, samples_per_step: int, where: str):
    """(the training stream, exactly the run's samples, and the run's optimizer steps)."""
    pack_lengths = [split.lengths[i] for i in split.train] if config.packing else None
    options = dict(seed=config.seed, pack_lengths=pack_lengths, max_length=config.max_length)
    train_stream = SFTStream(train, epochs=config.epochs, **options)
    max_steps = config.max_steps or len(train_stream) // samples_per_step
    if max_steps == 0:
        raise UserError(
            f"{where}: {len(train_stream)} training samples, fewer than one optimizer step of "
            f"{samples_per_step} (micro_batch_size x grad_accum_steps x processes)"
        )
    if config.max_steps:  # as many passes as the steps need, cut to them
        train_stream = SFTStream.covering(train, max_steps * samples_per_step, **options)
    return train_stream.truncate(max_steps * samples_per_step), max_steps


def _meap_share(config: SFTConfig, where: str, kinds: Counter, conversations: int, longest: int) -> float | None:
    """The share of conversations that get MEAP's masked copy (None for NTP); a MEAP run in which none does
    is refused, one in which fewer than half do is warned about."""
    if not config.effective_mask_ratio() or not conversations:
        return None
    share = (kinds["concat"] + kinds["masked"]) / conversations
    fallback = (
        (
            f"{kinds['ntp-fallback']} are too long for original + masked copy within max_length "
            f"({config.max_length}; --max-length {longest} fits them all)"
        )
        if kinds["ntp-fallback"]
        else ""
    )
    short = f"{kinds['ntp']} have answers of {config.min_answer_tokens} tokens or fewer" if kinds["ntp"] else ""
    why = " and ".join(part for part in (fallback, short) if part)
    if share == 0:
        raise UserError(
            f"{where}: objective meap, but no conversation gets the masked copy: {why}; this would be "
            "plain NTP (lower --min-answer-tokens, raise --max-length, or train --objective ntp)"
        )
    if share < 1:
        loud = "WARNING: only " if share < 0.5 else ""
        warn(
            f"{where}: {loud}{100 * share:.0f}% of the conversations get MEAP's masked copy; the rest train as "
            f"plain NTP rows: {why}"
        )
    return share


def _tokenized(tokenizer, turns: list[dict], where: str):
    from jinja2 import TemplateError

    try:
        return tokenize_conversation(tokenizer, turns)
    except (TemplateError, UserError) as error:
        raise UserError(f"{where}: cannot render it with the tokenizer's chat template ({error})") from None


def _with_lora(model, config: SFTConfig, new_mask_id: int | None):
    """``model`` wrapped in LoRA adapters on every linear layer; a new ``[MASK]`` row stays trainable."""
    from peft import LoraConfig, get_peft_model

    # a tied head follows the trainable [MASK] row on its own (peft ties trainable tokens itself)
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
        trainable_token_indices=[new_mask_id] if new_mask_id is not None else None,
    )
    with warnings.catch_warnings():  # peft reads the attribute transformers 5 deprecated; nothing a user can act on
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        model = get_peft_model(model, lora)
    # peft saves the whole embedding (and head) with every adapter and checkpoint once the vocabulary has grown;
    # the one new row is already saved as a trainable token, so the adapter holds LoRA weights and that row only
    model.save_pretrained = functools.partial(model.save_pretrained, save_embedding_layers=False)
    return model


# Full fine-tuning of a small set with more than this peak lr x steps fits the set and can overwrite what the
# model knew: 8 steps at 5e-5 on 26 conversations turned SmolLM2-135M's "Paris" into "L'Alma, la France...".
FORGETTING_LR_STEPS = 1e-4
SMALL_SFT_SET = 1000  # conversations


def check_forgetting_risk(config, conversations: int, max_steps: int, where: str) -> None:
    if config.lora_r == 0 and conversations < SMALL_SFT_SET and config.lr * max_steps > FORGETTING_LR_STEPS:
        warn(
            f"{where}: full fine-tuning of {conversations} conversations for {max_steps} steps at lr {config.lr:g} "
            f"(lr x steps {config.lr * max_steps:.1e}) can overwrite what the model knew; for a set this small "
            "consider --lora-r 8 or a lower --lr (1e-5), and compare the model's answers before and after"
        )
