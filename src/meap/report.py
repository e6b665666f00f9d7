"""Plots of evaluation results and the comparison report of runs.

Reads plain files (``metrics.jsonl``, ``config.yaml``, the evaluations' ``summary.json`` / ``results.json``
/ ``attention.json``); no torch, no transformers.
"""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_niah_heatmap(cells: list[dict], path: Path, title: str = "Needle in a haystack",
                      difference: bool = False) -> Path:
    """The usual NIAH picture: x = context length (tokens), y = needle depth (%), colour = mean score.

    ``cells``: ``[{"length": int, "depth": float, "score": float}, ...]``; a missing cell is left blank.
    ``difference``: the scores are differences in [-1, 1] (a diverging scale centred on 0).
    """
    plt = _pyplot()
    from matplotlib.colors import LinearSegmentedColormap

    lengths = sorted({cell["length"] for cell in cells})
    depths = sorted({cell["depth"] for cell in cells})
    grid = [[float("nan")] * len(lengths) for _ in depths]
    for cell in cells:
        grid[depths.index(cell["depth"])][lengths.index(cell["length"])] = cell["score"]
    colours = LinearSegmentedColormap.from_list("niah", ["#F0496E", "#FFFFFF" if difference else "#EBB839", "#0CD79F"])
    figure, axes = plt.subplots(figsize=(1.2 + 0.9 * len(lengths), 1.0 + 0.45 * len(depths)))
    image = axes.imshow(grid, cmap=colours, vmin=-1.0 if difference else 0.0, vmax=1.0, aspect="auto")
    for y, row in enumerate(grid):
        for x, value in enumerate(row):
            if value == value:  # not NaN
                axes.text(x, y, f"{value:+.2f}" if difference else f"{value:.2f}", ha="center", va="center", fontsize=8)
    axes.set_xticks(range(len(lengths)), [str(length) for length in lengths])
    axes.set_yticks(range(len(depths)), [f"{depth:g}" for depth in depths])
    axes.set_xlabel("context length (tokens)")
    axes.set_ylabel("needle depth (%)")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="score difference" if difference else "score")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_accuracy_by_position(series: dict[str, dict[int, float]], path: Path,
                              title: str = "Multi-document QA", xlabel: str = "position of the gold document") -> Path:
    """Accuracy against gold-document position, one line per series (a model, or a document count)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    for label, by_position in series.items():
        positions = sorted(by_position)
        axes.plot([p + 1 for p in positions], [by_position[p] for p in positions], marker="o", label=label)
    axes.set_xlabel(xlabel + " (1 = first)")
    axes.set_ylabel("accuracy (best-subspan EM)")
    axes.set_ylim(0.0, 1.0)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_segment_mass(masses: dict[str, dict[str, float]], path: Path,
                      title: str = "Attention from the query, by segment (mean over layers)") -> Path:
    """Grouped bars: for each segment (before, answer, after, query), one bar per model."""
    plt = _pyplot()
    segments = list(next(iter(masses.values())))
    width = 0.8 / max(1, len(masses))
    figure, axes = plt.subplots(figsize=(6.5, 3.6))
    for i, (name, mass) in enumerate(masses.items()):
        positions = [s + (i - (len(masses) - 1) / 2) * width for s in range(len(segments))]
        bars = axes.bar(positions, [mass[s] for s in segments], width, label=_short(name))
        axes.bar_label(bars, fmt="%.2f", fontsize=7)
    axes.set_xticks(range(len(segments)), segments)
    axes.set_ylabel("attention mass")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_attention_layers(results: dict[str, dict], path: Path) -> Path:
    """Per-layer curves, one line per model: answer-segment mass, entropy, and (with [MASK]) score decay."""
    plt = _pyplot()
    panels = [("answer mass", lambda layer: layer["segment_mass"]["answer"]), ("entropy (nats)", lambda layer: layer["entropy"])]
    if any(r["has_mask_token"] for r in results.values()):
        panels.append(("masked-key score decay", lambda layer: layer.get("score_decay")))
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3))
    for axis, (label, value) in zip(axes, panels):
        for name, result in results.items():
            points = [(layer["layer"], value(layer)) for layer in result["layers"] if value(layer) is not None]
            if points:
                axis.plot(*zip(*points), marker="o", markersize=3, label=_short(name))
        axis.set_xlabel("layer")
        axis.set_title(label, fontsize=10)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _short(name: str) -> str:
    return Path(name).name or name


# ---------------------------------------------------------------------------------------------------------
# Comparing runs
# ---------------------------------------------------------------------------------------------------------

EVALUATIONS = ("niah", "mdqa", "harness", "attention")
_SKIPPED_DIRS = {"checkpoints", "final", "tensorboard", "adapter"}


def _kind(data: dict) -> str | None:
    """Which evaluation wrote this JSON object, from its keys."""
    if "cells" in data and "overall" in data:
        return "niah"
    if "accuracy_by_gold_position" in data:
        return "mdqa"
    if "results" in data and "lm_eval_version" in data:
        return "harness"
    if "models" in data and "mask_ratio" in data:
        return "attention"
    return None


def find_evaluations(run: Path) -> dict[str, tuple[Path, dict]]:
    """The evaluation outputs under a run directory: kind -> (file, contents); the first found of each kind."""
    import json

    found: dict[str, tuple[Path, dict]] = {}
    for path in sorted(run.rglob("*.json")):
        if _SKIPPED_DIRS & set(path.relative_to(run).parts[:-1]):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        kind = _kind(data) if isinstance(data, dict) else None
        if kind and kind not in found:
            found[kind] = (path, data)
    return found


def read_run(run: Path) -> dict:
    """A run directory's configuration, metrics and evaluations, as found on disk."""
    import json

    import yaml

    from meap.errors import UserError

    if not run.is_dir():
        raise UserError(f"{run}: no such run directory")
    metrics_path, config_path = run / "metrics.jsonl", run / "config.yaml"
    if not metrics_path.is_file() and not config_path.is_file():
        raise UserError(f"{run}: not a meap run directory (no metrics.jsonl or config.yaml)")
    metrics = []
    if metrics_path.is_file():
        for number, line in enumerate(metrics_path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                metrics.append(json.loads(line))
            except ValueError:
                raise UserError(f"{metrics_path}:{number}: not a JSON object") from None
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    return {"path": run, "config": config or {}, "metrics": metrics, "evaluations": find_evaluations(run)}


def _labels(runs: list[Path]) -> list[str]:
    names = [run.resolve().name for run in runs]
    if len(set(names)) < len(names):
        names = [f"{run.resolve().parent.name}/{run.resolve().name}" for run in runs]
    if len(set(names)) < len(names):
        names = [str(run) for run in runs]
    return names


def _plot_curves(runs: dict[str, dict], x_key: str, xlabel: str, path: Path) -> Path | None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.5, 4))
    drawn = False
    for index, (name, run) in enumerate(runs.items()):
        for key, style in (("loss", "-"), ("val_loss", "--")):  # one colour per run: solid train, dashed val
            points = [(r[x_key], r[key]) for r in run["metrics"] if key in r and x_key in r]
            if points:
                axes.plot(*zip(*points), style, color=f"C{index % 10}",
                          label=f"{name} ({'train' if key == 'loss' else 'validation'})")
                drawn = True
    if not drawn:
        plt.close(figure)
        return None
    axes.set_xlabel(xlabel)
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _niah_cells(summary: dict) -> dict[tuple, float]:
    return {(cell["length"], cell["depth"]): cell["substring"] for cell in summary["cells"]}


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def compare_runs(runs: list[str | Path], output: str | Path) -> Path:
    """Write ``report.md`` and a self-contained ``report.html`` (plots embedded) comparing ``runs``.

    Every number is read from the runs' files; an evaluation a run lacks is listed as absent.
    """
    from meap.errors import UserError

    if len(runs) < 2:
        raise UserError("compare: give at least two run directories")
    paths = [Path(run) for run in runs]
    loaded = dict(zip(_labels(paths), (read_run(path) for path in paths)))
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    blocks: list[tuple] = [("h1", "NTP vs MEAP: " + " vs ".join(loaded))]

    rows = [[name, str(run["path"]), run["config"].get("objective", "n/a"),
             _fmt(run["metrics"][-1].get("step")) if run["metrics"] else "n/a",
             _fmt(next((r["loss"] for r in reversed(run["metrics"]) if "loss" in r), None)),
             _fmt(next((r["val_loss"] for r in reversed(run["metrics"]) if "val_loss" in r), None)),
             ", ".join(k for k in EVALUATIONS if k in run["evaluations"]) or "none",
             ", ".join(k for k in EVALUATIONS if k not in run["evaluations"]) or "none"]
            for name, run in loaded.items()]
    blocks += [("h2", "Runs"), ("table", ["run", "directory", "objective", "last step", "last loss",
                                          "last val loss", "evaluations found", "absent"], rows)]

    blocks.append(("h2", "Training curves"))
    for x_key, xlabel, file in (("step", "optimizer step", "loss_by_step.png"),
                                ("elapsed_s", "training time (s)", "loss_by_time.png")):
        plotted = _plot_curves(loaded, x_key, xlabel, output / file)
        blocks.append(("img", file) if plotted else ("p", f"No `{x_key}` in any run's metrics.jsonl: no plot by {xlabel}."))

    niah = _section(blocks, loaded, "niah", "Needle in a haystack (substring match)")
    for index, (name, summary) in enumerate(niah.items()):
        file = f"niah_{index}.png"
        plot_niah_heatmap([{"length": l, "depth": d, "score": v} for (l, d), v in _niah_cells(summary).items()],
                          output / file, title=f"NIAH: {name} (overall {summary['overall']['substring']:.3f})")
        blocks.append(("img", file))
    if niah:
        blocks.append(("table", ["run", "substring match", "ROUGE-1 F", "cells"],
                       [[name, _fmt(s["overall"]["substring"]), _fmt(s["overall"]["rouge1_f"]), str(len(s["cells"]))]
                        for name, s in niah.items()]))
    names = list(niah)
    for index, name in enumerate(names[1:], 1):
        base, other = _niah_cells(niah[names[0]]), _niah_cells(niah[name])
        shared = sorted(set(base) & set(other))
        if shared:
            file = f"niah_diff_{index}.png"
            plot_niah_heatmap([{"length": l, "depth": d, "score": other[(l, d)] - base[(l, d)]} for l, d in shared],
                              output / file, title=f"NIAH: {name} minus {names[0]}", difference=True)
            blocks.append(("img", file))

    mdqa = _section(blocks, loaded, "mdqa", "Multi-document QA (best-subspan EM by gold position)")
    if mdqa:
        series = {name: {int(p): v for p, v in s["accuracy_by_gold_position"].items() if v is not None}
                  for name, s in mdqa.items()}
        plot_accuracy_by_position(series, output / "mdqa.png")
        positions = sorted({p for by in series.values() for p in by})
        blocks += [("img", "mdqa.png"),
                   ("table", ["run", "overall", *[f"gold {p + 1}" for p in positions]],
                    [[name, _fmt(mdqa[name]["accuracy"]), *[_fmt(series[name].get(p)) for p in positions]]
                     for name in mdqa])]

    harness = {name: summary["results"]
               for name, summary in _section(blocks, loaded, "harness", "lm-evaluation-harness").items()}
    if harness:
        columns = sorted({(task, metric) for results in harness.values() for task, metrics in results.items()
                          for metric, value in metrics.items() if isinstance(value, float) and "stderr" not in metric})
        blocks.append(("table", ["run", *[f"{task} {metric}" for task, metric in columns]],
                       [[name, *[_fmt(results.get(task, {}).get(metric)) for task, metric in columns]]
                        for name, results in harness.items()]))

    attention_rows = []
    for name, summary in _section(blocks, loaded, "attention", "Attention (from the query, mean over layers)").items():
        for model, result in summary["models"].items():
            average = result["average"]
            attention_rows.append([name, model, str(result["samples"]),
                                   *[_fmt(average["segment_mass"][segment]) for segment in ("before", "answer", "after", "query")],
                                   _fmt(average["entropy"]), _fmt(average.get("score_decay")),
                                   _fmt(average.get("variance_increase"))])
    if attention_rows:
        blocks.append(("table", ["run", "model", "samples", "before", "answer", "after", "query", "entropy",
                                 "score decay", "variance increase"], attention_rows))

    blocks.append(("h2", "Configuration differences"))
    keys = sorted({key for run in loaded.values() for key in run["config"]})
    differing = [key for key in keys if len({repr(run["config"].get(key)) for run in loaded.values()}) > 1]
    if differing:
        blocks.append(("table", ["key", *loaded], [[key, *[str(run["config"].get(key, "absent")) for run in loaded.values()]]
                                                 for key in differing]))
    else:
        blocks.append(("p", "The configurations are identical."))

    (output / "report.md").write_text(_markdown(blocks), encoding="utf-8")
    (output / "report.html").write_text(_html(blocks, output), encoding="utf-8")
    return output / "report.md"


