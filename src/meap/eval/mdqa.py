"""Multi-document QA ("lost in the middle"): accuracy against the position of the gold document.

Reads files in the format of lost-in-the-middle's ``nq-open-*_gold_at_*.jsonl.gz`` (gzipped or plain
JSONL; :func:`meap.eval.mdqa_data.make_mdqa` writes synthetic ones), prompts with the paper's template,
decodes greedily and scores with best-subspan EM (:func:`meap.eval.metrics.best_subspan_em`); optionally
also teacher-forced (:func:`meap.probes.probe_log_probs`): whether the first gold answer, read after the
prompt, is the model's top prediction token by token, and its log-probability. That separates "knows where
the answer is" from "writes it in the expected form", which greedy decoding mixes.
One file per gold position is the usual layout; the position comes from the ``isgold`` document, else
from ``gold_at_K`` in the file name. The kind whole: its config, headline, report section and record,
:data:`KIND`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from meap.config import checked
from meap.config.commands import GenerationOptions, model_option, option, output_option
from meap.errors import UserError, warn
from meap.eval.kind import EvaluationKind, by_label, format_value, section, write_records

INSTRUCTION = (
    "Write a high-quality answer for the given question using only the provided search results "
    "(some of which might be irrelevant)."
)
_GOLD_AT = re.compile(r"gold_at_(\d+)")
_JSON_NAMES = {str: "string", list: "list"}


@dataclass
class MDQAConfig(GenerationOptions):
    model: str = model_option()
    data: list[str] = option(
        "JSONL(.gz) files in the lost-in-the-middle format (`meap data make-mdqa`, or nq-open-*)",
        factory=list,
        required=True,
        metavar="FILE",
    )
    output: str = output_option("directory for results.jsonl, summary.json, mdqa.png")
    limit: int | None = option("examples per file (default: all)")
    teacher_forced: bool = option(
        "also score the first gold answer teacher-forced after the prompt: exact match "
        "(every answer token the top prediction) and its log-probability",
        False,
        switch=True,
    )

    def problems(self) -> list[str]:
        found = GenerationOptions.problems(self) + ([] if self.data else ["mdqa: no data files given"])
        if self.limit is not None and self.limit < 1:
            found.append(f"limit must be at least 1, got {self.limit}")
        return found


def read_mdqa(path: str | Path) -> list[dict]:
    """The examples of a multi-document QA file, checked: each has a ``question`` (str), ``answers``
    (non-empty list of str) and ``ctxs`` (list of objects with str ``title`` and ``text``).

    Gzip is recognised by its magic bytes, whatever the suffix. Blank lines are skipped; any other bad line
    raises :class:`UserError` naming ``file:LINE`` (and the key, for a missing or mistyped one).
    """
    from meap.data.sources import json_lines

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    examples = [
        _checked_example(record, where)
        for where, record in json_lines(path, "a JSON object with question, answers and ctxs")
    ]
    if not examples:
        raise UserError(f"{path}: no examples (the file is empty)")
    return examples


def _checked_example(example: dict, where: str) -> dict:
    for key, kind in (("question", str), ("answers", list), ("ctxs", list)):
        if key not in example:
            raise UserError(f"{where}: missing key `{key}`")
        if not isinstance(example[key], kind):
            raise UserError(f"{where}: `{key}` must be a {_JSON_NAMES[kind]}, got {type(example[key]).__name__}")
    if not example["answers"] or not all(isinstance(answer, str) for answer in example["answers"]):
        raise UserError(f"{where}: `answers` must be a non-empty list of strings")
    for i, ctx in enumerate(example["ctxs"]):
        if not isinstance(ctx, dict):
            raise UserError(f"{where}: `ctxs[{i}]` must be an object with title and text")
        for key in ("title", "text"):
            if not isinstance(ctx.get(key), str):
                problem = "missing key" if key not in ctx else "expected a string for"
                raise UserError(f"{where}: {problem} `ctxs[{i}].{key}`")
    return example


def build_prompt(example: dict) -> str:
    """Lost-in-the-middle's QA prompt: the instruction, ``Document [i](Title: …) text`` for each document
    (numbered from 1), then the question and ``Answer:``."""
    documents = "\n".join(
        f"Document [{i}](Title: {ctx['title']}) {ctx['text']}" for i, ctx in enumerate(example["ctxs"], 1)
    )
    return f"{INSTRUCTION}\n\n{documents}\n\nQuestion: {example['question']}\nAnswer:"


def gold_position(example: dict, path: str | Path) -> int | None:
    """0-based index of the document marked ``isgold``; else ``K`` of ``gold_at_K`` in the file name; else None."""
    for index, ctx in enumerate(example["ctxs"]):
        if ctx.get("isgold") is True:
            return index
    match = _GOLD_AT.search(Path(path).name)
    return int(match.group(1)) if match else None


def evaluate(config: MDQAConfig) -> dict:
    """Answer every question of ``config.data`` with ``config.model`` and score it; return the summary.

    ``model`` is anything :func:`meap.models.load_causal_lm` accepts; ``limit`` caps the examples taken
    from the start of each file. An example whose prompt plus ``max_new_tokens`` exceeds the model's
    ``max_position_embeddings`` is skipped and counted (``skipped_too_long``), not truncated. Writes into
    ``output``: ``results.jsonl`` (one line per answered example), ``summary.json`` (the returned dict;
    JSON turns its integer position keys into strings) and ``mdqa.png`` (accuracy by gold position, when
    any position is known). Accuracies are None where nothing was answered. With ``teacher_forced`` each
    record also holds ``teacher_forced_em`` and ``answer_logprob``, and the summary their means
    (``teacher_forced_accuracy``, ``mean_answer_logprob``, each also by gold position).
    """
    from meap.eval.generation import generate, prompt_length
    from meap.eval.metrics import best_subspan_em
    from meap.models import dtype_name, load_causal_lm
    from meap.plots import plot_accuracy_by_position

    checked(config)
    model, max_new_tokens, batch_size = config.model, config.max_new_tokens, config.batch_size
    data = {str(path): read_mdqa(path)[: config.limit] for path in config.data}  # all checked before the model loads

    language_model, tokenizer = load_causal_lm(model, dtype=config.dtype)
    max_positions = getattr(language_model.config, "max_position_embeddings", None)
    records, prompts = [], []
    skipped: dict[str, int] = defaultdict(int)
    lengths = []
    for path, examples in data.items():
        for example in examples:
            prompt = build_prompt(example)
            lengths.append(prompt_length(tokenizer, prompt))
            if max_positions and lengths[-1] + max_new_tokens > max_positions:
                skipped[path] += 1
                continue
            prompts.append(prompt)
            records.append(
                {
                    "file": path,
                    "gold_position": gold_position(example, path),
                    "question": example["question"],
                    "answers": example["answers"],
                }
            )
    if not records:
        raise UserError(
            f"mdqa: no prompt fits model `{model}`: the prompts take {min(lengths)}-{max(lengths)} tokens, "
            f"plus {max_new_tokens} new tokens, and the model has {max_positions} positions (use fewer or "
            "shorter documents, fewer --max-new-tokens, or a model with more positions)"
        )
    if skipped:
        warn(
            f"mdqa: skipped {sum(skipped.values())} of {sum(map(len, data.values()))} examples whose prompt "
            f"plus {max_new_tokens} new tokens exceeds the model's {max_positions} positions"
        )
    predictions = generate(
        language_model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=not config.no_progress,
        description="mdqa",
    )
    for record, prediction in zip(records, predictions):
        record["prediction"] = prediction
        record["best_subspan_em"] = best_subspan_em(prediction, record["answers"])
    if config.teacher_forced:
        _score_teacher_forced(language_model, tokenizer, prompts, records, batch_size)

    by_position: dict[int, list[float]] = defaultdict(list)
    by_file: dict[str, list[float]] = {path: [] for path in data}
    for record in records:
        by_file[record["file"]].append(record["best_subspan_em"])
        if record["gold_position"] is not None:
            by_position[record["gold_position"]].append(record["best_subspan_em"])
    accuracy_by_position = {position: _mean(by_position[position]) for position in sorted(by_position)}
    summary = {
        "model": model,
        "files": list(data),
        "accuracy": _mean([record["best_subspan_em"] for record in records]),
        "accuracy_by_gold_position": accuracy_by_position,
        "examples_by_gold_position": {position: len(by_position[position]) for position in sorted(by_position)},
        "by_file": {
            path: {"accuracy": _mean(scores), "num_examples": len(scores), "skipped_too_long": skipped[path]}
            for path, scores in by_file.items()
        },
        "num_examples": len(records),
        "skipped_too_long": sum(skipped.values()),
        "config": {
            "batch_size": batch_size,
            "max_new_tokens": max_new_tokens,
            "limit": config.limit,
            "dtype": dtype_name(language_model),
        },
    }

    if config.teacher_forced:
        for key, name in (("teacher_forced_em", "teacher_forced_accuracy"), ("answer_logprob", "mean_answer_logprob")):
            summary[name] = _mean([record[key] for record in records])
            summary[f"{name}_by_gold_position"] = {
                position: _mean([r[key] for r in records if r["gold_position"] == position])
                for position in sorted(by_position)
            }

    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    write_records(output, records)
    summary = KIND.write_summary(output, summary)
    if accuracy_by_position:
        plot_accuracy_by_position(
            {model: accuracy_by_position}, output / "mdqa.png", examples={model: summary["examples_by_gold_position"]}
        )
    return summary


def _score_teacher_forced(model, tokenizer, prompts: list[str], records: list[dict], batch_size: int) -> None:
    from meap.eval.generation import render_prompt
    from meap.probes import Probe, probe_log_probs

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    # The answer is tokenised on its own, as a fine-tuning answer is (meap.sft.template).
    probes = [
        Probe(ids(render_prompt(tokenizer, prompt)), [ids(record["answers"][0])])
        for prompt, record in zip(prompts, records)
    ]
    for record, (top, log_p) in zip(records, probe_log_probs(model, probes, batch_size)):
        record["teacher_forced_em"] = float(top)
        record["answer_logprob"] = log_p[0]


def _mean(scores: list[float]) -> float | None:
    return sum(scores) / len(scores) if scores else None


def headline(summary: dict, output: str | Path) -> str:
    by_position = ", ".join(
        f"{int(position) + 1}: {accuracy:.3f}"
        for position, accuracy in sorted(summary["accuracy_by_gold_position"].items(), key=lambda item: int(item[0]))
        if accuracy is not None
    )
    return f"mdqa: best-subspan EM {summary['accuracy']:.3f}; by gold position (1 = first) {by_position} -> {output}"


def _section(blocks: list[tuple], loaded: dict[str, dict], title: str, figure: Path) -> None:
    from meap.plots import plot_accuracy_by_position

    mdqa = section(blocks, loaded, KIND.name, title)
    if not mdqa:
        return
    series = {
        name: {int(p): v for p, v in s["accuracy_by_gold_position"].items() if v is not None}
        for name, s in mdqa.items()
    }
    examples = {
        name: {int(p): n for p, n in s.get("examples_by_gold_position", {}).items()} for name, s in mdqa.items()
    }
    plot_accuracy_by_position(series, figure, examples=examples)
    positions = sorted({p for by in series.values() for p in by})
    forced = any("teacher_forced_accuracy" in s for s in mdqa.values())
    blocks += [
        ("img", figure.name),
        (
            "table",
            [
                "run",
                "overall",
                *[f"gold {p + 1}" for p in positions],
                "examples",
                *(["teacher-forced EM", "answer log-probability"] if forced else []),
            ],
            [
                [
                    name,
                    format_value(mdqa[name]["accuracy"]),
                    *[format_value(series[name].get(p)) for p in positions],
                    str(mdqa[name].get("num_examples", "n/a")),
                    *(
                        [
                            format_value(mdqa[name].get("teacher_forced_accuracy")),
                            format_value(mdqa[name].get("mean_answer_logprob")),
                        ]
                        if forced
                        else []
                    ),
                ]
                for name in mdqa
            ],
        ),
    ]


def report_section(blocks: list[tuple], loaded: dict[str, dict], output: Path) -> None:
    for index, heading, view in by_label(loaded, KIND.name, "Multi-document QA (best-subspan EM by gold position)"):
        _section(blocks, view, heading, output / ("mdqa.png" if not index else f"mdqa_{index}.png"))


_MDQA = "multi-document QA (best-subspan EM)"
KIND = EvaluationKind(
    "mdqa",
    "summary.json",
    headline,
    report_section,
    paired_score=("best_subspan_em", "multi-document QA, best-subspan EM (per question)"),
    paired_unit="question",
    paper_rows=lambda summary: {
        _MDQA: summary["accuracy"],
        **{
            f"{_MDQA}, gold {int(p) + 1}": v
            for p, v in sorted(summary["accuracy_by_gold_position"].items(), key=lambda i: int(i[0]))
        },
    },
    paper={_MDQA: "up to +27.2 points pretrained; 25.56 vs 37.33 after fine-tuning (Llama-3-8B, 20 documents)"},
    command=("eval", "mdqa"),
    help="multi-document QA (lost in the middle)",
    config=MDQAConfig,
    evaluate=evaluate,
)
