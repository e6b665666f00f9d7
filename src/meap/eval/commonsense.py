"""Commonsense as the MEAP paper reports it (``meap eval commonsense``): one evaluation kind, whole.

The paper's seven zero-shot tasks through lm-evaluation-harness, with lm-eval's own task definitions and its
``acc`` and ``acc_norm``: ARC-Challenge, ARC-Easy, BoolQ, PIQA, HellaSwag, WinoGrande and OpenBookQA (the
task group ``meap_commonsense``, shipped in ``meap/eval/tasks/`` for ``lm-eval --include_path`` and ``meap eval
harness`` too). The data are read from the Hugging Face datasets cache, offline; where a task's are not there,
one line names the dataset and how to get it. ``--data-dir DIR`` reads local copies instead: ``DIR/<task>/
<split>.jsonl`` (or ``.jsonl.gz``, ``.parquet``) in the dataset's own fields, for which meap writes task
definitions that include lm-eval's and change only where the data come from.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from meap.config import checked
from meap.config.commands import MODEL_HELP, CommandConfig, option
from meap.errors import UserError
from meap.eval.kind import EvaluationKind, by_label, format_value, section

TASKS = ("arc_challenge", "arc_easy", "boolq", "piqa", "hellaswag", "winogrande", "openbookqa")
GROUP = "meap_commonsense"
TASKS_DIR = Path(__file__).parent / "tasks"  # meap_commonsense.yaml
_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
_BUILDERS = {".jsonl": "json", ".jsonl.gz": "json", ".json": "json", ".parquet": "parquet"}


@dataclass
class CommonsenseConfig(CommandConfig):
    model: str = option(MODEL_HELP, "", required=True, metavar="MODEL")
    output: str = option("directory for results.json", "", short="-o", required=True)
    tasks: list[str] = option(
        "the tasks (default: the paper's seven: " + ", ".join(TASKS) + ")", factory=lambda: list(TASKS), comma=True,
        metavar="TASK,...",
    )  # fmt: skip
    data_dir: str | None = option(
        "local copies of the tasks' data: DIR/<task>/<split>.jsonl in each dataset's own fields (default: the "
        "Hugging Face datasets cache)",
        metavar="DIR",
    )
    limit: int | None = option("examples per task (default: all)")
    batch_size: int = option("prompts per forward pass", 8)
    dtype: str = option("weights' precision (auto: bfloat16 on CUDA, float32 on CPU)", "auto", metavar="DTYPE")
    no_progress: bool = option("no progress bar (none either when stderr is not a terminal)", False, switch=True)

    def problems(self) -> list[str]:
        found = [
            f"--tasks: {name} is none of the paper's {', '.join(TASKS)}" for name in self.tasks if name not in TASKS
        ]
        if self.limit is not None and self.limit < 1:
            found.append(f"--limit: expected at least 1, got {self.limit}")
        if self.batch_size < 1:
            found.append(f"--batch-size: expected at least 1, got {self.batch_size}")
        return found


def _dataset(task: str) -> tuple[str, str | None, Path]:
    """(dataset path, configuration name, lm-eval's task YAML) of one of lm-eval's tasks."""
    from meap.eval.harness import task_manager

    entry = task_manager().task_index[task]
    return entry.cfg["dataset_path"], entry.cfg.get("dataset_name"), Path(entry.yaml_path)


def _unavailable(task: str, reason: str) -> str:
    path, name, _ = _dataset(task)
    load = f"datasets.load_dataset({path!r}" + (f", {name!r}" if name else "") + ")"
    return (
        f"commonsense: the data of {task} ({path}" + (f", {name}" if name else "") + f") are not in the Hugging Face "
        f'datasets cache ({reason}); download them where the hub is reachable (python -c "import datasets; {load}") '
        f"and bring that HF_HOME, or give --data-dir DIR with DIR/{task}/<split>.jsonl"
    )


def write_local_tasks(tasks: list[str], data_dir: Path, include: Path) -> None:
    """Task definitions in ``include`` that take lm-eval's (``include:``) and read ``data_dir/<task>/<split>.*``."""
    for task in tasks:
        folder = data_dir / task
        files = {
            path.name.removesuffix(suffix): (str(path.resolve()), _BUILDERS[suffix])
            for suffix in _SUFFIXES
            for path in sorted(folder.glob(f"*{suffix}"))
            if not (suffix == ".json" and path.name.endswith(".jsonl.gz"))
        }
        _, _, yaml_path = _dataset(task)
        needed = _evaluation_split(yaml_path)
        if needed not in files:
            raise UserError(
                f"{folder}: no {needed} split of {task} (expected {folder}/{needed}.jsonl, .jsonl.gz or .parquet)"
            )
        builders = {builder for _, builder in files.values()}
        if len(builders) > 1:
            raise UserError(f"{folder}: one file format per task, found {', '.join(sorted(builders))}")
        definition = {
            "include": str(yaml_path),
            "task": task,
            "dataset_path": builders.pop(),
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {split: path for split, (path, _) in files.items()}},
            # splits the copies lack are none (lm-eval reads the training split when it has one, zero-shot too)
            **{key: None for key, split in _splits(yaml_path).items() if split not in files},
        }
        (include / f"{task}.yaml").write_text(yaml.safe_dump(definition, sort_keys=False), encoding="utf-8")


