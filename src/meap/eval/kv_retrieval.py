"""Key-value retrieval as lost-in-the-middle runs it (``meap eval kv-retrieval``): one evaluation kind, whole.

The data are lost-in-the-middle's ``kv-retrieval-*_keys.jsonl.gz`` lines: ``ordered_kv_records`` (pairs of
UUID key and UUID value), the asked ``key`` and its ``value``. The prompt is theirs (the pairs as one JSON
object, a pair per line, then the key; with ``query_aware`` the key comes before the data too), decoding is
greedy for 100 new tokens, and a prompt is right when the value string occurs anywhere in the output,
ignoring case: exactly the rule of their ``evaluate_kv_responses.py``. ``gold_index`` moves the asked pair to
each position given, as their scripts do (one prompt per example and position); ``num_pairs`` keeps that
many pairs (the asked one and the first others), so that a short-context model can be tested on the same
examples. Nothing in the task can be answered but by looking the key up: every value is a random UUID.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from meap.config import checked
from meap.config.commands import MODEL_HELP, GenerationOptions, option
from meap.errors import UserError
from meap.eval.kind import EvaluationKind, by_label, format_value, section, write_records

INSTRUCTION = "Extract the value corresponding to the specified key in the JSON object below."
OFFICIAL_MAX_NEW_TOKENS = 100  # lost-in-the-middle's scripts
_EXPECTED = "a JSON object with `ordered_kv_records` (a list of [key, value] string pairs), `key` and `value`"


@dataclass
class KVRetrievalConfig(GenerationOptions):
    model: str = option(MODEL_HELP, "", required=True, metavar="MODEL")
    data: str = option(
        "lost-in-the-middle's key-value file (kv-retrieval-*_keys.jsonl.gz): `ordered_kv_records`, `key`, `value`",
        "",
        required=True,
        metavar="FILE",
    )
    output: str = option("directory for results.jsonl, summary.json, kv_retrieval.png", "", short="-o", required=True)
    gold_index: list[int] = option(
        "0-based positions to move the asked pair to, one prompt per example and position, as lost-in-the-middle "
        "does (e.g. 0 24 49 74 for 75 pairs; default: where each example has it)",
        factory=list,
        metavar="INDEX",
    )
    num_pairs: int | None = option(
        "keep this many pairs per example, the asked one among them (default: all), for short-context models",
        metavar="K",
    )
    query_aware: bool = option("put the key before the data too (query-aware contextualisation)", False, switch=True)
    limit: int | None = option("examples taken from the start of the file (default: all)")
    max_new_tokens: int = option("longest answer generated (lost-in-the-middle uses 100)", OFFICIAL_MAX_NEW_TOKENS)

    def problems(self) -> list[str]:
        found = GenerationOptions.problems(self)
        if self.num_pairs is not None and self.num_pairs < 2:
            found.append(f"--num-pairs: expected at least 2 pairs, got {self.num_pairs}")
        if any(index < 0 for index in self.gold_index):
            found.append(f"--gold-index: expected positions from 0, got {min(self.gold_index)}")
        elif self.num_pairs is not None and any(index >= self.num_pairs for index in self.gold_index):
            found.append(f"--gold-index: positions must be below --num-pairs {self.num_pairs}")
        if self.limit is not None and self.limit < 1:
            found.append(f"--limit: expected at least 1, got {self.limit}")
        return found


def read_kv_examples(path: str | Path, limit: int | None = None) -> list[dict]:
    """The examples of a key-value file, checked (a bad line raises :class:`UserError` naming ``file:LINE``)."""
    from meap.data.sources import json_lines

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    examples = []
    for where, record in json_lines(path, _EXPECTED):
        pairs = record.get("ordered_kv_records")
        if not isinstance(pairs, list) or not all(
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair) for pair in pairs
        ):
            raise UserError(f"{where}: `ordered_kv_records` is missing or not a list of pairs; expected {_EXPECTED}")
        for key in ("key", "value"):
            if not isinstance(record.get(key), str) or not record[key]:
                raise UserError(f"{where}: `{key}` is missing or not a non-empty string; expected {_EXPECTED}")
        if [record["key"], record["value"]] not in pairs:
            raise UserError(f"{where}: the asked pair (`key`, `value`) is not among `ordered_kv_records`")
        if len({key for key, _ in pairs}) != len(pairs):
            raise UserError(f"{where}: `ordered_kv_records` has a key twice")
        examples.append({"where": where, **record})
        if limit is not None and len(examples) == limit:
            break
    if not examples:
        raise UserError(f"{path}: no examples (the file is empty)")
    return examples


def arranged_pairs(example: dict, num_pairs: int | None, gold_index: int | None) -> tuple[list[list[str]], int]:
    """The pairs a prompt shows (``num_pairs``: the asked one and the first others, in the file's order) with the
    asked pair moved to ``gold_index`` (None: where it is), and the asked pair's position."""
    pairs, asked = example["ordered_kv_records"], [example["key"], example["value"]]
    if num_pairs is not None:
        if num_pairs > len(pairs):
            raise UserError(f"{example['where']}: --num-pairs {num_pairs}: the example has only {len(pairs)} pairs")
        others = [pair for pair in pairs if pair != asked][: num_pairs - 1]
        kept = {tuple(pair) for pair in others} | {tuple(asked)}
        pairs = [pair for pair in pairs if tuple(pair) in kept]
    if gold_index is None:
        return pairs, pairs.index(asked)
    if gold_index >= len(pairs):
        raise UserError(f"{example['where']}: --gold-index {gold_index}: the prompt has only {len(pairs)} pairs")
    moved = [pair for pair in pairs if pair != asked]
    moved.insert(gold_index, asked)
    return moved, gold_index


def build_prompt(pairs: list[list[str]], key: str, query_aware: bool = False) -> str:
    """lost-in-the-middle's prompt: the instruction, the pairs as one JSON object (one pair a line), the key."""
    data = "".join(
        ("{" if index == 0 else " ") + f'"{k}": "{v}"' + (",\n" if index < len(pairs) - 1 else "}")
        for index, (k, v) in enumerate(pairs)
    )
    query = f'Key: "{key}"\n\n' if query_aware else ""
    return f'{INSTRUCTION}\n\n{query}JSON data:\n{data}\n\nKey: "{key}"\nCorresponding value:'


def is_correct(output: str, value: str) -> bool:
    """lost-in-the-middle's rule: the value occurs in the output, ignoring case."""
    return value.lower() in output.lower()


def evaluate(config: KVRetrievalConfig) -> dict:
    """Answer every prompt of ``config.data`` (each example at each ``gold_index``) with ``config.model``;
    writes ``results.jsonl``, ``summary.json`` and ``kv_retrieval.png`` to ``config.output``; returns the
    summary. Prompts that do not fit the model's positions are refused before the model runs."""
    from meap.eval.generation import generate, prompt_length
    from meap.models import dtype_name, load_causal_lm
    from meap.plots import plot_accuracy_by_position
    from meap.stats import wilson_interval

    checked(config)
    examples = read_kv_examples(config.data, config.limit)
    records = []
    for number, example in enumerate(examples):
        for gold in config.gold_index or [None]:
            pairs, position = arranged_pairs(example, config.num_pairs, gold)
            records.append(
                {
                    "example": number,
                    "key": example["key"],
                    "value": example["value"],
                    "gold_index": position,
                    "num_pairs": len(pairs),
                    "prompt": build_prompt(pairs, example["key"], config.query_aware),
                }
            )
    model, tokenizer = load_causal_lm(config.model, dtype=config.dtype)
    positions = getattr(model.config, "max_position_embeddings", None)
    longest = max(prompt_length(tokenizer, record["prompt"]) for record in records)
    if positions and longest + config.max_new_tokens > positions:
        raise UserError(
            f"kv-retrieval: prompts of up to {longest} tokens plus {config.max_new_tokens} new ones do not fit the "
            f"{positions} positions of `{config.model}`; keep fewer pairs (--num-pairs) or use a longer-context model"
        )
    outputs = generate(
        model,
        tokenizer,
        [record["prompt"] for record in records],
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
        progress=not config.no_progress,
        description="kv-retrieval",
    )
    by_index: dict[int, list[float]] = defaultdict(list)
    for record, output in zip(records, outputs):
        record["output"] = output
        record["correct"] = float(is_correct(output, record["value"]))
        by_index[record["gold_index"]].append(record["correct"])
    right = sum(record["correct"] for record in records)
    summary = {
        "model": config.model,
        "data": config.data,
        "accuracy": right / len(records),
        "ci95": list(wilson_interval(round(right), len(records))),
        "prompts": len(records),
        "examples": len(examples),
        "num_pairs": sorted({record["num_pairs"] for record in records}),
        "by_gold_index": {  # JSON's keys: strings
            str(index): {
                "accuracy": sum(scores) / len(scores),
                "ci95": list(wilson_interval(round(sum(scores)), len(scores))),
                "prompts": len(scores),
            }
            for index, scores in sorted(by_index.items())
        },
        "config": {
            "gold_index": config.gold_index,
            "num_pairs": config.num_pairs,
            "query_aware": config.query_aware,
            "limit": config.limit,
            "max_new_tokens": config.max_new_tokens,
            "batch_size": config.batch_size,
            "dtype": dtype_name(model),
            "rule": "value in output, ignoring case (lost-in-the-middle)",
        },
    }
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    write_records(output, records)
    series, counts = _curve({config.model: summary})
    plot_accuracy_by_position(series, output / "kv_retrieval.png", examples=counts, **_AXES)
    return KIND.write_summary(output, summary)


_AXES = {
    "title": "Key-value retrieval (lost in the middle)",
    "xlabel": "position of the asked pair",
    "ylabel": "accuracy (the value in the output)",
}


def _curve(summaries: dict[str, dict]) -> tuple[dict, dict]:
    """(accuracy by gold index, prompts by gold index) of each summary, for the U-curve."""
    series = {name: {int(i): c["accuracy"] for i, c in s["by_gold_index"].items()} for name, s in summaries.items()}
    counts = {name: {int(i): c["prompts"] for i, c in s["by_gold_index"].items()} for name, s in summaries.items()}
    return series, counts


def headline(summary: dict, output: str | Path) -> str:
    low, high = summary["ci95"]
    by_index = ", ".join(
        f"{int(index) + 1}: {cell['accuracy']:.3f}"
        for index, cell in sorted(summary["by_gold_index"].items(), key=lambda item: int(item[0]))
    )
    pairs = "/".join(map(str, summary["num_pairs"]))
    return (
        f"kv-retrieval: accuracy {summary['accuracy']:.3f} [{low:.3f}, {high:.3f}] over {summary['prompts']} prompts "
        f"of {pairs} pairs; by position of the asked pair (1 = first) {by_index} -> {output}"
    )


def report_section(blocks: list[tuple], loaded: dict[str, dict], output: Path) -> None:
    """The accuracy of each run with its interval, by position of the asked pair, and the U-curve."""
    from meap.plots import plot_accuracy_by_position

    title = "Key-value retrieval (lost in the middle: the value in the output)"
    for index, heading, view in by_label(loaded, KIND.name, title):
        found = section(blocks, view, KIND.name, heading)
        if not found:
            continue
        figure = output / f"kv_retrieval{f'_{index}' if index else ''}.png"
        series, counts = _curve(found)
        plot_accuracy_by_position(series, figure, examples=counts, **_AXES)
        indices = sorted({i for by in series.values() for i in by})
        blocks += [
            ("img", figure.name),
            (
                "table",
                ["run", "accuracy [95% Wilson]", *[f"pair {i + 1}" for i in indices], "prompts", "pairs"],
                [
                    [
                        name,
                        f"{s['accuracy']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]",
                        *[format_value(series[name].get(i)) for i in indices],
                        str(s["prompts"]),
                        "/".join(map(str, s["num_pairs"])),
                    ]
                    for name, s in found.items()
                ],
            ),
        ]


KIND = EvaluationKind(
    "kv-retrieval",
    "summary.json",
    headline,
    report_section,
    paired_score=("correct", "key-value retrieval"),
    paper_rows=lambda summary: {"key-value retrieval (lost in the middle)": summary["accuracy"]},
    paper={"key-value retrieval (lost in the middle)": "not in the paper (its claim: key-information retrieval)"},
    command=("eval", "kv-retrieval"),
    help="lost-in-the-middle's key-value retrieval: look a UUID key up among UUID pairs",
    config=KVRetrievalConfig,
    evaluate=evaluate,
)
