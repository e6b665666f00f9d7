"""The evaluation kinds, one registered record each (:class:`~meap.eval.kind.EvaluationKind`): what every
evaluation writes (a JSON summary file that names its ``kind``), its one-line headline, and its section of
``meap compare``'s report. The CLI, the demo and the report read evaluations back through this registry alone.
A kind is its module plus its name in the list at the end of this file. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

from meap.eval import attention, commonsense, hallucination, harness, kv_retrieval, mdqa, niah, retrieval
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


# Every kind, each one module (meap.eval.kind); the report shows their sections in this order.
for _module in (niah, mdqa, retrieval, harness, attention, kv_retrieval, hallucination, commonsense):
    register(_module.KIND)
