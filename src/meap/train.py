"""Pretraining on the Hugging Face Trainer: config → data, model, collator → run → checkpoints → final model.

Stages, each a small function: :func:`claim_output` (refuse to clobber another run), :func:`build_run`
(tokenizer, model with ``[MASK]``, the sample stream, collators, Trainer), then ``Trainer.train`` and
:func:`save_final`. The objective lives in the collator: NTP is MEAP at mask ratio 0, with the same
init, data order and everything else.

:class:`MeapTrainer` changes three things of the stock Trainer: the sample order is the stream's own
(sequential over :class:`~meap.data.blocks.PackedBlocks`, which is seeded), validation batches are
clean, and checkpoints are written to a staging directory and renamed into ``checkpoints/step-N`` so an
interrupted save never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainingArguments, set_seed
from transformers.utils import logging as hf_logging
from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from meap.collate import MeapCollator
from meap.config import PretrainConfig, config_to_dict, save_config
from meap.data.blocks import PackedBlocks
from meap.errors import UserError, warn
from meap.models import build_model, model_max_length, non_embedding_parameters
from meap.monitor import MetricsCallback, ProgressBar, flops_per_token, peak_flops
from meap.tokens import add_mask_token, special_token_ids

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
# Keys that may change when a run is resumed: they do not alter the trajectory of the steps already taken.
RESUMABLE_CHANGES = {"max_steps", "log_every", "eval_every", "eval_batches", "save_every", "keep_checkpoints",
                     "num_workers", "compile", "output"}


class MeapTrainer(Trainer):
    """The stock Trainer with the run's own sample order, clean validation and atomic checkpoints."""

    def __init__(self, *args, eval_collator=None, keep_checkpoints: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_collator = eval_collator
        self.keep_checkpoints = keep_checkpoints
        self._staging_dir: str | None = None

    def _get_train_sampler(self, train_dataset=None):
        # PackedBlocks already maps sample n to a seeded block, so the Trainer must not reshuffle it.
        return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    def get_eval_dataloader(self, eval_dataset=None):
        train_collator, self.data_collator = self.data_collator, self.eval_collator or self.data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def _get_output_dir(self, trial) -> str:
        return self._staging_dir or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        root = Path(self.args.output_dir)
        step = self.state.global_step
        staging = root / f".staging-step-{step}"
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
        self._staging_dir = str(staging)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_dir = None
        if self.args.should_save:
            written = staging / f"checkpoint-{step}"
            config = root.parent / CONFIG_FILE
            if config.is_file():
                shutil.copy2(config, written / CONFIG_FILE)
            final = root / f"step-{step}"
            shutil.rmtree(final, ignore_errors=True)
            os.replace(written, final)  # atomic: a checkpoint directory is either complete or absent
            shutil.rmtree(staging, ignore_errors=True)
            self._drop_old_checkpoints(root)
        self.accelerator.wait_for_everyone()

    def _drop_old_checkpoints(self, root: Path) -> None:
        if self.keep_checkpoints > 0:
            for old in checkpoint_dirs(root)[: -self.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    found = [p for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def holds_run(output: Path) -> bool:
    return (output / CONFIG_FILE).is_file() or (output / "checkpoints").is_dir()


def claim_output(config: PretrainConfig, resume: bool, overwrite: bool) -> Path | None:
    """Check the output directory and return the checkpoint to resume from, if any."""
    output = config.resolved_output()
    if output.exists() and not output.is_dir():
        raise UserError(f"{output}: output path exists and is not a directory")
    if resume:
        if not holds_run(output):
            raise UserError(f"{output}: --resume given but the directory holds no run")
        saved = (output / CONFIG_FILE).read_text(encoding="utf-8") if (output / CONFIG_FILE).is_file() else ""
        _check_same_run(output, saved, config)
        checkpoints = checkpoint_dirs(output / "checkpoints")
        if not checkpoints:
            raise UserError(f"{output / 'checkpoints'}: --resume given but no checkpoint was saved yet")
        return checkpoints[-1]
    if output.is_dir() and any(output.iterdir()):
        if overwrite and holds_run(output):
            shutil.rmtree(output)
        elif overwrite:
            raise UserError(f"{output}: not a meap run directory; refusing to delete it (choose another --output)")
        elif holds_run(output):
            raise UserError(f"{output}: already holds a run; pass --resume to continue it or --overwrite to start over")
        else:
            raise UserError(f"{output}: directory is not empty; choose another --output")
    return None


def _check_same_run(output: Path, saved_yaml: str, config: PretrainConfig) -> None:
    saved = yaml.safe_load(saved_yaml) or {}
    current = config_to_dict(config)
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise UserError(f"{output / CONFIG_FILE}: --resume with a different configuration ({details})")


def _precision(config: PretrainConfig) -> dict:
    on_cuda = torch.cuda.is_available()
    dtype = config.dtype if config.dtype != "auto" else ("bfloat16" if on_cuda else "float32")
    if dtype == "float16" and not on_cuda:
        raise UserError("dtype: float16 mixed precision needs a CUDA device; use float32 or bfloat16 on CPU")
    return {"bf16": dtype == "bfloat16", "fp16": dtype == "float16"}


@dataclass
class Run:
    """Everything a pretraining run is made of, built once by :func:`build_run`."""

    config: PretrainConfig
    output: Path
    trainer: MeapTrainer
    tokenizer: object


def resolve_data_dir(data: str, progress: bool = True) -> Path:
    if data == "builtin":
        from meap.data.builtin import prepared_builtin

        return prepared_builtin(progress=progress)
    return Path(data)


def build_run(config: PretrainConfig, progress: bool = True) -> Run:
    from meap.data.shards import load_meta, load_prepared_tokenizer, open_split

    output = config.resolved_output()
    data_dir = resolve_data_dir(config.data, progress)
    meta = load_meta(data_dir)
    tokenizer = load_prepared_tokenizer(data_dir)
    vocab_size = int(meta["vocab_size"])
    limit = model_max_length(config.model, vocab_size)
    if config.seq_len > limit:
        raise UserError(f"seq_len: {config.seq_len} is above the maximum of model `{config.model}` ({limit} tokens)")

    hf_logging.disable_progress_bar()  # their per-save and per-load bars would cut through the run's own bar
    set_seed(config.seed)  # the model init depends on the seed only, so NTP and MEAP runs start identical
    eos = int(meta["eos_token_id"])
    model = build_model(config.model, vocab_size, attn_implementation=config.attn_implementation,
                        eos_token_id=eos, bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    mask_id = add_mask_token(tokenizer, model)

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    samples_per_step = config.micro_batch_size * config.grad_accum_steps * world_size
    train_blocks = PackedBlocks(open_split(data_dir, "train"), config.seq_len, seed=config.seed)
    if train_blocks.num_blocks == 0:
        raise UserError(f"{data_dir}: the train split has fewer than seq_len + 1 = {config.seq_len + 1} tokens")
    train_blocks.num_samples = config.max_steps * samples_per_step
    val_blocks = PackedBlocks(open_split(data_dir, "val"), config.seq_len, shuffle=False)
    val_blocks.num_samples = min(val_blocks.num_blocks, config.eval_batches * config.micro_batch_size)
    eval_every = config.eval_every if val_blocks.num_samples else 0
    if config.eval_every and not eval_every:
        warn(f"{data_dir}: the validation split is shorter than one sequence; validation is off")
    if config.warmup_steps >= config.max_steps:
        warn(f"warmup_steps ({config.warmup_steps}) >= max_steps ({config.max_steps}): the peak lr is never reached")

    specials = special_token_ids(tokenizer)
    collator = MeapCollator(mask_id, config.effective_mask_ratio(), config.mask_mode, config.seed, specials,
                            pad_token_id=eos, samples_per_step=samples_per_step)
    clean_collator = MeapCollator(mask_id, 0.0, "exact", config.seed, specials, pad_token_id=eos)

    tokens_per_step = samples_per_step * config.seq_len
    peak = peak_flops()
    flops = None
    if peak:
        flops = tokens_per_step * flops_per_token(non_embedding_parameters(model), model.config.num_hidden_layers,
                                                  model.config.hidden_size, config.seq_len)
    metrics = MetricsCallback(output / METRICS_FILE, tokens_per_step, flops, peak, eval_every)

    args = TrainingArguments(
        output_dir=str(output / "checkpoints"),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.micro_batch_size,
        per_device_eval_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.grad_accum_steps,
        learning_rate=config.lr,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr": config.min_lr},
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        max_grad_norm=config.grad_clip,
        optim="adamw_torch_fused" if torch.cuda.is_available() else "adamw_torch",
        logging_steps=config.log_every,
        eval_strategy="steps" if eval_every else "no",
        eval_steps=eval_every or None,
        save_strategy="steps",
        save_steps=config.save_every or config.max_steps,
        save_total_limit=None,
        seed=config.seed,
        torch_compile=config.compile,
        dataloader_num_workers=config.num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        dataloader_drop_last=True,
        remove_unused_columns=False,  # the collator needs each sample's `sample_index`
        prediction_loss_only=True,
        report_to="none",
        disable_tqdm=True,
        **_precision(config),
    )
    trainer = MeapTrainer(
        model=model,
        args=args,
        train_dataset=train_blocks,
        eval_dataset=val_blocks if eval_every else None,
        data_collator=collator,
        eval_collator=clean_collator,
        keep_checkpoints=config.keep_checkpoints,
        callbacks=[metrics, TensorBoardCallback(_summary_writer(output / "tensorboard"))],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if progress:
        trainer.add_callback(ProgressBar(metrics))
    return Run(config, output, trainer, tokenizer)


def _summary_writer(path: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(path))


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records after ``last_step``: the resumed run logs those steps again."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= last_step]
    staging = path.with_suffix(".tmp")
    staging.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(staging, path)


def save_final(run: Run) -> Path:
    """Write ``final/``: a plain Hugging Face model and tokenizer (with ``[MASK]``), atomically."""
    final = run.output / "final"
    staging = run.output / ".staging-final"
    shutil.rmtree(staging, ignore_errors=True)
    run.trainer.save_model(str(staging))
    if run.trainer.is_world_process_zero():
        (staging / "training_args.bin").unlink(missing_ok=True)  # final/ is a plain model, not a checkpoint
        run.tokenizer.model_max_length = run.trainer.model.config.max_position_embeddings
        run.tokenizer.save_pretrained(str(staging))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
    return final


def pretrain(config: PretrainConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> Path:
    """Run (or resume) a pretraining run and return its output directory."""
    config = dataclasses.replace(config, output=str(config.resolved_output()))
    checkpoint = claim_output(config, resume, overwrite)
    output = config.resolved_output()
    if checkpoint is not None and int(checkpoint.name[5:]) >= config.max_steps and (output / "final").is_dir():
        print(f"{output}: already complete ({config.max_steps} steps); raise --max-steps to train further")
        return output
    run = build_run(config, progress)
    output.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        _truncate_metrics(output / METRICS_FILE, int(checkpoint.name[5:]))
        for stale in [*output.glob(".staging-*"), *(output / "checkpoints").glob(".staging-*")]:
            shutil.rmtree(stale)  # a save that was interrupted: never renamed into place, so never used
    save_config(config, output / CONFIG_FILE)
    run.trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    save_final(run)
    return output
