"""The Trainer's arguments and callbacks for a meap run: schedule, precision, FSDP, integrations,
metrics.jsonl, TensorBoard and the progress display."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import TrainingArguments
from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from meap.config import TrainingConfig
from meap.errors import UserError, did_you_mean, error_summary
from meap.models import matmul_parameters
from meap.monitor import LogLines, MetricsCallback, ProgressBar, flops_per_token, peak_flops
from meap.rundir import RunDir
from meap.train.stopping import StopOnSignal
from meap.train.trainer import MeapTrainer


def launched_world_size() -> int:
    """Processes the launcher started (torchrun and accelerate set WORLD_SIZE). Read from the environment:
    an accelerate state made before the TrainingArguments would count one process on CPU."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def precision_arguments(config: TrainingConfig) -> dict:
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


def _fsdp(config: TrainingConfig) -> bool | None:
    """FSDP2 where a launch has processes to shard across (torchrun sets LOCAL_RANK; on CPU, accelerate takes
    a single process as undistributed), not a silently unsharded run."""
    if config.fsdp and (
        "LOCAL_RANK" not in os.environ or (launched_world_size() < 2 and not torch.cuda.is_available())
    ):
        raise UserError(
            "fsdp: FSDP2 shards across the processes of a launch and this is a single process; run "
            "under torchrun --nproc_per_node N (N >= 2 on CPU), or without --fsdp"
        )
    return config.fsdp or None


# TrainingArguments keys meap sets from its own config: given as trainer_args they would contradict it (the
# run directory, the stream's order, checkpoints, logging and validation cadence, resume, the step's shape).
_OWN_KEYS = {
    "output_dir": "--output",
    "max_steps": "--max-steps",
    "per_device_train_batch_size": "--micro-batch-size",
    "per_device_eval_batch_size": "--micro-batch-size",
    "gradient_accumulation_steps": "--grad-accum-steps",
    "learning_rate": "--lr",
    "warmup_steps": "--warmup-steps",
    "weight_decay": "--weight-decay",
    "adam_beta1": "--adam-beta1",
    "adam_beta2": "--adam-beta2",
    "max_grad_norm": "--grad-clip",
    "logging_steps": "--log-every",
    "logging_strategy": "--log-every",
    "eval_strategy": "--eval-every",
    "eval_steps": "--eval-every",
    "save_strategy": "--save-every",
    "save_steps": "--save-every",
    "save_total_limit": "--keep-checkpoints",
    "seed": "--seed",
    "torch_compile": "--compile",
    "dataloader_num_workers": "--num-workers",
    "dataloader_drop_last": None,
    "train_sampling_strategy": None,
    "remove_unused_columns": None,
    "fsdp": "--fsdp",
    "fsdp_config": "--fsdp",
    "prediction_loss_only": None,
    "logging_nan_inf_filter": "--on-nan",
    "report_to": "--report-to",
    "disable_tqdm": "--no-progress",
    "bf16": "--dtype",
    "fp16": "--dtype",
    "use_cpu": "--dtype",
    "resume_from_checkpoint": "--resume",
}


def _trainer_args(config: TrainingConfig) -> dict:
    """``trainer_args``, checked: a TrainingArguments key (else "did you mean") that meap does not own."""
    import dataclasses

    given = config.trainer_arguments()
    known = [f.name for f in dataclasses.fields(TrainingArguments) if f.init]
    for key in given:
        if key in _OWN_KEYS:
            flag = _OWN_KEYS[key]
            raise UserError(
                f"trainer_args: `{key}` is set by meap itself" + (f"; use {flag}" if flag else " and cannot change")
            )
        if key not in known:
            raise UserError(f"trainer_args: `{key}` is no TrainingArguments key{did_you_mean(key, known, 0.6)}")
    return given


def training_arguments(
    config: TrainingConfig, output: Path, eval_on: bool, max_steps: int, eval_batch_size: int
) -> TrainingArguments:
    extra = _trainer_args(config)
    if "lr_scheduler_type" in extra:
        extra.setdefault("lr_scheduler_kwargs", {})  # meap's min_lr belongs to its own cosine schedule
    arguments = dict(
        output_dir=str(RunDir(output).checkpoints_dir),
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
        train_sampling_strategy="sequential",  # the streams are in their own seeded order: no reshuffle
        remove_unused_columns=False,  # the collators need each sample's `sample_index`
        ddp_find_unused_parameters=False,  # every parameter takes part: no extra autograd traversal per step
        fsdp=_fsdp(config),
        fsdp_config={"version": 2, "state_dict_type": "FULL_STATE_DICT"} if config.fsdp else None,
        prediction_loss_only=True,
        logging_nan_inf_filter=False,  # a non-finite loss stops or skips the step (MeapTrainer._guarded)
        report_to=_integrations(config, output),
        disable_tqdm=True,
        **precision_arguments(config),
    )
    try:
        return TrainingArguments(**{**arguments, **extra})
    except (ValueError, TypeError) as error:  # a value transformers refuses, e.g. an unknown optimizer
        if not extra:
            raise
        raise UserError(f"trainer_args: {error_summary(error)}") from None


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


def make_trainer(
    config: TrainingConfig,
    output: Path,
    args: TrainingArguments,
    model,
    train_dataset,
    eval_dataset,
    collator,
    eval_collator,
    *,
    tokens_per_step: int | None,
    seq_len: int,
    progress: bool,
    probes=None,
) -> MeapTrainer:
    """The Trainer with metrics.jsonl, TensorBoard and the progress bar; ``tokens_per_step=None``: counted;
    ``probes``: a :class:`meap.probes.ProbeSchedule` scored into metrics.jsonl."""
    peak = peak_flops()
    flops = None
    if peak:
        flops = flops_per_token(
            matmul_parameters(model), model.config.num_hidden_layers, model.config.hidden_size, seq_len
        )
    eval_every = config.eval_every if eval_dataset is not None else 0
    run_dir = RunDir(output)
    metrics = MetricsCallback(
        run_dir, tokens_per_step, flops, peak, eval_every, world_size=args.world_size, probes=probes
    )
    callbacks = [metrics, StopOnSignal()]
    if "tensorboard" in config.report_to:
        tensorboard = TensorBoardCallback()
        tensorboard.logging_dir = str(run_dir.tensorboard_dir)  # its writer opens at train start, on the main process
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
