"""The comparison report of runs (figures from :mod:`meap.plots`) and the paired NTP-vs-MEAP comparison.

Reads plain files (``metrics.jsonl``, ``config.yaml``, the evaluations' ``summary.json`` / ``results.json``
/ ``attention.json``); no torch, no transformers.
"""

from __future__ import annotations

from pathlib import Path

from meap.plots import (plot_accuracy_by_position, plot_attention_layers, plot_loss_curves, plot_niah_heatmap,
                        plot_paired, plot_segment_mass)


# ---------------------------------------------------------------------------------------------------------
# Comparing runs
# ---------------------------------------------------------------------------------------------------------

EVALUATIONS = ("niah", "mdqa", "harness", "attention")
_SKIPPED_DIRS = {"checkpoints", "final", "tensorboard", "adapter"}


def _kind(data: dict) -> str | None:
    """Which evaluation wrote this JSON object, from its keys."""
    if "cells" in data and "overall" in data:
        variant = (data.get("config") or {}).get("variant", "single")
        return "niah" if variant == "single" else f"niah-{variant}"  # each RULER variant a section of its own
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


def _curves(runs: dict[str, dict], x_key: str) -> dict[str, dict[str, list]]:
    return {name: {key: [(r[x_key], r[key]) for r in run["metrics"] if key in r and x_key in r]
                   for key in ("loss", "val_loss")} for name, run in runs.items()}


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
    objectives = {run["config"].get("objective") for run in loaded.values()}
    blocks: list[tuple] = [("h1", "NTP vs MEAP" if objectives == {"ntp", "meap"} else "Comparison of runs"),
                           ("p", "Runs: " + ", ".join(f"{name} ({run['path']})" for name, run in loaded.items()) + ".")]
    attention = _attention_by_run(loaded)

    def last(run: dict, key: str):
        return next((r[key] for r in reversed(run["metrics"]) if key in r), None)

    rows = [[name, run["config"].get("objective", "n/a"),
             _fmt(run["metrics"][-1].get("step")) if run["metrics"] else "n/a",
             _fmt(last(run, "val_loss")), _fmt(last(run, "loss")),
             ", ".join(k for k in EVALUATIONS if _has(run, k, name, attention)) or "none",
             ", ".join(k for k in EVALUATIONS if not _has(run, k, name, attention)) or "none"]
            for name, run in loaded.items()]
    blocks += [("h2", "Runs"), ("table", ["run", "objective", "last step", "validation loss (clean inputs)",
                                          "training loss (inputs as trained)", "evaluations found", "absent"], rows)]
    if "meap" in objectives:
        blocks.append(("p", "Compare the validation loss: every run is validated on clean inputs. The training loss "
                            "is measured on the inputs as trained, and MEAP replaces a share of its inputs with "
                            "[MASK], so its training loss is higher by construction and does not compare with NTP's."))
    if not any(last(run, "val_loss") is not None for run in loaded.values()):
        blocks.append(("p", "No run has a validation loss (validation was off: too little held-out text, or "
                            "eval_every 0), so no loss here compares the objectives; prepare the data with a larger "
                            "--val-fraction."))

    blocks.append(("h2", "Loss curves"))
    for x_key, xlabel, file in (("step", "optimizer step", "loss_by_step.png"),
                                ("elapsed_s", "training time (s)", "loss_by_time.png")):
        curves = _curves(loaded, x_key)
        if any(points for by_key in curves.values() for points in by_key.values()):
            blocks.append(("img", plot_loss_curves(curves, output / file, xlabel).name))
        else:
            blocks.append(("p", f"No `{x_key}` in any run's metrics.jsonl: no plot by {xlabel}."))

    variants = sorted({kind for run in loaded.values() for kind in run["evaluations"] if kind.startswith("niah-")})
    for kind in ["niah", *variants]:
        title = "Needle in a haystack" + (f", {kind.removeprefix('niah-')}" if kind != "niah" else "")
        _niah_section(blocks, loaded, kind, title, output)

    mdqa = _section(blocks, loaded, "mdqa", "Multi-document QA (best-subspan EM by gold position)")
    if mdqa:
        series = {name: {int(p): v for p, v in s["accuracy_by_gold_position"].items() if v is not None}
                  for name, s in mdqa.items()}
        examples = {name: {int(p): n for p, n in s.get("examples_by_gold_position", {}).items()} for name, s in mdqa.items()}
        counts = {name: next(iter(set(by.values()))) for name, by in examples.items() if len(set(by.values())) == 1}
        plot_accuracy_by_position(series, output / "mdqa.png", counts=counts)
        positions = sorted({p for by in series.values() for p in by})
        blocks += [("img", "mdqa.png"),
                   ("table", ["run", "overall", *[f"gold {p + 1}" for p in positions], "examples"],
                    [[name, _fmt(mdqa[name]["accuracy"]), *[_fmt(series[name].get(p)) for p in positions],
                      str(mdqa[name].get("num_examples", "n/a"))] for name in mdqa])]

    harness = {name: summary["results"]
               for name, summary in _section(blocks, loaded, "harness", "lm-evaluation-harness").items()}
    if harness:
        columns = sorted({(task, metric) for results in harness.values() for task, metrics in results.items()
                          for metric, value in metrics.items() if isinstance(value, float) and "stderr" not in metric})
        blocks.append(("table", ["run", *[f"{task} {metric}" for task, metric in columns]],
                       [[name, *[_fmt(results.get(task, {}).get(metric)) for task, metric in columns]]
                        for name, results in harness.items()]))

    blocks.append(("h2", "Attention (from the query, mean over layers)"))
    blocks += [("p", f"{name}: absent.") for name in loaded if name not in attention]
    if attention:
        results = {name: result for name, (result, _) in attention.items()}
        blocks += [("img", plot_segment_mass({name: r["average"]["segment_mass"] for name, r in results.items()},
                                             output / "segment_mass.png",
                                             samples={name: r["samples"] for name, r in results.items()}).name),
                   ("img", plot_attention_layers(results, output / "layers.png").name),
                   ("table", ["run", "samples", "before", "answer", "after", "query", "entropy", "score decay",
                              "variance increase", "file"],
                    [[name, str(result["samples"]),
                      *[_fmt(result["average"]["segment_mass"][segment]) for segment in ("before", "answer", "after", "query")],
                      _fmt(result["average"]["entropy"]), _fmt(result["average"].get("score_decay")),
                      _fmt(result["average"].get("variance_increase")), str(file)]
                     for name, (result, file) in attention.items()])]

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


