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
model on them and writes ``results.jsonl``, ``summary.json`` and ``heatmap.png``. The kind whole: its config,
its headline, its report sections (one per RULER variant found) and its record, :data:`KIND`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from meap.arms import seed_pair_names
from meap.config import checked
from meap.config.commands import GenerationOptions, haystack_option, model_option, option, output_option
from meap.errors import UserError, warn
from meap.eval.kind import EvaluationKind, by_label, format_value, section, write_records
from meap.eval.metrics import rouge1_f, substring_match
from meap.rundir import RunDir

NIAH_LENGTHS = (512, 1024, 2048)
NIAH_DEPTHS = (0.0, 25.0, 50.0, 75.0, 100.0)


@dataclass
class NIAHConfig(GenerationOptions):
    model: str = model_option()
    output: str = output_option("directory for results.jsonl, summary.json, heatmap.png")
    haystack: list[str] = haystack_option(
        "files, directories or globs read as `meap prepare` reads them (text, JSONL/JSON "
        "`text` fields, Parquet), `builtin` (Paul Graham essays) or `builtin-prose` "
        "(public-domain prose) (default: builtin)"
    )
    lengths: list[int] = option(
        "prompt lengths in model tokens (default: 512,1024,2048)",
        factory=lambda: list(NIAH_LENGTHS),
        comma=True,
        metavar="N,N,...",
    )
    depths: list[float] = option(
        "needle depths in percent (default: 0,25,50,75,100)",
        factory=lambda: list(NIAH_DEPTHS),
        comma=True,
        metavar="PERCENT,...",
    )
    needle: str | None = option("a fixed needle sentence (default: random RULER-style needles)", metavar="SENTENCE")
    question: str | None = option("the question for --needle", metavar="TEXT")
    answer: str | None = option("the expected answer for --needle", metavar="TEXT")
    samples: int = option("needles per cell", 1)
    distractors: int = option("other needles (other keys and values) in each haystack: RULER's multi-key NIAH", 0)
    absent: bool = option(
        "control: leave the asked needle out (only distractors remain); summary.json then says "
        "how often a distractor's value was given",
        False,
        switch=True,
    )
    variant: str = option(
        "single, multikey (3+ distractor keys), multivalue (4 values under one key, all to "
        "recall), multiquery (4 keys asked at once) or reasoning (two needles to combine): RULER's "
        "NIAH tasks and NeedleBench's multi-needle reasoning",
        "single",
        metavar="VARIANT",
    )
    value_kind: str = option("needle values: numbers, words or uuids", "numbers", metavar="KIND")
    seed: int = option("seed of the needles and their placement", 0)

    def problems(self) -> list[str]:
        found = GenerationOptions.problems(self)
        fixed = (self.needle, self.question, self.answer)
        if any(fixed) and not all(fixed):
            found.append("--needle, --question and --answer go together")
        if self.samples < 1:
            found.append(f"--samples: expected an integer >= 1, got {self.samples}")
        if not self.lengths or any(length < 1 for length in self.lengths):
            found.append(f"--lengths: expected positive token counts, got {self.lengths}")
        if any(not 0 <= depth <= 100 for depth in self.depths):
            found.append(f"--depths: expected percentages within [0, 100], got {self.depths}")
        return found


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
    from meap.eval.generation import generate, render_prompt
    from meap.eval.niah_data import KEY_WORDS, Needle, build_examples, check_absent, probes, read_haystack
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
    summary = KIND.write_summary(output, summary)
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


def headline(summary: dict, output: str | Path) -> str:
    overall = summary["overall"]
    copied = overall.get("distractor_copied")
    # ROUGE-1 F stays in the summary (the paper reports it) but not here: a response that echoes the
    # question's template, or gives another needle's value, earns most of it
    return (
        f"niah: substring (the asked value) {overall['substring']:.3f}"
        + (f", distractor copied {copied:.3f}" if copied is not None else "")
        + f" -> {output}"
    )


