"""The paired NTP-vs-MEAP verdict of ``meap demo``: how many training tokens each objective needs before it
retrieves by key, per seed, and what that says; no torch.

Per seed and objective the probe curve (``probe_accuracy`` in ``metrics.jsonl``, tokens counted from the
branch point) gives the onset (:func:`meap.stats.onset`); a run that never reaches the threshold is
censored at its last probe, and read as censored: which branch crossed first per seed, the exact sign test
on the decided pairs, the log-rank test stratified by seed, and the onset ratio only where both crossed,
through the rule written down before the run (:func:`meap.stats.compare_onsets`). Secondary: the final strict
retrieval score, key selectivity (a distractor's value given when the asked needle is absent), clean
validation loss, and attention onto the values.

Everything is computed from :func:`load_runs` (the run directories) or :func:`read_records` (the gzipped
records file the evidence commits), so every number of RESULTS.md can be recomputed:
``meap experiment recompute results/evidence-cpu.records.json.gz``.
"""

from __future__ import annotations

import json
from pathlib import Path

from meap.constants import OBJECTIVES
from meap.errors import UserError
from meap.eval.results import RECORDS_FILE, prompt_scores, summary_file
from meap.eval.results import read_records as read_jsonl
from meap.experiments.figures import plot_onsets
from meap.experiments.protocol import Experiment
from meap.fsutil import read_json_gz, write_json_gz
from meap.rundir import RunDir, last_value, without_timing
from meap.stats import compare_onsets, mean_and_spread, onset, paired_difference, seed_statistics


def load_runs(runs: dict[int, dict[str, Path]]) -> dict[int, dict[str, dict]]:
    """seed -> objective -> {"metrics", "retrieval": per-prompt records, "summary": the retrieval summary}."""
    loaded: dict = {}
    for seed, by_objective in runs.items():
        loaded[seed] = {}
        for objective, run in by_objective.items():
            run_dir = RunDir(run)
            where = run_dir.evaluation("retrieval")
            for path in (run_dir.metrics_file, where / RECORDS_FILE, where / summary_file("retrieval")):
                if not path.is_file():
                    raise UserError(f"{path}: missing (the run or its evaluation has not finished)")
            loaded[seed][objective] = {
                "metrics": run_dir.read_metrics(),
                "retrieval": read_jsonl(where / RECORDS_FILE),
                "summary": json.loads((where / summary_file("retrieval")).read_text(encoding="utf-8")),
            }
    return loaded


def write_records(loaded: dict[int, dict[str, dict]], path: Path) -> None:
    """The loaded runs as one gzipped JSON file (``meap experiment recompute FILE`` recomputes the verdict)."""
    write_json_gz(path, {str(seed): runs for seed, runs in loaded.items()})


def read_records(path: Path) -> dict[int, dict[str, dict]]:
    try:
        content = read_json_gz(path)
    except (OSError, EOFError, ValueError) as error:
        raise UserError(f"{path}: expected a gzipped JSON records file written by meap demo ({error})") from None
    return by_seed(content, path)


def by_seed(content, path: Path) -> dict[int, dict[str, dict]]:
    """A records file's content (read from ``path``) as seed -> arm -> run."""
    try:
        return {int(seed): runs for seed, runs in content.items()}
    except (ValueError, AttributeError) as error:
        raise UserError(f"{path}: expected a gzipped JSON records file written by meap demo ({error})") from None


def probe_curve(metrics: list[dict]) -> tuple[list[int], list[float]]:
    """(training tokens, probe accuracy) of every record that holds a probe score."""
    scored = [record for record in metrics if "probe_accuracy" in record]
    return [record["tokens"] for record in scored], [record["probe_accuracy"] for record in scored]