class _Tolerant(yaml.SafeLoader):
    """Reads lm-eval's task YAML with its ``!function`` tags as plain strings (only the splits are wanted)."""


_Tolerant.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def _splits(yaml_path: Path) -> dict[str, str]:
    """A task's split keys (``training_split``, ``test_split``, ...) and their splits, through its ``include``s."""
    task = yaml.load(yaml_path.read_text(encoding="utf-8"), Loader=_Tolerant)
    inherited = _splits(yaml_path.parent / task["include"]) if "include" in task else {}
    return {**inherited, **{key: value for key, value in task.items() if key.endswith("_split") and value}}


def _evaluation_split(yaml_path: Path) -> str | None:
    """The split a task is scored on: its test split, else its validation split."""
    splits = _splits(yaml_path)
    return splits.get("test_split") or splits.get("validation_split")


def evaluate(config: CommonsenseConfig) -> dict:
    """The paper's commonsense tasks on ``config.model`` (zero-shot); writes ``results.json`` to ``config.output``."""
    from meap.eval.harness import HarnessConfig, run_tasks

    checked(config)
    with tempfile.TemporaryDirectory(prefix="meap-commonsense-") as include:
        if config.data_dir is not None:
            data_dir = Path(config.data_dir)
            if not data_dir.is_dir():
                raise UserError(f"{data_dir}: no such directory of local task data (--data-dir)")
            write_local_tasks(config.tasks, data_dir, Path(include))
        # local copies: their definitions are given by file, so lm-eval's index is not built again to find them
        tasks = [str(Path(include) / f"{task}.yaml") for task in config.tasks] if config.data_dir else config.tasks
        harness = HarnessConfig(
            model=config.model, tasks=tasks, output=config.output, limit=config.limit, batch_size=config.batch_size,
            dtype=config.dtype, no_progress=config.no_progress,
        )  # fmt: skip
        results = run_tasks(harness, _unavailable)
    by_task = {task: results["results"][task] for task in config.tasks}
    accuracies = [metrics.get("acc") for metrics in by_task.values()]
    summary = {
        "model": config.model,
        "tasks": list(config.tasks),
        "data": config.data_dir or "Hugging Face datasets cache",
        "limit": config.limit,
        "num_fewshot": 0,
        "lm_eval_version": results["lm_eval_version"],
        "results": by_task,
        "average_acc": sum(accuracies) / len(accuracies) if None not in accuracies else None,
    }
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    return KIND.write_summary(output, summary)


def headline(summary: dict, output: str | Path) -> str:
    tasks = ", ".join(
        f"{task} {metrics['acc']:.3f}" + (f"/{metrics['acc_norm']:.3f}" if metrics.get("acc_norm") is not None else "")
        for task, metrics in summary["results"].items()
    )
    return f"commonsense: acc (/acc_norm) {tasks}; average acc {format_value(summary['average_acc'])} -> {output}"


def report_section(blocks: list[tuple], loaded: dict[str, dict], output: Path) -> None:
    title = "Commonsense (lm-eval, zero-shot: acc, and acc_norm where defined)"
    for _, heading, view in by_label(loaded, KIND.name, title):
        found = section(blocks, view, KIND.name, heading)
        tasks = list(dict.fromkeys(task for s in found.values() for task in s["results"]))
        blocks.append(
            (
                "table",
                ["run", *tasks, "average acc", "examples per task"],
                [
                    [
                        name,
                        *[_cell(s["results"].get(task)) for task in tasks],
                        format_value(s["average_acc"]),
                        "all" if s["limit"] is None else str(s["limit"]),
                    ]
                    for name, s in found.items()
                ],
            )
        )


def _cell(metrics: dict | None) -> str:
    if metrics is None:
        return "absent"
    norm = metrics.get("acc_norm")
    return format_value(metrics.get("acc")) + (f" / {norm:.4f}" if norm is not None else "")


KIND = EvaluationKind(
    "commonsense",
    "results.json",
    headline,
    report_section,
    paper_rows=lambda s: {
        **{f"commonsense: {task} acc": metrics.get("acc") for task, metrics in s["results"].items()},
        "commonsense: average acc": s["average_acc"],
    },
    paper={"commonsense: average acc": "on par or slightly better pretrained; +1.12 average after fine-tuning"},
    command=("eval", "commonsense"),
    help="the paper's seven commonsense tasks (lm-eval, zero-shot), offline",
    config=CommonsenseConfig,
    evaluate=evaluate,
)
