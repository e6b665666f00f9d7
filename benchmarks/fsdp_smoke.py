"""Sharded training end to end under torchrun: train, resume from the middle checkpoint, reload `final/`.

The run uses ``--fsdp true`` (FSDP2): on GPUs over NCCL, on CPU processes over gloo, as
``benchmarks/gpu_suite.sh --cpu-smoke`` runs it in CI. A checkpoint holding accelerate's FSDP files is the
proof that the run was sharded.

1. ``meap pretrain`` under ``torchrun --nproc_per_node N`` for ``--steps`` steps, checkpoints at the half
   and at the end;
2. the end checkpoint, ``final/`` and the later metrics removed (as if the job had died after the half),
   ``--resume`` under torchrun again: the resumed steps must give the uninterrupted run's losses and
   gradient norms;
3. ``final/`` loaded by ``AutoModelForCausalLM`` in this one process.

Writes ``fsdp-smoke.json`` into ``--output``; exits 1 when a step failed or resume did not reproduce the losses.

    python benchmarks/fsdp_smoke.py --data PREPARED --preset paper-0.1b --seq-len 1024 --nproc 1   # one GPU
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch


def torchrun(nproc: int, flags: list[str], log) -> int:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "meap.cli",
        "pretrain",
        "--no-progress",
        *flags,
    ]
    print("$", " ".join(command), file=log, flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def max_relative_difference(first: list[dict], second: list[dict]) -> float | None:
    """Largest relative difference of loss, gradient norm and validation loss over the steps both logged;
    None when the records disagree on which steps, tokens or keys they hold."""
    if [(r["step"], r["tokens"]) for r in first] != [(r["step"], r["tokens"]) for r in second]:
        return None
    worst = 0.0
    for a, b in zip(first, second):
        for key in ("loss", "grad_norm", "val_loss"):
            if (key in a) != (key in b):
                return None
            if key in a:
                worst = max(worst, abs(a[key] - b[key]) / max(abs(b[key]), 1e-12))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a prepared directory (`meap prepare`)")
    parser.add_argument("--preset", default="paper-0.1b")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="an even number: a checkpoint at the half")
    parser.add_argument("--nproc", type=int, default=1, help="processes (one per GPU on CUDA)")
    parser.add_argument("--objective", default="meap")
    parser.add_argument("--work", required=True, help="directory for the run (replaced)")
    parser.add_argument("--output", default="benchmarks/results")
    args = parser.parse_args()
    if args.steps % 2:
        parser.error("--steps must be even")

    cuda = torch.cuda.is_available()
    tolerance = 2e-2 if cuda else 1e-4  # bf16 GPU kernels are not bitwise deterministic (atomic adds)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    run = work / "run"
    flags = [
        f"--data={args.data}",
        f"--output={run}",
        f"--model={args.preset}",
        f"--seq-len={args.seq_len}",
        f"--micro-batch-size={args.micro_batch}",
        f"--max-steps={args.steps}",
        "--warmup-steps=2",
        f"--save-every={args.steps // 2}",
        f"--eval-every={args.steps // 2}",
        "--eval-batches=2",
        "--log-every=1",
        f"--objective={args.objective}",
        "--fsdp=true",
        "--report-to",
        "none",
    ]
    result = {
        "device": "cuda" if cuda else "cpu",
        "nproc": args.nproc,
        "preset": args.preset,
        "seq_len": args.seq_len,
        "micro_batch": args.micro_batch,
        "steps": args.steps,
        "objective": args.objective,
        "torch": torch.__version__,
        "tolerance": tolerance,
    }
    started = time.perf_counter()
    with (work / "torchrun.log").open("w") as log:
        result["train_rc"] = torchrun(args.nproc, flags, log)
        if result["train_rc"] == 0:
            uninterrupted = metrics(run)
            result["sharded"] = any((run / "checkpoints" / f"step-{args.steps // 2}").glob("pytorch_model_fsdp*"))
            # as if the job had died just after the middle checkpoint: what it wrote later is gone, so the
            # second half's records can only come from the resumed run
            shutil.rmtree(run / "final")
            shutil.rmtree(run / "checkpoints" / f"step-{args.steps}")
            kept = [json.dumps(r) for r in uninterrupted if r["step"] <= args.steps // 2]
            (run / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))
            result["resume_rc"] = torchrun(args.nproc, [f"--output={run}", "--resume"], log)
    result["seconds"] = round(time.perf_counter() - started, 1)
    if result.get("resume_rc") == 0:
        resumed = metrics(run)
        result["losses"] = [r["loss"] for r in uninterrupted if "loss" in r]
        result["resumed_losses"] = [r["loss"] for r in resumed if "loss" in r]
        result["resume_max_rel_diff"] = max_relative_difference(resumed, uninterrupted)
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(run / "final")
        result["final_parameters"] = sum(p.numel() for p in model.parameters())
        result["final_finite"] = all(torch.isfinite(p).all().item() for p in model.parameters())
    diff = result.get("resume_max_rel_diff")
    result["ok"] = (
        diff is not None and diff <= tolerance and result.get("final_finite", False) and result.get("sharded", False)
    )

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fsdp-smoke.json").write_text(json.dumps(result, indent=2) + "\n")
    print((work / "torchrun.log").read_text()[-4000:])
    print(
        f"FSDP2 on {result['device']} (sharded: {result.get('sharded')}), {args.nproc} process(es), "
        f"{args.preset} seq {args.seq_len}: train rc "
        f"{result['train_rc']}, resume rc {result.get('resume_rc')}, resumed vs uninterrupted max relative "
        f"difference {diff}, final/ loads: {'final_parameters' in result}; {'ok' if result['ok'] else 'FAILED'}"
    )
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
