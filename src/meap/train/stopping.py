"""Stopping on SIGINT/SIGTERM without losing steps: the first signal lets the current optimizer step finish,
saves a checkpoint there (atomically, as every checkpoint) and stops, so ``--resume`` continues from the
step where the run was stopped; a second signal stops at once (the last checkpoint kept is then the one
before). Under DDP/FSDP every process learns of a signal any of them got, so all save and stop together."""

from __future__ import annotations

import signal
import sys
import threading

import torch
from transformers import TrainerCallback

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignal(TrainerCallback):
    def __init__(self) -> None:
        self.received: int | None = None  # the first signal, once one came
        self.stopped_at: int | None = None  # the step saved and stopped at
        self._previous: dict = {}

    def _handle(self, number: int, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = number
        print(
            f"meap: {signal.Signals(number).name}: finishing this step, then saving a checkpoint and stopping "
            "(send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            self._previous = {number: signal.signal(number, self._handle) for number in SIGNALS}

    def on_step_end(self, args, state, control, **kwargs):
        if self._anyone_received(args):
            control.should_save = control.should_training_stop = True
            self.stopped_at = state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _anyone_received(self, args) -> bool:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return self.received is not None
        flag = torch.tensor([float(self.received is not None)], device=args.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())
