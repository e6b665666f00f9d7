"""The retrieval search: which small pretraining setting learns NIAH on 2 CPU cores? (BENCHMARKS.md, its table)

A bare training loop (no Trainer, no checkpoints) over the same pieces ``meap demo`` uses: the demo's
retrieval documents and copy drills, a BPE trained on them, a Llama of a given shape, and NIAH prompts
built by :func:`meap.eval.niah_data.build_examples` from held-out needles in held-out prose. Every
``--eval-every`` steps it prints one JSON line: the teacher-forced share of NIAH prompts whose answer
tokens are all predicted (what greedy decoding then writes), per length, and the token accuracy of copy
drills. ``meap demo`` is the real recipe; this script exists so that every row of the search can be rerun.

    python benchmarks/retrieval_search.py                       # the first row: nothing learned
    python benchmarks/retrieval_search.py --merge-digits --quote-answers --drills 0.5 --hidden 128 \\
        --heads 4 --vocab 2048 --warmup-drill-steps 1000 --document-attention --context-words 0 100 \\
        --steps 3000 --seed 1                                   # the row that learned it

``--induction`` runs the isolated probe instead: random tokens with repeated segments, no text at all.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from meap.collate import segment_attention, segment_positions
from meap.data.prose import insert_at_depth, random_passage
from meap.data.tokenizer import train_bpe
from meap.eval import niah_data


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--layers", type=int, default=2)
    add("--hidden", type=int, default=64)
    add("--heads", type=int, default=2)
    add("--vocab", type=int, default=512, help="BPE size")
    add("--merge-digits", action="store_true", help="BPE merges digits (default: one token per digit)")
    add("--seq-len", type=int, default=256)
    add("--batch", type=int, default=8)
    add("--steps", type=int, default=2000, help="steps after the drill warm-up")
    add("--lr", type=float, default=3e-3)
    add("--warmup-steps", type=int, default=100, help="linear learning-rate warm-up")
    add("--documents", type=int, default=20000)
    add("--context-words", type=int, nargs=2, default=[10, 150])
    add("--quote-answers", action="store_true", help="answers quote the needle sentence (default: the value)")
    add("--drills", type=float, default=0.0, help="share of copy drills among the documents")
    add("--drill-numbers", type=int, nargs=2, default=[2, 6])
    add("--warmup-drill-steps", type=int, default=0, help="steps on short drills alone at --warmup-seq-len first")
    add("--warmup-seq-len", type=int, default=64)
    add("--warmup-batch", type=int, default=32)
    add("--document-attention", action="store_true", help="each packed document attends only to itself")
    add("--mask-ratio", type=float, default=0.0, help="MEAP input masking (0: NTP)")
    add("--lengths", type=int, nargs="+", default=[128, 256])
    add("--eval-every", type=int, default=500)
    add("--seed", type=int, default=0)
    add("--induction", action="store_true", help="the isolated probe: repeated random segments")
    add("--probe-vocab", type=int, default=64)
    add("--segment", type=int, default=24)
    add("--repeats", type=int, default=1)
    return parser.parse_args()


def model_for(args, vocab_size: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=-(-vocab_size // 64) * 64,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        intermediate_size=4 * args.hidden,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config)


def optimizer_for(model, lr: float) -> torch.optim.Optimizer:
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": matrices, "weight_decay": 0.05}, {"params": others, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95)
    )


def learning_rate(args, step: int, total: int) -> float:
    if step <= args.warmup_steps:
        return args.lr * step / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, total - args.warmup_steps)
    return 0.1 * args.lr + 0.9 * args.lr * 0.5 * (1 + math.cos(math.pi * progress))


def train_step(model, optimizer, inputs, targets, lr, eos=None, documents=False) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    extra = {}
    if documents:
        ends = inputs == eos
        segment = torch.cumsum(ends.long(), dim=1) - ends.long()
        extra = {"attention_mask": segment_attention(segment, "sdpa"), "position_ids": segment_positions(segment)}
    logits = model(input_ids=inputs, **extra).logits
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()
    return loss.item(), logits


def induction_probe(args) -> None:
    """Random tokens, ``--repeats`` segments of ``--segment`` tokens copied later in each sequence."""
    torch.manual_seed(args.seed)
    model = model_for(args, args.probe_vocab)
    optimizer = optimizer_for(model, args.lr)
    started = time.time()
    for step in range(1, args.steps + 1):
        x = torch.randint(0, args.probe_vocab, (args.batch, args.seq_len + 1))
        copied = torch.zeros(args.batch, args.seq_len, dtype=torch.bool)
        for row in range(args.batch):
            for _ in range(args.repeats):
                source = random.randrange(0, args.seq_len - 2 * args.segment)
                target = random.randrange(source + args.segment, args.seq_len - args.segment)
                x[row, target : target + args.segment] = x[row, source : source + args.segment]
                copied[row, target : target + args.segment - 1] = True  # targets predictable by copying
        loss, logits = train_step(model, optimizer, x[:, :-1], x[:, 1:], args.lr * min(1, step / args.warmup_steps))
        if step % args.eval_every == 0:
            accuracy = (logits.argmax(-1) == x[:, 1:])[copied].float().mean().item()
            print(
                json.dumps(
                    {
                        "step": step,
                        "tokens": step * args.batch * args.seq_len,
                        "s": round(time.time() - started),
                        "loss": round(loss, 3),
                        "copy_accuracy": round(accuracy, 3),
                    }
                ),
                flush=True,
            )


def main() -> None:
    args = arguments()
    if args.induction:
        return induction_probe(args)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    held_out = {needle.answer for needle in niah_data.random_needles(400, 12345)}

    def value() -> str:
        while (number := str(rng.randrange(1_000_000, 10_000_000))) in held_out:
            pass
        return number

    def drill(numbers) -> str:
        listed = ", ".join(value() for _ in range(rng.randint(*numbers)))
        return f"Numbers: {listed}. Again: {listed}."

    def document() -> str:
        if rng.random() < args.drills:
            return drill(args.drill_numbers)
        needle = niah_data.random_needle(rng)
        stated = value()
        text = needle.text.replace(needle.answer, stated)
        context = insert_at_depth(random_passage(rng, rng.randint(*args.context_words)), text, rng.uniform(0, 100))
        return f"{niah_data.question_text(context, needle.question)} {text if args.quote_answers else stated}"

    documents = [document() for _ in range(args.documents)]
    tokenizer = train_bpe(documents[:5000], args.vocab, split_digits=not args.merge_digits)
    eos = tokenizer.eos_token_id
    mask_id = tokenizer.convert_tokens_to_ids("[MASK]")

    def stream(texts) -> np.ndarray:
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return np.fromiter((t for d in ids for t in (*d, eos)), dtype=np.int64)

    tokens = stream(documents)
    drills = stream([drill([2, 4]) for _ in range(20000)]) if args.warmup_drill_steps else None
    print(f"corpus: {len(documents)} documents, {len(tokens):,} tokens, vocabulary {len(tokenizer)}", flush=True)

    haystack_rng = random.Random(999)
    haystack = " ".join(random_passage(haystack_rng, 200) for _ in range(10))
    examples = niah_data.build_examples(tokenizer, haystack, args.lengths, [0, 25, 50, 75, 100], samples=8, seed=12345)
    probe_rng = random.Random(4242)
    probes = [", ".join(str(probe_rng.randrange(1_000_000, 10_000_000)) for _ in range(4)) for _ in range(32)]

    def evaluate(model) -> dict:
        model.eval()
        found: dict = {}
        with torch.no_grad():
            for example in examples:
                prompt = tokenizer(example["text"], add_special_tokens=False)["input_ids"]
                answer = f" {example['needle']}" if args.quote_answers else f" {example['answer']}"
                expected = tokenizer(answer, add_special_tokens=False)["input_ids"]
                logits = model(input_ids=torch.tensor([prompt + expected])).logits[0, len(prompt) - 1 : -1]
                found.setdefault(example["length"], []).append(
                    bool((logits.argmax(-1) == torch.tensor(expected)).all())
                )
            copies = []
            for listed in probes:
                prompt = tokenizer(f"Numbers: {listed}. Again:", add_special_tokens=False)["input_ids"]
                expected = tokenizer(f" {listed}.", add_special_tokens=False)["input_ids"]
                logits = model(input_ids=torch.tensor([prompt + expected])).logits[0, len(prompt) - 1 : -1]
                copies.append((logits.argmax(-1) == torch.tensor(expected))[1:].float().mean().item())
        model.train()
        return {
            "niah": {str(length): sum(hits) / len(hits) for length, hits in found.items()},
            "drill_copy": round(sum(copies) / len(copies), 3),
        }

    model = model_for(args, len(tokenizer))
    optimizer = optimizer_for(model, args.lr)
    total = args.warmup_drill_steps + args.steps
    order = np.random.default_rng(args.seed).permutation((len(tokens) - 1) // args.seq_len)
    drawn, started = 0, time.time()
    for step in range(1, total + 1):
        if step <= args.warmup_drill_steps:
            length, rows = args.warmup_seq_len, args.warmup_batch
            starts = np.random.default_rng([args.seed, step]).integers(0, len(drills) - length - 1, rows)
            batch = torch.from_numpy(np.stack([drills[s : s + length + 1] for s in starts]))
        else:
            blocks = [order[(drawn + i) % len(order)] for i in range(args.batch)]
            drawn += args.batch
            batch = torch.from_numpy(np.stack([tokens[b * args.seq_len : (b + 1) * args.seq_len + 1] for b in blocks]))
        inputs, targets = batch[:, :-1].clone(), batch[:, 1:]
        if args.mask_ratio:
            inputs[(torch.rand(inputs.shape) < args.mask_ratio) & (inputs != eos)] = mask_id
        loss, _ = train_step(
            model, optimizer, inputs, targets, learning_rate(args, step, total), eos, args.document_attention
        )
        if step % args.eval_every == 0 or step == total:
            print(
                json.dumps(
                    {"step": step, "loss": round(loss, 3), "s": round(time.time() - started), **evaluate(model)}
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