def _section(blocks: list[tuple], loaded: dict[str, dict], kind: str, title: str) -> dict[str, dict]:
    """Open a report section: its heading, a line for each run that lacks ``kind``; the runs' outputs of it."""
    blocks.append(("h2", title))
    blocks += [("p", f"{name}: absent.") for name, run in loaded.items() if kind not in run["evaluations"]]
    return {name: run["evaluations"][kind][1] for name, run in loaded.items() if kind in run["evaluations"]}


def _markdown(blocks: list[tuple]) -> str:
    lines = []
    for block in blocks:
        if block[0] == "h1":
            lines += [f"# {block[1]}", ""]
        elif block[0] == "h2":
            lines += [f"## {block[1]}", ""]
        elif block[0] == "p":
            lines += [block[1], ""]
        elif block[0] == "img":
            lines += [f"![{block[1]}]({block[1]})", ""]
        else:
            _, header, rows = block
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


def _html(blocks: list[tuple], output: Path) -> str:
    import base64
    import html

    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>meap comparison</title><style>"
             "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}img{max-width:100%}</style></head><body>"]
    for block in blocks:
        if block[0] in ("h1", "h2"):
            parts.append(f"<{block[0]}>{html.escape(block[1])}</{block[0]}>")
        elif block[0] == "p":
            parts.append(f"<p>{html.escape(block[1])}</p>")
        elif block[0] == "img":
            data = base64.b64encode((output / block[1]).read_bytes()).decode()
            parts.append(f"<p><img alt='{html.escape(block[1])}' src='data:image/png;base64,{data}'></p>")
        else:
            _, header, rows = block
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
                         + "</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------------
