"""Claiming a run directory before training and resuming in it: refuse to clobber another run, find the
checkpoint to continue from, check that the launch continues the same run, then prepare the directory.
Every check is read-only, so each process of a distributed launch reaches the same verdict."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from meap.config import PretrainConfig, TrainingConfig, config_to_dict, load_config, save_config, saved_config
from meap.errors import UserError, warn
from meap.monitor import machine
from meap.rundir import RunDir, checkpoint_step
from meap.train.checkpoints import intact_checkpoint

# Keys that may change when a run is resumed: they do not alter the trajectory of the steps already taken.
# The micro-batch and accumulation may change with the number of processes as long as the samples per
# optimizer step stay the same (checked against run.json).
RESUMABLE_CHANGES = {
    "max_steps",
    "log_every",
    "eval_every",
    "eval_batches",
    "save_every",
    "keep_checkpoints",
    "num_workers",
    "compile",
    "output",
    "micro_batch_size",
    "grad_accum_steps",
    "report_to",
    "probe_file",
    "probe_every",
}


def claim_output(config: TrainingConfig, resume: bool, overwrite: bool) -> Path | None:
    """Check the output directory (read-only) and return the checkpoint to resume from, if any."""
    output = config.resolved_output()
    run_dir = RunDir(output)
    if output.exists() and not output.is_dir():
        raise UserError(f"{output}: output path exists and is not a directory")
    if resume:
        if not run_dir.holds_run():
            raise UserError(f"{output}: --resume given but the directory holds no run")
        _check_same_run(run_dir, config)
        if not run_dir.saved_checkpoints():
            raise UserError(f"{run_dir.checkpoints_dir}: --resume given but no checkpoint was saved yet")
        checkpoint = intact_checkpoint(run_dir.checkpoints_dir)
        if checkpoint is None:
            raise UserError(
                f"{run_dir.checkpoints_dir}: --resume given but every checkpoint is damaged; "
                "start over with --overwrite"
            )
        return checkpoint
    if output.is_dir() and any(output.iterdir()):
        if overwrite and not run_dir.holds_run():
            raise UserError(f"{output}: not a meap run directory; refusing to delete it (choose another --output)")
        if not overwrite and run_dir.holds_run():
            raise UserError(f"{output}: already holds a run; pass --resume to continue it or --overwrite to start over")
        if not overwrite:
            raise UserError(f"{output}: directory is not empty; choose another --output")
    return None


def _check_same_run(run_dir: RunDir, config: TrainingConfig) -> None:
    saved = saved_config(type(config), run_dir.config_file) if run_dir.config_file.is_file() else {}
    current = config_to_dict(config)
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise UserError(f"{run_dir.config_file}: --resume with a different configuration ({details})")


def check_writable(output: Path) -> None:
    parent = next(p for p in [output, *output.parents] if p.exists())
    if not os.access(parent, os.W_OK):
        raise UserError(f"{output}: cannot create the run directory ({parent} is not writable)")


def check_resumable(run_dir: RunDir, run) -> None:
    """The launch continues the run in ``run_dir``: same samples per step, same tokenizer (run.json)."""
    saved = run_dir.read_facts()
    if saved.get("samples_per_step", run.samples_per_step) != run.samples_per_step:
        raise UserError(
            f"{run_dir.facts_file}: the run took {saved['samples_per_step']} samples per step, this launch takes "
            f"{run.samples_per_step} (micro_batch_size x grad_accum_steps x processes); resume with the same layout"
        )
    fingerprint = run.facts.get("tokenizer_sha256")
    if saved.get("tokenizer_sha256", fingerprint) != fingerprint:
        source = run.config.data if isinstance(run.config, PretrainConfig) else run.config.model
        raise UserError(
            f"{run_dir.facts_file}: the run was trained with another tokenizer than {source} has now "
            "(its vocabulary differs); resume with the data or model the run started from"
        )


def note_schedule_change(run_dir: RunDir, checkpoint: Path, run) -> None:
    """A resume that changes max_steps re-plans the cosine schedule from the new total: the learning rate
    of the steps still to come differs from either run's. Allowed (it is how a run is extended), warned
    about and recorded in run.json (``schedule_changes``)."""
    facts = run_dir.read_facts()
    before = facts.get("max_steps")
    changes = facts.get("schedule_changes", [])
    if before and before != run.max_steps:
        step = checkpoint_step(checkpoint)
        warn(
            f"max_steps {before} -> {run.max_steps}: the learning-rate schedule is re-planned for "
            f"{run.max_steps} steps from step {step} on, so this run is no longer the same as one started with "
            f"either (recorded in {run_dir.facts_file})"
        )
        changes = [*changes, {"at_step": step, "max_steps": {"from": before, "to": run.max_steps}}]
    if changes:
        run.facts["schedule_changes"] = changes


def prepare_output(run_dir: RunDir, checkpoint: Path | None, run) -> None:
    """Main process only: clear or repair the run directory, then write the config and run facts."""
    output = run_dir.root
    if checkpoint is None:
        shutil.rmtree(output, ignore_errors=True)  # empty, or a run that --overwrite replaces (claim_output)
    output.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        run_dir.truncate_metrics(checkpoint_step(checkpoint))
        for stale in run_dir.stale_staging():
            shutil.rmtree(stale, ignore_errors=True)
        for newer in run_dir.saved_checkpoints():
            if checkpoint_step(newer) > checkpoint_step(checkpoint):
                shutil.rmtree(newer)  # damaged (intact_checkpoint passed it over); the run will write it again
    save_config(run.config, run_dir.config_file)
    trainer_args = {"trainer_args": run.config.trainer_arguments()} if run.config.trainer_args else {}
    # machine: this launch's (a resumed run records where it was continued)
    run_dir.write_facts(
        {
            "samples_per_step": run.samples_per_step,
            "max_steps": run.max_steps,
            **trainer_args,
            **run.facts,
            "machine": machine(),
        }
    )


def launch_config(config_cls: type, recipe: str | None, overrides: dict, resume: bool) -> TrainingConfig:
    """The configuration of a launch: the recipe's keys, then ``overrides`` (flags). Resuming without a
    recipe starts from the run's own ``config.yaml`` instead, so ``--resume --output DIR`` is all it needs."""
    if resume and recipe is None:
        where = {key: overrides[key] for key in ("output", "objective") if key in overrides}
        saved = RunDir(load_config(config_cls, None, where).resolved_output()).config_file
        if saved.is_file():
            return load_config(config_cls, saved, overrides)
    return load_config(config_cls, recipe, overrides)
