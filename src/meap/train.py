"""Pretraining and fine-tuning on the Hugging Face Trainer: config → data, model, collator → run →
checkpoints → final model.

Stages, each a small function: :func:`claim_output` (refuse to clobber another run, find the checkpoint to
resume), :func:`build_run` / :func:`build_sft_run` (tokenizer, model with ``[MASK]``, the sample stream,
collators, Trainer), then ``Trainer.train`` and :func:`save_final`. The objective lives in the collator: NTP
is MEAP at mask ratio 0, with the same init, data order and everything else.

:class:`MeapTrainer` changes four things of the stock Trainer: the sample order is the stream's own
(sequential over :class:`~meap.data.blocks.PackedBlocks` or :class:`~meap.data.sft.SFTStream`, both
seeded), validation batches are clean, tokens/s counts real tokens when the collator reports them, and
checkpoints are written to a staging directory with a ``manifest.json`` (size and SHA-256 of every file)
and renamed into ``checkpoints/step-N``, so an interrupted save never leaves a half-written checkpoint
behind and one damaged later on disk is detected on resume (the previous intact one is used). A
non-finite loss skips that step's update and stops the run before any later checkpoint, so the last
checkpoint stays the last good state.

Under ``torchrun``/``accelerate launch`` every process runs this; only the main process writes or deletes
files outside what the Trainer itself coordinates, and the others wait for it.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainingArguments, set_seed
from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.utils import logging as hf_logging

from meap.collate import PACKED_ATTENTION, MeapCollator, MeapSFTCollator
from meap.config import PretrainConfig, SFTConfig, TrainingConfig, config_to_dict, save_config, saved_config
from meap.data.blocks import PackedBlocks
from meap.errors import Interrupted, UserError, is_main_process, warn
from meap.loss import chunked_cross_entropy
from meap.models import build_model, is_model_dir, matmul_parameters, model_max_length, training_model_spec
from meap.monitor import LogLines, MetricsCallback, ProgressBar, flops_per_token, peak_flops
from meap.tokens import (IGNORE_INDEX, add_mask_token, check_vocab_fits, fit_mask_embedding, mask_token_id,
                         special_token_ids, vocabulary_mismatch, vocabulary_sha256)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
RUN_FILE = "run.json"  # facts of the run that are not config keys (samples per optimizer step)
MANIFEST_FILE = "manifest.json"  # in every checkpoint: size and SHA-256 of each of its files
# Keys that may change when a run is resumed: they do not alter the trajectory of the steps already taken.
# The micro-batch and accumulation may change with the number of processes as long as the samples per
# optimizer step stay the same (checked against run.json).
RESUMABLE_CHANGES = {"max_steps", "log_every", "eval_every", "eval_batches", "save_every", "keep_checkpoints",
                     "num_workers", "compile", "output", "micro_batch_size", "grad_accum_steps", "report_to"}


def publish(staging: Path, final: Path) -> None:
    """Move a fully written directory into place in one rename: readers see all of it or none."""
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)


class MeapTrainer(Trainer):
    """The stock Trainer with the run's own sample order, clean validation and atomic checkpoints."""

    def __init__(self, *args, eval_collator=None, keep_checkpoints: int = 0, loss_chunk_size: int = 0,
                 on_nan: str = "stop", **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_collator = eval_collator
        self.keep_checkpoints = keep_checkpoints
        self.loss_chunk_size = loss_chunk_size
        self.on_nan = on_nan
        self.skipped_steps: list[int] = []
        self._non_finite: torch.Tensor | None = None  # (seen, loss) of this process in the current step
        self._unchecked: list[tuple[int, torch.Tensor]] = []  # (step, every process's (seen, loss)), on the device
        self._tokens_pending: torch.Tensor | None = None
        self._staging_dir: str | None = None

    def _flush_tokens(self) -> None:
        if self._tokens_pending is not None:
            self.state.num_input_tokens_seen += int(self._tokens_pending)
            self._tokens_pending = None

    def create_optimizer(self, *args, **kwargs):
        optimizer = super().create_optimizer(*args, **kwargs)
        if not getattr(optimizer, "_meap_guarded", False):
            optimizer.step = self._guarded(optimizer, optimizer.step)  # before accelerate wraps the optimizer
            optimizer._meap_guarded = True
        return optimizer

    def _guarded(self, optimizer, step):
        """``optimizer.step`` that leaves the weights alone when any process's loss was not finite.

        Every process decides alike, from every process's losses: a NaN on one rank has already reached the
        others' gradients through DDP. With a fused AdamW the decision stays on the device (the optimizer's
        own ``found_inf`` skip, as under a GradScaler) and the host looks at it when it syncs anyway, at the
        next log or checkpoint (:meth:`check_non_finite`); otherwise (and under FSDP, untested there) it
        looks at once.
        """
        def guarded_step(*args, **kwargs):
            seen = self._non_finite if self._non_finite is not None else torch.zeros(2, device=self.args.device)
            self._non_finite = None
            gathered = self.accelerator.gather(seen[None])
            self._unchecked.append((self.state.global_step + 1, gathered))
            if not optimizer.defaults.get("fused") or self.is_fsdp_enabled:  # FSDP: sharded (DTensor) parameters
                if self.check_non_finite():
                    return None  # weights and optimizer state stay as they were; the gradients are zeroed next
                return step(*args, **kwargs)
            earlier = getattr(optimizer, "found_inf", None)  # a float16 GradScaler's own
            found = (gathered[:, 0].sum() > 0).float()
            optimizer.found_inf = found if earlier is None else torch.maximum(earlier, found.to(earlier))
            try:
                return step(*args, **kwargs)
            finally:
                if earlier is None:
                    del optimizer.found_inf
                else:
                    optimizer.found_inf = earlier
        return guarded_step

    def check_non_finite(self) -> bool:
        """Look (on the host) at the steps not yet checked: stop at the first with a non-finite loss, or
        report each as skipped. True when the newest one was skipped."""
        if not self._unchecked:
            return False
        steps = [step for step, _ in self._unchecked]
        flags = torch.stack([gathered for _, gathered in self._unchecked]).float().cpu()  # (steps, processes, 2)
        self._unchecked = []
        skipped_newest = False
        for step, per_process in zip(steps, flags):
            ranks = per_process[:, 0].nonzero().flatten().tolist()
            if not ranks:
                continue
            where = f" on rank {', '.join(map(str, ranks))}" if per_process.shape[0] > 1 else ""
            loss = float(per_process[ranks[0], 1])
            if self.on_nan != "skip":
                raise NonFiniteLoss(step, loss, Path(self.args.output_dir), where, self.state.global_step)
            warn(f"step {step}: the training loss is {loss} (not finite){where}; this optimizer step is skipped")
            self.skipped_steps.append(step)
            skipped_newest = step == steps[-1]
        return skipped_newest

    def log(self, logs, *args, **kwargs):
        self.check_non_finite()  # before the metrics callback writes the step
        self._flush_tokens()
        return super().log(logs, *args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.loss_chunk_size:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # The model runs (through any DDP wrapper) without its head but for the last position; the loss is
        # taken from the final hidden states in chunks, normalised as transformers normalises its own.
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        targets = inputs.pop("shift_labels", None)
        if targets is None:
            targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
        outputs = model(**inputs, logits_to_keep=1, output_hidden_states=True)
        head = self.accelerator.unwrap_model(model).get_output_embeddings().weight
        total = chunked_cross_entropy(outputs.hidden_states[-1], head, targets, chunk_size=self.loss_chunk_size)
        if num_items_in_batch is None:
            loss = total / (targets != IGNORE_INDEX).sum().clamp(min=1)
        else:
            loss = total / num_items_in_batch
            if self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs:
                loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss: DDP averages gradients
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        # Collators with count_tokens=True report the batch's real (non-padding) tokens for tokens/s; summed
        # on the device and added to the Trainer's count when the host syncs anyway (_flush_tokens).
        tokens = inputs.pop("num_tokens", None)
        if tokens is not None:
            tokens = self.accelerator.gather(torch.as_tensor(tokens, device=self.args.device, dtype=torch.int64)).sum()
            self._tokens_pending = tokens if self._tokens_pending is None else self._tokens_pending + tokens
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Noted on the device (no host sync per micro-batch); the optimizer step acts on it (see _guarded).
        finite = torch.isfinite(loss)
        seen = torch.stack([(~finite).float(), torch.where(finite, torch.zeros_like(loss), loss).float()])
        self._non_finite = seen if self._non_finite is None else torch.where(self._non_finite[0] > 0, self._non_finite, seen)
        return torch.where(finite, loss, torch.zeros_like(loss))  # the window's logged loss counts a bad batch as 0

    def _get_train_sampler(self, train_dataset=None):
        # The streams (PackedBlocks, SFTStream) are in their own seeded order: the Trainer must not reshuffle.
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
        self.check_non_finite()  # no checkpoint after a step whose loss was not finite, under on_nan: stop
        self._flush_tokens()  # the count is part of the checkpoint's trainer state
        root = Path(self.args.output_dir)
        step = self.state.global_step
        staging = root / f".staging-step-{step}"
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
        self.accelerator.wait_for_everyone()  # nobody writes into the staging directory before it is empty
        self._staging_dir = str(staging)
        try:
            super()._save_checkpoint(model, trial)
            self.accelerator.wait_for_everyone()  # every process has written its part (its RNG state, say)
            if self.args.should_save:
                written = staging / f"checkpoint-{step}"
                config = root.parent / CONFIG_FILE
                if config.is_file():
                    shutil.copy2(config, written / CONFIG_FILE)
                write_manifest(written)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            previous = checkpoint_dirs(root)
            reason = "no space left on device" if error.errno == errno.ENOSPC else (error.strerror or str(error))
            raise UserError(f"{error.filename or staging}: cannot write the step-{step} checkpoint ({reason}); "
                            f"stopped. {_last_checkpoint_note(previous)}") from None
        finally:
            self._staging_dir = None
        if self.args.should_save:
            publish(written, root / f"step-{step}")
            shutil.rmtree(staging, ignore_errors=True)
            if self.keep_checkpoints > 0:
                for old in checkpoint_dirs(root)[: -self.keep_checkpoints]:
                    shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()


class NonFiniteLoss(UserError):
    """The loss of a micro-batch was NaN or infinite: that step's update was skipped and the run stops (every
    process alike), at the latest before the next checkpoint."""

    def __init__(self, step: int, loss: float, checkpoints: Path, where: str = "", stopped_at: int | None = None):
        stopped = f" at step {stopped_at}" if stopped_at and stopped_at > step else ""
        super().__init__(f"step {step}: the training loss is {loss} (not finite){where}; its update was skipped and "
                         f"the run stopped{stopped}. {_last_checkpoint_note(checkpoint_dirs(checkpoints))} "
                         "(a lower --lr or a higher --warmup-steps may help)")


def _last_checkpoint_note(checkpoints: list[Path]) -> str:
    if not checkpoints:
        return "No checkpoint was saved yet."
    return f"The last checkpoint, {checkpoints[-1]}, is intact: continue with --resume."


def write_manifest(checkpoint: Path) -> None:
    """Record the size and SHA-256 of every file of ``checkpoint`` in its ``manifest.json``."""
    files = {}
    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != MANIFEST_FILE):
        files[path.relative_to(checkpoint).as_posix()] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    (checkpoint / MANIFEST_FILE).write_text(json.dumps({"files": files}, indent=1) + "\n", encoding="utf-8")


def checkpoint_damage(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be trusted (a missing, truncated or altered file), or None if it is intact."""
    try:
        files = json.loads((checkpoint / MANIFEST_FILE).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable {MANIFEST_FILE}"
    for name, expected in files.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, expected {expected['bytes']}"
        if _sha256(path) != expected["sha256"]:
            return f"{name} does not match its SHA-256"
    return None


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def intact_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint under ``root`` that matches its manifest; each newer damaged one is reported."""
    checkpoints = checkpoint_dirs(root)
    for index in range(len(checkpoints) - 1, -1, -1):
        damage = checkpoint_damage(checkpoints[index])
        if damage is None:
            return checkpoints[index]
        fallback = f"resuming from {checkpoints[index - 1].name}" if index else "no earlier checkpoint"
        warn(f"{checkpoints[index]}: damaged ({damage}); {fallback}")
    return None


def launched_world_size() -> int:
    """Processes the launcher started (torchrun and accelerate set WORLD_SIZE). Read from the environment:
    an accelerate state made before the TrainingArguments would count one process on CPU."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix("step-"))


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    found = [p for p in root.glob("step-*") if p.is_dir() and p.name.removeprefix("step-").isdigit()]
    return sorted(found, key=checkpoint_step)


def holds_run(output: Path) -> bool:
    return (output / CONFIG_FILE).is_file() or (output / "checkpoints").is_dir()


def claim_output(config: TrainingConfig, resume: bool, overwrite: bool) -> Path | None:
    """Check the output directory (read-only) and return the checkpoint to resume from, if any."""
    output = config.resolved_output()
    if output.exists() and not output.is_dir():
        raise UserError(f"{output}: output path exists and is not a directory")
    if resume:
        if not holds_run(output):
            raise UserError(f"{output}: --resume given but the directory holds no run")
        _check_same_run(output, config)
        if not checkpoint_dirs(output / "checkpoints"):
            raise UserError(f"{output / 'checkpoints'}: --resume given but no checkpoint was saved yet")
        checkpoint = intact_checkpoint(output / "checkpoints")
        if checkpoint is None:
            raise UserError(f"{output / 'checkpoints'}: --resume given but every checkpoint is damaged; "
                            "start over with --overwrite")
        return checkpoint
    if output.is_dir() and any(output.iterdir()):
        if overwrite and not holds_run(output):
            raise UserError(f"{output}: not a meap run directory; refusing to delete it (choose another --output)")
        if not overwrite and holds_run(output):
            raise UserError(f"{output}: already holds a run; pass --resume to continue it or --overwrite to start over")
        if not overwrite:
            raise UserError(f"{output}: directory is not empty; choose another --output")
    return None


def _check_same_run(output: Path, config: TrainingConfig) -> None:
    path = output / CONFIG_FILE
    saved = saved_config(type(config), path) if path.is_file() else {}
    current = config_to_dict(config)
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise UserError(f"{path}: --resume with a different configuration ({details})")


def _precision(config: TrainingConfig) -> dict:
    """TrainingArguments for the mixed precision that ``dtype`` asks for on this machine."""
    on_cuda = torch.cuda.is_available()
    if config.dtype == "auto":
        dtype = "float32" if not on_cuda else ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    else:
        dtype = config.dtype
    if dtype == "float16" and not on_cuda:
        raise UserError("dtype: float16 mixed precision needs a CUDA device; use float32 or bfloat16 on CPU")
    if dtype == "bfloat16" and on_cuda and not torch.cuda.is_bf16_supported():
        raise UserError(f"dtype: {torch.cuda.get_device_name()} has no bfloat16; use float16 or auto")
    # bf16 autocast on CPU is allowed by the Trainer only with use_cpu.
    return {"bf16": dtype == "bfloat16", "fp16": dtype == "float16", "use_cpu": not on_cuda}


@dataclass
class Run:
    """Everything a run is made of, built once by :func:`build_run` or :func:`build_sft_run`."""

    config: TrainingConfig
    output: Path
    trainer: MeapTrainer
    tokenizer: object
    samples_per_step: int
    max_steps: int
    facts: dict = dataclasses.field(default_factory=dict)  # more for run.json (SFT row counts, say)


def resolve_data_dir(data: str, progress: bool = True) -> Path:
    if data == "builtin":
        from meap.data.builtin import prepared_builtin

        return prepared_builtin(progress=progress)
    return Path(data)


def _model_tokenizer(directory: str):
    """The tokenizer saved beside a local model, or None if there is none."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    except (OSError, ValueError, TypeError):
        return None


def _fsdp(config: TrainingConfig) -> bool | None:
    if config.fsdp and not torch.cuda.is_available():
        # accelerate would silently fall back to DDP on CPU processes
        raise UserError("fsdp: FSDP needs CUDA devices; on CPU, launch without --fsdp (processes run DDP)")
    return config.fsdp or None


def _training_arguments(config: TrainingConfig, output: Path, eval_on: bool, max_steps: int,
                        eval_batch_size: int) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output / "checkpoints"),
        max_steps=max_steps,
        per_device_train_batch_size=config.micro_batch_size,
        per_device_eval_batch_size=eval_batch_size or config.micro_batch_size,
        gradient_accumulation_steps=config.grad_accum_steps,
        learning_rate=config.lr,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr": config.min_lr},
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        max_grad_norm=config.grad_clip,
        optim="adamw_torch_fused",  # one kernel per parameter group, on CUDA and CPU alike
        logging_steps=config.log_every,
        eval_strategy="steps" if eval_on else "no",
        eval_steps=config.eval_every if eval_on else None,
        save_strategy="steps",
        save_steps=config.save_every or max_steps,
        save_total_limit=None,
        seed=config.seed,
        torch_compile=config.compile,
        dataloader_num_workers=config.num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        dataloader_drop_last=True,
        remove_unused_columns=False,  # the collators need each sample's `sample_index`
        ddp_find_unused_parameters=False,  # every parameter takes part: no extra autograd traversal per step
        fsdp=_fsdp(config),
        fsdp_config={"version": 2, "state_dict_type": "FULL_STATE_DICT"} if config.fsdp else None,
        prediction_loss_only=True,
        logging_nan_inf_filter=False,  # a non-finite loss stops or skips the step (MeapTrainer._guarded)
        report_to=_integrations(config, output),
        disable_tqdm=True,
        **_precision(config),
    )