# The paired NTP-vs-MEAP comparison over seeds
# ---------------------------------------------------------------------------------------------------------

ATTENTION_METRICS = ("answer_mass", "entropy", "score_decay", "variance_increase")


def _jsonl(path: Path) -> list[dict]:
    import json

    from meap.errors import UserError

    if not path.is_file():
        raise UserError(f"{path}: missing (the evaluation has not run)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _scores(records: list[dict], key: str, where: Path) -> list[float]:
    from meap.errors import UserError

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
    import json

    from meap.errors import UserError
    from meap.stats import mean_and_spread, paired_difference

    objectives = ("ntp", "meap")
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

    result["niah"] = scored("niah", "results.jsonl", "substring", ("length", "depth"))
    result["mdqa"] = scored("mdqa", "results.jsonl", "best_subspan_em", ("gold_position",))

    def last_val_loss(run: dict):
        return next((record["val_loss"] for record in reversed(run["metrics"]) if "val_loss" in record), None)

    val = {o: [last_val_loss(loaded[seed][o]) for seed in seeds] for o in objectives}
    result["val_loss"] = {"by_seed": val, "mean": {o: mean_and_spread(val[o])["mean"] for o in objectives}}

    attention: dict = {}
    for o in objectives:
        averages = []
        for seed in seeds:
            path = runs[seed][o] / "eval" / "attention" / "attention.json"
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
        multikey = {o: [_jsonl(key_checks[seed][o] / "multikey" / "results.jsonl") for seed in seeds] for o in objectives}
        absent = {o: [_jsonl(key_checks[seed][o] / "absent" / "results.jsonl") for seed in seeds] for o in objectives}
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
             _fmt(val["by_seed"]["ntp"][i]), _fmt(val["by_seed"]["meap"][i])] for i, seed in enumerate(seeds)]
    rows.append(["mean", percent(niah["mean"]["ntp"]), percent(niah["mean"]["meap"]), percent(mdqa["mean"]["ntp"]),
                 percent(mdqa["mean"]["meap"]), _fmt(val["mean"]["ntp"]), _fmt(val["mean"]["meap"])])
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
                    [[o.upper(), *[percent(section[f"by_{group}"][o].get(g)) for g in groups]] for o in ("ntp", "meap")])]
    attention = comparison["attention"]
    blocks += [("h2", "Attention from the query (mean over layers, probes and seeds)"),
               ("table", ["objective", "mass on the needle", "entropy", "masked-key score decay", "variance increase"],
                [[o.upper(), *[_fmt(attention[o][m]["mean"]) for m in ATTENTION_METRICS]] for o in ("ntp", "meap")])]
    if key_check:
        blocks += [("h2", "Key check: is retrieval key-based?"),
                   ("p", "A distractor needle with another key and value is added; then the asked needle is removed "
                         "(only the distractor is left). A model that copies any number it finds answers the "
                         "distractor's value in the second case; a key-based one does not."),
                   ("table", ["objective", "NIAH, asked + distractor needle", "answered the distractor, asked needle absent"],
                    [[o.upper(), percent(key_check["multikey"]["mean"][o]),
                      percent(key_check["absent_distractor_copied"]["mean"][o])] for o in ("ntp", "meap")])]
    output.mkdir(parents=True, exist_ok=True)
    _plot_paired(comparison, output / "comparison.png")
    blocks.append(("img", "comparison.png"))
    path = output / "comparison.md"
    path.write_text(_markdown(blocks), encoding="utf-8")
    return path


def _plot_paired(comparison: dict, path: Path) -> Path:
    """Per-seed NIAH and MDQA of both objectives, each seed's pair joined by a line."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    for axis, name, title in ((axes[0], "niah", "NIAH substring match"), (axes[1], "mdqa", "MDQA best-subspan EM")):
        by_seed = comparison[name]["by_seed"]
        for index, seed in enumerate(comparison["seeds"]):
            axis.plot([0, 1], [by_seed["ntp"][index], by_seed["meap"][index]], "-o", color=f"C{index % 10}",
                      label=f"seed {seed}")
        axis.set_xticks([0, 1], ["NTP", "MEAP"])
        axis.set_xlim(-0.4, 1.4)
        axis.set_ylim(0.0, 1.0)
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
