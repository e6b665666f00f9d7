"""Evaluation commands at real prompt lengths: seconds per prompt and peak resident memory of each `meap eval`
command, each run as its own process (as a user runs it) on the real files in ../shared/data/.

    python benchmarks/eval_commands.py                                  # packaged SmolLM2-135M, CPU, float32
    python benchmarks/eval_commands.py --only kv-retrieval-75 --limit 8
    python benchmarks/eval_commands.py --data-root /path/to/shared/data -o results/eval-bench

Peak memory is the child's maximum resident set size (getrusage), which includes Python, torch and the weights.
Each generating command runs a second time with meap's batched generation replaced by plain `model.generate`,
one prompt at a time (everything else unchanged): the baseline of issue 38's 1.5x target, and the outputs of
both are compared. Nothing else may run on the machine while it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from meap.monitor import cpu_name

ROOT = Path(__file__).resolve().parents[1]
PLAIN = "--as-plain-generate"  # run the rest of the arguments as `meap ...` with plain one-at-a-time generation
GENERATING = ("meap.eval.generation", "meap.eval.niah", "meap.eval.retrieval")  # modules that hold `generate`


# A 135M judge cannot follow meap's own judge prompt (it writes no verdict line: the command then stops with one
# line); this shorter prompt gets a verdict from it, so the time is that of a judged evaluation.
SHORT_JUDGE_PROMPT = (
    "Document:\n{document}\n\nSummary:\n{summary}\n\nIs the summary supported by the document? "
    "Reply with one word: Verdict: supported, or Verdict: unsupported."
)


def kv_probe_file(kv: Path, limit: int, path: Path) -> Path:
    """Key-based retrieval probes from lost-in-the-middle's key-value file, as issue 38's report made them: the
    75 pairs as JSON, the asked value as the answer, the 74 others as distractors (all scored teacher-forced)."""
    import gzip

    from meap.eval.kv_retrieval import build_prompt

    with gzip.open(kv, "rt", encoding="utf-8") as lines, path.open("w", encoding="utf-8") as out:
        for _, line in zip(range(limit), lines):
            record = json.loads(line)
            values = [value for _, value in record["ordered_kv_records"]]
            probe = {
                "context": build_prompt(record["ordered_kv_records"], record["key"]) + ' "',
                "answer": record["value"],
                "distractors": [value for value in values if value != record["value"]],
            }
            out.write(json.dumps(probe) + "\n")
    return path


def cases(data: Path, model: str, limit: int, judge_prompt: Path) -> dict[str, tuple[list[str], int]]:
    """name -> (the `meap` arguments, the prompts it evaluates)."""
    kv = str(data / "lost-in-the-middle" / "kv-retrieval-75_keys.jsonl.gz")
    xsum = str(data / "xsum" / "xsum-1000.jsonl.gz")
    probes = str(kv_probe_file(Path(kv), limit, judge_prompt.with_name("kv-probes.jsonl")))
    return {
        "retrieval-kv-75": (
            ["eval", "retrieval", "--model", model, "--probes", probes, "--max-new-tokens", "48"],
            limit,
        ),
        "kv-retrieval-75": (
            ["eval", "kv-retrieval", "--model", model, "--data", kv, "--limit", str(limit), "--batch-size", "1"],
            limit,
        ),
        "kv-retrieval-10": (
            ["eval", "kv-retrieval", "--model", model, "--data", kv, "--num-pairs", "10", "--limit", str(limit)],
            limit,
        ),
        "hallucination-local-judge": (
            [
                "eval",
                "hallucination",
                "--model",
                model,
                "--data",
                xsum,
                "--limit",
                str(limit),
                "--judge",
                model,
                "--judge-prompt",
                str(judge_prompt),
            ],  # fmt: skip
            limit,
        ),
        "niah-2k": (
            ["eval", "niah", "--model", model, "--lengths", "2048", "--depths", "0,50,100", "--samples", "1"],
            3,
        ),
        "niah-4k": (
            ["eval", "niah", "--model", model, "--lengths", "4096", "--depths", "0,50,100", "--samples", "1"],
            3,
        ),
    }


def plain_generate(model, tokenizer, texts, *, max_new_tokens=32, template=True, sampling=None, **_batching):
    """Hugging Face ``generate`` on each prompt alone, greedy, with meap's rendering and stop tokens."""
    import torch

    from meap.eval.generation import render_prompt, stop_token_ids

    completions = []
    for text in texts:
        ids = tokenizer(render_prompt(tokenizer, text, template), add_special_tokens=False, return_tensors="pt")
        decoding = {"do_sample": True, **sampling} if sampling else {"do_sample": False}
        with torch.no_grad():
            output = model.generate(
                **ids.to(model.device),
                max_new_tokens=max_new_tokens,
                **decoding,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=stop_token_ids(tokenizer),
            )
        completions.append(tokenizer.decode(output[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return completions


def run_plain(args: list[str]) -> None:
    """`meap ARGS` with every evaluation's batched generation replaced by :func:`plain_generate`."""
    import importlib

    from meap.cli import main as meap

    for name in GENERATING:
        importlib.import_module(name).generate = plain_generate
    meap(args)


def measure(args: list[str], output: Path, plain: bool = False) -> dict:
    """Wall seconds and peak RSS of `meap ARGS -o OUTPUT --no-progress` in a process of its own (``plain``: with
    plain one-at-a-time generation)."""
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "code = subprocess.run(sys.argv[1:]).returncode; s = time.perf_counter() - t; "
        "print(code, s, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    runner = [__file__, PLAIN] if plain else ["-m", "meap"]
    command = [sys.executable, *runner, *args, "-o", str(output), "--no-progress"]
    done = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, check=True)
    code, seconds, max_rss_kib = done.stdout.split()[-3:]
    if code != "0":
        raise SystemExit(f"{' '.join(args)}: exit {code}\n{done.stderr[-2000:]}")
    return {"seconds": float(seconds), "peak_rss_gib": int(max_rss_kib) / 2**20}


def predictions(output: Path) -> list:
    """What the model wrote for each record of an evaluation's results.jsonl."""
    rows = [json.loads(line) for line in (output / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    return [
        next((row[key] for key in ("prediction", "output", "completion", "summary") if key in row), None)
        for row in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--limit", type=int, default=4, help="prompts per command (NIAH: its three depths)")
    parser.add_argument("--only", nargs="+", help="these cases alone")
    parser.add_argument("-o", "--output", default=None, help="keep the evaluations' outputs here")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain-generate run of each case")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        judge_prompt = Path(scratch) / "judge.txt"
        judge_prompt.write_text(SHORT_JUDGE_PROMPT, encoding="utf-8")
        selected = cases(Path(args.data_root), args.model, args.limit, judge_prompt)
        if args.only:
            selected = {name: selected[name] for name in args.only}
        root = Path(args.output or scratch)
        for name, (command, prompts) in selected.items():
            result = measure(command, root / name)
            row = {"case": name, "prompts": prompts, **result, "s_per_prompt": result["seconds"] / prompts}
            if not args.no_baseline:
                plain = measure(command, root / f"{name}-plain", plain=True)
                same = sum(a == b for a, b in zip(predictions(root / name), predictions(root / f"{name}-plain")))
                row["plain_generate"] = {**plain, "s_per_prompt": plain["seconds"] / prompts, "same_outputs": same}
                row["time_vs_plain"] = result["seconds"] / plain["seconds"]
            rows.append(row)
            versus = f"  plain generate {row['plain_generate']['seconds']:7.1f} s" if "plain_generate" in row else ""
            print(
                f"{name:28s} {prompts:3d} prompts  {result['seconds']:7.1f} s  "
                f"{row['s_per_prompt']:6.1f} s/prompt  peak {result['peak_rss_gib']:.2f} GiB{versus}",
                flush=True,
            )
    machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()}
    print(json.dumps({"machine": machine, "model": args.model, "rows": rows}, indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == [PLAIN]:
        run_plain(sys.argv[2:])
    else:
        main()
