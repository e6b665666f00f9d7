"""Building a pretraining run: data, model with ``[MASK]``, collators and the Trainer, checked before
anything is written. The objective lives in the collator: NTP is MEAP at mask ratio 0, with the same
init, data order and everything else."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from transformers import set_seed
from transformers.utils import logging as hf_logging

from meap.collate import MeapCollator
from meap.config import PretrainConfig, TrainingConfig
from meap.constants import PACKED_ATTENTION
from meap.data.blocks import PackedBlocks
from meap.data.prepare import prepared_builtin
from meap.data.shards import load_meta, load_prepared_tokenizer, open_split
from meap.errors import UserError, is_main_process, warn
from meap.models import build_model, is_model_dir, mask_row_trained, model_max_length, training_model_spec
from meap.probes import ProbeSchedule, read_probe_file, tokenize_probes
from meap.tokens import (
    check_vocab_fits,
    fit_mask_embedding,
    mask_token_id,
    special_token_ids,
    vocabulary_mismatch,
    vocabulary_sha256,
)
from meap.touchpoints import attention_kernel
from meap.train.arguments import launched_world_size, make_trainer, training_arguments
from meap.train.trainer import MeapTrainer


@dataclass
class Run:
    """Everything a run is made of, built once by :func:`build_run` or :func:`meap.train.build_sft.build_sft_run`."""

    config: TrainingConfig
    output: Path
    trainer: MeapTrainer
    tokenizer: object
    samples_per_step: int
    max_steps: int
    facts: dict = dataclasses.field(default_factory=dict)  # more for run.json (SFT row counts, say)


def resolve_data_dir(data: str, progress: bool = True) -> Path:
    if data == "builtin":
        return prepared_builtin(progress=progress)
    return Path(data)


def _model_tokenizer(directory: str):
    """The tokenizer saved beside a local model, or None if there is none."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    except (OSError, ValueError, TypeError):
        return None


def check_warmup(config: TrainingConfig, max_steps: int) -> None:
    if config.warmup_steps >= max_steps:
        warn(f"warmup_steps ({config.warmup_steps}) >= the run's {max_steps} steps: the peak lr is never reached")


def build_run(config: PretrainConfig, progress: bool = True) -> Run:
    """Packed blocks of the prepared data, the model (a preset, a config file or a model directory) with
    ``[MASK]``, the MEAP collator (clean for validation) and the Trainer."""
    hf_logging.disable_progress_bar()  # their per-save and per-load bars would cut through the run's own bar
    output = config.resolved_output()
    data_dir = resolve_data_dir(config.data, progress)
    meta, tokenizer = load_meta(data_dir), load_prepared_tokenizer(data_dir)
    model_spec, model_tokenizer = _start(config, data_dir, tokenizer, int(meta["vocab_size"]))
    train_blocks, val_blocks, val_batch, val_batches, eval_on = _blocks(config, data_dir, meta)
    check_warmup(config, config.max_steps)
    args = training_arguments(config, output, eval_on, config.max_steps, val_batch)
    samples_per_step = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
    train_blocks.num_samples = config.max_steps * samples_per_step
    val_blocks.num_samples = val_batches * val_batch * launched_world_size()
    epochs = _epochs(config, data_dir, train_blocks, samples_per_step)
    set_seed(config.seed)  # the model init depends on the seed only, so NTP and MEAP runs start identical
    model = _model(config, model_spec, meta, tokenizer, model_tokenizer)
    collator = _collator(config, model, meta, tokenizer, samples_per_step)
    trainer = make_trainer(
        config,
        output,
        args,
        model,
        train_blocks,
        val_blocks if eval_on else None,
        collator,
        dataclasses.replace(collator, mask_ratio=0.0, mode="exact"),  # validation reads clean inputs
        tokens_per_step=samples_per_step * config.seq_len,
        seq_len=config.seq_len,
        progress=progress,
        probes=probe_schedule(config, tokenizer, config.seq_len),
    )
    facts = {
        "tokenizer_sha256": vocabulary_sha256(tokenizer),
        "epochs": round(epochs, 4),
        "sequences": {"train": train_blocks.num_blocks, "val": val_blocks.num_blocks},
    }
    return Run(config, output, trainer, tokenizer, samples_per_step, config.max_steps, facts)


def _start(config: PretrainConfig, data_dir: Path, tokenizer, vocab_size: int) -> tuple[str, object]:
    """What the run starts from, resolved once (a preset name, or the local model directory of a packaged model,
    a run or a hub id), checked against ``seq_len`` and the data's tokenizer; and that model's own tokenizer
    (None for a preset or a config file)."""
    model_spec = training_model_spec(config.model) if not config.model_config else config.model
    limit = model_max_length(model_spec, vocab_size, config.model_config, config.model_override)
    if config.seq_len > limit:
        raise UserError(
            f"seq_len: {config.seq_len} is above the maximum of model "
            f"`{config.model_config or config.model}` ({limit} tokens)"
        )
    if config.model_config:
        return model_spec, None
    return model_spec, _check_data_tokenizer(data_dir, tokenizer, config.model, model_spec)


