"""Standard benchmarks through lm-evaluation-harness (``lm-eval``) on a meap model, offline first.

The model is loaded once with :func:`meap.models.load_causal_lm` and handed to lm-eval in memory
(``HFLM``); lm-eval does the prompting, scoring and aggregation. The machines this runs on usually have
no network, so the Hugging Face Hub is switched to offline mode for the run (unless ``HF_HUB_OFFLINE``
or ``HF_DATASETS_OFFLINE`` is set): a task whose dataset is neither cached nor local then fails at once
with a one-line :class:`UserError` instead of after a minute of download retries. Local task definitions
(YAML pointing at local data files) come in through ``include_path``. The kind whole: its config,
headline, report section (a column per task and metric) and record, :data:`KIND`.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from meap.config import checked
from meap.config.commands import (
    CommandConfig,
    batch_size_option,
    dtype_option,
    model_option,
    no_progress_option,
    option,
    output_option,
)
from meap.errors import UserError, drop_library_message, error_summary
from meap.eval.kind import EvaluationKind, by_label, format_value, section
from meap.fsutil import atomic_write_jsonl

OFFLINE_SWITCHES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")  # either one set: the libraries decide (=0: download)
NO_FILTER = ",none"  # lm-eval names results `<metric>,<filter>`; most tasks use no filter
NOT_AVAILABLE = "N/A"  # lm-eval's value for a metric it could not compute
BOOKKEEPING = {"alias", "name", "sample_len"}  # non-metric entries of lm-eval's per-task results
# lm-eval warnings that every run through this module triggers on purpose (an in-memory model, an
# explicit num_fewshot): (logger, message start).
EXPECTED_WARNINGS = (
    ("lm_eval.models.huggingface", "`pretrained` model kwarg is not of type `str`"),
    ("lm_eval.models.huggingface", "Passed an already-initialized model"),
    ("lm_eval.evaluator", "Overwriting default num_fewshot"),
)


@dataclass
class HarnessConfig(CommandConfig):
    model: str = model_option()
    tasks: list[str] = option(
        "comma-separated lm-eval task names", factory=list, comma=True, required=True, metavar="TASK,..."
    )
    output: str = output_option("directory for results.json")
    num_fewshot: int = option("examples shown before each question", 0)
    limit: int | None = option("examples per task (default: all)")
    include_path: str | None = option("directory of local lm-eval task definitions (offline data)", metavar="DIR")
    batch_size: int = batch_size_option()
    dtype: str = dtype_option()
    log_samples: bool = option(
        "also write lm-eval's per-sample records (samples_<task>.jsonl: each document, the requests, the "
        "model's responses and its metrics)",
        False,
        switch=True,
    )
    no_progress: bool = no_progress_option()

    def problems(self) -> list[str]:
        found = (
            []
            if self.tasks
            else ["no lm-eval task given: name at least one (e.g. arc_easy, or a task under --include-path)"]
        )
        if self.num_fewshot < 0:
            found.append(f"num_fewshot must be 0 or more, got {self.num_fewshot}")
        if self.limit is not None and self.limit < 1:
            found.append(f"limit must be a positive number of examples per task, got {self.limit}")
        if self.batch_size < 1:
            found.append(f"batch_size must be positive, got {self.batch_size}")
        return found


def evaluate(config: HarnessConfig) -> dict:
    """Evaluate ``config.model`` on lm-eval ``config.tasks`` and write ``results.json`` to ``config.output``;
    returns the same summary.

    ``model`` is a model directory, a meap run directory or a packaged model name; ``limit`` caps the
    examples per task; ``include_path`` is a folder of extra task definitions (YAML), searched in addition
    to lm-eval's own. Tasks are loaded before the model, so a bad or unavailable task fails fast.
    """
    samples: dict = {}
    summary = run_tasks(config, samples=samples)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    for task, logged in samples.items():  # before the summary, which is written last
        atomic_write_jsonl(output / f"samples_{task}.jsonl", logged)
    return KIND.write_summary(output, summary)


def run_tasks(
    config: HarnessConfig, unavailable: Callable[[str, str], str] | None = None, samples: dict | None = None
) -> dict:
    """lm-eval's results for ``config`` as meap's summary, nothing written. ``unavailable(task, reason)``: the
    one-line error for a task whose data are not available offline (default: name --include-path). With
    ``config.log_samples``, ``samples`` receives lm-eval's per-sample records by task."""
    checked(config)
    _quiet_lm_eval_logging()
    with _hub_offline(), _progress_bars(not config.no_progress):
        tasks = task_manager(config.include_path)
        _check_task_names(config.tasks, tasks)
        loaded_tasks = [item for name in config.tasks for item in _load_task(name, tasks, unavailable)]
        evaluated = _evaluate(loaded_tasks, tasks, config)
    if samples is not None:
        samples.update(evaluated.get("samples") or {})
    return _summary(evaluated, config)


