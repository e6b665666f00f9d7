"""Training throughput of `meap pretrain` against plain Hugging Face training loops, in one process.

Every variant starts from the same initial weights (the run's own seeded init) and reads the same batches
in the same order, so besides tokens/s, MFU and peak memory it checks that `meap pretrain` (NTP) follows
the plain loop's loss curve for the first steps, and measures the MEAP/NTP step-time ratio:

* plain HF, eager and `torch.compile`d: the model called with labels, bf16 autocast on CUDA, fused AdamW
  with the Trainer's parameter groups, cosine schedule and gradient clipping, batches already on the device;
* `meap pretrain`'s training step (MeapTrainer, its collator and data loader), NTP and MEAP, with the
  settings given by ``--set key=value`` (any `meap pretrain` key: compile, loss_chunk_size, num_workers...).

Each step is timed to a device synchronisation (a callback syncs at the end of every Trainer step, before
meap's metrics take the time); medians over the steps after ``--warmup``. MFU uses meap.monitor's
per-device peak table (dense bf16). Peak memory is per variant, after freeing the previous one.

    python benchmarks/gpu_throughput.py                                   # one H100: tinyllama-1.1b, seq 2048
    python benchmarks/gpu_throughput.py --set compile=true --set loss_chunk_size=4096
    python benchmarks/gpu_throughput.py --preset paper-1.1b --seq-len 4096 --micro-batch 4
    python benchmarks/gpu_throughput.py --preset tiny --seq-len 64 --micro-batch 2 --steps 4 --warmup 1 \\
        --data PREPARED_DIR --no-compile                                  # CPU smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback, get_scheduler
from transformers.trainer_utils import SaveStrategy

from meap.config import PretrainConfig, load_config
from meap.models import matmul_parameters
from meap.monitor import flops_per_token, peak_flops
from meap.train.build import build_run

sys.path.insert(0, str(Path(__file__).parent))
from overhead import machine


def driver_version() -> str | None:
    try:
        return (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gb() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def plain_loop(run, initial: dict, batches: list[dict], compiled: bool, warmup: int) -> dict:
    """The plain training loop on the run's model, restarted from ``initial``; per-step seconds and losses."""
    config, trainer = run.config, run.trainer
    model = trainer.model
    model.load_state_dict(initial)
    model.train()
    decay = set(trainer.get_decay_parameter_names(model))
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": config.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0},
    ]
    cuda = torch.cuda.is_available()
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(config.adam_beta1, config.adam_beta2), fused=True)
    schedule = get_scheduler(
        "cosine_with_min_lr",
        optimizer,
        num_warmup_steps=config.warmup_steps,
        num_training_steps=config.max_steps,
        scheduler_specific_kwargs={"min_lr": config.min_lr},
    )
    forward = torch.compile(model) if compiled else model
    autocast = torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda)
    seconds, losses = [], []
    reset_memory()
    for batch in batches:
        synchronize()
        start = time.perf_counter()
        with autocast:
            loss = forward(**batch).loss
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        synchronize()
        seconds.append(time.perf_counter() - start)
    result = {"seconds": seconds[warmup:], "losses": [float(x) for x in losses], "peak_memory_gb": peak_memory_gb()}
    del optimizer, schedule, forward
    model.zero_grad(set_to_none=True)
    if compiled:
        torch._dynamo.reset()  # drops the compiled graphs (and what they hold) before the next variant
    reset_memory()
    return result


class SynchronizeAtStepEnd(TrainerCallback):
    """Placed before meap's metrics callback, so the step time it takes includes the queued GPU work."""

    def on_step_end(self, args, state, control, **kwargs):
        synchronize()


def meap_loop(config: PretrainConfig, warmup: int) -> dict:
    """`meap pretrain`'s Trainer for ``config.max_steps`` steps (no checkpoints); per-step seconds and losses."""
    run = build_run(config, progress=False)
    run.trainer.args.save_strategy = SaveStrategy.NO  # the measurement is the step, not a multi-GB save
    run.trainer.callback_handler.callbacks.insert(0, SynchronizeAtStepEnd())
    reset_memory()
    run.trainer.train()
    records = [json.loads(line) for line in (run.output / "metrics.jsonl").read_text().splitlines()]
    tokens_per_step = run.samples_per_step * config.seq_len
    result = {
        "seconds": [tokens_per_step / r["tokens_per_s"] for r in records[warmup:]],
        "losses": [r["loss"] for r in records],
        "peak_memory_gb": peak_memory_gb(),
    }
    run.trainer.accelerator.free_memory()
    del run
    reset_memory()
    return result


