"""Key-based retrieval, scored strictly: greedy answers to probes whose distractors have the answer's shape.

Reads a probe file (:mod:`meap.probes`: ``context``, ``answer``, ``distractors``; ``absent`` marks a probe
whose asked needle was left out), continues each context greedily and scores the first line of the
answer with :func:`strict_score`: right only if the asked value is the one value
given (naming two values is wrong), and "distractor" when the first value given is another needle's.
Probes with ``absent`` measure key selectivity: there is no right answer, and a key-based model should not
give a distractor's value. The teacher-forced scores of the same probes are in the summary too.

With ``attention``, the clean forward pass of each probe (eager kernel) also gives, per layer and averaged
over heads, the attention from the last context position (the one that predicts the value) on the asked
needle's value tokens and on the distractors' value tokens, and its entropy: the paper's mechanism, measured
alike for any model, MEAP-trained or not (no ``[MASK]`` is fed). The kind whole: its config, headline,
report section and record, :data:`KIND`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from meap.config import checked
from meap.config.commands import GenerationOptions, model_option, option, output_option
from meap.eval.kind import EvaluationKind, by_label, format_value, section, write_records
from meap.touchpoints import attention_kernel


@dataclass
class RetrievalConfig(GenerationOptions):
    model: str = model_option()
    probes: str = option(
        "JSONL of probes: `context`, `answer`, `distractors` (values of the other needles), "
        "`absent` (the asked needle left out)",
        required=True,
        metavar="FILE",
    )
    output: str = output_option("directory for results.jsonl and summary.json")
    attention: bool = option(
        "also measure attention from the position that predicts the value onto the asked and "
        "the distractors' values, per layer (eager kernel)",
        False,
        switch=True,
    )


# A value is read as a run of letters or digits, hyphens inside it kept: a word, a number ("8056020"), a UUID
# ("a3f1...-..."), or each word of a multi-word value; the answer and the completion are read alike.
_VALUE_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def _value_tokens(text: str) -> list[str]:
    return _VALUE_TOKEN.findall(text.lower())


def _occurs(value: list[str], tokens: list[str]) -> bool:
    return any(tokens[i : i + len(value)] == value for i in range(len(tokens) - len(value) + 1))


def strict_score(completion: str, answer: str, distractors: list[str]) -> dict:
    """``correct``: the answer's first line begins with the asked value, and no distractor's value follows it
    in that line; ``distractor``: it begins with a distractor's value (a copy of the wrong needle). Values of
    any shape (words, numbers, UUIDs, several words) compare as :data:`_VALUE_TOKEN` runs; where two values
    both begin the line ("New York" and "New York City"), the longer is the one given."""
    line = next((line for line in completion.strip().splitlines() if line.strip()), "")
    tokens, asked = _value_tokens(line), _value_tokens(answer)
    others = [value for value in map(_value_tokens, distractors) if value and value != asked]
    given = max((v for v in (asked, *others) if v and tokens[: len(v)] == v), key=len, default=None)
    rest = tokens[len(given) :] if given else tokens
    return {
        "correct": float(given == asked and not any(_occurs(value, rest) for value in others)),
        "distractor": float(given is not None and given != asked),
    }


def _value_spans(tokenizer, context: str, values: list[str]) -> list[list[int]]:
    """Token positions of each value's occurrence in ``context`` (empty where it does not occur)."""
    encoded = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
    spans = []
    for value in values:
        start = context.find(value.strip())
        if start < 0:
            spans.append([])
            continue
        end = start + len(value.strip())
        spans.append([i for i, (a, b) in enumerate(encoded["offset_mapping"]) if a < end and b > start])
    return spans


def attention_to_values(model, tokenizer, records: list[dict]) -> dict:
    """Per layer: mean attention mass from the last context position on the asked value, on the distractors'
    values, and its entropy, over the probes whose asked needle is present."""
    import torch

    from meap.eval.attention import attention_modules

    with torch.no_grad():
        previous = attention_kernel(model)
        model.set_attn_implementation("eager")
        device = next(model.parameters()).device
        modules = attention_modules(model)
        rows: list = [None] * len(modules)

        def keep_last_row(index: int):
            # each layer's weights reduced as they are made: one layer's (heads x T x T) at a time, never all
            def hook(module, inputs, output):
                rows[index] = output[1][0, :, -1, :].float().mean(0)  # heads averaged: the distribution over keys

            return hook

        handles = [module.register_forward_hook(keep_last_row(i)) for i, module in enumerate(modules)]
        layers: list[dict[str, float]] = [
            dict.fromkeys(("answer_mass", "distractor_mass", "entropy"), 0.0) for _ in modules
        ]
        count = 0
        try:
            for record in records:
                if record.get("absent"):
                    continue
                ids = tokenizer(record["context"], add_special_tokens=False, return_tensors="pt")["input_ids"].to(
                    device
                )
                spans = _value_spans(tokenizer, record["context"], [record["answer"], *record.get("distractors", [])])
                model(input_ids=ids, use_cache=False, logits_to_keep=1)
                for index, row in enumerate(rows):
                    layers[index]["answer_mass"] += float(row[spans[0]].sum())
                    layers[index]["distractor_mass"] += float(sum(row[span].sum() for span in spans[1:] if span))
                    layers[index]["entropy"] += float(-torch.special.xlogy(row, row).sum())
                count += 1
        finally:
            for handle in handles:
                handle.remove()
            model.set_attn_implementation(previous)
        layers = [{key: value / count for key, value in layer.items()} for layer in layers] if count else []
        average = {key: sum(layer[key] for layer in layers) / len(layers) for key in layers[0]} if layers else {}
        return {"layers": layers, "average": average, "probes": count}


