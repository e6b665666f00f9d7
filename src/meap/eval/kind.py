"""What an evaluation kind is, and what a kind's module uses to write its files and its part of the report.

An evaluation kind is one module of :mod:`meap.eval` and one record in it, :class:`EvaluationKind`: its
command, its config and its entry point, the summary file it writes last (naming its ``kind``), the one-line
headline the command prints, its section of ``meap compare``'s report, the score it pairs by seed and the rows
it gives the paper's table. :mod:`meap.eval.results` registers the records: adding a kind is its module, its
test and its name there. A kind's module imports no torch at its top (torch, transformers and matplotlib
inside the functions that use them): the CLI builds its flags from the records.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from meap.fsutil import atomic_write_json, atomic_write_jsonl

RECORDS_FILE = "results.jsonl"  # one JSON line per prompt: what paired comparisons score


@dataclass(frozen=True)
class EvaluationKind:
    """One evaluation kind, as everything downstream of the evaluation reads it."""

    name: str  # the summary's ``kind`` field
    summary_file: str  # written last, in the evaluation's output directory
    headline: Callable[[dict, str | Path], str]  # what the command prints when done (summary, output)
    # the report section: a function (blocks, runs, report directory) appending its headings, tables and
    # figures (one that draws imports matplotlib inside itself)
    report_section: Callable[[list[tuple], dict[str, dict], Path], None]
    # scored per prompt in results.jsonl and paired by seed in the report: (record key, measure name)
    paired_score: tuple[str, str] | None = None
    # a record key grouping records into one unit of that pairing (averaged first): see prompt_scores
    paired_unit: str | None = None
    # a config key whose values other than "single" get report sections of their own (NIAH's RULER variants)
    variant_key: str | None = None
    # the rows this kind gives the paper's table: its summary -> {measure: value or None}; and beside them the
    # paper's own result for each measure, as the spec reads it (reported numbers, not verified here)
    paper_rows: Callable[[dict], dict[str, float | None]] | None = None
    paper: dict[str, str] | None = None
    # a kind whose one summary covers several models (attention.json) finds each run's entry itself:
    # runs -> {run name: (its entry, the file holding it)}; its paper rows then read an entry
    entries: Callable[[dict[str, dict]], dict[str, tuple[dict, Path]]] | None = None
    # its command (the words after `meap`: ("eval", "niah")), its help, its config class and entry point
    command: tuple[str, ...] = ()
    help: str = ""
    config: type | None = None
    evaluate: Callable[[object], dict] | None = None

    def write_summary(self, output: Path, summary: dict) -> dict:
        """Write ``summary`` (with its ``kind`` first) to this kind's file in ``output``; returns what was written."""
        written = {"kind": self.name, **{key: value for key, value in summary.items() if key != "kind"}}
        atomic_write_json(Path(output) / self.summary_file, written, ensure_ascii=False)
        return written

    def has_summary(self, output: Path) -> bool:
        """Whether this evaluation has finished in ``output`` (its summary is written last)."""
        return (Path(output) / self.summary_file).is_file()


def write_records(output: Path, records: list[dict]) -> None:
    atomic_write_jsonl(Path(output) / RECORDS_FILE, records)


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def format_value(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def section(blocks: list[tuple], loaded: dict[str, dict], kind: str, title: str) -> dict[str, dict]:
    """Open a report section: its heading, a line for each run that lacks ``kind``; the runs' outputs of it."""
    blocks.append(("h2", title))
    blocks += [("p", f"{name}: absent.") for name, run in loaded.items() if kind not in run["evaluations"]]
    return {name: run["evaluations"][kind][1] for name, run in loaded.items() if kind in run["evaluations"]}


def by_label(loaded: dict[str, dict], kind: str, title: str) -> Iterator[tuple[int, str, dict]]:
    """(index, heading, view) for each evaluation of ``kind`` (by label, across runs): ``view`` is ``loaded`` with
    that one evaluation of the kind in each run that has it, as the section writers read it; ``heading`` is
    ``title``, with the label when a run has several. Nothing when no run has the kind: the report's table of
    runs lists it as absent, and a section of "absent" lines would say no more."""
    labels = sorted({label for run in loaded.values() for label in run["evaluations"].get(kind, {})})
    for index, label in enumerate(labels):
        view = {
            name: {
                **run,
                "evaluations": {kind: run["evaluations"][kind][label]}
                if label in run["evaluations"].get(kind, {})
                else {},
            }
            for name, run in loaded.items()
        }
        yield index, (f"{title} [{label}]" if len(labels) > 1 and label else title), view
