"""``meap compare``: the comparison report of runs (figures from :mod:`meap.plots`).

Reads plain files (``metrics.jsonl``, ``config.yaml``, the evaluations' ``summary.json`` / ``results.json``
/ ``attention.json``); no torch, no transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

from meap.arms import arm_order, arm_title, arms
from meap.errors import UserError
from meap.eval.kind import format_value
from meap.eval.results import KINDS, section_of
from meap.paired_table import paired_by_seed
from meap.paper_table import paper_table
from meap.plots import plot_loss_curves
from meap.rundir import ARTIFACT_DIRS, RunDir, last_value


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


def read_run(run: Path) -> dict:
    """A run directory's configuration, metrics and evaluations, as found on disk."""
    if not run.is_dir():
        raise UserError(f"{run}: no such run directory")
    run_dir = RunDir(run)
    evaluations = find_evaluations(run)
    if not run_dir.metrics_file.is_file() and not run_dir.config_file.is_file() and not evaluations:
        raise UserError(f"{run}: not a meap run directory (no metrics.jsonl or config.yaml) and holds no evaluation")
    metrics = run_dir.read_metrics()
    facts = run_dir.read_facts()
    return {
        "path": run,
        "config": run_dir.saved_config(),
        "metrics": metrics,
        "evaluations": evaluations,
        "facts": facts,
    }


def _labels(runs: list[Path]) -> list[str]:
    names = [run.resolve().name for run in runs]
    if len(set(names)) < len(names):
        names = [f"{run.resolve().parent.name}/{run.resolve().name}" for run in runs]
    if len(set(names)) < len(names):
        names = [str(run) for run in runs]
    return names


def _curves(runs: dict[str, dict], x_key: str) -> dict[str, dict[str, list]]:
    return {
        name: {
            key: [(r[x_key], r[key]) for r in run["metrics"] if key in r and x_key in r] for key in ("loss", "val_loss")
        }
        for name, run in runs.items()
    }


def compare_runs(runs: list[str | Path], output: str | Path) -> Path:
    """Write ``report.md`` and a self-contained ``report.html`` (plots embedded) comparing ``runs``.

    Every number is read from the runs' files; an evaluation a run lacks is listed as absent, and a kind no run
    has gets no section.
    """
    if len(runs) < 2:
        raise UserError("compare: give at least two run directories")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UserError(f"{output}: exists and is not a directory; -o names the directory the report goes to")
    paths = [Path(run) for run in runs]
    loaded = dict(zip(_labels(paths), (read_run(path) for path in paths)))
    output.mkdir(parents=True, exist_ok=True)
    objectives = {run["config"].get("objective") for run in loaded.values()}
    arm_names = set(arms(loaded).values())
    blocks: list[tuple] = [
        ("h1", _title(arm_names)),
        ("p", "Runs: " + ", ".join(f"{name} ({run['path']})" for name, run in loaded.items()) + "."),
    ]
    entries = {kind.name: kind.entries(loaded) for kind in KINDS.values() if kind.entries}

    rows = [
        [
            name,
            run["config"].get("objective", "n/a") + _meap_share(run),
            format_value(run["metrics"][-1].get("step")) if run["metrics"] else "n/a",
            format_value(last_value(run["metrics"], "val_loss")) + _held_out(run),
            format_value(last_value(run["metrics"], "loss")),
            ", ".join(_found(run, k, name, entries) for k in KINDS if _has(run, k, name, entries)) or "none",
            ", ".join(k for k in KINDS if not _has(run, k, name, entries)) or "none",
        ]
        for name, run in loaded.items()
    ]
    blocks += [
        ("h2", "Runs"),
        (
            "table",
            [
                "run",
                "objective",
                "last step",
                "validation loss (clean inputs)",
                "training loss (inputs as trained)",
                "evaluations found",
                "absent",
            ],
            rows,
        ),
    ]
    blocks += [("p", warning) for warning in _incomparable(loaded)]
    if "meap" in objectives:
        blocks.append(
            (
                "p",
                "Compare the validation loss: every run is validated on clean inputs. The training loss "
                "is measured on the inputs as trained, and MEAP replaces a share of its inputs with "
                "[MASK], so its training loss is higher by construction and does not compare with NTP's.",
            )
        )
    if not any(last_value(run["metrics"], "val_loss") is not None for run in loaded.values()):
        blocks.append(
            (
                "p",
                "No run has a validation loss (validation was off: too little held-out text, or "
                "eval_every 0), so no loss here compares the objectives; prepare the data with a larger "
                "--val-fraction.",
            )
        )

    paper_table(blocks, loaded)
    blocks.append(("h2", "Loss curves"))
    for x_key, xlabel, file in (
        ("step", "optimizer step", "loss_by_step.png"),
        ("elapsed_s", "training time (s)", "loss_by_time.png"),
    ):
        curves = _curves(loaded, x_key)
        if any(points for by_key in curves.values() for points in by_key.values()):
            blocks.append(("img", plot_loss_curves(curves, output / file, xlabel).name))
        else:
            blocks.append(("p", f"No `{x_key}` in any run's metrics.jsonl: no plot by {xlabel}."))

    for kind in KINDS.values():
        kind.report_section(blocks, loaded, output)
    paired_by_seed(blocks, loaded)

    blocks.append(("h2", "Configuration differences"))
    keys = sorted({key for run in loaded.values() for key in run["config"]})
    differing = [key for key in keys if len({repr(run["config"].get(key)) for run in loaded.values()}) > 1]
    if differing:
        blocks.append(
            (
                "table",
                ["key", *loaded],
                [[key, *[str(run["config"].get(key, "absent")) for run in loaded.values()]] for key in differing],
            )
        )
    else:
        blocks.append(("p", "The configurations are identical."))

    (output / "report.md").write_text(markdown(blocks), encoding="utf-8")
    (output / "report.html").write_text(_html(blocks, output), encoding="utf-8")
    return output / "report.md"


