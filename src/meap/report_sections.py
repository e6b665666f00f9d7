"""The sections of ``meap compare``'s report, one per evaluation kind (NIAH, MDQA, key-based retrieval,
lm-eval, attention; each kind's record in :mod:`meap.eval.results` names its writer), and the paired-by-seed
table: each appends its blocks (headings, tables, figures) to the report. Plain files in, no torch."""

from __future__ import annotations

import json
from pathlib import Path

from meap.constants import OBJECTIVES
from meap.eval.kind import RECORDS_FILE, by_label, format_value, read_records, section
from meap.eval.results import KINDS, kind_of, prompt_scores, summary_file
from meap.plots import plot_accuracy_by_position, plot_attention_layers, plot_niah_heatmap, plot_segment_mass
from meap.rundir import ARTIFACT_DIRS, RunDir, last_value
from meap.stats import paired_difference, seed_statistics


def niah_cells(summary: dict) -> dict[tuple, float]:
    return {(cell["length"], cell["depth"]): cell["substring"] for cell in summary["cells"]}


def mdqa_section(blocks: list[tuple], loaded: dict[str, dict], title: str, figure: Path) -> None:
    mdqa = section(blocks, loaded, "mdqa", title)
    if not mdqa:
        return
    series = {
        name: {int(p): v for p, v in s["accuracy_by_gold_position"].items() if v is not None}
        for name, s in mdqa.items()
    }
    examples = {
        name: {int(p): n for p, n in s.get("examples_by_gold_position", {}).items()} for name, s in mdqa.items()
    }
    plot_accuracy_by_position(series, figure, examples=examples)
    positions = sorted({p for by in series.values() for p in by})
    forced = any("teacher_forced_accuracy" in s for s in mdqa.values())
    blocks += [
        ("img", figure.name),
        (
            "table",
            [
                "run",
                "overall",
                *[f"gold {p + 1}" for p in positions],
                "examples",
                *(["teacher-forced EM", "answer log-probability"] if forced else []),
            ],
            [
                [
                    name,
                    format_value(mdqa[name]["accuracy"]),
                    *[format_value(series[name].get(p)) for p in positions],
                    str(mdqa[name].get("num_examples", "n/a")),
                    *(
                        [
                            format_value(mdqa[name].get("teacher_forced_accuracy")),
                            format_value(mdqa[name].get("mean_answer_logprob")),
                        ]
                        if forced
                        else []
                    ),
                ]
                for name in mdqa
            ],
        ),
    ]


def retrieval_section(blocks: list[tuple], loaded: dict[str, dict], title: str) -> None:
    retrieval = section(blocks, loaded, "retrieval", title)
    if retrieval:
        blocks.append(
            (
                "table",
                [
                    "run",
                    "strict",
                    "distractor given",
                    "asked needle absent: distractor given",
                    "teacher-forced accuracy",
                    "prompts",
                ],
                [
                    [
                        name,
                        format_value(s["strict"]),
                        format_value(s["distractor_given"]),
                        format_value(s.get("absent_distractor_given")),
                        format_value((s.get("teacher_forced") or {}).get("accuracy")),
                        str(s["probes"]),
                    ]
                    for name, s in retrieval.items()
                ],
            )
        )


def harness_section(blocks: list[tuple], loaded: dict[str, dict], title: str) -> None:
    harness = {name: summary["results"] for name, summary in section(blocks, loaded, "harness", title).items()}
    if harness:
        columns = sorted(
            {
                (task, metric)
                for results in harness.values()
                for task, metrics in results.items()
                for metric, value in metrics.items()
                if isinstance(value, float) and "stderr" not in metric
            }
        )
        blocks.append(
            (
                "table",
                ["run", *[f"{task} {metric}" for task, metric in columns]],
                [
                    [name, *[format_value(results.get(task, {}).get(metric)) for task, metric in columns]]
                    for name, results in harness.items()
                ],
            )
        )


