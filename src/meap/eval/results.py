"""The evaluation kinds, one registered record each (:class:`~meap.eval.kind.EvaluationKind`): what every
evaluation writes (a JSON summary file that names its ``kind``), its one-line headline, and its section of
``meap compare``'s report. The CLI, the demo and the report read evaluations back through this registry alone.
A kind written as one module (its config, command and entry point in its record) is that module plus its name
in the list at the end of this file. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

from meap.eval import commonsense, hallucination, harness, kv_retrieval
from meap.eval.kind import RECORDS_FILE, EvaluationKind, read_records, write_records

__all__ = ["KINDS", "RECORDS_FILE", "EvaluationKind", "read_records", "register", "write_records"]

KINDS: dict[str, EvaluationKind] = {}


def register(kind: EvaluationKind) -> EvaluationKind:
    """Add ``kind`` to the registry (the report shows its sections in registration order)."""
    KINDS[kind.name] = kind
    return kind


def summary_file(kind: str) -> str:
    return KINDS[kind].summary_file


def has_summary(output: Path, kind: str) -> bool:
    """Whether the evaluation ``kind`` has finished in ``output`` (its summary is written last)."""
    return KINDS[kind].has_summary(output)


def prompt_scores(records: list[dict], key: str, absent: bool = False, unit: str | None = None) -> list[float]:
    """The per-prompt score ``key`` of ``records`` (results.jsonl), those with the asked needle left out
    (``absent``) or the others: one row of the seeds-by-prompts tables that paired comparisons take (None where a
    record has no score, as a summary with no judge). ``unit``: a record key whose records are one unit of
    the comparison, averaged in their order of first appearance (MDQA: a question asked at each gold position;
    the positions share its answer, so they are not independent prompts)."""
    kept = [record for record in records if bool(record.get("absent", False)) == absent]
    scores = [None if record.get(key) is None else float(record[key]) for record in kept]
    if unit is None:
        return scores
    groups: dict = {}
    for record, score in zip(kept, scores):
        groups.setdefault(record[unit], []).append(score)
    if len({len(group) for group in groups.values()}) > 1:
        raise ValueError(f"the records hold their `{unit}` values a different number of times each")
    return [None if None in group else sum(group) / len(group) for group in groups.values()]


def write_summary(output: Path, kind: str, summary: dict) -> dict:
    """Write ``summary`` (with its ``kind`` first) to the kind's file in ``output``; returns what was written."""
    return KINDS[kind].write_summary(output, summary)


def kind_of(data: dict) -> str | None:
    """Which registered evaluation wrote this JSON object (None: not an evaluation summary)."""
    kind = data.get("kind")
    return kind if isinstance(kind, str) and kind in KINDS else None


def section_of(data: dict) -> str | None:
    """The report section a summary belongs to: its kind, or ``<kind>-<variant>`` for a variant other than
    ``single`` of a kind with variants."""
    kind = kind_of(data)
    variant_key = KINDS[kind].variant_key if kind else None
    if variant_key:
        variant = (data.get("config") or {}).get(variant_key, "single")
        return kind if variant == "single" else f"{kind}-{variant}"
    return kind


def headline(summary: dict, output: str | Path) -> str:
    """What the command prints when an evaluation is done (lm-eval: a line per task)."""
    kind = kind_of(summary)
    if kind is None:
        raise ValueError(f"not an evaluation summary (keys: {', '.join(summary)})")
    return KINDS[kind].headline(summary, output)


def _niah_headline(summary: dict, output: str | Path) -> str:
    overall = summary["overall"]
    copied = overall.get("distractor_copied")
    # ROUGE-1 F stays in the summary (the paper reports it) but not here: a response that echoes the
    # question's template, or gives another needle's value, earns most of it
    return (
        f"niah: substring (the asked value) {overall['substring']:.3f}"
        + (f", distractor copied {copied:.3f}" if copied is not None else "")
        + f" -> {output}"
    )


