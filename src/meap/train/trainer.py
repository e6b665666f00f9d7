"""The Trainer of every meap run: the stock Hugging Face Trainer with these changes.

* The sample order is the stream's own (sequential over :class:`~meap.data.blocks.PackedBlocks` or
  :class:`~meap.sft.stream.SFTStream`, both seeded), so NTP and MEAP see the same data in the same order.
* Validation batches are clean (no [MASK]) and tokens/s counts real tokens when the collator reports them.
* Checkpoints are written to a staging directory with a manifest (:mod:`meap.train.checkpoints`) and
  renamed into ``checkpoints/step-N``: an interrupted save never leaves a half-written checkpoint.
* A non-finite loss skips that step's update and stops the run before any later checkpoint, so the last
  checkpoint stays the last good state (``on_nan: skip`` continues instead).
* ``fsdp`` shards on CPU processes too, through accelerate's own FSDP2 path.

Two of the Trainer's private methods are overridden, both named in
:data:`meap.touchpoints.PRIVATE_TRAINER_METHODS` (tests/test_touchpoints.py pins them), as is every other
private part of transformers, accelerate and torch this module relies on. The sample order
needs none: it is the public ``train_sampling_strategy="sequential"`` (:mod:`meap.train.arguments`).
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from meap.constants import IGNORE_INDEX
from meap.errors import UserError, warn
from meap.fsutil import publish_dir
from meap.loss import chunked_cross_entropy
from meap.rundir import CONFIG_FILE, RunDir, checkpoint_dirs
from meap.touchpoints import shard_on_cpu_processes
from meap.train.checkpoints import last_checkpoint_note, write_manifest


class MeapTrainer(Trainer):
    """The stock Trainer with the run's own sample order, clean validation and atomic checkpoints."""

    def __init__(
        self,
        *args,
        eval_collator=None,
        keep_checkpoints: int = 0,
        loss_chunk_size: int = 0,
        on_nan: str = "stop",
        **kwargs,
    ):
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

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if self.args.fsdp_plugin_args is not None and not self.is_fsdp_enabled:
            # CPU processes: accelerate takes its FSDP2 path only on accelerator devices and would run DDP
            self.is_fsdp_enabled = shard_on_cpu_processes(self.accelerator, self.args.fsdp_plugin_args)

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
        self._non_finite = (
            seen if self._non_finite is None else torch.where(self._non_finite[0] > 0, self._non_finite, seen)
        )
        return torch.where(finite, loss, torch.zeros_like(loss))  # the window's logged loss counts a bad batch as 0

    def get_eval_dataloader(self, eval_dataset=None):
        train_collator, self.data_collator = self.data_collator, self.eval_collator or self.data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def _issue_warnings_after_load(self, load_result) -> None:
        # A checkpoint of a model with tied embeddings stores the shared tensor once: the other name (lm_head)
        # is "missing" though nothing is. Tie again, and warn only of what is really absent.
        every = {name for name, _ in self.model.named_parameters(remove_duplicate=False)}
        aliases = every - {name for name, _ in self.model.named_parameters()}
        if load_result.missing_keys and set(load_result.missing_keys) <= aliases:
            self.model.tie_weights()
            return
        super()._issue_warnings_after_load(load_result)

    def _get_output_dir(self, trial) -> str:
        return self._staging_dir or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        self.check_non_finite()  # no checkpoint after a step whose loss was not finite, under on_nan: stop
        self._flush_tokens()  # the count is part of the checkpoint's trainer state
        run_dir = RunDir(Path(self.args.output_dir).parent)
        step = self.state.global_step
        staging = run_dir.staging(run_dir.checkpoint(step).name, under_checkpoints=True)
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
        self.accelerator.wait_for_everyone()  # nobody writes into the staging directory before it is empty
        self._staging_dir = str(staging)
        try:
            super()._save_checkpoint(model, trial)
            self.accelerator.wait_for_everyone()  # every process has written its part (its RNG state, say)
            if self.args.should_save:
                written = staging / f"{PREFIX_CHECKPOINT_DIR}-{step}"  # where the Trainer saved it
                if run_dir.config_file.is_file():
                    shutil.copy2(run_dir.config_file, written / CONFIG_FILE)
                write_manifest(written)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            previous = run_dir.saved_checkpoints()
            reason = "no space left on device" if error.errno == errno.ENOSPC else (error.strerror or str(error))
            raise UserError(
                f"{error.filename or staging}: cannot write the step-{step} checkpoint ({reason}); "
                f"stopped. {last_checkpoint_note(previous)}"
            ) from None
        finally:
            self._staging_dir = None
        if self.args.should_save:
            publish_dir(written, run_dir.checkpoint(step))
            shutil.rmtree(staging, ignore_errors=True)
            if self.keep_checkpoints > 0:
                for old in run_dir.saved_checkpoints()[: -self.keep_checkpoints]:
                    shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()


class NonFiniteLoss(UserError):
    """The loss of a micro-batch was NaN or infinite: that step's update was skipped and the run stops (every
    process alike), at the latest before the next checkpoint."""

    def __init__(self, step: int, loss: float, checkpoints: Path, where: str = "", stopped_at: int | None = None):
        stopped = f" at step {stopped_at}" if stopped_at and stopped_at > step else ""
        super().__init__(
            f"step {step}: the training loss is {loss} (not finite){where}; its update was skipped and "
            f"the run stopped{stopped}. {last_checkpoint_note(checkpoint_dirs(checkpoints))} "
            "(a lower --lr or a higher --warmup-steps may help)"
        )