def _measure(summary: dict) -> str:
    variant = (summary.get("config") or {}).get("variant", "single")
    if variant == "single":
        return "needle in a haystack (substring)"
    return "multi-needle reasoning (NIAH reasoning)" if variant == "reasoning" else f"NIAH, {variant} (substring)"


def _cells(summary: dict) -> dict[tuple, float]:
    return {(cell["length"], cell["depth"]): cell["substring"] for cell in summary["cells"]}


def _section(blocks: list[tuple], loaded: dict[str, dict], kind: str, title: str, output: Path, stem: str) -> None:
    """Heatmaps, the table and the differences (MEAP - NTP by seed, else to the first run), of one NIAH evaluation
    (``stem``: its files)."""
    from meap.plots import plot_niah_heatmap

    niah = section(blocks, loaded, kind, f"{title} (share of required values recalled)")
    for index, (name, summary) in enumerate(niah.items()):
        file = f"{stem}_{index}.png"
        plot_niah_heatmap(
            [
                {"length": c["length"], "depth": c["depth"], "score": c["substring"], "samples": c.get("samples")}
                for c in summary["cells"]
            ],
            output / file,
            title=f"{title}: {name} (overall {summary['overall']['substring']:.3f})",
        )
        blocks.append(("img", file))
    if niah:
        blocks.append(
            (
                "table",
                ["run", "substring match", "ROUGE-1 F (earned by echoing, too)", "cells", "prompts"],
                [
                    [
                        name,
                        format_value(s["overall"]["substring"]),
                        format_value(s["overall"]["rouge1_f"]),
                        str(len(s["cells"])),
                        str(sum(c.get("samples", 0) for c in s["cells"]) or "n/a"),
                    ]
                    for name, s in niah.items()
                ],
            )
        )
    # each arm minus the baseline within each seed where the runs pair by seed, else each run minus the first
    pairs = [
        (pair[arm], pair[reference])
        for pair in seed_pair_names(loaded).values()
        for reference, *others in [list(pair)]
        for arm in others
        if pair[reference] in niah and pair[arm] in niah
    ]
    names = list(niah)
    for index, (name, baseline) in enumerate(pairs or [(name, names[0]) for name in names[1:]], 1):
        base, other = _cells(niah[baseline]), _cells(niah[name])
        shared = sorted(set(base) & set(other))
        if shared:
            file = f"{stem}_diff_{index}.png"
            plot_niah_heatmap(
                [
                    {"length": length, "depth": depth, "score": other[(length, depth)] - base[(length, depth)]}
                    for length, depth in shared
                ],
                output / file,
                title=f"{title}: {name} minus {baseline}",
                difference=True,
            )
            blocks += [("p", f"Difference, {name} minus {baseline}:"), ("img", file)]


def report_section(blocks: list[tuple], loaded: dict[str, dict], output: Path) -> None:
    """NIAH, and each RULER variant found a section of its own; each evaluation directory apart."""
    variants = sorted({kind for run in loaded.values() for kind in run["evaluations"] if kind.startswith("niah-")})
    for kind in ["niah", *variants]:
        title = "Needle in a haystack" + (f", {kind.removeprefix('niah-')}" if kind != "niah" else "")
        for index, heading, view in by_label(loaded, kind, title):
            stem = kind.replace("-", "_") + (f"_{index}" if index else "")
            _section(blocks, view, kind, heading, output, stem=stem)


KIND = EvaluationKind(
    "niah",
    "summary.json",
    headline,
    report_section,
    paired_score=("substring", "NIAH, substring"),
    variant_key="variant",
    paper_rows=lambda summary: {_measure(summary): summary["overall"]["substring"]},
    paper={
        "needle in a haystack (substring)": "NTP 87.1 vs MEAP 98.2 (1.1B, 200B tokens; 52.8 vs 85.8 at 60B)",
        "multi-needle reasoning (NIAH reasoning)": "MEAP better at long-context reasoning (no number in the spec)",
    },
    command=("eval", "niah"),
    help="needle in a haystack",
    config=NIAHConfig,
    evaluate=evaluate,
)