def _niah_measure(summary: dict) -> str:
    variant = (summary.get("config") or {}).get("variant", "single")
    if variant == "single":
        return "needle in a haystack (substring)"
    return "multi-needle reasoning (NIAH reasoning)" if variant == "reasoning" else f"NIAH, {variant} (substring)"


def _mdqa_headline(summary: dict, output: str | Path) -> str:
    by_position = ", ".join(
        f"{int(position) + 1}: {accuracy:.3f}"
        for position, accuracy in sorted(summary["accuracy_by_gold_position"].items(), key=lambda item: int(item[0]))
        if accuracy is not None
    )
    return f"mdqa: best-subspan EM {summary['accuracy']:.3f}; by gold position (1 = first) {by_position} -> {output}"


def _retrieval_headline(summary: dict, output: str | Path) -> str:
    absent = summary.get("absent_distractor_given")
    return (
        f"retrieval: strict {summary['strict']:.3f}, distractor given {summary['distractor_given']:.3f}"
        + (f", asked key absent: distractor given {absent:.3f}" if absent is not None else "")
        + f" -> {output}"
    )


def _attention_headline(summary: dict, output: str | Path) -> str:
    lines = []
    for name, result in summary["models"].items():
        average = result["average"]
        decay = average.get("score_decay")
        lines.append(
            f"{name}: answer mass {average['segment_mass']['answer']:.3f}, entropy {average['entropy']:.2f}"
            + (f", score decay {decay:.3f}" if decay is not None else "")
            + f" -> {output}"
        )
    return "\n".join(lines)


_SECTIONS = "meap.report_sections"
register(
    EvaluationKind(
        "niah",
        "summary.json",
        _niah_headline,
        f"{_SECTIONS}:niah_report",
        paired_score=("substring", "NIAH, substring"),
        variant_key="variant",
        paper_rows=lambda s: {_niah_measure(s): s["overall"]["substring"]},
        paper={
            "needle in a haystack (substring)": "NTP 87.1 vs MEAP 98.2 (1.1B, 200B tokens; 52.8 vs 85.8 at 60B)",
            "multi-needle reasoning (NIAH reasoning)": "MEAP better at long-context reasoning (no number in the spec)",
        },
    )
)
_MDQA = "multi-document QA (best-subspan EM)"
register(
    EvaluationKind(
        "mdqa",
        "summary.json",
        _mdqa_headline,
        f"{_SECTIONS}:mdqa_report",
        paired_score=("best_subspan_em", "multi-document QA, best-subspan EM (per question)"),
        paired_unit="question",
        paper_rows=lambda s: {
            _MDQA: s["accuracy"],
            **{
                f"{_MDQA}, gold {int(p) + 1}": v
                for p, v in sorted(s["accuracy_by_gold_position"].items(), key=lambda i: int(i[0]))
            },
        },
        paper={_MDQA: "up to +27.2 points pretrained; 25.56 vs 37.33 after fine-tuning (Llama-3-8B, 20 documents)"},
    )
)
register(
    EvaluationKind(
        "retrieval",
        "summary.json",
        _retrieval_headline,
        f"{_SECTIONS}:retrieval_report",
        paired_score=("correct", "key-based retrieval, strict"),
    )
)
register(harness.KIND)
# attention.json covers several models: the paper's table reads each run's entry (its "average")
register(
    EvaluationKind(
        "attention",
        "attention.json",
        _attention_headline,
        f"{_SECTIONS}:attention_report",
        paper_rows=lambda entry: {
            "attention mass on the answer (from the query)": entry["average"]["segment_mass"]["answer"],
            "masked-key score decay": entry["average"].get("score_decay"),
        },
        paper={
            "attention mass on the answer (from the query)": "9.4% (NTP) vs 34.5% (MEAP), length 4096",
            "masked-key score decay": "about 53% (MEAP)",
        },
    )
)
# The kinds written as one module each (meap.eval.kind): one line each.
for _module in (kv_retrieval, hallucination, commonsense):
    register(_module.KIND)
