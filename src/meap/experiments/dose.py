"""The dose-response of ``meap demo`` with ``mask_ratios``: does what the probes measure move with the share
of masked inputs? No torch.

Per seed every branch (NTP, ratio 0, then MEAP at each ratio) continues one shared start, so the seed is a
block and the ratio an ordered treatment. The primary measure, fixed before the run (RESULTS.md), is the
window-mean probe accuracy: the mean of a branch's probe scores over its window, which uses the whole curve
where an onset (:mod:`meap.experiments.paired`) is mostly censored. Its trend over the ratios is tested with Page's L,
two-sided, and sized by the per-seed slope (:func:`meap.stats.trend`), and :func:`decide_trend` reads it.
The same is reported for the final strict score and the clean validation loss, with the onsets and how many
were censored. Recomputed from the records: ``meap experiment recompute RECORDS.json.gz``.
"""

from __future__ import annotations

from meap.errors import UserError
from meap.eval.results import prompt_scores
from meap.experiments.config import arm_ratio
from meap.experiments.figures import plot_dose
from meap.experiments.paired import by_seed, percent, probe_curve
from meap.experiments.protocol import Experiment
from meap.rundir import last_value
from meap.stats import onset, trend

# The decision rule, fixed before the dose-response ran (RESULTS.md): Page's two-sided p on the primary measure.
TREND_ALPHA = 0.05
PRIMARY = "probe_mean"
MEASURES = {
    "probe_mean": "window-mean probe accuracy (%)",
    "strict": "strict score at the end (%)",
    "val_loss": "clean validation loss",
}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def decide_trend(result: dict) -> str:
    """The decision word for :func:`meap.stats.trend`'s result on the primary measure."""
    if result["page_p"] >= TREND_ALPHA:
        return "no-trend-detected"
    return "rises-with-ratio" if result["direction"] == "rising" else "falls-with-ratio"


def dose_response(loaded: dict[int, dict[str, dict]], *, threshold: float, window: int) -> dict:
    """Every measure per seed and ratio with its trend (module docstring); ``loaded`` as for
    :func:`meap.experiments.paired.onset_comparison`, its branches named by :func:`meap.experiments.config.dose_arm`."""
    seeds = sorted(loaded)
    arms = sorted(loaded[seeds[0]], key=arm_ratio) if seeds else []
    if len(seeds) < 2 or len(arms) < 3 or any(set(loaded[seed]) != set(arms) for seed in seeds):
        raise UserError("dose-response: expected >= 2 seeds, each with NTP and MEAP at the same >= 2 mask ratios")
    ratios = [arm_ratio(arm) for arm in arms]
    curves = {arm: [probe_curve(loaded[seed][arm]["metrics"]) for seed in seeds] for arm in arms}
    if any(not tokens for by_seed in curves.values() for tokens, _ in by_seed):
        raise UserError("dose-response: a run has no probe scores in its metrics.jsonl (probe_every)")
    table = {
        "probe_mean": [[_mean(curves[arm][i][1]) for arm in arms] for i in range(len(seeds))],
        "strict": [[_mean(prompt_scores(loaded[seed][arm]["retrieval"], "correct")) for arm in arms] for seed in seeds],
        "val_loss": [[last_value(loaded[seed][arm]["metrics"], "val_loss") for arm in arms] for seed in seeds],
    }
    measures = {
        name: {"by_seed": rows, **trend(rows, ratios)}
        for name, rows in table.items()
        if all(value is not None for row in rows for value in row)
    }
    onsets = {arm: [onset(tokens, values, threshold, window) for tokens, values in curves[arm]] for arm in arms}
    return {
        "seeds": seeds,
        "arms": arms,
        "mask_ratios": ratios,
        "threshold": threshold,
        "window": window,
        "primary": PRIMARY,
        "measures": measures,
        "decision": decide_trend(measures[PRIMARY]),
        "onset_tokens_by_seed": onsets,
        "censored": {arm: sum(x is None for x in onsets[arm]) for arm in arms},
        "distractors": loaded[seeds[0]][arms[0]]["summary"].get("distractors"),
        "curves": {arm: [[list(tokens), list(values)] for tokens, values in curves[arm]] for arm in arms},
    }


