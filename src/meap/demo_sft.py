"""``meap demo-sft``: the paper's fine-tuning claim in miniature, NTP-SFT vs MEAP-SFT of one model.

Stages (a finished stage is skipped, so an interrupted run continues):

1. **evaluation files**: synthetic lost-in-the-middle MDQA (``mdqa_num_docs`` documents, one file per
   gold position in ``mdqa_gold_positions``, the same questions in each);
2. **base**: MDQA of the model before fine-tuning (``base/eval/mdqa``);
3. **fine-tune**: per seed and objective a ``meap sft`` run (``<objective>/``, or ``seed-<s>/<objective>/``
   with several seeds) at equal training tokens: MEAP-SFT appends a masked copy to every long answer, so
   it trains ``meap_epochs`` (the paper: 2) where NTP-SFT trains ``ntp_epochs`` (4);
4. **evaluate and compare**: MDQA of every run, and ``demo-sft.json`` / ``comparison.md`` with per-seed
   accuracies, accuracy by gold position beside the base model's, and the paired differences MEAP - NTP
   and each objective - base, with 95% t-intervals over seeds (:mod:`meap.stats`).
"""

from __future__ import annotations

import json
from pathlib import Path

from meap.config import SFTDemoConfig, config_to_dict
from meap.experiment import continue_training, publish_summary, say, start_experiment
from meap.eval.results import RECORDS_FILE, has_summary, read_records
from meap.fsutil import atomic_write_lines, atomic_write_text

SUMMARY_FILE = "demo-sft.json"
COMPARISON_FILE = "comparison.md"


def _mdqa_files(config: SFTDemoConfig, directory: Path) -> list[Path]:
    from meap.eval.mdqa_data import make_mdqa_files

    return make_mdqa_files(directory, "mdqa", config.mdqa_gold_positions, num_docs=config.mdqa_num_docs,
                           examples=config.mdqa_examples, seed=config.seed, passage_words=config.mdqa_passage_words)


def _evaluate(config: SFTDemoConfig, model: str, output: Path, files: list[Path], progress: bool) -> Path:
    from meap.eval import mdqa

    if not has_summary(output, "mdqa"):
        mdqa.run(model, [str(path) for path in files], output, max_new_tokens=config.max_new_tokens, batch_size=8,
                 dtype=config.eval_dtype, progress=progress)
    return output / RECORDS_FILE


def _fine_tune(config: SFTDemoConfig, objective: str, seed: int, run: Path, progress: bool) -> Path:
    from meap.train import sft

    return continue_training(sft, config.sft_config(objective, run, seed), progress)


def grouped_mean(records_by_seed: list[list[dict]], group: str, key: str) -> dict[str, float]:
    """Mean of ``key`` per value of ``group``, over every seed's records."""
    sums: dict = {}
    for records in records_by_seed:
        for record in records:
            if record.get(group) is not None:
                total, count = sums.get(record[group], (0.0, 0))
                sums[record[group]] = (total + float(record[key]), count + 1)
    return {f"{value:g}" if isinstance(value, float) else str(value): total / count
            for value, (total, count) in sorted(sums.items())}


def sft_comparison(base: Path, runs: dict[int, dict[str, Path]]) -> dict:
    """MDQA of the base model and of each seed's fine-tuned runs, compared (see the module docstring).

    ``base``: the base model's ``results.jsonl``; ``runs``: seed -> objective -> its ``results.jsonl``,
    all over the same questions in the same order.
    """
    from meap.stats import mean_and_spread, paired_difference

    seeds = sorted(runs)
    objectives = sorted({o for by_objective in runs.values() for o in by_objective}, key=("ntp", "meap").index)
    base_records = read_records(base)
    base_scores = [record["best_subspan_em"] for record in base_records]
    records = {o: [read_records(runs[seed][o]) for seed in seeds] for o in objectives}
    tables = {o: [[r["best_subspan_em"] for r in rows] for rows in records[o]] for o in objectives}
    if any(len(row) != len(base_scores) for rows in tables.values() for row in rows):
        raise ValueError("the runs' MDQA evaluations have different numbers of questions")
    by_seed = {o: [sum(row) / len(row) for row in tables[o]] for o in objectives}
    result = {
        "objectives": objectives, "seeds": seeds, "questions": len(base_scores),
        "base": {"accuracy": sum(base_scores) / len(base_scores),
                 "by_gold_position": grouped_mean([base_records], "gold_position", "best_subspan_em")},
        "by_seed": by_seed,
        "mean": {o: mean_and_spread(by_seed[o])["mean"] for o in objectives},
        "by_gold_position": {o: grouped_mean(records[o], "gold_position", "best_subspan_em") for o in objectives},
        "versus_base": {o: paired_difference([base_scores] * len(seeds), tables[o]) for o in objectives},
    }
    if objectives == ["ntp", "meap"]:
        result["paired"] = paired_difference(tables["ntp"], tables["meap"])
    return result


