"""NIAH grid time: batched generation vs one prompt at a time, same model, same grid, same outputs.

    python benchmarks/niah_batching.py                               # packaged SmolLM2-135M, CPU
    python benchmarks/niah_batching.py --model runs/meap --lengths 1024,2048,4096 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from meap.eval.generation import generate
from meap.eval.niah import build_examples, read_haystack
from meap.models import load_causal_lm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--lengths", default="256,512")
    parser.add_argument("--depths", default="0,25,50,75,100")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--output", default="benchmarks/results")
    args = parser.parse_args()

    model, tokenizer = load_causal_lm(args.model)
    text, _ = read_haystack(["builtin"])
    examples = build_examples(tokenizer, text, [int(x) for x in args.lengths.split(",")],
                              [float(x) for x in args.depths.split(",")], seed=0)
    prompts = [e["text"] for e in examples]
    timings, outputs = {}, {}
    for name, batch_size in (("batched", args.batch_size), ("sequential", 1)):
        start = time.perf_counter()
        outputs[name] = generate(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                                 batch_size=batch_size, progress=False)
        timings[name] = time.perf_counter() - start
    result = {
        "model": args.model, "device": str(next(model.parameters()).device), "prompts": len(prompts),
        "lengths": args.lengths, "batch_size": args.batch_size, "seconds": timings,
        "speedup": timings["sequential"] / timings["batched"],
        "same_outputs": sum(a == b for a, b in zip(outputs["batched"], outputs["sequential"])) / len(prompts),
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "niah-batching.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(prompts)} prompts ({args.lengths} tokens): batched {timings['batched']:.1f} s, "
          f"sequential {timings['sequential']:.1f} s, speedup {result['speedup']:.2f}x, "
          f"identical outputs {result['same_outputs']:.0%}")


if __name__ == "__main__":
    main()