def onset_comparison(loaded: dict[int, dict[str, dict]], *, threshold: float, window: int) -> dict:
    """NTP vs MEAP over seeds (module docstring); ``loaded`` from :func:`load_runs` or :func:`read_records`."""
    seeds = sorted(loaded)
    objectives = OBJECTIVES
    if any(set(loaded[seed]) != set(objectives) for seed in seeds):
        raise UserError("paired comparison: every seed needs an `ntp` and a `meap` run")
    curves = {o: [probe_curve(loaded[seed][o]["metrics"]) for seed in seeds] for o in objectives}
    if any(not tokens for by_seed in curves.values() for tokens, _ in by_seed):
        raise UserError("paired comparison: a run has no probe scores in its metrics.jsonl (probe_every)")
    onsets = {o: [onset(tokens, values, threshold, window) for tokens, values in curves[o]] for o in objectives}
    ends = {o: [tokens[-1] for tokens, _ in curves[o]] for o in objectives}
    # a censored branch is censored at its own window's end (a branch that crossed may have stopped early)
    horizons = [
        min((ends[o][i] for o in objectives if onsets[o][i] is None), default=ends["ntp"][i]) for i in range(len(seeds))
    ]
    verdict = compare_onsets(onsets["ntp"], onsets["meap"], horizons)
    result = {
        "seeds": seeds,
        "objectives": list(objectives),
        "threshold": threshold,
        "window": window,
        "onset_tokens_by_seed": onsets,
        "window_tokens_by_seed": ends,
        "censored": {o: sum(x is None for x in onsets[o]) for o in objectives},
        **verdict,
        "curves": {o: [[list(tokens), list(values)] for tokens, values in curves[o]] for o in objectives},
    }
    retrieval = {o: [loaded[seed][o]["retrieval"] for seed in seeds] for o in objectives}
    strict = {o: [prompt_scores(records, "correct") for records in retrieval[o]] for o in objectives}
    absent = {o: [prompt_scores(records, "distractor", absent=True) for records in retrieval[o]] for o in objectives}
    result["distractors"] = loaded[seeds[0]]["ntp"]["summary"].get("distractors")
    result["niah_by_seed"] = {o: [sum(row) / len(row) for row in strict[o]] for o in objectives}
    result["strict"] = {
        "mean": {o: mean_and_spread(result["niah_by_seed"][o])["mean"] for o in objectives},
        "paired": paired_difference(strict["ntp"], strict["meap"]),
    }
    if all(absent[o][0] for o in objectives):
        by_seed = {o: [sum(row) / len(row) for row in absent[o]] for o in objectives}
        result["absent_distractor_given"] = {
            "by_seed": by_seed,
            "mean": {o: mean_and_spread(by_seed[o])["mean"] for o in objectives},
            "paired": paired_difference(absent["ntp"], absent["meap"]),
        }
    val = {o: [last_value(loaded[seed][o]["metrics"], "val_loss") for seed in seeds] for o in objectives}
    result["val_loss"] = {"by_seed": val, "mean": {o: mean_and_spread(val[o])["mean"] for o in objectives}}
    if all(v is not None for o in objectives for v in val[o]):
        result["val_loss"]["paired"] = seed_statistics([m - n for n, m in zip(val["ntp"], val["meap"])])
    attention = {o: [loaded[seed][o]["summary"].get("attention") for seed in seeds] for o in objectives}
    if all(a for o in objectives for a in attention[o]):
        result["attention"] = {
            o: {
                key: mean_and_spread([a["average"][key] for a in attention[o]])["mean"]
                for key in attention[o][0]["average"]
            }
            for o in objectives
        }
        result["attention_by_layer"] = {
            o: [
                {
                    key: sum(a["layers"][i][key] for a in attention[o]) / len(seeds)
                    for key in attention[o][0]["layers"][i]
                }
                for i in range(len(attention[o][0]["layers"]))
            ]
            for o in objectives
        }
    return result


def percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def interval_text(paired: dict, scale: float = 100) -> str:
    """``+d [low, high]`` of a paired difference (percentage points by default)."""
    if paired["ci95"] is None:
        return f"{scale * paired['difference']:+.1f} (no interval)"
    low, high = paired["ci95"]
    only = " (prompts only: one seed)" if paired.get("seeds") == 1 else ""
    return f"{scale * paired['difference']:+.1f} [{scale * low:+.1f}, {scale * high:+.1f}]{only}"


def _millions(tokens) -> str:
    return "censored" if tokens is None else f"{tokens / 1e6:.2f}M"


_DECISION_TEXT = {
    "meap-faster": "MEAP is more data-efficient",
    "meap-slower": "MEAP is slower",
    "no-relevant-difference": "no relevant difference (nothing censored, the ratio's interval within [0.8, 1.25])",
}