def _markdown(comparison: dict, config: SFTDemoConfig) -> str:
    from meap.paired import interval_text, percent

    positions = list(comparison["base"]["by_gold_position"])
    objectives = comparison["objectives"]
    lines = [f"# NTP-SFT vs MEAP-SFT of {config.model}, {len(comparison['seeds'])} seed(s)", "",
             f"Multi-document QA, {config.mdqa_num_docs} documents of about {config.mdqa_passage_words} words, "
             f"{config.mdqa_examples} questions per gold position; best-subspan EM in percent. NTP-SFT "
             f"{config.ntp_epochs} epochs, MEAP-SFT {config.meap_epochs} (equal training tokens); differences in "
             "points with 95% t-intervals over seeds (seeds and questions as crossed factors; with one seed, over "
             "questions only).", "",
             "| model | " + " | ".join(f"gold {int(p) + 1}" for p in positions) + " | all |",
             "|---|" + "---|" * (len(positions) + 1),
             "| base | " + " | ".join(percent(comparison["base"]["by_gold_position"][p]) for p in positions)
             + f" | {percent(comparison['base']['accuracy'])} |"]
    for o in objectives:
        by_position = comparison["by_gold_position"][o]
        lines.append(f"| {o.upper()}-SFT (mean of seeds) | " + " | ".join(percent(by_position.get(p)) for p in positions)
                     + f" | {percent(comparison['mean'][o])} |")
    lines += ["", "| seed | " + " | ".join(o.upper() + "-SFT" for o in objectives) + " |",
              "|---|" + "---|" * len(objectives)]
    for index, seed in enumerate(comparison["seeds"]):
        lines.append(f"| {seed} | " + " | ".join(percent(comparison["by_seed"][o][index]) for o in objectives) + " |")
    lines += ["", "| difference | points [95% CI] |", "|---|---|"]
    if "paired" in comparison:
        lines.append(f"| MEAP-SFT - NTP-SFT | {interval_text(comparison['paired'])} |")
    for o in objectives:
        lines.append(f"| {o.upper()}-SFT - base | {interval_text(comparison['versus_base'][o])} |")
    return "\n".join(lines) + "\n"


def run_demo_sft(config: SFTDemoConfig, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Run every stage for ``config``; return the summary (also in ``demo-sft.json``)."""
    from meap.monitor import machine

    output, clock = start_experiment(config, overwrite)
    seeds, objectives = config.training_seeds(), config.objectives()

    say(f"{clock}  1/4 evaluation files")
    files = _mdqa_files(config, output / "mdqa")
    say(f"{clock}  2/4 MDQA of the base model {config.model}")
    base = _evaluate(config, config.model, output / "base" / "eval" / "mdqa", files, progress)
    runs: dict[int, dict[str, Path]] = {seed: {} for seed in seeds}
    for number, (seed, objective) in enumerate(((s, o) for s in seeds for o in objectives), 1):
        run = output / objective if len(seeds) == 1 else output / f"seed-{seed}" / objective
        epochs = config.meap_epochs if objective == "meap" else config.ntp_epochs
        say(f"{clock}  3/4 fine-tuning {objective.upper()}-SFT, seed {seed} ({number} of "
            f"{len(seeds) * len(objectives)}): {epochs} epochs")
        _fine_tune(config, objective, seed, run, progress)
        runs[seed][objective] = _evaluate(config, str(run), run / "eval" / "mdqa", files, progress)
    say(f"{clock}  4/4 comparison")
    comparison = sft_comparison(base, runs)
    tables = _markdown(comparison, config)
    atomic_write_text(output / COMPARISON_FILE, tables)
    summary = {**comparison, "wall_seconds": clock.seconds(),
               "machine": machine(),
               "config": config_to_dict(config)}
    atomic_write_lines(output / SUMMARY_FILE, [json.dumps(summary, indent=2)])
    if config.summary:
        publish_summary(Path(config.summary), summary, tables)
    print("\n" + tables)
    print(f"{summary['wall_seconds']:.0f} s in all -> {output / SUMMARY_FILE}")
    return summary
