"""Needle in a haystack: can the model retrieve one fact hidden at a chosen depth of a long context?

Protocol (MEAP paper, after Kamradt and RULER):

* the haystack is tokenised with the *model's own* tokenizer; a cell (length L, depth d) takes as many
  haystack tokens as make the whole prompt the model reads (chat template, instruction, question
  included) about L tokens;
* the needle is inserted at the sentence boundary nearest before d % of the context (0 = first, 100 = last);
* by default every sample gets a fresh needle with random values, RULER-style ("The special magic number
  for <word> is: <7 digits>."), so no memorised text can answer; a fixed needle can be given instead;
* greedy decoding, batched (left padding, KV cache); scores per sample: substring match of the expected
  answer (the value) and ROUGE-1 F of the response against the needle sentence, as the paper scores it.

:mod:`meap.eval.niah_data` builds the prompts (pure, testable without a model); :func:`evaluate` evaluates a
model on them and writes ``results.jsonl``, ``summary.json`` and ``heatmap.png``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from meap.config import checked
from meap.config.commands import NIAHConfig
from meap.errors import UserError, warn
from meap.eval.generation import generate, render_prompt
from meap.eval.metrics import rouge1_f, substring_match
from meap.eval.niah_data import KEY_WORDS, Needle, build_examples, check_absent, probes, read_haystack
from meap.eval.results import write_records, write_summary
from meap.rundir import RunDir


def recall(prediction: str, answers: list[str]) -> float:
    """The share of ``answers`` that ``prediction`` contains (substring match each, case-insensitive)."""
    return sum(substring_match(prediction, answer) for answer in answers) / len(answers)


def summarize(records: list[dict]) -> dict:
    """Mean scores per (length, depth) cell and overall."""
    cells: dict[tuple[int, float], list[dict]] = {}
    for record in records:
        cells.setdefault((record["length"], record["depth"]), []).append(record)
    by_cell = [
        {
            "length": length,
            "depth": depth,
            "samples": len(group),
            "substring": sum(r["substring"] for r in group) / len(group),
            "rouge1_f": sum(r["rouge1_f"] for r in group) / len(group),
        }
        for (length, depth), group in sorted(cells.items())
    ]
    keys = ("substring", "rouge1_f") + (
        ("distractor_copied",) if any("distractor_copied" in r for r in records) else ()
    )
    overall = {key: sum(r[key] for r in records) / len(records) if records else None for key in keys}
    return {"overall": overall, "cells": by_cell}


def evaluate(config: NIAHConfig) -> dict:
    """Evaluate ``config.model`` (a model directory, a meap run, a hub id or ``smollm2-135m``) and write the
    results to ``config.output``.

    ``substring`` is the share of a probe's required values found in the answer (0 or 1 with one value)."""
    from meap.models import dtype_name, load_causal_lm
    from meap.plots import plot_niah_heatmap, short_name

    checked(config)
    lengths, depths, distractors = sorted(config.lengths), list(config.depths), config.distractors
    seed, variant, value_kind, max_new_tokens = config.seed, config.variant, config.value_kind, config.max_new_tokens
    needle = Needle(config.needle, config.question, config.answer) if config.needle else None
    if not 0 <= distractors < len(KEY_WORDS):
        raise UserError(f"niah: expected --distractors in [0, {len(KEY_WORDS) - 1}] (one key each), got {distractors}")
    check_absent(config.absent, distractors)
    probes(variant, 0, seed, distractors, needle, value_kind)  # a bad variant or value kind fails before loading
    text, haystack_name = read_haystack(config.haystack)
    lm, tokenizer = load_causal_lm(config.model, dtype=config.dtype)
    limit = int(getattr(lm.config, "max_position_embeddings", 0) or 10**9)
    fitting = [length for length in lengths if length + max_new_tokens <= limit]
    skipped = [length for length in lengths if length not in fitting]
    if not fitting:
        raise UserError(
            f"--lengths: none of {lengths} (+{max_new_tokens} new tokens) fits the model's context of {limit} tokens"
        )
    if skipped:
        warn(f"niah: lengths {skipped} (+{max_new_tokens} new tokens) exceed the model's context of {limit}; skipped")
    trained = RunDir(Path(config.model)).trained_length() or RunDir(Path(config.model).parent).trained_length()
    beyond = [length for length in fitting if trained and length + max_new_tokens > trained]
    if beyond:
        warn(
            f"niah: {config.model} trained on sequences of {trained} tokens; lengths {beyond} (+{max_new_tokens} new) "
            "read positions it never trained on, so they measure length extrapolation as well as retrieval"
        )
    examples = build_examples(
        tokenizer,
        text,
        fitting,
        depths,
        samples=config.samples,
        seed=seed,
        needle=needle,
        distractors=distractors,
        absent=config.absent,
        variant=variant,
        value_kind=value_kind,
    )
    predictions = generate(
        lm,
        tokenizer,
        [e["text"] for e in examples],
        max_new_tokens=max_new_tokens,
        batch_size=config.batch_size,
        progress=not config.no_progress,
        description="niah",
    )
    records = []
    for example, prediction in zip(examples, predictions):
        record = {k: v for k, v in example.items() if k != "text"}
        record.update(
            prediction=prediction,
            substring=recall(prediction, example["answers"]),
            rouge1_f=rouge1_f(prediction, example["needle"]),
        )
        if example["distractor_values"]:
            record["distractor_copied"] = float(
                any(substring_match(prediction, value) for value in example["distractor_values"])
            )
        records.append(record)

    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    summary = {
        "model": config.model,
        "haystack": haystack_name,
        "skipped_lengths": skipped,
        **summarize(records),
        "config": {
            "lengths": lengths,
            "depths": depths,
            "samples": config.samples,
            "seed": seed,
            "variant": variant,
            "value_kind": value_kind,
            "distractors": distractors,
            "absent": config.absent,
            "batch_size": config.batch_size,
            "max_new_tokens": max_new_tokens,
            "dtype": dtype_name(lm),
            "needle": asdict(needle) if needle else "random (RULER-style)",
            "prompt_example": render_prompt(tokenizer, examples[0]["text"])[:400] if examples else None,
        },
    }
    write_records(output, records)
    summary = write_summary(output, "niah", summary)
    plot_niah_heatmap(
        [
            {"length": c["length"], "depth": c["depth"], "score": c["substring"], "samples": c["samples"]}
            for c in summary["cells"]
        ],
        output / "heatmap.png",
        title=f"NIAH{'' if variant == 'single' else ' ' + variant}: {short_name(config.model)} "
        f"(share of values recalled, overall {summary['overall']['substring']:.3f})",
    )
    return summary
