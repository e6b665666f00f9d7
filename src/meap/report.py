"""``meap compare``: the comparison report of runs (figures from :mod:`meap.plots`).

Reads plain files (``metrics.jsonl``, ``config.yaml``, the evaluations' ``summary.json`` / ``results.json``
/ ``attention.json``); no torch, no transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from meap.errors import UserError
from meap.eval.results import EVALUATIONS, RECORDS_FILE, SUMMARY_FILES, kind_of, read_records, section_of
from meap.plots import (plot_accuracy_by_position, plot_attention_layers, plot_loss_curves, plot_niah_heatmap,
                        plot_segment_mass)
from meap.rundir import ARTIFACT_DIRS, RunDir
from meap.stats import paired_difference, seed_statistics


def find_evaluations(run: Path) -> dict[str, dict[str, tuple[Path, dict]]]:
    """The evaluation outputs under a run directory: section (kind, NIAH variants apart) -> label (the
    summary's directory relative to the run, e.g. ``eval/mdqa``) -> (file, contents). A run may hold several
    evaluations of one kind (lengths, files, haystacks); the report matches them across runs by label."""
    found: dict[str, dict[str, tuple[Path, dict]]] = {}
    for path in sorted(run.rglob("*.json")):
        if ARTIFACT_DIRS & set(path.relative_to(run).parts[:-1]):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        kind = section_of(data) if isinstance(data, dict) else None
        if kind:
            found.setdefault(kind, {}).setdefault(path.parent.relative_to(run).as_posix(), (path, data))
    return found


def _by_label(loaded: dict[str, dict], kind: str):
    """(label, view) for each evaluation of ``kind`` (by label, across runs): ``view`` is ``loaded`` with that
    one evaluation of the kind in each run that has it, as the section writers read it. One view with none
    when no run has the kind (its section then says so)."""
    labels = sorted({label for run in loaded.values() for label in run["evaluations"].get(kind, {})}) or [None]
    for label in labels:
        yield label, {name: {**run, "evaluations": {kind: run["evaluations"][kind][label]}
                             if label in run["evaluations"].get(kind, {}) else {}}
                      for name, run in loaded.items()}


def _titled(title: str, label: str | None, several: bool) -> str:
    return f"{title} [{label}]" if several and label else title


def read_run(run: Path) -> dict:
    """A run directory's configuration, metrics and evaluations, as found on disk."""
    if not run.is_dir():
        raise UserError(f"{run}: no such run directory")
    metrics_path, config_path = RunDir(run).metrics, RunDir(run).config
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


def format_value(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def compare_runs(runs: list[str | Path], output: str | Path) -> Path:
    """Write ``report.md`` and a self-contained ``report.html`` (plots embedded) comparing ``runs``.

    Every number is read from the runs' files; an evaluation a run lacks is listed as absent.
    """
    if len(runs) < 2:
        raise UserError("compare: give at least two run directories")
    paths = [Path(run) for run in runs]
    loaded = dict(zip(_labels(paths), (read_run(path) for path in paths)))
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    objectives = {run["config"].get("objective") for run in loaded.values()}
    blocks: list[tuple] = [("h1", _title(objectives)),
                           ("p", "Runs: " + ", ".join(f"{name} ({run['path']})" for name, run in loaded.items()) + ".")]
    attention = _attention_by_run(loaded)

    def last(run: dict, key: str):
        return next((r[key] for r in reversed(run["metrics"]) if key in r), None)

    rows = [[name, run["config"].get("objective", "n/a") + _meap_share(run),
             format_value(run["metrics"][-1].get("step")) if run["metrics"] else "n/a",
             format_value(last(run, "val_loss")), format_value(last(run, "loss")),
             ", ".join(_found(run, k, name, attention) for k in EVALUATIONS if _has(run, k, name, attention)) or "none",
             ", ".join(k for k in EVALUATIONS if not _has(run, k, name, attention)) or "none"]
            for name, run in loaded.items()]
    blocks += [("h2", "Runs"), ("table", ["run", "objective", "last step", "validation loss (clean inputs)",
                                          "training loss (inputs as trained)", "evaluations found", "absent"], rows)]
    blocks += [("p", warning) for warning in _incomparable(loaded)]
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
        views = list(_by_label(loaded, kind))
        for index, (label, view) in enumerate(views):
            _niah_section(blocks, view, kind, _titled(title, label, len(views) > 1), output,
                          stem=kind.replace("-", "_") + (f"_{index}" if index else ""))

    views = list(_by_label(loaded, "mdqa"))
    for index, (label, view) in enumerate(views):
        _mdqa_section(blocks, view, _titled("Multi-document QA (best-subspan EM by gold position)", label,
                                            len(views) > 1), output / ("mdqa.png" if not index else f"mdqa_{index}.png"))

    views = list(_by_label(loaded, "retrieval"))
    for label, view in views:
        _retrieval_section(blocks, view, _titled("Key-based retrieval (strict: the asked value alone)", label,
                                                 len(views) > 1))

    _paired_by_seed(blocks, loaded)

    for label, view in (views := list(_by_label(loaded, "harness"))):
        _harness_section(blocks, view, _titled("lm-evaluation-harness", label, len(views) > 1))


    blocks.append(("h2", "Attention (from the query, mean over layers)"))
    blocks += [("p", f"{name}: absent.") for name in loaded if name not in attention]
    if attention:
        results = {name: result for name, (result, _) in attention.items()}
        blocks += [("img", plot_segment_mass(results, output / "segment_mass.png").name),
                   ("img", plot_attention_layers(results, output / "layers.png").name),
                   ("table", ["run", "samples", "before", "answer", "after", "query", "entropy", "score decay",
                              "variance increase", "file"],
                    [[name, str(result["samples"]),
                      *[format_value(result["average"]["segment_mass"][segment]) for segment in ("before", "answer", "after", "query")],
                      format_value(result["average"]["entropy"]), format_value(result["average"].get("score_decay")),
                      format_value(result["average"].get("variance_increase")), str(file)]
                     for name, (result, file) in attention.items()])]

    blocks.append(("h2", "Configuration differences"))
    keys = sorted({key for run in loaded.values() for key in run["config"]})
    differing = [key for key in keys if len({repr(run["config"].get(key)) for run in loaded.values()}) > 1]
    if differing:
        blocks.append(("table", ["key", *loaded], [[key, *[str(run["config"].get(key, "absent")) for run in loaded.values()]]
                                                 for key in differing]))
    else:
        blocks.append(("p", "The configurations are identical."))

    (output / "report.md").write_text(markdown(blocks), encoding="utf-8")
    (output / "report.html").write_text(_html(blocks, output), encoding="utf-8")
    return output / "report.md"


def _mdqa_section(blocks: list[tuple], loaded: dict[str, dict], title: str, figure: Path) -> None:
    mdqa = _section(blocks, loaded, "mdqa", title)
    if not mdqa:
        return
    series = {name: {int(p): v for p, v in s["accuracy_by_gold_position"].items() if v is not None}
              for name, s in mdqa.items()}
    examples = {name: {int(p): n for p, n in s.get("examples_by_gold_position", {}).items()} for name, s in mdqa.items()}
    plot_accuracy_by_position(series, figure, examples=examples)
    positions = sorted({p for by in series.values() for p in by})
    forced = any("teacher_forced_accuracy" in s for s in mdqa.values())
    blocks += [("img", figure.name),
               ("table", ["run", "overall", *[f"gold {p + 1}" for p in positions], "examples",
                          *(["teacher-forced EM", "answer log-probability"] if forced else [])],
                [[name, format_value(mdqa[name]["accuracy"]), *[format_value(series[name].get(p)) for p in positions],
                  str(mdqa[name].get("num_examples", "n/a")),
                  *([format_value(mdqa[name].get("teacher_forced_accuracy")),
                     format_value(mdqa[name].get("mean_answer_logprob"))] if forced else [])] for name in mdqa])]


def _retrieval_section(blocks: list[tuple], loaded: dict[str, dict], title: str) -> None:
    retrieval = _section(blocks, loaded, "retrieval", title)
    if retrieval:
        blocks.append(("table", ["run", "strict", "distractor given", "asked needle absent: distractor given",
                                 "teacher-forced accuracy", "prompts"],
                       [[name, format_value(s["strict"]), format_value(s["distractor_given"]),
                         format_value(s.get("absent_distractor_given")),
                         format_value((s.get("teacher_forced") or {}).get("accuracy")), str(s["probes"])]
                        for name, s in retrieval.items()]))


def _harness_section(blocks: list[tuple], loaded: dict[str, dict], title: str) -> None:
    harness = {name: summary["results"] for name, summary in _section(blocks, loaded, "harness", title).items()}
    if harness:
        columns = sorted({(task, metric) for results in harness.values() for task, metrics in results.items()
                          for metric, value in metrics.items() if isinstance(value, float) and "stderr" not in metric})
        blocks.append(("table", ["run", *[f"{task} {metric}" for task, metric in columns]],
                       [[name, *[format_value(results.get(task, {}).get(metric)) for task, metric in columns]]
                        for name, results in harness.items()]))


_PAIRED_SCORES = (("retrieval", "correct", "key-based retrieval, strict"), ("niah", "substring", "NIAH, substring"))


def _paired_by_seed(blocks: list[tuple], loaded: dict[str, dict]) -> None:
    """MEAP - NTP paired by training seed (each run's config), with the seed-level statistics of
    :mod:`meap.stats`: the validation loss, and each evaluation scored per prompt in both runs of every seed."""
    by_seed: dict = {}
    for run in loaded.values():
        by_seed.setdefault(run["config"].get("seed"), {}).setdefault(run["config"].get("objective"), []).append(run)
    pairs = {seed: {o: runs[o][0] for o in ("ntp", "meap")} for seed, runs in sorted(by_seed.items(), key=str)
             if len(runs.get("ntp", [])) == 1 and len(runs.get("meap", [])) == 1}
    if not pairs:
        return
    seeds = list(pairs)
    blocks += [("h2", f"MEAP - NTP, paired by seed ({len(seeds)} seed(s): {', '.join(map(str, seeds))})"),
               ("p", "Each seed's MEAP run minus its NTP run (seeds read from the runs' configs); the mean over "
                     "seeds with a 95% t-interval (seeds and prompts as crossed factors), the exact sign-flip p and "
                     "the Hodges-Lehmann estimate. " + ("With one seed the interval covers prompt sampling only: "
                                                        "one seed is an example, not evidence." if len(seeds) == 1
                                                        else ""))]
    rows = []
    val = [[next((r["val_loss"] for r in reversed(pairs[s][o]["metrics"]) if "val_loss" in r), None)
            for o in ("ntp", "meap")] for s in seeds]
    if all(n is not None and m is not None for n, m in val):
        statistics = seed_statistics([m - n for n, m in val])
        rows.append(["validation loss", _interval(statistics["mean"], statistics["ci95"], "{:+.4f}"),
                     format_value(statistics["sign_flip_p"]), f"{statistics['hodges_lehmann']:+.4f}", f"{len(seeds)} x 1"])
    for kind, key, measure in _PAIRED_SCORES:
        shared = set.intersection(*(set(pairs[s][o]["evaluations"].get(kind, {})) for s in seeds for o in ("ntp", "meap")))
        for directory in sorted(shared):
            label = f"{measure} [{directory}]" if len(shared) > 1 else measure
            files = {o: [pairs[s][o]["evaluations"][kind][directory][0].parent / RECORDS_FILE for s in seeds]
                     for o in ("ntp", "meap")}
            tables = {o: [[float(r[key]) for r in read_records(file) if not r.get("absent")] for file in files[o]]
                      for o in ("ntp", "meap")}
            if len({len(row) for rows_ in tables.values() for row in rows_}) != 1:
                rows.append([label, "the runs were evaluated on different numbers of prompts", "", "", ""])
                continue
            paired = paired_difference(tables["ntp"], tables["meap"])
            rows.append([label, _interval(paired["difference"], paired["ci95"], "{:+.3f}"),
                         format_value(paired["sign_flip_p"]), f"{paired['hodges_lehmann']:+.3f}",
                         f"{paired['seeds']} x {paired['prompts']}"])
    blocks.append(("table", ["measure", "MEAP - NTP [95% CI]", "sign-flip p", "Hodges-Lehmann", "seeds x prompts"],
                   rows))


def _interval(value: float, interval: list[float] | None, form: str) -> str:
    text = form.format(value)
    return text + (f" [{form.format(interval[0])}, {form.format(interval[1])}]" if interval else " (no interval)")


def _niah_section(blocks: list[tuple], loaded: dict[str, dict], kind: str, title: str, output: Path, stem: str) -> None:
    """Heatmaps, the table and the differences to the first run, of one NIAH evaluation (``stem``: its files)."""
    niah = _section(blocks, loaded, kind, f"{title} (share of required values recalled)")
    for index, (name, summary) in enumerate(niah.items()):
        file = f"{stem}_{index}.png"
        plot_niah_heatmap([{"length": c["length"], "depth": c["depth"], "score": c["substring"],
                            "samples": c.get("samples")} for c in summary["cells"]],
                          output / file, title=f"{title}: {name} (overall {summary['overall']['substring']:.3f})")
        blocks.append(("img", file))
    if niah:
        blocks.append(("table", ["run", "substring match", "ROUGE-1 F (earned by echoing, too)", "cells", "prompts"],
                       [[name, format_value(s["overall"]["substring"]), format_value(s["overall"]["rouge1_f"]), str(len(s["cells"])),
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


def _title(objectives: set) -> str:
    if objectives == {"ntp", "meap"}:
        return "NTP vs MEAP"
    if len(objectives) == 1 and None not in objectives:
        return f"{next(iter(objectives)).upper()} runs compared"
    return "Comparison of runs"


def _incomparable(loaded: dict[str, dict]) -> list[str]:
    """Warnings where the runs differ in what makes their losses comparable: the tokenizer, the validation
    data, the model they start from (each checked where every run records it)."""
    checks = [
        ({name: (RunDir(run["path"]).read_facts().get("tokenizer_sha256") or "")[:12] or None
          for name, run in loaded.items()},
         "The runs use different tokenizers (vocabulary hashes {}): a loss is per token of its own vocabulary, so "
         "their losses do not compare."),
        ({name: run["config"].get("data") for name, run in loaded.items()},
         "The runs are trained and validated on different data ({}): their validation losses do not compare."),
        ({name: run["config"].get("model") for name, run in loaded.items()},
         "The runs start from different models ({}): their differences include the starting points'."),
    ]
    found = []
    for values, text in checks:
        if None not in values.values() and len({repr(value) for value in values.values()}) > 1:
            detail = "; ".join(f"{name}: {value}" for name, value in values.items())
            found.append("Not like with like. " + text.format(detail))
    return found


def _meap_share(run: dict) -> str:
    """A MEAP fine-tune's share of conversations with the masked copy, when it is not all of them."""
    share = RunDir(run["path"]).read_facts().get("meap_share")
    return f" ({100 * share:.0f}% of conversations with the masked copy)" if share is not None and share < 1 else ""


def _has(run: dict, kind: str, name: str, attention: dict) -> bool:
    return name in attention if kind == "attention" else kind in run["evaluations"]


def _found(run: dict, kind: str, name: str, attention: dict) -> str:
    """``kind``, with the directories of its evaluations (``mdqa (eval/mdqa, eval/mdqa-short)``)."""
    labels = [] if kind == "attention" else sorted(run["evaluations"][kind])
    return f"{kind} ({', '.join(labels)})" if labels else kind


def _attention_by_run(loaded: dict[str, dict]) -> dict[str, tuple[dict, Path]]:
    """run name -> (its model's entry, the attention.json holding it). One `meap analyze attention` may cover
    several runs (its models are their directories), and it may be saved inside any of them."""
    def same(model: str, run: Path) -> bool:
        return Path(model).resolve() in (run.resolve(), RunDir(run).final.resolve())

    found: dict[str, tuple[dict, Path]] = {}
    for run in loaded.values():
        for path in sorted(run["path"].rglob(SUMMARY_FILES["attention"])):
            if ARTIFACT_DIRS & set(path.relative_to(run["path"]).parts[:-1]):
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if kind_of(data) != "attention":
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


def markdown(blocks: list[tuple]) -> str:
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
