"""What an experiment declares, and the one way its verdict becomes a report and a summary.

An experiment (:class:`Experiment`) declares the evaluation kinds it runs on every run, how to tell its
records file from another's, how those records load, its verdict from them, and its report as blocks (the
blocks of :func:`meap.report.markdown`, as ``meap compare`` writes); :func:`conclude` renders every report
(``comparison.md``, its figure ``comparison.png``), writes the summary and publishes it, the same for all.
``meap experiment recompute`` reads a records file through the experiment that holds it
(:func:`meap.experiments.recompute.experiments`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from meap.config import config_to_dict
from meap.experiments.runner import Clock, provenance, publish_summary
from meap.fsutil import atomic_write_json, atomic_write_text

REPORT_FILE = "comparison.md"
FIGURE_FILE = "comparison.png"


@dataclass(frozen=True)
class Experiment:
    """One experiment, as its runner, the report and ``meap experiment recompute`` read it."""

    name: str  # as `meap experiment recompute` names the experiment of a records file
    summary_file: str  # its summary JSON, in the experiment's directory
    evaluations: tuple[str, ...]  # the evaluation kinds run on every run (forgotten when their inputs change)
    holds: Callable[[dict], bool]  # whether a records file's content is this experiment's
    load: Callable[[dict, Path], object]  # (records content, its file) -> what the verdict reads
    # (loaded records, threshold=, window=) -> the comparison; the onset settings may go unused
    verdict: Callable[..., dict]
    blocks: Callable[[dict, object], list[tuple]]  # (comparison, the experiment's config) -> the report's blocks
    figure: Callable[[dict, Path], Path] | None = None  # (comparison, file) -> the figure the report shows
    runs_compare: bool = True  # whether `--same` can compare two records files run by run


def write_report(experiment: Experiment, comparison: dict, config, output: Path) -> Path:
    """``comparison.md`` (and its figure) in ``output``; returns the .md."""
    from meap.report import markdown

    blocks = experiment.blocks(comparison, config)
    output.mkdir(parents=True, exist_ok=True)
    if experiment.figure is not None:
        experiment.figure(comparison, output / FIGURE_FILE)
        blocks.append(("img", FIGURE_FILE))
    path = output / REPORT_FILE
    atomic_write_text(path, markdown(blocks))
    return path


def conclude(
    experiment: Experiment, comparison: dict, config, output: Path, clock: Clock, computed: bool, **facts
) -> dict:
    """Report ``comparison``, write the summary (the comparison, its provenance, ``facts``, the config) and
    publish it where ``config.summary`` says; print the report. Returns the summary."""
    tables = write_report(experiment, comparison, config, output).read_text(encoding="utf-8")
    summary_path = output / experiment.summary_file
    summary = {**comparison, **provenance(summary_path, computed, clock), **facts, "config": config_to_dict(config)}
    atomic_write_json(summary_path, summary)
    if config.summary:
        figure = output / FIGURE_FILE if experiment.figure is not None else None
        publish_summary(Path(config.summary), summary, tables, figure)
    print("\n" + tables)
    print(f"{clock.seconds():.0f} s in all -> {summary_path}")
    return summary
