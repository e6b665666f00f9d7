"""MEAP-SFT throughput: tokens/s and the share of non-padding tokens, unpacked and packed, and the time of
an epoch of MEAP-SFT vs NTP-SFT.

The data mixes the built-in long-answer conversations (MEAP-SFT doubles them: original + masked copy) with
as many short-answer ones (their first sentence only, below ``min_answer_tokens``: plain NTP rows), as real
instruction sets mix lengths. Every configuration runs the same conversations in the same order through
``meap.train.build_sft.build_sft_run`` and the Trainer; only the objective and packing change.

    python benchmarks/sft_throughput.py                                  # SmolLM2-135M, 2x16 conversations
    python benchmarks/sft_throughput.py --conversations 64 --max-length 2048   # a GPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from overhead import machine

from meap.config import SFTConfig
from meap.sft.formats import read_conversations
from meap.train.build_sft import build_sft_run


def mixed_data(directory: Path, count: int) -> Path:
    long = read_conversations([f"builtin:{count}"])
    short = [[turns[0], {"role": "assistant", "content": turns[1]["content"].split(". ")[0] + "."}] for turns in long]
    records = [{"messages": turns} for pair in zip(long, short) for turns in pair]
    path = directory / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def measure(config: SFTConfig) -> dict:
    run = build_sft_run(config, progress=False)
    real = padded = 0
    for batch in run.trainer.get_train_dataloader():
        real += int(batch["num_tokens"])
        padded += batch["input_ids"].numel()
    start = time.perf_counter()
    run.trainer.train()
    seconds = time.perf_counter() - start
    return {
        "objective": config.objective,
        "packing": config.packing,
        "steps": run.max_steps,
        "sequences_per_step": config.micro_batch_size,
        "real_tokens": real,
        "padded_tokens": padded,
        "non_padding_share": round(real / padded, 3),
        "epoch_s": round(seconds, 1),
        "real_tokens_per_s": round(real / seconds, 1),
        "padded_tokens_per_s": round(padded / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--conversations", type=int, default=16, help="long ones; as many short ones are added")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--output", default="benchmarks/results/sft_throughput.json")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        data = mixed_data(Path(scratch), args.conversations)
        for packing in (False, True):
            for objective in ("ntp", "meap"):
                config = SFTConfig(
                    model=args.model,
                    data=[str(data)],
                    objective=objective,
                    packing=packing,
                    max_length=args.max_length,
                    micro_batch_size=args.micro_batch,
                    val_fraction=0.0,
                    eval_every=0,
                    save_every=0,
                    log_every=1000,
                    output=str(Path(scratch) / f"{objective}-{packing}"),
                )
                result = measure(config)
                results.append(result)
                print(json.dumps(result), flush=True)
    by = {(r["objective"], r["packing"]): r for r in results}
    summary = {
        "machine": machine(),
        "torch": torch.__version__,
        "model": args.model,
        "conversations": 2 * args.conversations,
        "max_length": args.max_length,
        "results": results,
        "meap_over_ntp_epoch_time": {
            packed: round(by["meap", packed]["epoch_s"] / by["ntp", packed]["epoch_s"], 3) for packed in (False, True)
        },
        "packed_over_unpacked_epoch_time": {
            o: round(by[o, True]["epoch_s"] / by[o, False]["epoch_s"], 3) for o in ("ntp", "meap")
        },
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}, indent=2))


if __name__ == "__main__":
    main()