def _niah_section(blocks: list[tuple], loaded: dict[str, dict], kind: str, title: str, output: Path) -> None:
    """Heatmaps, the table and the differences to the first run, of one NIAH variant."""
    niah = _section(blocks, loaded, kind, f"{title} (share of required values recalled)")
    stem = kind.replace("-", "_")
    for index, (name, summary) in enumerate(niah.items()):
        file = f"{stem}_{index}.png"
        plot_niah_heatmap([{"length": c["length"], "depth": c["depth"], "score": c["substring"],
                            "samples": c.get("samples")} for c in summary["cells"]],
                          output / file, title=f"{title}: {name} (overall {summary['overall']['substring']:.3f})")
        blocks.append(("img", file))
    if niah:
        blocks.append(("table", ["run", "substring match", "ROUGE-1 F", "cells", "prompts"],
                       [[name, _fmt(s["overall"]["substring"]), _fmt(s["overall"]["rouge1_f"]), str(len(s["cells"])),
                         str(sum(c.get("samples", 0) for c in s["cells"]) or "n/a")] for name, s in niah.items()]))
    names = list(niah)
    for index, name in enumerate(names[1:], 1):
        base, other = _niah_cells(niah[names[0]]), _niah_cells(niah[name])
        shared = sorted(set(base) & set(other))
        if shared:
            file = f"{stem}_diff_{index}.png"
            plot_niah_heatmap([{"length": l, "depth": d, "score": other[(l, d)] - base[(l, d)]} for l, d in shared],
                              output / file, title=f"{title}: {name} minus {names[0]}", difference=True)
            blocks.append(("img", file))


def _has(run: dict, kind: str, name: str, attention: dict) -> bool:
    return name in attention if kind == "attention" else kind in run["evaluations"]


def _attention_by_run(loaded: dict[str, dict]) -> dict[str, tuple[dict, Path]]:
    """run name -> (its model's entry, the attention.json holding it). One `meap analyze attention` may cover
    several runs (its models are their directories), and it may be saved inside any of them."""
    import json

    def same(model: str, run: Path) -> bool:
        return Path(model).resolve() in (run.resolve(), (run / "final").resolve())

    found: dict[str, tuple[dict, Path]] = {}
    for run in loaded.values():
        for path in sorted(run["path"].rglob("attention.json")):
            if _SKIPPED_DIRS & set(path.relative_to(run["path"]).parts[:-1]):
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if _kind(data) != "attention":
                continue
            for model, result in data["models"].items():
                for name, other in loaded.items():
                    if name not in found and same(model, other["path"]):
                        found[name] = (result, path)
            owner = next(name for name, other in loaded.items() if other is run)
            if owner not in found and len(data["models"]) == 1:  # its one model, named from another directory
                found[owner] = (next(iter(data["models"].values())), path)
    return {name: found[name] for name in loaded if name in found}


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
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}img{max-width:100%;height:auto}</style></head><body>"]
    for block in blocks:
        if block[0] in ("h1", "h2"):
            parts.append(f"<{block[0]}>{html.escape(block[1])}</{block[0]}>")
        elif block[0] == "p":
            parts.append(f"<p>{html.escape(block[1])}</p>")
        elif block[0] == "img":
            png = (output / block[1]).read_bytes()
            width = int.from_bytes(png[16:20], "big") * 2 // 3  # shown at 100 dpi: every figure at one scale
            parts.append(f"<p><img alt='{html.escape(block[1])}' width='{width}' "
                         f"src='data:image/png;base64,{base64.b64encode(png).decode()}'></p>")
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
    plot_paired(comparison, output / "comparison.png")
    blocks.append(("img", "comparison.png"))
    path = output / "comparison.md"
    path.write_text(_markdown(blocks), encoding="utf-8")
    return path
