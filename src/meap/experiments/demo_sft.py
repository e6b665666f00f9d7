"""``meap demo-sft``: the paper's fine-tuning claim in miniature, NTP-SFT vs MEAP-SFT of one model.

Stages (a finished stage is skipped, so an interrupted run continues):

1. **evaluation files**: synthetic lost-in-the-middle MDQA (``mdqa_num_docs`` documents, one file per
   gold position in ``mdqa_gold_positions``, the same questions in each); with ``train_conversations``,
   also that many MDQA-format training conversations from another stream (checked: no evaluation answer
   occurs in them);
2. **base**: MDQA of the model before fine-tuning (``base/eval/mdqa``);
3. **fine-tune**: per seed and arm a ``meap sft`` run (``<arm>/``, or ``seed-<s>/<arm>/`` with several
   seeds): NTP-SFT and MEAP-SFT at equal training tokens (MEAP-SFT appends a masked copy to every long
   answer, so it trains ``meap_epochs``, the paper's 2, where NTP-SFT trains ``ntp_epochs``, 4), and,
   listed as ``ntp-equal-steps``, NTP-SFT at MEAP-SFT's epochs: its optimizer steps and schedule;
4. **evaluate and compare**: MDQA of every run, greedy and teacher-forced, and ``demo-sft.json`` /
   ``comparison.md`` with per-seed accuracies, accuracy by gold position beside the base model's, the
   paired differences MEAP-SFT minus each NTP arm and each arm minus base, with 95% t-intervals over seeds
   and questions (:mod:`meap.stats`; a question's gold positions are averaged, as they share its answer),
   the rows each run trained on (a MEAP row that fell back to NTP is counted), and the validity gate: any
   arm more than ``forgetting_gate`` below the base model means the run measures forgetting, and the
   comparison says so instead of ranking the objectives.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from meap.eval.results import RECORDS_FILE, has_summary, prompt_scores, read_records
from meap.experiments.config import SFT_ARMS, SFTDemoConfig
from meap.experiments.protocol import Experiment, conclude
from meap.experiments.runner import (
    check_output,
    continue_training,
    forget_evaluations,
    pin_numerics,
    say,
    start_experiment,
)
from meap.fsutil import write_json_gz
from meap.rundir import RunDir

TRAINING_FILE = "train.jsonl"
SCORES = {
    "best_subspan_em": "greedy best-subspan EM",
    "teacher_forced_em": "teacher-forced EM",
    "answer_logprob": "answer log-probability",
}  # per-question scores compared, the first the headline


def _training_file(config: SFTDemoConfig, directory: Path, evaluation: list[Path]) -> Path:
    """The generated training conversations (another stream than the evaluation's), checked for leakage."""
    from meap.eval.mdqa import read_mdqa
    from meap.eval.mdqa_data import make_training_conversations
    from meap.eval.metrics import normalize_answer

    path = directory / TRAINING_FILE
    if not path.is_file():
        make_training_conversations(
            path,
            config.train_conversations,
            num_docs=config.mdqa_num_docs,
            seed=f"train-{config.seed}",
            passage_words=config.mdqa_passage_words,
            distractors=config.mdqa_distractors,
        )
    text = normalize_answer(path.read_text(encoding="utf-8"))
    leaked = sorted(
        {
            answer
            for file in evaluation
            for example in read_mdqa(file)
            for answer in example["answers"]
            if normalize_answer(answer) in text
        }
    )
    if leaked:
        raise ValueError(f"{path}: holds evaluation answers {leaked[:3]}")  # the streams are disjoint by design
    return path


def _mdqa_files(config: SFTDemoConfig, directory: Path) -> list[Path]:
    from meap.eval.mdqa_data import make_mdqa_files

    return make_mdqa_files(
        directory,
        "mdqa",
        config.mdqa_gold_positions,
        num_docs=config.mdqa_num_docs,
        examples=config.mdqa_examples,
        seed=config.seed,
        passage_words=config.mdqa_passage_words,
        distractors=config.mdqa_distractors,
    )


def _evaluate(config: SFTDemoConfig, model: str, output: Path, files: list[Path], progress: bool) -> Path:
    from meap.eval import mdqa

    if not has_summary(output, "mdqa"):
        mdqa.evaluate(config.mdqa_config(model, files, output, progress))
    return output / RECORDS_FILE


def grouped_mean(records_by_seed: list[list[dict]], group: str, key: str) -> dict[str, float]:
    """Mean of ``key`` per value of ``group``, over every seed's records."""
    sums: dict = {}
    for records in records_by_seed:
        for record in records:
            if record.get(group) is not None:
                total, count = sums.get(record[group], (0.0, 0))
                sums[record[group]] = (total + float(record[key]), count + 1)
    return {
        f"{value:g}" if isinstance(value, float) else str(value): total / count
        for value, (total, count) in sorted(sums.items())
    }


def arm_label(arm: str) -> str:
    """``ntp`` -> ``NTP-SFT``, ``ntp-equal-steps`` -> ``NTP-SFT (equal steps)``."""
    objective, _, variant = arm.partition("-")
    return f"{objective.upper()}-SFT" + (f" ({variant.replace('-', ' ')})" if variant else "")


def sft_comparison(base_records: list[dict], runs: dict[int, dict[str, list[dict]]], gate: float = 0.10) -> dict:
    """MDQA of the base model and of each seed's fine-tuned runs, compared (see the module docstring).

    ``base_records``: the base model's per-question records; ``runs``: seed -> arm -> its records, all
    over the same questions in the same order. Every score of :data:`SCORES` the records hold is compared,
    per question (its gold positions averaged: :func:`~meap.eval.results.prompt_scores`); the first (greedy
    EM) is the headline and decides the validity ``gate``, which every arm must pass. ``paired``: MEAP-SFT
    minus each NTP arm.
    """
    from meap.stats import mean_and_spread, paired_difference

    seeds = sorted(runs)
    arms = sorted({a for by_arm in runs.values() for a in by_arm}, key=list(SFT_ARMS).index)
    records = {a: [runs[seed][a] for seed in seeds] for a in arms}
    if any(len(rows) != len(base_records) for by_seed in records.values() for rows in by_seed):
        raise ValueError("the runs' MDQA evaluations have different numbers of questions")
    scores = [
        key
        for key in SCORES
        if all(key in r for r in base_records)
        and all(key in r for by_seed in records.values() for rows in by_seed for r in rows)
    ]
    result: dict = {
        "objectives": arms,
        "seeds": seeds,
        "questions": len(prompt_scores(base_records, scores[0], unit="question")) if scores else 0,
        "items": len(base_records),
        "scores": scores,
    }
    for key in scores:
        base_scores = prompt_scores(base_records, key, unit="question")
        tables = {a: [prompt_scores(rows, key, unit="question") for rows in records[a]] for a in arms}
        by_seed = {a: [sum(row) / len(row) for row in tables[a]] for a in arms}
        result[key] = {
            "base": {
                "mean": sum(base_scores) / len(base_scores),
                "by_gold_position": grouped_mean([base_records], "gold_position", key),
            },
            "by_seed": by_seed,
            "mean": {a: mean_and_spread(by_seed[a])["mean"] for a in arms},
            "by_gold_position": {a: grouped_mean(records[a], "gold_position", key) for a in arms},
            "versus_base": {a: paired_difference([base_scores] * len(seeds), tables[a]) for a in arms},
        }
        if "meap" in arms:
            result[key]["paired"] = {
                a: paired_difference(tables[a], tables["meap"]) for a in arms if SFT_ARMS[a][0] == "ntp"
            }
    headline = result[scores[0]]
    below = {a: headline["base"]["mean"] - headline["mean"][a] for a in arms}
    failing = [a for a in arms if below[a] > gate]
    result["validity"] = {
        "below_base": below,
        "gate": gate,
        "failing": failing,
        "measures": "forgetting" if failing else "the objective",
    }
    return result


def sft_blocks(comparison: dict, config: SFTDemoConfig) -> list[tuple]:
    """The report's blocks: the validity gate's reading, then per score the accuracies by gold position, per
    seed and the paired differences; the rows each run trained on."""
    from meap.experiments.paired import interval_text, percent

    arms, headline = comparison["objectives"], comparison[comparison["scores"][0]]
    positions = list(headline["base"]["by_gold_position"])
    training = (
        f"{config.train_conversations} generated MDQA conversations"
        if config.train_conversations
        else ", ".join(config.train.data)
    )
    epochs = ", ".join(f"{arm_label(a)} {config.arm_epochs(a)}" for a in arms)
    validity = comparison["validity"]
    verdict = (
        f"**This run measures forgetting, not the objective** ({', '.join(map(arm_label, validity['failing']))})"
        if validity["failing"]
        else "Every arm passes the validity gate"
    )
    blocks: list[tuple] = [
        ("h1", f"{' vs '.join(map(arm_label, arms))} of {config.train.model}, {len(comparison['seeds'])} seed(s)"),
        (
            "p",
            f"Fine-tuned on {training}, epochs: {epochs} (NTP-SFT and MEAP-SFT at equal training tokens; the "
            "equal-steps arm at MEAP-SFT's optimizer steps). Evaluated on multi-document QA, "
            f"{config.mdqa_num_docs} documents of about {config.mdqa_passage_words} words, {config.mdqa_examples} "
            "questions at each gold position. Scores in percent (log-probabilities in nats); differences with 95% "
            f"t-intervals over seeds, the {comparison['questions']} questions (each averaged over its gold "
            "positions) and seeds as crossed factors; with one seed, over questions only.",
        ),
        (
            "p",
            f"{verdict}: greedy EM minus the base model's, "
            + ", ".join(f"{arm_label(a)} {-100 * validity['below_base'][a]:+.1f}" for a in arms)
            + f" points (the gate: more than {100 * validity['gate']:.0f} below).",
        ),
    ]
    for key in comparison["scores"]:
        table, scale = comparison[key], 1 if key == "answer_logprob" else 100
        number = (lambda value: f"{value:.2f}") if scale == 1 else percent
        by_arm = table["by_gold_position"]
        by_position = [
            ["base", *(number(table["base"]["by_gold_position"][p]) for p in positions), number(table["base"]["mean"])]
        ] + [
            [
                f"{arm_label(a)} (mean of seeds)",
                *(number(by_arm[a][p]) if p in by_arm[a] else "n/a" for p in positions),
                number(table["mean"][a]),
            ]
            for a in arms
        ]
        by_seed = [
            [str(seed), *(number(table["by_seed"][a][index]) for a in arms)]
            for index, seed in enumerate(comparison["seeds"])
        ]
        differences = [
            [f"MEAP-SFT - {arm_label(a)}", interval_text(difference, scale)]
            for a, difference in table.get("paired", {}).items()
        ] + [[f"{arm_label(a)} - base", interval_text(table["versus_base"][a], scale)] for a in arms]
        blocks += [
            ("h2", SCORES[key]),
            ("table", ["model", *(f"gold {int(p) + 1}" for p in positions), "all"], by_position),
            ("table", ["seed", *map(arm_label, arms)], by_seed),
            ("table", ["difference", "[95% CI]"], differences),
        ]
    rows = comparison["training_rows"]
    return blocks + [
        (
            "p",
            "Training rows per run: "
            + "; ".join(
                f"{name} " + ", ".join(f"{kind} {count}" for kind, count in sorted(counts.items()))
                for name, counts in rows.items()
            ),
        )
    ]


def run_demo_sft(config: SFTDemoConfig, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Run every stage for ``config``; return the summary (also in ``demo-sft.json``)."""
    pin_numerics(config)  # before anything computes: fine-tuning runs in this process

    changed = [] if overwrite else check_output(config, config.resolved_output(), overwrite)
    output, clock = start_experiment(config, overwrite)
    if changed:
        forget_evaluations(output, EXPERIMENT.evaluations, changed)
        for path in (output / "mdqa").glob("*.jsonl.gz"):  # the evaluation files, not the training conversations
            path.unlink()
    seeds, arms = config.training_seeds(), config.objectives

    from meap.train import sft

    say(f"{clock}  1/4 evaluation files")
    files = _mdqa_files(config, output / "mdqa")
    if config.train_conversations:
        trained_on = [str(_training_file(config, output / "mdqa", files))]
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, data=trained_on))
    say(f"{clock}  2/4 MDQA of the base model {config.train.model}")
    base_evaluation = RunDir(output / "base").evaluation("mdqa")
    computed = not has_summary(base_evaluation, "mdqa")  # else every stage may have been done
    base = _evaluate(config, config.train.model, base_evaluation, files, progress)
    runs: dict[int, dict[str, Path]] = {seed: {} for seed in seeds}
    rows: dict[str, dict] = {}
    for number, (seed, arm) in enumerate(((s, a) for s in seeds for a in arms), 1):
        run = output / arm if len(seeds) == 1 else output / f"seed-{seed}" / arm
        sft_config = config.sft_config(arm, run, seed)
        say(
            f"{clock}  3/4 fine-tuning {arm_label(arm)}, seed {seed} ({number} of "
            f"{len(seeds) * len(arms)}): {sft_config.epochs} epochs"
        )
        run_dir = RunDir(run)
        computed |= not run_dir.has_final_model() or not has_summary(run_dir.evaluation("mdqa"), "mdqa")
        continue_training(sft, sft_config, progress)
        rows[str(run.relative_to(output))] = run_dir.read_facts().get("rows", {})
        runs[seed][arm] = _evaluate(config, str(run), run_dir.evaluation("mdqa"), files, progress)
    say(f"{clock}  4/4 comparison")
    loaded = {
        "base": read_records(base),
        "gate": config.forgetting_gate,
        "runs": {str(seed): {a: read_records(path) for a, path in by_arm.items()} for seed, by_arm in runs.items()},
    }
    if config.records:
        write_json_gz(config.records, loaded)
    return conclude(EXPERIMENT, {**recompute(loaded), "training_rows": rows}, config, output, clock, computed)


def recompute(loaded: dict, **onset) -> dict:
    """The comparison from the records file's content (``{"base", "gate", "runs": {seed: {arm: records}}}``);
    no onset here (``onset`` goes unused): the validity gate travels in the records."""
    runs = {int(seed): by_arm for seed, by_arm in loaded["runs"].items()}
    return sft_comparison(loaded["base"], runs, loaded["gate"])


SFT_KEYS = ("base", "gate", "runs")
EXPERIMENT = Experiment(
    "demo-sft",
    "demo-sft.json",
    evaluations=("mdqa",),
    holds=lambda records: all(key in records for key in SFT_KEYS),
    load=lambda content, path: content,
    verdict=recompute,
    blocks=sft_blocks,
    runs_compare=False,
)