def arms(loaded: dict[str, dict]) -> dict[str, str | None]:
    """Each run's arm, from its config: its objective, and for MEAP its mask ratio too (``meap-0.05``) where
    the runs hold MEAP at more than one ratio. The arms are whatever the runs are: no arm is named here."""

    def ratio(run: dict):
        return run["config"].get("mask_ratio")

    meap = {ratio(run) for run in loaded.values() if run["config"].get("objective") == OBJECTIVES[1]}
    return {
        name: f"{OBJECTIVES[1]}-{ratio(run):g}"
        if len(meap) > 1 and run["config"].get("objective") == OBJECTIVES[1]
        else run["config"].get("objective")
        for name, run in loaded.items()
    }


def arm_order(names) -> list[str]:
    """Arms in the order comparisons read them: the baseline (NTP) first, then by name."""
    return sorted(names, key=lambda arm: (arm != OBJECTIVES[0], str(arm)))


def arm_title(arm: str) -> str:
    return arm.upper()


def seed_pair_names(loaded: dict[str, dict]) -> dict:
    """seed -> {arm: name}, the baseline arm first: the seeds (from the runs' configs) with exactly one run of
    every arm the runs hold (at least two arms)."""
    by_seed: dict = {}
    arm_by_name = arms(loaded)
    order = arm_order({arm for arm in arm_by_name.values() if arm is not None})
    if len(order) < 2:
        return {}
    for name, run in loaded.items():
        by_seed.setdefault(run["config"].get("seed"), {}).setdefault(arm_by_name[name], []).append(name)
    return {
        seed: {arm: names[arm][0] for arm in order}
        for seed, names in sorted(by_seed.items(), key=str)
        if all(len(names.get(arm, [])) == 1 for arm in order)
    }


def seed_pairs(loaded: dict[str, dict]) -> dict:
    """seed -> {arm: run}, as :func:`seed_pair_names`."""
    return {seed: {o: loaded[name] for o, name in pair.items()} for seed, pair in seed_pair_names(loaded).items()}


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


def niah_section(blocks: list[tuple], loaded: dict[str, dict], kind: str, title: str, output: Path, stem: str) -> None:
    """Heatmaps, the table and the differences (MEAP - NTP by seed, else to the first run), of one NIAH evaluation
    (``stem``: its files)."""
    niah = section(blocks, loaded, kind, f"{title} (share of required values recalled)")
    for index, (name, summary) in enumerate(niah.items()):
        file = f"{stem}_{index}.png"
        plot_niah_heatmap(
            [
                {"length": c["length"], "depth": c["depth"], "score": c["substring"], "samples": c.get("samples")}
                for c in summary["cells"]
            ],
            output / file,
            title=f"{title}: {name} (overall {summary['overall']['substring']:.3f})",
        )
        blocks.append(("img", file))
    if niah:
        blocks.append(
            (
                "table",
                ["run", "substring match", "ROUGE-1 F (earned by echoing, too)", "cells", "prompts"],
                [
                    [
                        name,
                        format_value(s["overall"]["substring"]),
                        format_value(s["overall"]["rouge1_f"]),
                        str(len(s["cells"])),
                        str(sum(c.get("samples", 0) for c in s["cells"]) or "n/a"),
                    ]
                    for name, s in niah.items()
                ],
            )
        )
    # each arm minus the baseline within each seed where the runs pair by seed, else each run minus the first
    pairs = [
        (pair[arm], pair[reference])
        for pair in seed_pair_names(loaded).values()
        for reference, *others in [list(pair)]
        for arm in others
        if pair[reference] in niah and pair[arm] in niah
    ]
    names = list(niah)
    for index, (name, baseline) in enumerate(pairs or [(name, names[0]) for name in names[1:]], 1):
        base, other = niah_cells(niah[baseline]), niah_cells(niah[name])
        shared = sorted(set(base) & set(other))
        if shared:
            file = f"{stem}_diff_{index}.png"
            plot_niah_heatmap(
                [
                    {"length": length, "depth": depth, "score": other[(length, depth)] - base[(length, depth)]}
                    for length, depth in shared
                ],
                output / file,
                title=f"{title}: {name} minus {baseline}",
                difference=True,
            )
            blocks += [("p", f"Difference, {name} minus {baseline}:"), ("img", file)]


