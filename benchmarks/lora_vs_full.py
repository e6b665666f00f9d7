"""LoRA against full fine-tuning: speed and what each run writes to disk.

Both runs are ``meap sft`` processes on the same conversations in the same order (the default recipe:
the packaged SmolLM2-135M-Instruct, built-in long-answer set, MEAP-SFT) with a checkpoint every
``--save-every`` steps; only ``--lora-r`` differs. Reported: real tokens per second over the training steps
(``metrics.jsonl``), wall time of the process, peak resident memory, and the bytes of ``adapter/``,
``final/`` and ``checkpoints/``.

    python benchmarks/lora_vs_full.py                     # 10 steps, LoRA r 16, on this machine
    python benchmarks/lora_vs_full.py --steps 40 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from overhead import machine


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def measure(output: Path, steps: int, save_every: int, lora_r: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "meap.cli",
        "sft",
        "--output",
        str(output),
        "--max-steps",
        str(steps),
        "--save-every",
        str(save_every),
        "--keep-checkpoints",
        "0",
        "--eval-every",
        "0",
        "--lora-r",
        str(lora_r),
        "--no-progress",
    ]
    log = output.with_suffix(".log")
    start = time.perf_counter()
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(command)} failed:\n{log.read_text()}")
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in records if "tokens_per_s" in r]
    return {
        "lora_r": lora_r,
        "steps": steps,
        "wall_s": round(wall, 1),
        "real_tokens": trained[-1]["tokens"],
        "train_s": trained[-1]["elapsed_s"],
        "real_tokens_per_s": round(trained[-1]["tokens"] / trained[-1]["elapsed_s"], 1),
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "bytes": {name: size(output / name) for name in ("adapter", "final", "checkpoints")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--save-every", type=int, default=5)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for lora_r in (0, args.lora_r):
            results.append(measure(Path(scratch) / f"r{lora_r}", args.steps, args.save_every, lora_r))
    print("| run | real tokens/s | train | wall | peak RSS | adapter/ | final/ | checkpoints/ |")
    print("|---|---|---|---|---|---|---|---|")
    for result in results:
        mb = {name: f"{value / 1e6:,.1f} MB" for name, value in result["bytes"].items()}
        print(
            f"| {'LoRA r ' + str(result['lora_r']) if result['lora_r'] else 'full'} | {result['real_tokens_per_s']} | "
            f"{result['train_s']:.0f} s | {result['wall_s']:.0f} s | {result['peak_rss_bytes'] / 2**30:.1f} GiB | "
            f"{mb['adapter']} | {mb['final']} | "
            f"{mb['checkpoints']} |"
        )
    report = {"machine": machine(), "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