def _quiet_lm_eval_logging() -> None:
    """lm-eval logs every task it builds and every setting it applies at INFO; keep its warnings only,
    less those that only describe how this module calls it."""
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    for logger_name, message_start in EXPECTED_WARNINGS:
        drop_library_message(logger_name, message_start)


@contextlib.contextmanager
def _hub_offline():
    """Hub offline mode for the block, unless the user chose a mode through the environment.

    Both libraries read the environment once, at import, and ``transformers`` (hence ``huggingface_hub``)
    is usually imported long before this module; so their module-level switches are flipped directly.
    """
    if any(name in os.environ for name in OFFLINE_SWITCHES):
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    switches = [
        (huggingface_hub.constants, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_DATASETS_OFFLINE"),
    ]
    with _swapped([(module, name, True) for module, name in switches]):
        yield


@contextlib.contextmanager
def _swapped(replacements: list[tuple]):
    """``(module, name, value)``: each module attribute set to its value for the block, restored after it."""
    saved = [getattr(module, name) for module, name, _ in replacements]
    for module, name, value in replacements:
        setattr(module, name, value)
    try:
        yield
    finally:
        for (module, name, _), value in zip(replacements, saved):
            setattr(module, name, value)


@lru_cache(maxsize=4)
def task_manager(include_path: str | None = None):
    """lm-eval's task index (its own tasks plus ``include_path``), built once per process and folder: it scans
    every task definition lm-eval ships (about 7 s)."""
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise UserError(f"{include_path}: no such folder of lm-eval task definitions (--include-path)")
    return TaskManager(include_path=include_path)


def _check_task_names(tasks: list[str], task_manager) -> None:
    """Every name must be a known task, group or tag, or a task YAML file; suggest near misses."""
    known = set(task_manager.all_tasks)
    for name in tasks:
        if name in known or Path(name).is_file():
            continue
        close = difflib.get_close_matches(name, task_manager.all_tasks, n=5, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "list them with `lm-eval ls tasks`"
        raise UserError(f"unknown lm-eval task `{name}`: {hint}")


def _load_task(name: str, task_manager, unavailable: Callable[[str, str], str] | None = None) -> list:
    """The task, group or tag ``name`` as lm-eval objects, its dataset loaded (from cache or local files)."""
    try:
        loaded = task_manager.load(name)
    except ConnectionError as error:  # datasets' way of saying: not cached, and the Hub is offline or unreachable
        if unavailable is not None:
            raise UserError(unavailable(name, error_summary(error))) from None
        raise UserError(
            f"lm-eval task `{name}`: its data is not available offline ({error_summary(error)}); "
            f"pass --include-path DIR with local task definitions and data, or set HF_HUB_OFFLINE=0 "
            f"to download it"
        ) from None
    except FileNotFoundError as error:  # a local task's data_files
        raise UserError(
            f"lm-eval task `{name}`: {error_summary(error)} (a relative data_files path is read from "
            f"the working directory, not from the task's folder)"
        ) from None
    return _top_level(loaded)


def _top_level(loaded: dict) -> list:
    """Groups not nested in another group, then tasks outside every group: what ``simple_evaluate`` takes."""
    nested = {sub.name for group in loaded["groups"].values() for sub in group.get_all_groups()}
    groups = [group for name, group in loaded["groups"].items() if name not in nested]
    grouped = {task.task_name for group in groups for task in group.get_all_tasks()}
    return groups + [task for name, task in loaded["tasks"].items() if name not in grouped]


def _evaluate(loaded_tasks: list, task_manager, config: HarnessConfig) -> dict:
    """lm-eval's raw results for the loaded tasks on ``config.model``."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from meap.models import load_causal_lm

    causal_lm, tokenizer = load_causal_lm(config.model, dtype=config.dtype)
    harness_model = HFLM(pretrained=causal_lm, tokenizer=tokenizer, batch_size=config.batch_size)
    with _quiet_git():
        return lm_eval.simple_evaluate(
            model=harness_model,
            tasks=loaded_tasks,
            num_fewshot=config.num_fewshot,
            limit=config.limit,
            task_manager=task_manager,
            log_samples=config.log_samples,
        )


@contextlib.contextmanager
def _progress_bars(enabled: bool):
    """lm-eval's own progress bars (building, tokenising and scoring requests) and those of `datasets` (building
    a task's data), silenced unless ``enabled``.

    lm-eval has no switch for all of them, so the ``tqdm`` its modules imported is swapped for the block.
    """
    if enabled:
        yield
        return
    import datasets
    import lm_eval.api.model
    import lm_eval.api.task
    import lm_eval.models.huggingface

    modules = [lm_eval.api.task, lm_eval.api.model, lm_eval.models.huggingface]
    datasets_bars = not datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        with _swapped([(module, "tqdm", _disabled(module.tqdm)) for module in modules]):
            yield
    finally:
        if datasets_bars:
            datasets.enable_progress_bars()


def _quiet_git():
    """lm-eval records the git commit of the working directory with `git describe`, whose "fatal: not a git
    repository" reaches the terminal everywhere else; the same record, git's complaints discarded."""
    import lm_eval.evaluator

    return _swapped([(lm_eval.evaluator, "get_git_commit_hash", _git_commit)])


def _git_commit() -> str | None:
    try:
        return subprocess.check_output(["git", "describe", "--always"], stderr=subprocess.DEVNULL).decode().strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None


def _disabled(bar):
    """``bar`` (a tqdm class) that never displays, whatever ``disable`` its caller passes."""

    def disabled_bar(*args, **kwargs):
        return bar(*args, **{**kwargs, "disable": True})

    return disabled_bar


def _summary(evaluated: dict, config: HarnessConfig) -> dict:
    """The run's settings and, per task (and group), lm-eval's metrics plus the examples scored."""
    import lm_eval

    samples = evaluated.get("n-samples", {})
    results = {}
    for task, metrics in evaluated["results"].items():
        results[task] = _metrics(metrics)
        if task in samples:
            results[task]["samples"] = samples[task]["effective"]
    return {
        "model": config.model,
        "tasks": list(config.tasks),
        "num_fewshot": config.num_fewshot,
        "limit": config.limit,
        "lm_eval_version": lm_eval.__version__,
        "results": results,
    }


def _metrics(reported: dict) -> dict:
    """lm-eval's numbers for one task, `acc,none` shortened to `acc`; what it cannot compute as null.

    lm-eval writes "N/A" for a standard error of a single example, and a metric can come out NaN.
    """
    metrics = {}
    for key, value in reported.items():
        if key in BOOKKEEPING:
            continue
        if value == NOT_AVAILABLE or (isinstance(value, float) and not math.isfinite(value)):
            value = None
        metrics[key.removesuffix(NO_FILTER)] = value
    return metrics


def headline(summary: dict, output: str | Path) -> str:
    """A line per task: its metrics."""
    return "\n".join(
        f"{task}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        for task, metrics in summary["results"].items()
    )


def _section(blocks: list[tuple], loaded: dict[str, dict], title: str) -> None:
    harness = {name: summary["results"] for name, summary in section(blocks, loaded, KIND.name, title).items()}
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


def report_section(blocks: list[tuple], loaded: dict[str, dict], output: Path) -> None:
    for _, heading, view in by_label(loaded, KIND.name, "lm-evaluation-harness"):
        _section(blocks, view, heading)


KIND = EvaluationKind(
    "harness",
    "results.json",
    headline,
    report_section,
    command=("eval", "harness"),
    help="lm-evaluation-harness tasks",
    config=HarnessConfig,
    evaluate=evaluate,
)
