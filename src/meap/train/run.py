"""A training launch from start to end: claim the output, build the run, train (or resume), write
``final/``. Under ``torchrun``/``accelerate launch`` every process runs this; only the main process writes
or deletes files outside what the Trainer itself coordinates, and the others wait for it."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from accelerate import PartialState

from meap.config import PretrainConfig, SFTConfig, TrainingConfig
from meap.errors import Interrupted, UserError, is_main_process
from meap.fsutil import publish_dir
from meap.rundir import ADAPTER_DIR, FINAL_DIR, RunDir, checkpoint_step
from meap.train.build import Run, build_run
from meap.train.build_sft import build_sft_run
from meap.train.resume import check_resumable, check_writable, claim_output, note_schedule_change, prepare_output
from meap.train.stopping import StopOnSignal
from meap.train.trainer import NonFiniteLoss


def save_final(run: Run) -> Path:
    """Write ``final/``: a plain Hugging Face model and tokenizer (with ``[MASK]``), atomically.

    A LoRA run also writes its adapter to ``adapter/`` and merges it into the weights of ``final/``.
    """
    run_dir = RunDir(run.output)
    staging = run_dir.staging(FINAL_DIR)
    main = is_main_process()
    if main:
        shutil.rmtree(staging, ignore_errors=True)
    run.trainer.accelerator.wait_for_everyone()
    model = run.trainer.accelerator.unwrap_model(run.trainer.model)
    if hasattr(model, "merge_and_unload"):  # a peft model
        if main:
            adapter = run_dir.staging(ADAPTER_DIR)
            model.save_pretrained(str(adapter))
            publish_dir(adapter, run_dir.adapter_dir)
            model.merge_and_unload().save_pretrained(str(staging))
    else:
        run.trainer.save_model(str(staging))  # every process takes part (sharded models are gathered)
    if main:
        (staging / "training_args.bin").unlink(missing_ok=True)  # final/ is a plain model, not a checkpoint
        limit = getattr(run.trainer.model.config, "max_position_embeddings", None)
        if limit:
            run.tokenizer.model_max_length = limit
        run.tokenizer.save_pretrained(str(staging))
        publish_dir(staging, run_dir.final_dir)
    run.trainer.accelerator.wait_for_everyone()
    return run_dir.final_dir


def _execute(config: TrainingConfig, build, resume: bool, overwrite: bool, progress: bool) -> Path:
    """Claim the output, build the run, train (or resume), write ``final/``; return the output directory."""
    # a run records what it trains with: its directory, and the ratio it masks at (NTP: MEAP at ratio 0)
    config = dataclasses.replace(config, output=str(config.resolved_output()), mask_ratio=config.effective_mask_ratio())
    output = config.resolved_output()
    run_dir = RunDir(output)
    # Checks are read-only, so every process reaches the same verdict; only the main process writes.
    checkpoint = claim_output(config, resume, overwrite)
    target = config.max_steps or run_dir.read_facts().get("max_steps")
    if checkpoint is not None and target and checkpoint_step(checkpoint) >= target and run_dir.final_dir.is_dir():
        print(f"{output}: already complete ({target} steps); raise --max-steps to train further")
        return output
    check_writable(output)
    run = build(config, progress)
    if checkpoint is not None:
        check_resumable(run_dir, run)
        note_schedule_change(run_dir, checkpoint, run)
        if is_main_process():
            print(f"{output}: resuming from step {checkpoint_step(checkpoint)} ({checkpoint}) to {run.max_steps}")
    if is_main_process():
        prepare_output(run_dir, checkpoint, run)
    PartialState().wait_for_everyone()
    command = "sft" if isinstance(config, SFTConfig) else "pretrain"
    try:
        run.trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        run.trainer.check_non_finite()  # the Trainer's last log did; no final model after a bad step in any case
    except UserError as error:
        # Raised by this process alone (a disk, a file), unless all processes decided it together.
        error.rank_local = not isinstance(error, NonFiniteLoss)
        raise
    except KeyboardInterrupt:
        kept = run_dir.saved_checkpoints()
        raise Interrupted(
            f"{kept[-1]} is the last checkpoint kept: continue with `meap {command} --output {output} --resume`"
            if kept
            else "no checkpoint was saved yet"
        ) from None
    stop = next(c for c in run.trainer.callback_handler.callbacks if isinstance(c, StopOnSignal))
    if stop.stopped_at is not None and stop.stopped_at < run.max_steps:
        raise Interrupted(
            f"stopped at step {stop.stopped_at}, saved in {run_dir.saved_checkpoints()[-1]}: continue "
            f"with `meap {command} --output {output} --resume`"
        )
    save_final(run)
    return output


def pretrain(config: PretrainConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> Path:
    """Run (or resume) a pretraining run and return its output directory."""
    return _execute(config, build_run, resume, overwrite, progress)


def sft(config: SFTConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> Path:
    """Run (or resume) a supervised fine-tuning run and return its output directory."""
    return _execute(config, build_sft_run, resume, overwrite, progress)