def niah_report(blocks: list[tuple], loaded: dict[str, dict], output: Path) -> None:
    """NIAH, and each RULER variant found a section of its own; each evaluation directory apart."""
    variants = sorted({kind for run in loaded.values() for kind in run["evaluations"] if kind.startswith("niah-")})
    for kind in ["niah", *variants]:
        title = "Needle in a haystack" + (f", {kind.removeprefix('niah-')}" if kind != "niah" else "")
        for index, heading, view in by_label(loaded, kind, title):
            stem = kind.replace("-", "_") + (f"_{index}" if index else "")
            niah_section(blocks, view, kind, heading, output, stem=stem)


def mdqa_report(blocks: list[tuple], loaded: dict[str, dict], output: Path) -> None:
    for index, heading, view in by_label(loaded, "mdqa", "Multi-document QA (best-subspan EM by gold position)"):
        mdqa_section(blocks, view, heading, output / ("mdqa.png" if not index else f"mdqa_{index}.png"))


def retrieval_report(blocks: list[tuple], loaded: dict[str, dict], output: Path) -> None:
    for _, heading, view in by_label(loaded, "retrieval", "Key-based retrieval (strict: the asked value alone)"):
        retrieval_section(blocks, view, heading)


def harness_report(blocks: list[tuple], loaded: dict[str, dict], output: Path) -> None:
    for _, heading, view in by_label(loaded, "harness", "lm-evaluation-harness"):
        harness_section(blocks, view, heading)


def attention_by_run(loaded: dict[str, dict]) -> dict[str, tuple[dict, Path]]:
    """run name -> (its model's entry, the attention.json holding it). One `meap analyze attention` may cover
    several runs (its models are their directories), and it may be saved inside any of them."""

    def same(model: str, run: Path) -> bool:
        return Path(model).resolve() in (run.resolve(), RunDir(run).final_dir.resolve())

    found: dict[str, tuple[dict, Path]] = {}
    for run in loaded.values():
        for path in sorted(run["path"].rglob(summary_file("attention"))):
            if ARTIFACT_DIRS & set(path.relative_to(run["path"]).parts[:-1]):
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(data, dict) or kind_of(data) != "attention":
                continue
            for model, result in data["models"].items():
                for name, other in loaded.items():
                    if name not in found and same(model, other["path"]):
                        found[name] = (result, path)
            owner = next(name for name, other in loaded.items() if other is run)
            if owner not in found and len(data["models"]) == 1:  # its one model, named from another directory
                found[owner] = (next(iter(data["models"].values())), path)
    return {name: found[name] for name in loaded if name in found}


def attention_report(blocks: list[tuple], loaded: dict[str, dict], output: Path) -> None:
    attention = attention_by_run(loaded)
    blocks.append(("h2", "Attention (from the query, mean over layers)"))
    blocks += [("p", f"{name}: absent.") for name in loaded if name not in attention]
    if not attention:
        return
    results = {name: result for name, (result, _) in attention.items()}
    segments = ("before", "answer", "after", "query")
    blocks += [
        ("img", plot_segment_mass(results, output / "segment_mass.png").name),
        ("img", plot_attention_layers(results, output / "layers.png").name),
        (
            "table",
            ["run", "samples", *segments, "entropy", "score decay", "variance increase", "file"],
            [
                [
                    name,
                    str(result["samples"]),
                    *[format_value(result["average"]["segment_mass"][segment]) for segment in segments],
                    format_value(result["average"]["entropy"]),
                    format_value(result["average"].get("score_decay")),
                    format_value(result["average"].get("variance_increase")),
                    str(file),
                ]
                for name, (result, file) in attention.items()
            ],
        ),
    ]