def _integrations(config: TrainingConfig, output: Path) -> list[str] | str:
    """The Trainer's ``report_to`` besides TensorBoard (which meap adds itself, into the run directory).
    Offline by default: wandb without an API key logs into ``output/wandb`` (``wandb sync`` uploads it later),
    mlflow without a tracking URI into ``output/mlruns``."""
    import importlib.util

    chosen = [name for name in config.report_to if name in ("wandb", "mlflow")]
    for name in chosen:
        if importlib.util.find_spec(name) is None:
            raise UserError(f"report_to: {name} is not installed (pip install 'meap[{name}]')")
    if "wandb" in chosen and not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
        os.environ["WANDB_MODE"] = "offline"
        os.environ.setdefault("WANDB_DIR", str(output))
    if "mlflow" in chosen:
        os.environ.setdefault("MLFLOW_TRACKING_URI", (output / "mlruns").absolute().as_uri())
    return chosen or "none"


def _make_trainer(config: TrainingConfig, output: Path, args: TrainingArguments, model, train_dataset, eval_dataset,
                  collator, eval_collator, *, tokens_per_step: int | None, seq_len: int, progress: bool) -> MeapTrainer:
    """The Trainer with metrics.jsonl, TensorBoard and the progress bar; ``tokens_per_step=None``: counted."""
    peak = peak_flops()
    flops = None
    if peak:
        flops = flops_per_token(matmul_parameters(model), model.config.num_hidden_layers, model.config.hidden_size,
                                seq_len)
    eval_every = config.eval_every if eval_dataset is not None else 0
    metrics = MetricsCallback(output / METRICS_FILE, tokens_per_step, flops, peak, eval_every,
                              world_size=args.world_size)
    callbacks = [metrics]
    if "tensorboard" in config.report_to:
        tensorboard = TensorBoardCallback()
        tensorboard.logging_dir = str(output / "tensorboard")  # its writer opens at train start, on the main process
        callbacks.append(tensorboard)
    trainer = MeapTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        eval_collator=eval_collator,
        keep_checkpoints=config.keep_checkpoints,
        loss_chunk_size=config.loss_chunk_size,
        on_nan=config.on_nan,
        callbacks=callbacks,
    )
    metrics.skipped_steps = trainer.skipped_steps  # reported in the records of the steps that skipped
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(ProgressBar(metrics) if progress else LogLines(metrics))
    return trainer


