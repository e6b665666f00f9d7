"""What a run reports while it trains: ``metrics.jsonl``, a progress bar, tokens/s and MFU.

Throughput counts training time only: the time spent in validation and checkpointing is left out, so
tokens/s and MFU describe the training step (data loading and masking included).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback

from meap.errors import is_main_process, warn
from meap.rundir import RunDir, last_value

# Dense bf16 peak TFLOP/s per device, matched against torch.cuda.get_device_name() (first match wins).
PEAK_BF16_TFLOPS = (
    ("H200", 989.0),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
    ("V100", 125.0),  # fp16 tensor cores; V100 has no bf16
)


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it, with its widest vector extension (timings depend on it)."""
    import platform

    name, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines()
        name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), name)
        flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    widest = next(
        (label for flag, label in (("amx_bf16", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags),
        None,
    )
    return f"{name} ({widest})" if widest else name


def machine() -> dict:
    """What a result file records about where it was measured."""
    import os
    import platform

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        # the kernels that did the arithmetic (meap.experiments.runner.PORTABLE_NUMERICS)
        "numerics": {
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl_cbwr": os.environ.get("MKL_CBWR", ""),
        },
    }


def code_version() -> dict:
    """What a result file records about the code that computed it: meap's version and, in a git checkout, the
    commit of its source tree (``-dirty`` when tracked files differ from it)."""
    import subprocess

    from meap import __version__

    source = str(Path(__file__).resolve().parent)

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", source, *args], capture_output=True, text=True, check=True)
        except (subprocess.CalledProcessError, FileNotFoundError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += "-dirty"
    return {"version": __version__, "commit": commit}


def peak_flops_of(device_name: str) -> float | None:
    """Peak dense bf16 FLOP/s of the device called ``device_name``, or ``None`` if it is not in the table."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in device_name:
            return tflops * 1e12
    return None


def peak_flops() -> float | None:
    """Peak dense bf16 FLOP/s of the current CUDA device; ``None`` on CPU or for a device missing from the table."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    peak = peak_flops_of(name)
    if peak is None:
        warn(f"no peak-FLOP/s entry for {name!r}: MFU is not reported (add it to meap.monitor.PEAK_BF16_TFLOPS)")
    return peak


def flops_per_token(matmul_params: int, num_layers: int, hidden_size: int, seq_len: int) -> float:
    """Training FLOPs per token: 6·N for the weight matmuls (output head included, the embedding lookup not)
    plus 12·layers·d·seq for the attention scores and values."""
    return 6.0 * matmul_params + 12.0 * num_layers * hidden_size * seq_len


class MetricsCallback(TrainerCallback):
    """Writes one JSON object per logged step to ``metrics.jsonl`` and keeps tokens/s and MFU current.

    A record holds ``step``, ``loss``, ``lr``, ``grad_norm``, ``tokens``, ``tokens_per_s``, ``elapsed_s``
    (training seconds so far, validation and saves excluded; continued across resumes), ``mfu`` on CUDA,
    ``val_loss`` when validation ran at that step, ``probe_*`` when probes were scored at it
    (:mod:`meap.probes`), and ``skipped_steps`` when steps since the previous
    record were skipped for a non-finite loss (``on_nan: skip``; their batches count 0 in ``loss``).
    """

    def __init__(
        self,
        run_dir: RunDir,
        tokens_per_step: int | None,
        flops_per_token: float | None,
        peak: float | None,
        eval_every: int,
        world_size: int = 1,
        probes=None,
    ):
        self.run_dir = run_dir
        self.probes = probes  # a meap.probes.ProbeSchedule: its scores join the record of the step they ran at
        self._probe_scores: dict = {}
        self.tokens_per_step = tokens_per_step  # None: the Trainer's num_input_tokens_seen counts them
        self.flops_per_token = flops_per_token
        self.peak = None if peak is None else peak * world_size  # the step's FLOPs are spread over every device
        self.eval_every = eval_every
        self.latest: dict = {}
        self.skipped_steps: list[int] = []  # optimizer steps skipped for a non-finite loss (shared with the trainer)
        self._logged_step = 0
        self._pending: dict | None = None
        self._train_seconds = 0.0
        self._window_tokens = 0
        self._elapsed = 0.0  # training seconds since the run began (validation and saves excluded)
        self._mark = time.perf_counter()

    def _pause(self) -> None:
        self._mark = time.perf_counter()

    def _tokens(self, state) -> int:
        if self.tokens_per_step is None:
            return int(state.num_input_tokens_seen)
        return state.global_step * self.tokens_per_step

    def on_train_begin(self, args, state, control, **kwargs):
        self._logged_step = state.global_step
        self._window_tokens = self._tokens(state)
        self._elapsed = self._resumed_elapsed()
        if self.probes is not None and state.global_step == 0:  # where the curve starts (e.g. a branch point)
            self._pending = {"step": 0, "tokens": 0, **self.probes.score(kwargs["model"])}
            self._flush(state)
        self._pause()

    def _resumed_elapsed(self) -> float:
        """A resumed run's clock continues from its last record (the file was cut back to its checkpoint)."""
        return float(last_value(self.run_dir.read_metrics(), "elapsed_s") or 0.0)

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self._train_seconds += now - self._mark
        self._mark = now
        if state.global_step == state.max_steps:  # the last step is always logged and validated
            control.should_log = True
            control.should_evaluate = bool(self.eval_every)
        if self.probes is not None and self.probes.due(state.global_step, state.max_steps):
            self._probe_scores = {"step": state.global_step, **self.probes.score(kwargs["model"])}
            control.should_log = True
            self._pause()  # probing is not training time

    def _eval_due(self, state) -> bool:
        return bool(self.eval_every) and (
            state.global_step % self.eval_every == 0 or state.global_step == state.max_steps
        )

    def on_evaluate(self, args, state, control, **kwargs):
        self._pause()

    def on_save(self, args, state, control, **kwargs):
        self._pause()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            tokens = self._tokens(state)
            tokens_per_s = (tokens - self._window_tokens) / max(self._train_seconds, 1e-9)
            self._elapsed += self._train_seconds
            record = {
                "step": state.global_step,
                "loss": round(float(logs["loss"]), 6),
                "lr": float(logs.get("learning_rate", 0.0)),
                "grad_norm": float(logs["grad_norm"]) if "grad_norm" in logs else None,
                "tokens": tokens,
                "tokens_per_s": round(tokens_per_s, 1),
                "elapsed_s": round(self._elapsed, 3),
            }
            if self._probe_scores.get("step") == state.global_step:
                record.update({k: v for k, v in self._probe_scores.items() if k != "step"})
            if self.flops_per_token and self.peak:
                record["mfu"] = float(f"{tokens_per_s * self.flops_per_token / self.peak:.4g}")  # tiny models: not 0.0
            skipped = [step for step in self.skipped_steps if self._logged_step < step <= state.global_step]
            if skipped:
                record["skipped_steps"] = skipped
                if record["grad_norm"] is not None and not math.isfinite(record["grad_norm"]):
                    record["grad_norm"] = None  # the norm of the skipped step's gradients
            self._logged_step = state.global_step
            self._train_seconds, self._window_tokens = 0.0, tokens
            self.latest = record
            self._flush(state)  # a record still waiting for a validation that never came
            self._pending = record
            if not self._eval_due(state):
                self._flush(state)
        elif "eval_loss" in logs:
            record = (
                self._pending
                if self._pending and self._pending["step"] == state.global_step
                else {"step": state.global_step}
            )
            record["val_loss"] = round(float(logs["eval_loss"]), 6)
            self.latest = {**self.latest, "val_loss": record["val_loss"]}
            self._pending = record
            self._flush(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._flush(state)

    def _flush(self, state) -> None:
        if self._pending is not None and is_main_process():
            with self.run_dir.metrics_file.open("a", encoding="utf-8") as out:
                out.write(json.dumps(self._pending) + "\n")
        self._pending = None


class ProgressBar(TrainerCallback):
    """One tqdm bar over optimizer steps with loss, val loss, tokens/s (and MFU), rate and ETA."""

    def __init__(self, metrics: MetricsCallback):
        self.metrics = metrics
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if is_main_process():
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, unit="step", dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None:
            return
        latest = self.metrics.latest
        postfix = {}
        if "loss" in latest:
            postfix["loss"] = f"{latest['loss']:.3f}"
        if "val_loss" in latest:
            postfix["val"] = f"{latest['val_loss']:.3f}"
        if "tokens_per_s" in latest:
            postfix["tok/s"] = f"{latest['tokens_per_s']:,.0f}"
        if "mfu" in latest:
            postfix["mfu"] = f"{latest['mfu']:.1%}"
        self.bar.set_postfix(postfix, refresh=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class LogLines(TrainerCallback):
    """Without a progress bar (``--no-progress``, a log file): one plain line per logged step and validation,
    e.g. ``step 40/1000  loss 3.2114  lr 2.9e-04  4,321 tok/s  elapsed 0:00:12  ETA 0:04:48``."""

    def __init__(self, metrics: MetricsCallback):
        self.metrics = metrics
        self._started = self._first_step = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._started, self._first_step = time.monotonic(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not is_main_process() or not logs:
            return
        where = f"step {state.global_step}/{state.max_steps}"
        if "eval_loss" in logs:
            print(f"{where}  val_loss {float(logs['eval_loss']):.4f}", flush=True)
        elif "loss" in logs and self.metrics.latest.get("step") == state.global_step:
            latest = self.metrics.latest
            wall = time.monotonic() - self._started
            done = state.global_step - self._first_step
            eta = wall / done * (state.max_steps - state.global_step) if done else 0.0
            fields = [
                where,
                f"loss {latest['loss']:.4f}",
                f"lr {latest['lr']:.1e}",
                f"{latest['tokens_per_s']:,.0f} tok/s",
            ]
            if "mfu" in latest:
                fields.append(f"mfu {latest['mfu']:.1%}")
            fields += [f"elapsed {_clock(wall)}", f"ETA {_clock(eta)}"]
            print("  ".join(fields), flush=True)


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