_TREND_TEXT = {
    "rises-with-ratio": "rises with the mask ratio",
    "falls-with-ratio": "falls with the mask ratio",
    "no-trend-detected": "no monotone trend detected",
}


def _value(name: str, value: float) -> str:
    return f"{value:.4f}" if name == "val_loss" else percent(value)


def _slope(name: str, result: dict) -> str:
    """The mean per-seed slope per 10 points of mask ratio, with its 95% t-interval."""
    scale = 0.1 if name == "val_loss" else 10.0  # loss per 0.1 of ratio; percentage points per 10 points
    digits = 4 if name == "val_loss" else 1
    slope = result["slope"]
    text = f"{scale * slope['mean']:+.{digits}f}"
    if slope["ci95"]:
        text += f" [{scale * slope['ci95'][0]:+.{digits}f}, {scale * slope['ci95'][1]:+.{digits}f}]"
    return text


def dose_blocks(comparison: dict, config=None) -> list[tuple]:
    """The report's blocks: the primary measure per seed, the verdict, every measure by ratio (its figure: the
    curves and trends, :func:`meap.experiments.figures.plot_dose`)."""
    seeds, arms, measures = comparison["seeds"], comparison["arms"], comparison["measures"]
    ratio_names = [f"{100 * ratio:g}%" for ratio in comparison["mask_ratios"]]
    skill = "copying" if comparison.get("task") == "copy" else "key-based retrieval"
    primary, primary_label = measures[comparison["primary"]], MEASURES[comparison["primary"]].removesuffix(" (%)")
    return [
        ("h1", f"Dose-response: {skill} over mask ratios {', '.join(ratio_names)}, {len(seeds)} seed(s)"),
        (
            "p",
            "Every branch of a seed continues the same shared start; ratio 0 is NTP. Primary measure: the "
            "window-mean probe accuracy (the mean of a branch's probe scores over its window). Trend: Page's L "
            "test over the ratios with seeds as blocks, two-sided p; size: the mean over seeds of each seed's "
            "least-squares slope, per 10 points of mask ratio, with its 95% t-interval.",
        ),
        ("h2", "Window-mean probe accuracy per seed (%)"),
        (
            "table",
            ["seed", *ratio_names],
            [[str(seed), *(percent(value) for value in row)] for seed, row in zip(seeds, primary["by_seed"])],
        ),
        ("h2", "Verdict"),
        (
            "p",
            f"{primary_label[0].upper()}{primary_label[1:]}: Page's two-sided p = {primary['page_p']:.3g}, slope "
            f"{_slope(comparison['primary'], primary)} per 10 points of ratio. Decision: "
            f"**{_TREND_TEXT[comparison['decision']]}**. Onset ({comparison['threshold']:g} over "
            f"{comparison['window']} probes) censored: "
            + ", ".join(f"{name} {comparison['censored'][arm]}" for name, arm in zip(ratio_names, arms))
            + f" of {len(seeds)}.",
        ),
        ("h2", "Every measure by mask ratio (mean over seeds)"),
        (
            "table",
            ["measure", *ratio_names, "slope per 10 points [95% CI]", "Page p (two-sided)"],
            [
                [
                    MEASURES[name],
                    *(_value(name, value) for value in result["mean_by_level"]),
                    _slope(name, result),
                    f"{result['page_p']:.3g}",
                ]
                for name, result in measures.items()
            ],
        ),
    ]


EXPERIMENT = Experiment(
    "dose",
    "demo.json",
    evaluations=("retrieval",),
    # its arms are named by their mask ratio (meap-0.05: meap.experiments.config.dose_arm)
    holds=lambda records: any(
        arm != "ntp" and arm.startswith("meap-") for runs in records.values() if isinstance(runs, dict) for arm in runs
    ),
    load=by_seed,
    verdict=dose_response,
    blocks=dose_blocks,
    figure=lambda comparison, path: plot_dose(comparison, MEASURES, path),
)
