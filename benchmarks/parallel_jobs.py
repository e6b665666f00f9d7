"""Do one-thread training runs side by side beat one run using every core? (`meap.experiments.runner` runs jobs so.)

Trains the same short `meap pretrain` run (a) once with as many threads as cores and (b) as many times at once
as there are cores, one thread each, and reports each layout's total tokens/s (the median over the logged
steps after the first fifth). Nothing else may run meanwhile.

    python benchmarks/parallel_jobs.py --data PREPARED_DIR            # tiny-2l, seq 256, micro-batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from overhead import machine


def launch(run: Path, args, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meap.cli",
            "pretrain",
            "--no-progress",
            "--data",
            args.data,
            "--output",
            str(run),
            "--model",
            args.preset,
            "--seq-len",
            str(args.seq_len),
            "--micro-batch-size",
            str(args.micro_batch),
            "--max-steps",
            str(args.steps),
            "--log-every",
            "10",
            "--eval-every",
            "0",
            "--save-every",
            "0",
            "--report-to",
            "none",
            "--document-attention",
            "true",
            "--objective",
            "meap",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def tokens_per_s(run: Path) -> float:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
    return statistics.median(rates[len(rates) // 5 :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", default="tiny-2l")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="meap-parallel-"))
    one = launch(work / "threads", args, cores)
    one.wait()
    alone = tokens_per_s(work / "threads")
    runs = [launch(work / f"job-{i}", args, 1) for i in range(cores)]
    for process in runs:
        process.wait()
    each = [tokens_per_s(work / f"job-{i}") for i in range(cores)]
    result = {
        "machine": machine(),
        "preset": args.preset,
        "seq_len": args.seq_len,
        "micro_batch": args.micro_batch,
        f"one_run_{cores}_threads_tokens_per_s": round(alone),
        f"{cores}_runs_1_thread_tokens_per_s_each": [round(x) for x in each],
        "speedup_of_parallel_runs": round(sum(each) / alone, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