def _blocks(config: PretrainConfig, data_dir: Path, meta: dict):
    """(train blocks, validation blocks, validation micro-batch, validation batches, whether to validate)."""
    train_blocks = PackedBlocks(open_split(data_dir, "train"), config.seq_len, seed=config.seed)
    if train_blocks.num_blocks == 0:
        raise UserError(f"{data_dir}: the train split has fewer than seq_len + 1 = {config.seq_len + 1} tokens")
    val_blocks = PackedBlocks(open_split(data_dir, "val"), config.seq_len, shuffle=False)
    val_batch, val_batches = validation_batches(val_blocks.num_blocks, config, launched_world_size())
    eval_on = bool(config.eval_every and val_batches)
    if config.eval_every and not eval_on:
        warn(
            f"{data_dir}: the validation split holds {meta['splits']['val']['num_tokens']} tokens, fewer than "
            f"one sequence of {config.seq_len + 1} per process; validation is off (prepare the data with a larger "
            "--val-fraction, or train with a shorter --seq-len)"
        )
    return train_blocks, val_blocks, val_batch, val_batches, eval_on


def _epochs(config: PretrainConfig, data_dir: Path, train_blocks: PackedBlocks, samples_per_step: int) -> float:
    """The passes over the training data the run takes, said (and warned of when above one)."""
    epochs = train_blocks.num_samples / train_blocks.num_blocks
    if is_main_process():
        print(
            f"{data_dir}: {train_blocks.num_blocks:,} training sequences of {config.seq_len} tokens; "
            f"{config.max_steps:,} steps x {samples_per_step} sequences = {epochs:.2f} epochs"
        )
    if epochs > 1:
        warn(
            f"{data_dir}: the training data repeats: {config.max_steps:,} steps take {epochs:.1f} passes over its "
            f"{train_blocks.num_blocks:,} sequences (a model this long on it may memorise; prepare more text or "
            "train fewer steps)"
        )
    return epochs


def _model(config: PretrainConfig, model_spec: str, meta: dict, tokenizer, model_tokenizer):
    """The model, its vocabulary the data's, with a ``[MASK]`` row fit to train."""
    model = build_model(
        model_spec,
        int(meta["vocab_size"]),
        attn_implementation=config.attn_implementation,
        model_config=config.model_config,
        overrides=config.model_override,
        eos_token_id=int(meta["eos_token_id"]),
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    try:
        check_vocab_fits(tokenizer, model)
    except ValueError as error:
        raise UserError(f"{config.model}: {error} ({_prepare_hint(config.model)})") from None
    # [MASK]'s row of a trained model starts as the mean of its rows when the token is new to it, and when this
    # run masks and the row never saw masked inputs (an NTP start has the token but its row is still its init).
    knows_mask = model_tokenizer is not None and mask_token_id(model_tokenizer) is not None
    trained = is_model_dir(model_spec) and not config.model_config  # else a fresh init: every row is new
    untrained_row = not knows_mask or (config.effective_mask_ratio() > 0 and not mask_row_trained(model_spec))
    fit_mask_embedding(model, int(meta["mask_token_id"]), initialise=trained and untrained_row)
    return model


def _collator(config: PretrainConfig, model, meta: dict, tokenizer, samples_per_step: int) -> MeapCollator:
    eos = int(meta["eos_token_id"])
    return MeapCollator(
        int(meta["mask_token_id"]),
        config.effective_mask_ratio(),
        config.mask_mode,
        config.seed,
        special_token_ids(tokenizer),
        pad_token_id=eos,
        samples_per_step=samples_per_step,
        eos_token_id=eos,
        document_attention=packed_attention(model, True) if config.document_attention else None,
    )


def probe_schedule(config: TrainingConfig, tokenizer, max_length: int) -> ProbeSchedule | None:
    """The run's probes (``probe_file``, tokenised, each within ``max_length``), or None without a file."""
    if not config.probe_file:
        return None
    records = read_probe_file(config.probe_file)
    return ProbeSchedule(tokenize_probes(records, tokenizer, max_length, source=config.probe_file), config.probe_every)


def validation_batches(available: int, config: TrainingConfig, world_size: int) -> tuple[int, int]:
    """(sequences per batch, batches) of a validation from ``available`` held-out sequences: up to
    ``eval_batches`` micro-batches, smaller batches when fewer sequences exist; (0, 0) when not one per process.
    Validation drops incomplete batches, so every process gets whole ones."""
    per_process = available // world_size
    batch = min(config.micro_batch_size, per_process)
    return (batch, min(config.eval_batches, per_process // batch)) if batch else (0, 0)


def _prepare_hint(model: str) -> str:
    return f"prepare the data with the model's own tokenizer: meap prepare FILES --tokenizer {model} -o DIR"


def _check_data_tokenizer(data_dir: Path, tokenizer, model: str, model_spec: str):
    """A model directory trains only on data its own tokenizer made; returns that tokenizer (None: a preset,
    or a directory without one, which is only checked for fitting the embedding)."""
    if not is_model_dir(model_spec):
        return None
    own = _model_tokenizer(model_spec)
    if own is None:
        warn(f"{model}: no tokenizer saved beside the model; cannot check that {data_dir} was tokenised by it")
        return None
    difference = vocabulary_mismatch(tokenizer, own)
    if difference:
        raise UserError(
            f"{data_dir}: tokenised by another tokenizer than model {model}'s ({difference}); {_prepare_hint(model)}"
        )
    return own


def packed_attention(model, packing: bool) -> str:
    """How the collator isolates packed rows for the model's attention kernel (see MeapSFTCollator)."""
    implementation = attention_kernel(model)
    if implementation.startswith("flash_attention"):
        implementation = "flash_attention_2"  # the collator's name for "rows split by position_ids"
    if implementation in PACKED_ATTENTION:
        return implementation
    if not packing:
        return "sdpa"  # unused: unpacked batches carry a plain padding mask
    raise UserError(
        f"attn_implementation: packing and document_attention support {', '.join(PACKED_ATTENTION)}, "
        f"not {implementation!r}"
    )