def _p(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def onset_blocks(comparison: dict, config=None) -> list[tuple]:
    """The report's blocks: the onsets per seed, the verdict, the secondary measures (its figure: the curves
    and onsets, :func:`meap.experiments.figures.plot_onsets`)."""
    seeds, onsets = comparison["seeds"], comparison["onset_tokens_by_seed"]
    skill = "copy" if comparison.get("task") == "copy" else "retrieve by key"
    blocks: list[tuple] = [("h1", f"NTP vs MEAP: tokens to {skill}, paired over {len(seeds)} seed(s)")]
    blocks.append(
        (
            "p",
            f"Onset: the training tokens after the branch point at which the probes' moving accuracy "
            f"({comparison['window']} probes) first reaches {comparison['threshold']:g}; 'censored' runs "
            "never did within their window, and are read as censored, never as equal: per seed, which branch "
            "crossed first (both censored: undecided). Ratio onset MEAP / onset NTP only where both crossed."
            + (" One or two seeds are an example, not evidence." if len(seeds) < 3 else ""),
        )
    )
    rows = [
        [
            str(seed),
            _millions(onsets["ntp"][i]),
            _millions(onsets["meap"][i]),
            {"ntp": "NTP", "meap": "MEAP", "tie": "tie", None: "undecided"}[comparison["first_by_seed"][i]],
            "n/a" if None in (onsets["ntp"][i], onsets["meap"][i]) else f"{onsets['meap'][i] / onsets['ntp'][i]:.2f}",
        ]
        for i, seed in enumerate(seeds)
    ]
    blocks += [("h2", "Onset per seed"), ("table", ["seed", "NTP", "MEAP", "first", "ratio MEAP / NTP"], rows)]
    interval = comparison["ratio_ci95"]
    ratio_text = (
        f"{comparison['ratio']:.2f}"
        + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")
        + (f" ({comparison['ratio_reason']})" if comparison["ratio_reason"] else "")
        if comparison["ratio"] is not None
        else comparison["ratio_reason"]
    )
    gain = comparison["paper_gain_excluded"]
    decision = comparison["decision"]
    blocks += [
        ("h2", "Verdict"),
        (
            "p",
            f"Decision: **{_DECISION_TEXT.get(decision, decision)}**. Decided pairs: {comparison['decided_pairs']} "
            f"of {len(seeds)} (MEAP first {comparison['meap_first']}, NTP first {comparison['ntp_first']}; "
            f"ties {comparison['ties']}, both censored {comparison['both_censored']}); exact sign test "
            f"p = {_p(comparison['sign_p'])}, log-rank stratified by seed p = {_p(comparison['logrank_p'])}. "
            f"Ratio onset MEAP / onset NTP: {ratio_text}"
            + (
                ""
                if gain is None
                else f"; a gain of 2x or more (the paper's direction) is {'excluded' if gain else 'not excluded'}"
            )
            + f". Censored runs: NTP {comparison['censored']['ntp']}, MEAP {comparison['censored']['meap']} "
            f"of {len(seeds)}.",
        ),
    ]
    strict, val = comparison["strict"], comparison["val_loss"]
    measured = "copying, next word" if comparison.get("task") == "copy" else "strict key-based retrieval"
    secondary = [
        [
            f"{measured} at the end (%)",
            percent(strict["mean"]["ntp"]),
            percent(strict["mean"]["meap"]),
            interval_text(strict["paired"]),
        ]
    ]
    absent = comparison.get("absent_distractor_given")
    if absent:
        secondary.append(
            [
                "asked needle absent: a distractor's value given (%)",
                percent(absent["mean"]["ntp"]),
                percent(absent["mean"]["meap"]),
                interval_text(absent["paired"]),
            ]
        )
    paired_val = val.get("paired")
    val_interval = (
        (
            f"{paired_val['mean']:+.4f}"
            + (f" [{paired_val['ci95'][0]:+.4f}, {paired_val['ci95'][1]:+.4f}]" if paired_val["ci95"] else "")
        )
        if paired_val
        else "n/a"
    )
    secondary.append(
        [
            "clean validation loss",
            f"{val['mean']['ntp']:.4f}" if val["mean"]["ntp"] else "n/a",
            f"{val['mean']['meap']:.4f}" if val["mean"]["meap"] else "n/a",
            val_interval,
        ]
    )
    attention = comparison.get("attention")
    if attention:
        for key, label in (
            ("answer_mass", "attention onto the asked value"),
            ("distractor_mass", "attention onto the distractors' values"),
            ("entropy", "attention entropy"),
        ):
            secondary.append(
                [f"{label} (mean over layers)", f"{attention['ntp'][key]:.3f}", f"{attention['meap'][key]:.3f}", ""]
            )
    return blocks + [
        ("h2", "Secondary measures (end of the window)"),
        ("table", ["measure", "NTP", "MEAP", "MEAP - NTP [95% CI]"], secondary),
    ]


EXPERIMENT = Experiment(
    "demo",
    "demo.json",
    evaluations=("retrieval",),
    holds=lambda records: True,  # matched last: any records file of runs by seed and arm
    load=by_seed,
    verdict=onset_comparison,
    blocks=onset_blocks,
    figure=plot_onsets,
)


# Summary fields that name where a run lay, not what it computed.
PLACE_KEYS = ("model", "probe_file")


def differences(
    first: dict[int, dict[str, dict]], second: dict[int, dict[str, dict]], arms: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Where the runs of two records files differ, timings (:data:`meap.rundir.TIMING_KEYS`) and places aside:
    for every seed of both and every run of ``first`` that ``second`` holds under its own name or under
    ``arms[name]``. Returns the runs compared ("seed S NAME") and one line per difference."""
    named = {name for runs in first.values() for name in runs}, {name for runs in second.values() for name in runs}
    for mine, others in arms.items():
        if mine not in named[0] or others not in named[1]:
            raise UserError(f"--arm {mine}={others}: expected a run of the first file = a run of the second")
    compared, found = [], []
    for seed in sorted(set(first) & set(second)):
        for name, run in first[seed].items():
            other = second[seed].get(arms.get(name, name))
            if other is None:
                continue
            where = f"seed {seed} {name}"
            compared.append(where)
            mine, theirs = without_timing(run["metrics"]), without_timing(other["metrics"])
            if mine != theirs:
                step = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
                found.append(f"{where}: metrics differ from record {step}")
            if run["retrieval"] != other["retrieval"]:
                found.append(f"{where}: per-prompt retrieval records differ")
            summaries = [{k: v for k, v in r["summary"].items() if k not in PLACE_KEYS} for r in (run, other)]
            if summaries[0] != summaries[1]:
                found.append(f"{where}: retrieval summaries differ")
    if not compared:
        raise UserError("the two records files hold no run of the same seed and name (map names with --arm)")
    return compared, found