def _check_warmup(config: TrainingConfig, max_steps: int) -> None:
    if config.warmup_steps >= max_steps:
        warn(f"warmup_steps ({config.warmup_steps}) >= the run's {max_steps} steps: the peak lr is never reached")


def build_run(config: PretrainConfig, progress: bool = True) -> Run:
    from meap.data.shards import load_meta, load_prepared_tokenizer, open_split

    hf_logging.disable_progress_bar()  # their per-save and per-load bars would cut through the run's own bar
    output = config.resolved_output()
    data_dir = resolve_data_dir(config.data, progress)
    meta = load_meta(data_dir)
    tokenizer = load_prepared_tokenizer(data_dir)
    vocab_size = int(meta["vocab_size"])
    model_spec = training_model_spec(config.model) if not config.model_config else config.model
    limit = model_max_length(model_spec, vocab_size, config.model_config, config.model_override)
    if config.seq_len > limit:
        raise UserError(f"seq_len: {config.seq_len} is above the maximum of model "
                        f"`{config.model_config or config.model}` ({limit} tokens)")
    model_tokenizer = None if config.model_config else _check_data_tokenizer(data_dir, tokenizer, config.model,
                                                                             model_spec)

    train_blocks = PackedBlocks(open_split(data_dir, "train"), config.seq_len, seed=config.seed)
    if train_blocks.num_blocks == 0:
        raise UserError(f"{data_dir}: the train split has fewer than seq_len + 1 = {config.seq_len + 1} tokens")
    val_blocks = PackedBlocks(open_split(data_dir, "val"), config.seq_len, shuffle=False)
    world_size = launched_world_size()
    val_batch, val_batches = validation_batches(val_blocks.num_blocks, config, world_size)
    eval_on = bool(config.eval_every and val_batches)
    if config.eval_every and not eval_on:
        warn(f"{data_dir}: the validation split holds {meta['splits']['val']['num_tokens']} tokens, fewer than "
             f"one sequence of {config.seq_len + 1} per process; validation is off (prepare the data with a larger "
             "--val-fraction, or train with a shorter --seq-len)")
    _check_warmup(config, config.max_steps)

    args = _training_arguments(config, output, eval_on, config.max_steps, val_batch)
    samples_per_step = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
    train_blocks.num_samples = config.max_steps * samples_per_step
    val_blocks.num_samples = val_batches * val_batch * world_size

    set_seed(config.seed)  # the model init depends on the seed only, so NTP and MEAP runs start identical
    eos = int(meta["eos_token_id"])
    model = build_model(model_spec, vocab_size, attn_implementation=config.attn_implementation,
                        model_config=config.model_config, overrides=config.model_override, eos_token_id=eos, bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    mask_id = int(meta["mask_token_id"])
    try:
        check_vocab_fits(tokenizer, model)
    except ValueError as error:
        raise UserError(f"{config.model}: {error} ({_prepare_hint(config.model)})") from None
    # [MASK]'s row is trained already when the model's own tokenizer has it (a meap run), else it starts as a mean.
    knows_mask = model_tokenizer is not None and mask_token_id(model_tokenizer) is not None
    trained = is_model_dir(model_spec) and not config.model_config  # else a fresh init: every row is new
    fit_mask_embedding(model, mask_id, initialise=trained and not knows_mask)

    specials = special_token_ids(tokenizer)
    documents = _packed_attention(model, True) if config.document_attention else None
    collator = MeapCollator(mask_id, config.effective_mask_ratio(), config.mask_mode, config.seed, specials,
                            pad_token_id=eos, samples_per_step=samples_per_step, eos_token_id=eos,
                            document_attention=documents)
    clean_collator = dataclasses.replace(collator, mask_ratio=0.0, mode="exact")
    trainer = _make_trainer(config, output, args, model, train_blocks, val_blocks if eval_on else None, collator,
                            clean_collator, tokens_per_step=samples_per_step * config.seq_len, seq_len=config.seq_len,
                            progress=progress)
    return Run(config, output, trainer, tokenizer, samples_per_step, config.max_steps,
               {"tokenizer_sha256": vocabulary_sha256(tokenizer)})


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
        raise UserError(f"{data_dir}: tokenised by another tokenizer than model {model}'s ({difference}); "
                        f"{_prepare_hint(model)}")
    return own


def build_sft_run(config: SFTConfig, progress: bool = True) -> Run:
    """Model (+ ``[MASK]``, + LoRA), tokenised conversations, the seeded stream, SFT collators, Trainer."""
    from meap.data.sft import SFTStream, read_conversations
    from meap.models import load_for_training

    hf_logging.disable_progress_bar()
    output = config.resolved_output()
    conversations = read_conversations(config.data, config.format or None)  # bad records fail before any loading
    model, tokenizer = load_for_training(config.model, config.attn_implementation)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and config.max_length > limit:
        raise UserError(f"max_length: {config.max_length} is above the maximum of model `{config.model}` ({limit} tokens)")
    newly_added = mask_token_id(tokenizer) is None
    try:
        mask_id = add_mask_token(tokenizer, model)
    except ValueError as error:  # a tokenizer with more tokens than the model has rows
        raise UserError(f"{config.model}: {error}") from None
    where = ", ".join(config.data) or "builtin"
    segments = [_tokenized(tokenizer, turns, f"{where}: conversation {n}") for n, turns in enumerate(conversations)]

    # Lengths and kinds of a conversation's rows do not depend on the mask, so one draw tells both.
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    collator = MeapSFTCollator(mask_id, eos, pad, config.effective_mask_ratio(), config.min_answer_tokens,
                               config.layout, config.max_length, config.seed, packing=config.packing,
                               packed_attention=_packed_attention(model, config.packing), count_tokens=True)
    lengths, kinds = [], Counter()
    for n, conversation in enumerate(segments):
        try:
            rows = collator.rows({"segments": conversation})
        except ValueError as error:  # e.g. every answer rendered away by a chat template
            raise UserError(f"{where}: conversation {n}: {error}") from None
        lengths.append(sum(len(row["input_ids"]) for row in rows))
        kinds.update(row["kind"] for row in rows)
    kept = [i for i, length in enumerate(lengths) if length > 0]
    if len(kept) < len(segments):
        warn(f"{where}: {len(segments) - len(kept)} conversations have no answer token within max_length "
             f"({config.max_length}); skipped")
    if kinds["ntp-fallback"]:
        warn(f"{where}: {kinds['ntp-fallback']} conversations are too long for original + masked copy within "
             f"max_length ({config.max_length}); they train as plain NTP rows (kind ntp-fallback)")
    order = torch.randperm(len(kept), generator=torch.Generator().manual_seed(config.seed)).tolist()
    num_val = round(len(kept) * config.val_fraction)
    val_ids, train_ids = [kept[i] for i in order[:num_val]], sorted(kept[i] for i in order[num_val:])
    if not train_ids:
        raise UserError(f"{where}: no conversation left to train on")

    world_size = launched_world_size()
    samples_per_step = config.micro_batch_size * config.grad_accum_steps * world_size
    pack_lengths = [lengths[i] for i in train_ids] if config.packing else None
    train = [segments[i] for i in train_ids]

    def stream(epochs: int) -> SFTStream:
        return SFTStream(train, epochs=epochs, seed=config.seed, pack_lengths=pack_lengths,
                         max_length=config.max_length)

    train_stream = stream(config.epochs)
    max_steps = config.max_steps or len(train_stream) // samples_per_step
    if max_steps == 0:
        raise UserError(f"{where}: {len(train_stream)} training samples, fewer than one optimizer step of "
                        f"{samples_per_step} (micro_batch_size x grad_accum_steps x processes)")
    if config.max_steps:  # as many passes as the steps need (packs per epoch vary), cut to them
        epochs = -(-max_steps * samples_per_step // max(1, len(stream(1))))
        while len(train_stream := stream(epochs)) < max_steps * samples_per_step:
            epochs += 1
    train_stream.items = train_stream.items[: max_steps * samples_per_step]

    val_batch, val_batches = validation_batches(len(val_ids), config, world_size)
    eval_on = bool(config.eval_every and val_batches)
    if config.eval_every and config.val_fraction and not eval_on:
        warn(f"{where}: {len(val_ids)} of {len(kept)} conversations held out (val_fraction {config.val_fraction}), "
             f"fewer than one per process; validation is off (raise --val-fraction)")
    val_stream = SFTStream([segments[i] for i in val_ids], shuffle=False)
    val_stream.items = val_stream.items[: val_batches * val_batch * world_size]
    clean_collator = dataclasses.replace(collator, mask_ratio=0.0, packing=False, count_tokens=False)
    _check_warmup(config, max_steps)

    args = _training_arguments(config, output, eval_on, max_steps, val_batch)
    set_seed(config.seed)  # LoRA's initialisation
    if config.lora_r:
        model = _with_lora(model, config, mask_id if newly_added else None)
    average = sum(lengths[i] for i in train_ids) / len(train_ids)
    trainer = _make_trainer(config, output, args, model, train_stream, val_stream if eval_on else None, collator,
                            clean_collator, tokens_per_step=None, seq_len=round(average), progress=progress)
    if config.lora_r and (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        raise UserError("lora_r: LoRA runs merge the adapter on one process; use DDP, not FSDP or DeepSpeed")
    facts = {"conversations": {"train": len(train_ids), "val": len(val_ids), "skipped": len(segments) - len(kept)},
             "rows": dict(kinds), "tokenizer_sha256": vocabulary_sha256(tokenizer)}
    return Run(config, output, trainer, tokenizer, samples_per_step, max_steps, facts)


def _tokenized(tokenizer, turns: list[dict], where: str):
    from jinja2 import TemplateError

    from meap.data.sft import tokenize_conversation

    try:
        return tokenize_conversation(tokenizer, turns)
    except (TemplateError, UserError) as error:
        raise UserError(f"{where}: cannot render it with the tokenizer's chat template ({error})") from None


def _packed_attention(model, packing: bool) -> str:
    """How the collator isolates packed rows for the model's attention kernel (see MeapSFTCollator)."""
    implementation = getattr(model.config, "_attn_implementation", None) or "sdpa"
    if implementation.startswith("flash_attention"):
        implementation = "flash_attention_2"  # the collator's name for "rows split by position_ids"
    if implementation in PACKED_ATTENTION:
        return implementation
    if not packing:
        return "sdpa"  # unused: unpacked batches carry a plain padding mask
    raise UserError(f"attn_implementation: packing and document_attention support {', '.join(PACKED_ATTENTION)}, not {implementation!r}")


def _with_lora(model, config: SFTConfig, new_mask_id: int | None):
    """``model`` wrapped in LoRA adapters on every linear layer; a new ``[MASK]`` row stays trainable."""
    from peft import LoraConfig, get_peft_model

    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM",
                      trainable_token_indices=[new_mask_id] if new_mask_id is not None else None,
                      ensure_weight_tying=tied and new_mask_id is not None)
    return get_peft_model(model, lora)


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records after ``last_step`` (the resumed run logs those steps again) and a half-written last line."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", last_step + 1) <= last_step:
            kept.append(line)
    staging = path.with_suffix(".tmp")
    staging.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(staging, path)


def save_final(run: Run) -> Path:
    """Write ``final/``: a plain Hugging Face model and tokenizer (with ``[MASK]``), atomically.

    A LoRA run also writes its adapter to ``adapter/`` and merges it into the weights of ``final/``.
    """
    final = run.output / "final"
    staging = run.output / ".staging-final"
    main = run.trainer.is_world_process_zero()
    if main:
        shutil.rmtree(staging, ignore_errors=True)
    run.trainer.accelerator.wait_for_everyone()
    model = run.trainer.accelerator.unwrap_model(run.trainer.model)
    if hasattr(model, "merge_and_unload"):  # a peft model
        if main:
            adapter = run.output / ".staging-adapter"
            model.save_pretrained(str(adapter))
            publish(adapter, run.output / "adapter")
            model.merge_and_unload().save_pretrained(str(staging))
    else:
        run.trainer.save_model(str(staging))  # every process takes part (sharded models are gathered)
    if main:
        (staging / "training_args.bin").unlink(missing_ok=True)  # final/ is a plain model, not a checkpoint
        limit = getattr(run.trainer.model.config, "max_position_embeddings", None)
        if limit:
            run.tokenizer.model_max_length = limit
        run.tokenizer.save_pretrained(str(staging))
        publish(staging, final)
    run.trainer.accelerator.wait_for_everyone()
    return final


def _run_facts(output: Path) -> dict:
    """What ``run.json`` recorded of the run in ``output`` (empty before its first launch)."""
    path = output / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _check_resumable(output: Path, run: Run) -> None:
    path = output / RUN_FILE
    saved = _run_facts(output)
    if saved.get("samples_per_step", run.samples_per_step) != run.samples_per_step:
        raise UserError(
            f"{path}: the run took {saved['samples_per_step']} samples per step, this launch takes "
            f"{run.samples_per_step} (micro_batch_size x grad_accum_steps x processes); resume with the same layout"
        )
    fingerprint = run.facts.get("tokenizer_sha256")
    if saved.get("tokenizer_sha256", fingerprint) != fingerprint:
        source = run.config.data if isinstance(run.config, PretrainConfig) else run.config.model
        raise UserError(f"{path}: the run was trained with another tokenizer than {source} has now (its vocabulary "
                        "differs); resume with the data or model the run started from")


def _prepare_output(output: Path, checkpoint: Path | None, run: Run) -> None:
    """Main process only: clear or repair the run directory, then write the config and run facts."""
    if checkpoint is None:
        shutil.rmtree(output, ignore_errors=True)  # empty, or a run that --overwrite replaces (claim_output)
    output.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        _truncate_metrics(output / METRICS_FILE, checkpoint_step(checkpoint))
        for stale in [*output.glob(".staging-*"), *(output / "checkpoints").glob(".staging-*")]:
            shutil.rmtree(stale, ignore_errors=True)  # a save that was interrupted: never renamed into place
        for newer in checkpoint_dirs(output / "checkpoints"):
            if checkpoint_step(newer) > checkpoint_step(checkpoint):
                shutil.rmtree(newer)  # damaged (intact_checkpoint passed it over); the run will write it again
    save_config(run.config, output / CONFIG_FILE)
    facts = {"samples_per_step": run.samples_per_step, "max_steps": run.max_steps, **run.facts}
    (output / RUN_FILE).write_text(json.dumps(facts) + "\n")


def _check_writable(output: Path) -> None:
    parent = next(p for p in [output, *output.parents] if p.exists())
    if not os.access(parent, os.W_OK):
        raise UserError(f"{output}: cannot create the run directory ({parent} is not writable)")


def _execute(config: TrainingConfig, build, resume: bool, overwrite: bool, progress: bool) -> Path:
    """Claim the output, build the run, train (or resume), write ``final/``; return the output directory."""
    config = dataclasses.replace(config, output=str(config.resolved_output()))
    output = config.resolved_output()
    # Checks are read-only, so every process reaches the same verdict; only the main process writes.
    checkpoint = claim_output(config, resume, overwrite)
    target = config.max_steps or _run_facts(output).get("max_steps")
    if checkpoint is not None and target and checkpoint_step(checkpoint) >= target and (output / "final").is_dir():
        print(f"{output}: already complete ({target} steps); raise --max-steps to train further")
        return output
    _check_writable(output)
    run = build(config, progress)
    if checkpoint is not None:
        _check_resumable(output, run)
        _note_schedule_change(output, checkpoint, run)
        if is_main_process():
            print(f"{output}: resuming from step {checkpoint_step(checkpoint)} ({checkpoint}) to {run.max_steps}")
    state = PartialState()
    if state.is_main_process:
        _prepare_output(output, checkpoint, run)
    state.wait_for_everyone()
    try:
        run.trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        run.trainer.check_non_finite()  # the Trainer's last log did; no final model after a bad step in any case
    except UserError as error:
        # Raised by this process alone (a disk, a file), unless all processes decided it together.
        error.rank_local = not isinstance(error, NonFiniteLoss)
        raise
    except KeyboardInterrupt:
        kept = checkpoint_dirs(output / "checkpoints")
        command = "sft" if isinstance(config, SFTConfig) else "pretrain"
        raise Interrupted(f"{kept[-1]} is the last checkpoint kept: continue with `meap {command} --output {output} "
                          "--resume`" if kept else "no checkpoint was saved yet") from None
    save_final(run)
    return output


def _note_schedule_change(output: Path, checkpoint: Path, run: Run) -> None:
    """A resume that changes max_steps re-plans the cosine schedule from the new total: the learning rate
    of the steps still to come differs from either run's. Allowed (it is how a run is extended), warned
    about and recorded in run.json (``schedule_changes``)."""
    facts = _run_facts(output)
    before = facts.get("max_steps")
    changes = facts.get("schedule_changes", [])
    if before and before != run.max_steps:
        step = checkpoint_step(checkpoint)
        warn(f"max_steps {before} -> {run.max_steps}: the learning-rate schedule is re-planned for "
             f"{run.max_steps} steps from step {step} on, so this run is no longer the same as one started with "
             f"either (recorded in {output / RUN_FILE})")
        changes = [*changes, {"at_step": step, "max_steps": {"from": before, "to": run.max_steps}}]
    if changes:
        run.facts["schedule_changes"] = changes


def launch_config(config_cls: type, recipe: str | None, overrides: dict, resume: bool) -> TrainingConfig:
    """The configuration of a launch: the recipe's keys, then ``overrides`` (flags). Resuming without a
    recipe starts from the run's own ``config.yaml`` instead, so ``--resume --output DIR`` is all it needs."""
    from meap.config import load_config

    if resume and recipe is None:
        where = {key: overrides[key] for key in ("output", "objective") if key in overrides}
        saved = load_config(config_cls, None, where).resolved_output() / CONFIG_FILE
        if saved.is_file():
            return load_config(config_cls, saved, overrides)
    return load_config(config_cls, recipe, overrides)


def pretrain(config: PretrainConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> Path:
    """Run (or resume) a pretraining run and return its output directory."""
    return _execute(config, build_run, resume, overwrite, progress)


def sft(config: SFTConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> Path:
    """Run (or resume) a supervised fine-tuning run and return its output directory."""
    return _execute(config, build_sft_run, resume, overwrite, progress)