def score_prompts(
    model,
    tokenizer,
    records: list[dict],
    *,
    max_new_tokens: int = 12,
    batch_size: int = 32,
    attention: bool = False,
    progress: bool = False,
) -> tuple[list[dict], dict]:
    """(per-probe records, summary) of ``model`` on the probe ``records``."""
    from meap.eval.generation import generate
    from meap.probes import score_probes, tokenize_probes

    completions = generate(
        model,
        tokenizer,
        [record["context"] for record in records],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
        description="retrieval",
    )
    scored = []
    for index, (record, completion) in enumerate(zip(records, completions)):
        score = strict_score(completion, record["answer"], record.get("distractors", []))
        scored.append(
            {
                "index": index,
                "absent": bool(record.get("absent")),
                "answer": record["answer"].strip(),
                "completion": completion,
                **score,
            }
        )
    present = [r for r in scored if not r["absent"]]
    absent = [r for r in scored if r["absent"]]
    summary = {
        "probes": len(present),
        "absent_probes": len(absent),
        "distractors": max((len(record.get("distractors", [])) for record in records), default=0),
        "strict": sum(r["correct"] for r in present) / len(present) if present else None,
        "distractor_given": sum(r["distractor"] for r in present) / len(present) if present else None,
        "absent_distractor_given": sum(r["distractor"] for r in absent) / len(absent) if absent else None,
    }
    if present:
        probes = tokenize_probes([records[r["index"]] for r in present], tokenizer)
        summary["teacher_forced"] = score_probes(model, probes)
    if attention:
        summary["attention"] = attention_to_values(model, tokenizer, records)
    return scored, summary


def evaluate(config: RetrievalConfig) -> dict:
    """Evaluate ``config.model`` on ``config.probes``; writes ``results.jsonl`` and ``summary.json`` to
    ``config.output``."""
    from meap.models import load_causal_lm
    from meap.probes import read_probe_file

    checked(config)
    records = read_probe_file(config.probes)
    model, tokenizer = load_causal_lm(config.model, dtype=config.dtype)
    scored, summary = score_prompts(
        model,
        tokenizer,
        records,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
        attention=config.attention,
        progress=not config.no_progress,
    )
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    write_records(output, scored)
    return KIND.write_summary(output, {"model": config.model, "probe_file": config.probes, **summary})


def headline(summary: dict, output: str | Path) -> str:
    absent = summary.get("absent_distractor_given")
    return (
        f"retrieval: strict {summary['strict']:.3f}, distractor given {summary['distractor_given']:.3f}"
        + (f", asked key absent: distractor given {absent:.3f}" if absent is not None else "")
        + f" -> {output}"
    )


def _section(blocks: list[tuple], loaded: dict[str, dict], title: str) -> None:
    retrieval = section(blocks, loaded, KIND.name, title)
    if retrieval:
        blocks.append(
            (
                "table",
                [
                    "run",
                    "strict",
                    "distractor given",
                    "asked needle absent: distractor given",
                    "teacher-forced accuracy",
                    "prompts",
                ],
                [
                    [
                        name,
                        format_value(s["strict"]),
                        format_value(s["distractor_given"]),
                        format_value(s.get("absent_distractor_given")),
                        format_value((s.get("teacher_forced") or {}).get("accuracy")),
                        str(s["probes"]),
                    ]
                    for name, s in retrieval.items()
                ],
            )
        )


def report_section(blocks: list[tuple], loaded: dict[str, dict], output: Path) -> None:
    for _, heading, view in by_label(loaded, KIND.name, "Key-based retrieval (strict: the asked value alone)"):
        _section(blocks, view, heading)


KIND = EvaluationKind(
    "retrieval",
    "summary.json",
    headline,
    report_section,
    paired_score=("correct", "key-based retrieval, strict"),
    command=("eval", "retrieval"),
    help="key-based retrieval probes, scored strictly (one value, the asked one)",
    config=RetrievalConfig,
    evaluate=evaluate,
)
