"""NIAH grid time: one prompt at a time (Hugging Face `generate` per prompt, its defaults) vs meap's
batched generation, without and with the shared prefix computed once; same model, same grid, same
rendered prompts. Reports each path's time, the speed-ups and whether the outputs are identical.

    python benchmarks/niah_batching.py                               # packaged SmolLM2-135M, CPU, float32
    python benchmarks/niah_batching.py --dtype bfloat16              # CPUs with AMX run bf16 ~3x faster
    python benchmarks/niah_batching.py --model runs/meap --lengths 1024,2048,4096 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from meap.eval.generation import generate, render_prompt, stop_token_ids
from meap.eval.niah_data import build_examples, read_haystack
from meap.models import dtype_name, load_causal_lm

PATHS = ("sequential", "batched", "batched+shared-prefix")


@torch.no_grad()
def one_at_a_time(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """The baseline: each rendered prompt through `model.generate` alone, greedy, default (dynamic) cache."""
    completions = []
    for prompt in prompts:
        ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False, return_tensors="pt")
        ids = {k: v.to(model.device) for k, v in ids.items()}
        output = model.generate(
            **ids,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=stop_token_ids(tokenizer),
        )
        completions.append(tokenizer.decode(output[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return completions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--lengths", default="256,512")
    parser.add_argument("--depths", default="0,25,50,75,100")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--output", default="benchmarks/results")
    args = parser.parse_args()

    model, tokenizer = load_causal_lm(args.model, dtype=args.dtype)
    text, _ = read_haystack(["builtin"])
    examples = build_examples(
        tokenizer,
        text,
        [int(x) for x in args.lengths.split(",")],
        [float(x) for x in args.depths.split(",")],
        samples=args.samples,
        seed=0,
    )
    prompts = [e["text"] for e in examples]
    generate(model, tokenizer, prompts[:2], max_new_tokens=2, batch_size=2, progress=False)  # warm-up, both paths
    one_at_a_time(model, tokenizer, prompts[:1], max_new_tokens=2)
    seconds, outputs = {}, {}
    for name in PATHS:
        start = time.perf_counter()
        if name == "sequential":
            outputs[name] = one_at_a_time(model, tokenizer, prompts, args.max_new_tokens)
        else:
            outputs[name] = generate(
                model,
                tokenizer,
                prompts,
                max_new_tokens=args.max_new_tokens,
                batch_size=args.batch_size,
                share_prefixes=name.endswith("prefix"),
                progress=False,
            )
        seconds[name] = round(time.perf_counter() - start, 2)
    result = {
        "model": args.model,
        "dtype": dtype_name(model),
        "device": str(next(model.parameters()).device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "prompts": len(prompts),
        "lengths": args.lengths,
        "depths": args.depths,
        "samples": args.samples,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "seconds": seconds,
        "speedup": {name: round(seconds["sequential"] / seconds[name], 2) for name in PATHS if name != "sequential"},
        "same_outputs_as_sequential": {
            name: sum(a == b for a, b in zip(outputs[name], outputs["sequential"])) / len(prompts)
            for name in PATHS
            if name != "sequential"
        },
        "found_needles": {name: sum(e["answer"] in o for e, o in zip(examples, outputs[name])) for name in PATHS},
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"niah-batching-{result['dtype']}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{len(prompts)} prompts ({args.lengths} tokens, {result['dtype']}): "
        + ", ".join(f"{name} {seconds[name]:.1f} s" for name in PATHS)
        + "; speed-up "
        + ", ".join(f"{name} {value:.2f}x" for name, value in result["speedup"].items())
    )


if __name__ == "__main__":
    main()
