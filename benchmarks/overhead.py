"""What MEAP costs: the MEAP/NTP training step-time ratio and the masking throughput.

Same model, same batches, same optimizer; the only difference is the collator's mask ratio. Steps of
the two objectives are interleaved so drift (thermal, other load) hits both alike, and the ratio is
the median over paired steps. Masking throughput is measured on one CPU thread, for ``mask_inputs``
alone and for the whole collator (padding, labels, per-sample generators included).

    python benchmarks/overhead.py                       # CPU: tiny preset, seq 256
    python benchmarks/overhead.py --preset paper-0.1b --seq-len 2048 --batch 16   # a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from meap.collate import MeapCollator
from meap.masking import mask_inputs, sample_generators
from meap.models import build_model
from meap.monitor import cpu_name

VOCAB = 8192
MASK_ID = VOCAB - 1
EOS = 0


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def masking_throughput(rows: int, seq_len: int, repeats: int) -> dict:
    """Tokens/s of mask_inputs and of the full collator on one CPU thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # Packed text: an EOS (never masked) ends a document every ~500 tokens, so rows differ in their counts.
        ids = torch.randint(1, VOCAB - 1, (rows, seq_len))
        ids[torch.rand(rows, seq_len) < 1 / 500] = EOS
        eligible = ids != EOS
        samples = [{"input_ids": torch.cat([row, row[:1]]), "sample_index": i} for i, row in enumerate(ids)]
        collator = MeapCollator(MASK_ID, 0.15, seed=0, special_token_ids=[EOS], pad_token_id=EOS)

        def timed(fn) -> float:
            fn()
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            return rows * seq_len * repeats / (time.perf_counter() - start)

        return {
            "rows": rows,
            "seq_len": seq_len,
            "mask_inputs_tokens_per_s": timed(
                lambda: mask_inputs(ids, 0.15, MASK_ID, eligible=eligible, generator=sample_generators(0, range(rows)))
            ),
            "collator_tokens_per_s": timed(lambda: collator(samples)),
        }
    finally:
        torch.set_num_threads(threads)


def step_time_ratio(preset: str, seq_len: int, batch: int, steps: int, warmup: int) -> dict:
    """Median MEAP/NTP step time over interleaved steps on identical batches."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = build_model(preset, VOCAB).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    collators = {
        "ntp": MeapCollator(MASK_ID, 0.0, pad_token_id=EOS),
        "meap": MeapCollator(MASK_ID, 0.15, seed=0, special_token_ids=[EOS], pad_token_id=EOS),
    }
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")

    def step(objective: str, samples: list[dict]) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in collators[objective](samples).items()}
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    times = {"ntp": [], "meap": []}
    for i in range(warmup + steps):
        samples = [
            {"input_ids": torch.randint(1, VOCAB - 1, (seq_len + 1,)), "sample_index": i * batch + r}
            for r in range(batch)
        ]
        order = ("ntp", "meap") if i % 2 == 0 else ("meap", "ntp")
        for objective in order:
            elapsed = step(objective, samples)
            if i >= warmup:
                times[objective].append(elapsed)
    ratios = [m / n for m, n in zip(times["meap"], times["ntp"])]
    return {
        "device": device,
        "preset": preset,
        "seq_len": seq_len,
        "batch": batch,
        "steps": steps,
        "ntp_step_s": statistics.median(times["ntp"]),
        "meap_step_s": statistics.median(times["meap"]),
        "meap_over_ntp": statistics.median(ratios),
        "tokens_per_s_ntp": batch * seq_len / statistics.median(times["ntp"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--output", default="benchmarks/results")
    args = parser.parse_args()

    result = {
        "machine": machine(),
        "torch": torch.__version__,
        "masking": masking_throughput(rows=8, seq_len=2048, repeats=200),
        "training": step_time_ratio(args.preset, args.seq_len, args.batch, args.steps, args.warmup),
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    name = f"overhead-{result['training']['device']}-{args.preset}-{args.seq_len}.json"
    (out / name).write_text(json.dumps(result, indent=2) + "\n")
    masking, training = result["masking"], result["training"]
    print(f"machine: {result['machine']} (torch {result['torch']})")
    print(
        f"mask_inputs: {masking['mask_inputs_tokens_per_s'] / 1e6:.1f} M tokens/s on one thread "
        f"(collator: {masking['collator_tokens_per_s'] / 1e6:.1f} M tokens/s)"
    )
    print(
        f"step time {training['preset']} seq {training['seq_len']} batch {training['batch']}: "
        f"NTP {training['ntp_step_s'] * 1e3:.1f} ms, MEAP {training['meap_step_s'] * 1e3:.1f} ms, "
        f"ratio {training['meap_over_ntp']:.3f} (median of {training['steps']} paired steps)"
    )
    print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