def _held_out(run: dict) -> str:
    """The size of the validation split beside its loss: `` (12 x 256 tokens)``, or nothing where unknown."""
    sequences, length = run["facts"].get("sequences", {}).get("val"), run["config"].get("seq_len")
    return f" ({sequences:,} x {length} tokens)" if sequences and length else ""


def _title(arm_names: set) -> str:
    if None in arm_names:
        return "Comparison of runs"
    if len(arm_names) == 1:
        return f"{arm_title(next(iter(arm_names)))} runs compared"
    return " vs ".join(map(arm_title, arm_order(arm_names)))


def _incomparable(loaded: dict[str, dict]) -> list[str]:
    """Warnings where the runs differ in what makes their losses comparable: the tokenizer, the validation
    data, the model they start from (each checked where every run records it)."""
    checks = [
        (
            {
                name: (RunDir(run["path"]).read_facts().get("tokenizer_sha256") or "")[:12] or None
                for name, run in loaded.items()
            },
            "The runs use different tokenizers (vocabulary hashes {}): a loss is per token of its own vocabulary, so "
            "their losses do not compare.",
        ),
        (
            {name: run["config"].get("data") for name, run in loaded.items()},
            "The runs are trained and validated on different data ({}): their validation losses do not compare.",
        ),
        (
            {name: run["config"].get("model") for name, run in loaded.items()},
            "The runs start from different models ({}): their differences include the starting points'.",
        ),
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


def _has(run: dict, kind: str, name: str, entries: dict) -> bool:
    """Whether run ``name`` holds ``kind``: an entry of its, for a kind that finds them itself (``entries``)."""
    return name in entries[kind] if kind in entries else kind in run["evaluations"]


def _found(run: dict, kind: str, name: str, entries: dict) -> str:
    """``kind``, with the directories of its evaluations (``mdqa (eval/mdqa, eval/mdqa-short)``)."""
    labels = [] if kind in entries else sorted(run["evaluations"][kind])
    return f"{kind} ({', '.join(labels)})" if labels else kind


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

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>meap comparison</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}img{max-width:100%;height:auto}"
        "</style></head><body>"
    ]
    for block in blocks:
        if block[0] in ("h1", "h2"):
            parts.append(f"<{block[0]}>{html.escape(block[1])}</{block[0]}>")
        elif block[0] == "p":
            parts.append(f"<p>{html.escape(block[1])}</p>")
        elif block[0] == "img":
            png = (output / block[1]).read_bytes()
            width = int.from_bytes(png[16:20], "big") * 2 // 3  # shown at 100 dpi: every figure at one scale
            parts.append(
                f"<p><img alt='{html.escape(block[1])}' width='{width}' "
                f"src='data:image/png;base64,{base64.b64encode(png).decode()}'></p>"
            )
        else:
            _, header, rows = block
            parts.append(
                "<table><tr>"
                + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
                + "</table>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)
