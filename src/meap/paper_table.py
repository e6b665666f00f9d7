"""The paper's table in ``meap compare``: a row per measure of every evaluation found, a column per run (or, where
the runs pair by seed, NTP and MEAP means over seeds and MEAP - NTP with its seed-level interval), and beside them
the paper's own result, labelled as the paper's. The measures and the paper's results come from the evaluation
kinds' records (``paper_rows``, ``paper``). Plain files in, no torch."""

from __future__ import annotations

from meap.arms import arm_title, seed_pairs
from meap.eval.kind import format_value
from meap.eval.results import KINDS, kind_of
from meap.stats import seed_statistics


def measures_by_run(loaded: dict[str, dict]) -> dict[str, dict[str, float | None]]:
    """run -> {measure: value} for every evaluation whose kind gives the paper's table rows; an evaluation kind held
    under several directories gets its directory in the measure's name."""
    labels: dict[str, set] = {}
    for run in loaded.values():
        for section, found in run["evaluations"].items():
            labels.setdefault(section, set()).update(found)
    table: dict[str, dict[str, float | None]] = {name: {} for name in loaded}
    for name, run in loaded.items():
        for section, found in run["evaluations"].items():
            for label, (_, summary) in sorted(found.items()):
                kind = KINDS[kind_of(summary)]
                if kind.paper_rows is None or kind.entries:
                    continue
                suffix = f" [{label}]" if len(labels[section]) > 1 else ""
                for measure, value in kind.paper_rows(summary).items():
                    table[name][measure + suffix] = value
    for kind in KINDS.values():  # a kind whose summaries cover several runs: each run's entry
        if kind.paper_rows and kind.entries:
            for name, (entry, _) in kind.entries(loaded).items():
                table[name].update(kind.paper_rows(entry))
    return table


def paper_result(measure: str) -> str:
    for kind in KINDS.values():
        for reported, text in (kind.paper or {}).items():
            if measure == reported or measure.startswith(reported + " ["):
                return text
    return ""


def paper_table(blocks: list[tuple], loaded: dict[str, dict]) -> None:
    """Append the paper's table (nothing when no run holds an evaluation with rows)."""
    by_run = measures_by_run(loaded)
    measures = list(dict.fromkeys(measure for values in by_run.values() for measure in values))
    if not measures:
        return
    blocks.append(("h2", "The paper's table"))
    pairs = seed_pairs(loaded)
    paired = pairs and sum(len(pair) for pair in pairs.values()) == len(loaded)
    if paired:
        names = {id(run): name for name, run in loaded.items()}
        reference, *others = order = list(next(iter(pairs.values())))
        header = [
            "measure",
            f"{arm_title(reference)} (mean of {len(pairs)} seeds)",
            *(f"{arm_title(arm)} (mean of {len(pairs)})" for arm in others),
            *(f"{arm_title(arm)} - {arm_title(reference)} [95% CI]" for arm in others),
        ]
        rows = []
        for measure in measures:
            values = {arm: [by_run[names[id(pair[arm])]].get(measure) for pair in pairs.values()] for arm in order}
            cells = [_mean([v for v in values[arm] if v is not None]) for arm in order]
            differences = [
                _difference([m - n for n, m in zip(values[reference], values[arm]) if n is not None and m is not None])
                for arm in others
            ]
            rows.append([measure, *map(format_value, cells), *differences])
    else:
        header = ["measure", *loaded]
        rows = [[measure, *[format_value(by_run[name].get(measure)) for name in loaded]] for measure in measures]
    blocks += [
        (
            "p",
            "Each measure as this run's evaluations give it"
            + (f", {' and '.join(map(arm_title, order))} paired by training seed" if paired else "")
            + "; the last column is the paper's result as the spec reads it (reported numbers for a 1.1B model "
            "trained on up to 200B tokens, not verified here), for reference, not for comparison.",
        ),
        ("table", [*header, "the paper (reported)"], [[*row, paper_result(row[0])] for row in rows]),
    ]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _difference(differences: list[float]) -> str:
    if not differences:
        return "n/a"
    statistics = seed_statistics(differences)
    interval = statistics["ci95"]
    return f"{statistics['mean']:+.4f}" + (
        f" [{interval[0]:+.4f}, {interval[1]:+.4f}]" if interval else f" ({len(differences)} seed: no interval)"
    )
