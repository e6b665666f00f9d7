"""The paired NTP-vs-MEAP comparison over seeds (``meap demo``'s verdict): per-seed and mean scores,
breakdowns and paired differences with 95% intervals, read from the runs' evaluation files; no torch."""

from __future__ import annotations

import json
from pathlib import Path

from meap.constants import OBJECTIVES
from meap.errors import UserError
from meap.eval.results import RECORDS_FILE, SUMMARY_FILES, read_records
from meap.fsutil import atomic_write_text
from meap.plots import plot_paired
from meap.report import format_value, markdown, read_run
from meap.stats import mean_and_spread, paired_difference

ATTENTION_METRICS = ("answer_mass", "entropy", "score_decay", "variance_increase")


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"{path}: missing (the evaluation has not run)")
    return read_records(path)


def _scores(records: list[dict], key: str, where: Path) -> list[float]:
    if not records:
        raise UserError(f"{where}: no records")
    return [float(record[key]) for record in records]


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


def paired_comparison(runs: dict[int, dict[str, Path]], key_checks: dict[int, dict[str, Path]] | None = None) -> dict:
    """NTP vs MEAP over seeds: per-seed and mean scores, breakdowns, and paired differences with 95% intervals.

    ``runs``: seed -> {"ntp": run dir, "meap": run dir}, each evaluated by ``meap demo`` (NIAH and MDQA
    ``results.jsonl`` under ``eval/``, ``eval/attention/attention.json``), on the same prompts for every run.
    ``key_checks``: seed -> objective -> the directory holding its ``multikey/`` and ``absent/`` NIAH.
    """
    objectives = OBJECTIVES
    seeds = sorted(runs)
    if any(set(runs[seed]) != set(objectives) for seed in seeds):
        raise UserError("paired comparison: every seed needs an `ntp` and a `meap` run")
    loaded = {seed: {objective: read_run(runs[seed][objective]) for objective in objectives} for seed in seeds}
    result: dict = {"objectives": list(objectives), "seeds": seeds,
                    "runs": {str(seed): {o: str(runs[seed][o]) for o in objectives} for seed in seeds}}

    def scored(name: str, file: str, key: str, group_keys: tuple[str, ...]) -> dict:
        records = {o: [_jsonl(runs[seed][o] / "eval" / name / file) for seed in seeds] for o in objectives}
        tables = {o: [_scores(r, key, runs[seed][o]) for seed, r in zip(seeds, records[o])] for o in objectives}
        if len({len(row) for rows in tables.values() for row in rows}) > 1:
            raise UserError(f"paired comparison: the runs' {name} evaluations have different numbers of prompts")
        by_seed = {o: [sum(row) / len(row) for row in tables[o]] for o in objectives}
        section = {"by_seed": by_seed, "mean": {o: mean_and_spread(by_seed[o])["mean"] for o in objectives},
                   "paired": paired_difference(tables["ntp"], tables["meap"])}
        for group in group_keys:
            section[f"by_{group}"] = {o: grouped_mean(records[o], group, key) for o in objectives}
        return section

    result["niah"] = scored("niah", RECORDS_FILE, "substring", ("length", "depth"))
    result["mdqa"] = scored("mdqa", RECORDS_FILE, "best_subspan_em", ("gold_position",))

    def last_val_loss(run: dict):
        return next((record["val_loss"] for record in reversed(run["metrics"]) if "val_loss" in record), None)

    val = {o: [last_val_loss(loaded[seed][o]) for seed in seeds] for o in objectives}
    result["val_loss"] = {"by_seed": val, "mean": {o: mean_and_spread(val[o])["mean"] for o in objectives}}

    attention: dict = {}
    for o in objectives:
        averages = []
        for seed in seeds:
            path = runs[seed][o] / "eval" / "attention" / SUMMARY_FILES["attention"]
            if not path.is_file():
                raise UserError(f"{path}: missing (the attention analysis has not run)")
            average = json.loads(path.read_text(encoding="utf-8"))["models"][str(runs[seed][o])]["average"]
            averages.append({"answer_mass": average["segment_mass"]["answer"], "entropy": average["entropy"],
                             "score_decay": average.get("score_decay"),
                             "variance_increase": average.get("variance_increase")})
        attention[o] = {metric: {"by_seed": [a[metric] for a in averages],
                                 "mean": mean_and_spread([a[metric] for a in averages])["mean"]}
                        for metric in ATTENTION_METRICS}
    result["attention"] = attention

    if key_checks:
        multikey = {o: [_jsonl(key_checks[seed][o] / "multikey" / RECORDS_FILE) for seed in seeds] for o in objectives}
        absent = {o: [_jsonl(key_checks[seed][o] / "absent" / RECORDS_FILE) for seed in seeds] for o in objectives}
        tables = {o: [_scores(r, "substring", key_checks[seed][o]) for seed, r in zip(seeds, multikey[o])]
                  for o in objectives}
        by_seed = {o: [sum(row) / len(row) for row in tables[o]] for o in objectives}
        copied = {o: [sum(_scores(r, "distractor_copied", key_checks[seed][o])) / len(r)
                      for seed, r in zip(seeds, absent[o])] for o in objectives}
        result["key_check"] = {
            "multikey": {"by_seed": by_seed, "mean": {o: mean_and_spread(by_seed[o])["mean"] for o in objectives},
                         "paired": paired_difference(tables["ntp"], tables["meap"])},
            "absent_distractor_copied": {"by_seed": copied,
                                         "mean": {o: mean_and_spread(copied[o])["mean"] for o in objectives}},
        }
    return result


def percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def interval_text(paired: dict) -> str:
    low, high = paired["ci95"]
    return f"{100 * paired['difference']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def write_paired_report(comparison: dict, output: Path) -> Path:
    """``comparison.md`` (tables) and ``comparison.png`` (per-seed NIAH and MDQA) in ``output``; returns the .md."""
    seeds = comparison["seeds"]
    niah, mdqa, val = comparison["niah"], comparison["mdqa"], comparison["val_loss"]
    blocks: list[tuple] = [("h1", f"NTP vs MEAP, paired over {len(seeds)} seed(s)")]
    blocks.append(("p", "Scores in percent. Differences are MEAP - NTP in points, with a 95% interval from a "
                        "two-level paired bootstrap (seeds, then prompts within seeds)"
                        + (". With one seed the interval covers prompt sampling only, not the spread between "
                           "training seeds, which at small scale is larger: one seed is an example, not evidence "
                           "(`--seeds` runs several)." if len(seeds) == 1 else ".")))
    rows = [[str(seed), percent(niah["by_seed"]["ntp"][i]), percent(niah["by_seed"]["meap"][i]),
             percent(mdqa["by_seed"]["ntp"][i]), percent(mdqa["by_seed"]["meap"][i]),
             format_value(val["by_seed"]["ntp"][i]), format_value(val["by_seed"]["meap"][i])] for i, seed in enumerate(seeds)]
    rows.append(["mean", percent(niah["mean"]["ntp"]), percent(niah["mean"]["meap"]), percent(mdqa["mean"]["ntp"]),
                 percent(mdqa["mean"]["meap"]), format_value(val["mean"]["ntp"]), format_value(val["mean"]["meap"])])
    blocks += [("h2", "Per seed"), ("table", ["seed", "NIAH NTP", "NIAH MEAP", "MDQA NTP", "MDQA MEAP",
                                              "val loss NTP", "val loss MEAP"], rows)]
    paired_rows = [["NIAH (substring)", interval_text(niah["paired"]), f"{niah['paired']['seeds']} x {niah['paired']['prompts']}"],
                   ["MDQA (best-subspan EM)", interval_text(mdqa["paired"]), f"{mdqa['paired']['seeds']} x {mdqa['paired']['prompts']}"]]
    key_check = comparison.get("key_check")
    if key_check:
        paired = key_check["multikey"]["paired"]
        paired_rows.append(["NIAH with a distractor key", interval_text(paired), f"{paired['seeds']} x {paired['prompts']}"])
    blocks += [("h2", "Paired differences (MEAP - NTP)"), ("table", ["evaluation", "difference [95% CI]",
                                                                      "seeds x prompts"], paired_rows)]
    for title, section, group in (("NIAH by context length (tokens)", niah, "length"),
                                  ("NIAH by needle depth (%)", niah, "depth"),
                                  ("MDQA by gold position (0 = first)", mdqa, "gold_position")):
        groups = list(section[f"by_{group}"]["ntp"])
        blocks += [("h2", title + ", mean over seeds"),
                   ("table", ["objective", *groups],
                    [[o.upper(), *[percent(section[f"by_{group}"][o].get(g)) for g in groups]] for o in OBJECTIVES])]
    attention = comparison["attention"]
    blocks += [("h2", "Attention from the query (mean over layers, probes and seeds)"),
               ("table", ["objective", "mass on the needle", "entropy", "masked-key score decay", "variance increase"],
                [[o.upper(), *[format_value(attention[o][m]["mean"]) for m in ATTENTION_METRICS]] for o in OBJECTIVES])]
    if key_check:
        blocks += [("h2", "Key check: is retrieval key-based?"),
                   ("p", "A distractor needle with another key and value is added; then the asked needle is removed "
                         "(only the distractor is left). A model that copies any number it finds answers the "
                         "distractor's value in the second case; a key-based one does not."),
                   ("table", ["objective", "NIAH, asked + distractor needle", "answered the distractor, asked needle absent"],
                    [[o.upper(), percent(key_check["multikey"]["mean"][o]),
                      percent(key_check["absent_distractor_copied"]["mean"][o])] for o in OBJECTIVES])]
    output.mkdir(parents=True, exist_ok=True)
    plot_paired(comparison, output / "comparison.png")
    blocks.append(("img", "comparison.png"))
    path = output / "comparison.md"
    atomic_write_text(path, markdown(blocks))
    return path
