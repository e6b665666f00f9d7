"""The paired-by-seed table of ``meap compare``'s report: each arm minus the baseline within each training seed,
on the validation loss and on every evaluation kind that scores per prompt (its ``paired_score``), with the
seed-level statistics of :mod:`meap.stats` and the pre-stated rule's reading. Plain files in, no torch."""

from __future__ import annotations

from meap.arms import arm_title, seed_pairs
from meap.eval.kind import RECORDS_FILE, format_value, read_records
from meap.eval.results import KINDS, prompt_scores
from meap.rundir import last_value
from meap.stats import paired_difference, seed_statistics


def paired_by_seed(blocks: list[tuple], loaded: dict[str, dict]) -> None:
    """Each arm minus the baseline (MEAP - NTP) paired by training seed (each run's config), with the
    seed-level statistics of :mod:`meap.stats`: the validation loss, and each evaluation scored per prompt in
    both runs of every seed."""
    pairs = seed_pairs(loaded)
    if not pairs:
        return
    reference, *others = next(iter(pairs.values()))
    for arm in others:
        _paired_arm(blocks, pairs, arm, reference)


def _paired_arm(blocks: list[tuple], pairs: dict, arm: str, reference: str) -> None:
    seeds = list(pairs)
    mine, base = arm_title(arm), arm_title(reference)
    blocks += [
        ("h2", f"{mine} - {base}, paired by seed ({len(seeds)} seed(s): {', '.join(map(str, seeds))})"),
        (
            "p",
            f"Each seed's {mine} run minus its {base} run (seeds read from the runs' configs); the mean over "
            "seeds with a 95% t-interval (seeds and prompts as crossed factors), the exact sign-flip p and "
            "the Hodges-Lehmann estimate. "
            + (
                "With one seed the interval covers prompt sampling only: one seed is an example, not evidence."
                if len(seeds) == 1
                else ""
            ),
        ),
    ]
    if len(seeds) > 1:
        blocks.append(
            (
                "p",
                f"With {len(seeds)} seeds the exact sign-flip p cannot go below {2 / 2 ** len(seeds):.3g}: "
                + ("it cannot reach 0.05 (that takes 6 seeds)." if len(seeds) < 6 else "it can reach 0.05."),
            )
        )
    rows = []
    val = [[last_value(pairs[s][o]["metrics"], "val_loss") for o in (reference, arm)] for s in seeds]
    if all(n is not None and m is not None for n, m in val):
        statistics = seed_statistics([m - n for n, m in val])
        rows.append(
            [
                "validation loss",
                _interval(statistics["mean"], statistics["ci95"], "{:+.4f}"),
                format_value(statistics["sign_flip_p"]),
                f"{statistics['hodges_lehmann']:+.4f}",
                f"{len(seeds)} x 1",
                reading(statistics["ci95"], "lower", mine, base),
            ]
        )
    for kind, (key, measure), unit in (
        (name, kind.paired_score, kind.paired_unit) for name, kind in KINDS.items() if kind.paired_score
    ):
        shared = set.intersection(
            *(set(pairs[s][o]["evaluations"].get(kind, {})) for s in seeds for o in (reference, arm))
        )
        for directory in sorted(shared):
            label = f"{measure} [{directory}]" if len(shared) > 1 else measure
            files = {
                o: [pairs[s][o]["evaluations"][kind][directory][0].parent / RECORDS_FILE for s in seeds]
                for o in (reference, arm)
            }
            tables = {
                o: [prompt_scores(read_records(file), key, unit=unit) for file in files[o]] for o in (reference, arm)
            }
            if len({len(row) for rows_ in tables.values() for row in rows_}) != 1:
                rows.append([label, "the runs were evaluated on different numbers of prompts", "", "", "", ""])
                continue
            if any(score is None for rows_ in tables.values() for row in rows_ for score in row):
                rows.append([label, "not scored per prompt in every run", "", "", "", ""])
                continue
            every = {score for rows_ in tables.values() for row in rows_ for score in row}
            if len(every) == 1:  # one value for every prompt of every run: the measure cannot tell them apart
                bound = {0.0: "floor", 1.0: "ceiling"}.get(every.pop(), "same value")
                rows.append([label, f"both arms at the {bound} on every prompt", "", "", "", "nothing to conclude"])
                continue
            paired = paired_difference(tables[reference], tables[arm])
            rows.append(
                [
                    label,
                    _interval(paired["difference"], paired["ci95"], "{:+.3f}"),
                    format_value(paired["sign_flip_p"]),
                    f"{paired['hodges_lehmann']:+.3f}",
                    f"{paired['seeds']} x {paired['prompts']}",
                    reading(paired["ci95"], "higher", mine, base),
                ]
            )
    blocks.append(
        (
            "table",
            ["measure", f"{mine} - {base} [95% CI]", "sign-flip p", "Hodges-Lehmann", "seeds x prompts", "reading"],
            rows,
        )
    )
    blocks.append(
        (
            "p",
            "Reading: an interval that excludes 0 says which arm is better on that measure (higher "
            "scores, lower loss); one that includes it, no detectable difference. With one seed it describes "
            "the prompts of that one training run, not the arm.",
        )
    )


def reading(interval: list[float] | None, better: str, arm: str = "MEAP", reference: str = "NTP") -> str:
    """The pre-stated rule's reading of an ``arm`` - ``reference`` interval: ``better`` is the direction that
    is better."""
    if interval is None:
        return "no interval"
    low, high = interval
    if low > 0 or high < 0:
        return f"{arm} better" if (low > 0) == (better == "higher") else f"{reference} better"
    return "no detectable difference"


def _interval(value: float, interval: list[float] | None, form: str) -> str:
    text = form.format(value)
    return text + (f" [{form.format(interval[0])}, {form.format(interval[1])}]" if interval else " (no interval)")