def summarise(name: str, measured: dict, tokens_per_step: int, flops: float, peak: float | None) -> dict:
    step = statistics.median(measured["seconds"])
    tokens_per_s = tokens_per_step / step
    return {
        "variant": name,
        "step_ms": round(step * 1e3, 1),
        "tokens_per_s": round(tokens_per_s),
        "mfu": round(tokens_per_s * flops / peak, 4) if peak else None,
        "peak_memory_gb": measured["peak_memory_gb"],
        "losses": [round(x, 5) for x in measured["losses"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tinyllama-1.1b")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30, help="steps per variant, warm-up included")
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the timing (compilation)")
    parser.add_argument("--vocab", type=int, default=32000, help="BPE trained on the built-in corpus (TinyLlama's 32k)")
    parser.add_argument("--data", help="a prepared directory to use instead of training the BPE")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a `meap pretrain` setting for the meap variants (repeatable)",
    )
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled plain loop")
    parser.add_argument("--loss-steps", type=int, default=5, help="first steps whose losses must agree")
    parser.add_argument("--output", default="benchmarks/results")
    args = parser.parse_args()
    if args.warmup >= args.steps:
        parser.error("--warmup must be below --steps")
    fixed = {
        "model",
        "seq_len",
        "micro_batch_size",
        "grad_accum_steps",
        "max_steps",
        "seed",
        "data",
        "dtype",
        "objective",
        "output",
        "log_every",
        "eval_every",
        "save_every",
    }
    for item in args.set:
        if "=" not in item or item.split("=", 1)[0] in fixed:
            parser.error(
                f"--set {item}: expected KEY=VALUE for a key other than {', '.join(sorted(fixed))} "
                "(those are the benchmark's own: every variant must see the same batches)"
            )

    work = Path(tempfile.mkdtemp(prefix="meap-throughput-"))
    data = args.data
    if not data:
        from meap.config.commands import PrepareConfig
        from meap.data.prepare import prepare_corpus

        data = str(
            prepare_corpus(PrepareConfig(inputs=["builtin"], output=str(work / "data"), train_tokenizer=args.vocab))
        )
    base = dict(
        data=data,
        model=args.preset,
        seq_len=args.seq_len,
        micro_batch_size=args.micro_batch,
        max_steps=args.steps,
        warmup_steps=min(10, args.steps),
        log_every=1,
        eval_every=0,
        save_every=0,
    )
    settings = dict(item.split("=", 1) for item in args.set)
    configs = {
        objective: load_config(
            PretrainConfig, overrides={**base, **settings, "objective": objective, "output": str(work / objective)}
        )
        for objective in ("ntp", "meap")
    }

    # The plain loops use the NTP run's own init and batches (its collator with nothing masked).
    run = build_run(
        load_config(PretrainConfig, overrides={**base, "objective": "ntp", "output": str(work / "plain")}),
        progress=False,
    )
    model = run.trainer.model.to(run.trainer.args.device)
    device = next(model.parameters()).device
    initial = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    collate, dataset = run.trainer.data_collator, run.trainer.train_dataset
    mb = args.micro_batch
    batches = [
        {
            k: v.to(device)
            for k, v in collate([dataset[s * mb + r] for r in range(mb)]).items()
            if k in ("input_ids", "labels", "shift_labels", "attention_mask", "position_ids")
        }
        for s in range(args.steps)
    ]
    tokens_per_step = mb * args.seq_len
    flops = flops_per_token(
        matmul_parameters(model), model.config.num_hidden_layers, model.config.hidden_size, args.seq_len
    )
    peak = peak_flops()

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    name = f"gpu-throughput-{args.preset}-{args.seq_len}.json"
    summary = {
        "machine": machine(),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "cuda": torch.version.cuda,
        "date": time.strftime("%Y-%m-%d"),
        "driver": driver_version(),
        "preset": args.preset,
        "seq_len": args.seq_len,
        "micro_batch": mb,
        "steps": args.steps,
        "warmup": args.warmup,
        "meap_settings": args.set,
        "flops_per_token": flops,
        "peak_flops": peak,
        "complete": False,
        "results": [],
    }
    results = summary["results"]

    def measured(variant: str, result: dict) -> None:
        """Adds a variant and rewrites the JSON, so a run stopped at a time limit keeps what it measured."""
        results.append(summarise(variant, result, tokens_per_step, flops, peak))
        (out / name).write_text(json.dumps(summary, indent=2) + "\n")

    measured("plain HF, eager", plain_loop(run, initial, batches, False, args.warmup))
    if not args.no_compile:
        measured("plain HF, torch.compile", plain_loop(run, initial, batches, True, args.warmup))
    del run, model, initial, batches
    for objective, config in configs.items():
        measured(f"meap pretrain, {objective}", meap_loop(config, args.warmup))

    by_name = {r["variant"]: r for r in results}
    ntp, meap = by_name["meap pretrain, ntp"], by_name["meap pretrain, meap"]
    best_plain = max((r for r in results if r["variant"].startswith("plain")), key=lambda r: r["tokens_per_s"])
    first = args.loss_steps
    loss_gap = max(
        abs(a - b) / abs(b) for a, b in zip(ntp["losses"][:first], by_name["plain HF, eager"]["losses"][:first])
    )
    summary.update(
        {
            "complete": True,
            "meap_over_ntp_step_time": round(meap["step_ms"] / ntp["step_ms"], 4),
            "meap_ntp_over_best_plain": round(ntp["tokens_per_s"] / best_plain["tokens_per_s"], 3),
            f"ntp_vs_plain_eager_loss_max_rel_diff_first_{first}": round(loss_gap, 6),
        }
    )
    (out / name).write_text(json.dumps(summary, indent=2) + "\n")

    print(
        f"{summary['machine']} (driver {summary['driver']}), torch {summary['torch']}, CUDA {summary['cuda']}, "
        f"transformers {summary['transformers']}, {summary['date']}"
    )
    print(
        f"{args.preset}, seq {args.seq_len}, micro-batch {mb}, {args.steps} steps ({args.warmup} warm-up); "
        f"meap settings: {' '.join(args.set) or 'defaults'}"
    )
    print(f"{'variant':<26} {'step ms':>9} {'tokens/s':>10} {'MFU':>6} {'peak GB':>8}")
    for r in results:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        print(
            f"{r['variant']:<26} {r['step_ms']:>9.1f} {r['tokens_per_s']:>10,} {mfu:>6} {r['peak_memory_gb'] or '-':>8}"
        )
    print(
        f"MEAP/NTP step time {summary['meap_over_ntp_step_time']:.3f}; meap NTP / best plain "
        f"{summary['meap_ntp_over_best_plain']:.2f}x; NTP vs plain eager loss, first {first} steps: max relative "
        f"difference {loss_gap:.2e}"
    )
    print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
