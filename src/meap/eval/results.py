"""What every evaluation writes, read back the same way by ``meap compare``, the demo and the CLI: a JSON
summary file that names its ``kind``, and the one-line headline of it. Torch-free.

Outputs written before summaries named their kind are recognised by their keys.
"""

from __future__ import annotations

import json
from pathlib import Path

from meap.fsutil import atomic_write_json, atomic_write_lines

SUMMARY_FILES = {
    "niah": "summary.json",
    "mdqa": "summary.json",
    "harness": "results.json",
    "attention": "attention.json",
    "retrieval": "summary.json",
}
EVALUATIONS = tuple(SUMMARY_FILES)
RECORDS_FILE = "results.jsonl"  # NIAH, MDQA, retrieval: one JSON line per prompt, what paired comparisons score


def has_summary(output: Path, kind: str) -> bool:
    """Whether the evaluation ``kind`` has finished in ``output`` (its summary is written last)."""
    return (Path(output) / SUMMARY_FILES[kind]).is_file()


def write_records(output: Path, records: list[dict]) -> None:
    atomic_write_lines(Path(output) / RECORDS_FILE, (json.dumps(record, ensure_ascii=False) for record in records))


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_summary(output: Path, kind: str, summary: dict) -> dict:
    """Write ``summary`` (with its ``kind`` first) to the kind's file in ``output``; returns what was written."""
    written = {"kind": kind, **{key: value for key, value in summary.items() if key != "kind"}}
    atomic_write_json(Path(output) / SUMMARY_FILES[kind], written, ensure_ascii=False)
    return written


def kind_of(data: dict) -> str | None:
    """Which evaluation wrote this JSON object (None: not an evaluation summary)."""
    if data.get("kind") in SUMMARY_FILES:
        return data["kind"]
    if "cells" in data and "overall" in data:
        return "niah"
    if "accuracy_by_gold_position" in data:
        return "mdqa"
    if "results" in data and "lm_eval_version" in data:
        return "harness"
    if "models" in data and "mask_ratio" in data:
        return "attention"
    return None


def section_of(data: dict) -> str | None:
    """The report section a summary belongs to: its kind, and each RULER variant of NIAH one of its own."""
    kind = kind_of(data)
    if kind == "niah":
        variant = (data.get("config") or {}).get("variant", "single")
        return "niah" if variant == "single" else f"niah-{variant}"
    return kind


def headline(summary: dict, output: str | Path) -> str:
    """What the command prints when an evaluation is done (lm-eval: a line per task)."""
    kind = kind_of(summary)
    if kind == "niah":
        overall = summary["overall"]
        copied = overall.get("distractor_copied")
        # ROUGE-1 F stays in the summary (the paper reports it) but not here: a response that echoes the
        # question's template, or gives another needle's value, earns most of it
        return (
            f"niah: substring (the asked value) {overall['substring']:.3f}"
            + (f", distractor copied {copied:.3f}" if copied is not None else "")
            + f" -> {output}"
        )
    if kind == "mdqa":
        by_position = ", ".join(
            f"{int(position) + 1}: {accuracy:.3f}"
            for position, accuracy in sorted(
                summary["accuracy_by_gold_position"].items(), key=lambda item: int(item[0])
            )
            if accuracy is not None
        )
        return (
            f"mdqa: best-subspan EM {summary['accuracy']:.3f}; by gold position (1 = first) {by_position} -> {output}"
        )
    if kind == "retrieval":
        absent = summary.get("absent_distractor_given")
        return (
            f"retrieval: strict {summary['strict']:.3f}, distractor given {summary['distractor_given']:.3f}"
            + (f", asked key absent: distractor given {absent:.3f}" if absent is not None else "")
            + f" -> {output}"
        )
    if kind == "harness":
        return "\n".join(
            f"{task}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            for task, metrics in summary["results"].items()
        )
    if kind == "attention":
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
    raise ValueError(f"not an evaluation summary (keys: {', '.join(summary)})")
