"""``meap eval suite``: the paper's whole evaluation of one or more models, stage by stage.

NIAH at the lengths that fit each model, multi-document QA (real nq-open files when given, else the synthetic
set with hard distractors, the gold document first, in the middle and last), multi-needle reasoning, key-value
retrieval, commonsense, hallucination (when a judge is configured) and the attention analysis. Each stage writes
into ``<run>/eval/<stage>/`` (a model that is no meap run: ``<output>/<name>/eval/<stage>/``), where ``meap
compare`` finds it; a stage already done is skipped, so an interrupted suite continues (``--overwrite``: all
again). A stage that cannot run here (no key-value file, no judge) is skipped with a line saying why; one that
fails does not stop the others, and the suite ends with one line naming it. The recipe
``configs/paper-eval.yaml`` holds the CPU-sized defaults below.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from meap.config import checked
from meap.config.commands import DTYPE_HELP, MODEL_HELP, CommandConfig, option
from meap.errors import UserError
from meap.rundir import RunDir

STAGES = ("niah", "mdqa", "reasoning", "kv-retrieval", "commonsense", "hallucination", "attention")
STAGE_KIND = {"reasoning": "niah"}  # a stage's evaluation kind, where it is not its name
STAGE_DIR = {"reasoning": "niah-reasoning"}  # a stage's directory under eval/, where it is not its name


@dataclass
class SuiteConfig(CommandConfig):
    model: list[str] = option(
        f"one or more models: {MODEL_HELP}; a run is evaluated into <run>/eval/, any other into -o DIR/<name>/eval/",
        factory=list,
        required=True,
        metavar="MODEL",
    )
    output: str | None = option(
        "where the evaluations of models that are no meap run go (<output>/<name>/eval/)", short="-o", metavar="DIR"
    )
    stages: list[str] = option(f"the stages, in order (default: {' '.join(STAGES)})", factory=lambda: list(STAGES))
    niah_lengths: list[int] = option(
        "NIAH prompt lengths, those beyond a model's context skipped", factory=lambda: [512, 1024, 2048]
    )
    niah_depths: list[float] = option("NIAH needle depths in percent", factory=lambda: [0.0, 50.0, 100.0])
    niah_samples: int = option("NIAH needles per cell (and reasoning prompts per length)", 2)
    reasoning_lengths: list[int] = option("multi-needle reasoning prompt lengths", factory=lambda: [512, 1024])
    mdqa_data: list[str] = option(
        "real lost-in-the-middle files (nq-open-*); default: the synthetic set", factory=list, metavar="FILE"
    )
    mdqa_limit: int | None = option("questions per file (default: all; the synthetic set has --mdqa-examples)")
    mdqa_num_docs: int = option("documents per synthetic question", 10)
    mdqa_examples: int = option("synthetic questions per gold position", 20)
    kv_data: str | None = option(
        "lost-in-the-middle's kv-retrieval-*_keys.jsonl.gz (without it the stage is skipped)", metavar="FILE"
    )
    kv_num_pairs: int | None = option("key-value pairs kept per prompt (the file's 75 do not fit a 2k context)", 10)
    kv_gold_index: list[int] = option("positions of the asked pair", factory=lambda: [0, 4, 9])
    kv_limit: int | None = option("key-value examples", 20)
    commonsense_data_dir: str | None = option(
        "local copies of the commonsense data (default: the datasets cache)", metavar="DIR"
    )
    commonsense_limit: int | None = option("examples per commonsense task", 100)
    hallucination_data: str | None = option(
        "documents with reference summaries (XSum's xsum-1000.jsonl.gz, ...)", metavar="PATH"
    )
    hallucination_limit: int | None = option("documents summarised", 50)
    judge_url: str | None = option(
        "an OpenAI-compatible judge endpoint (without a judge the stage is skipped)", metavar="URL"
    )
    judge_model: str | None = option("the model name the judge endpoint serves", metavar="NAME")
    judge: str | None = option("a local judge model, run in-process", metavar="MODEL")
    judge_prompt: str | None = option("a judge prompt file (default: meap's own)", metavar="FILE")
    judge_max_tokens: int = option("longest judge answer", 512)
    attention_samples: int = option("attention probes", 4)
    attention_length: int = option("attention probe length, capped at a model's context", 1024, metavar="TOKENS")
    batch_size: int = option("prompts per forward pass", 8)
    dtype: str = option(DTYPE_HELP, "auto", metavar="DTYPE")

    def problems(self) -> list[str]:
        found = [f"--stages: {stage} is none of {', '.join(STAGES)}" for stage in self.stages if stage not in STAGES]
        if not self.model:
            found.append("suite: give at least one --model")
        return found


def model_root(spec: str, output: str | None) -> Path:
    """Where ``spec``'s evaluations go: the run directory itself, or ``output/<name>``."""
    if RunDir(Path(spec)).config_file.is_file():
        return Path(spec)
    if output is None:
        raise UserError(f"suite: {spec} is no meap run directory; give -o DIR for its evaluations (DIR/<name>/eval/)")
    return Path(output) / re.sub(r"[^\w.-]+", "-", Path(spec).name or spec)


def _context(spec: str) -> int | None:
    from meap.models import resolve_model_dir

    config = json.loads((resolve_model_dir(spec) / "config.json").read_text(encoding="utf-8"))
    return config.get("max_position_embeddings")


def stage_config(stage: str, spec: str, directory: Path, config: SuiteConfig, progress: bool = False):
    """(the entry point, its config) of ``stage`` for model ``spec``, or a string: why the stage is skipped."""
    from meap.config.commands import MakeMDQAConfig
    from meap.eval import attention, commonsense, hallucination, kv_retrieval, mdqa, niah

    common = {"model": spec, "output": str(directory), "batch_size": config.batch_size, "dtype": config.dtype}
    quiet = {"no_progress": not progress}
    if stage in ("niah", "reasoning"):
        lengths = config.niah_lengths if stage == "niah" else config.reasoning_lengths
        variant = "single" if stage == "niah" else "reasoning"
        depths = config.niah_depths if stage == "niah" else [50.0]
        return niah.evaluate, niah.NIAHConfig(
            **common, **quiet, lengths=lengths, depths=depths, samples=config.niah_samples, variant=variant
        )
    if stage == "mdqa":
        files = config.mdqa_data or _synthetic_mdqa(directory / "inputs", config, MakeMDQAConfig)
        return mdqa.evaluate, mdqa.MDQAConfig(**common, **quiet, data=files, limit=config.mdqa_limit)
    if stage == "kv-retrieval":
        if not config.kv_data:
            return "no --kv-data (lost-in-the-middle's kv-retrieval-*_keys.jsonl.gz)"
        return kv_retrieval.evaluate, kv_retrieval.KVRetrievalConfig(
            **common, **quiet, data=config.kv_data, num_pairs=config.kv_num_pairs, gold_index=config.kv_gold_index,
            limit=config.kv_limit,
        )  # fmt: skip
    if stage == "commonsense":
        return commonsense.evaluate, commonsense.CommonsenseConfig(
            **common, **quiet, data_dir=config.commonsense_data_dir, limit=config.commonsense_limit
        )
    if stage == "hallucination":
        if not config.hallucination_data:
            return "no --hallucination-data (documents with reference summaries)"
        if not (config.judge_url or config.judge):
            return "no judge configured (--judge-url with --judge-model, or --judge)"
        return hallucination.evaluate, hallucination.HallucinationConfig(
            **common, **quiet, data=config.hallucination_data, limit=config.hallucination_limit,
            judge_url=config.judge_url, judge_model=config.judge_model, judge=config.judge,
            judge_prompt=config.judge_prompt, judge_max_tokens=config.judge_max_tokens,
        )  # fmt: skip
    context = _context(spec)
    length = min(config.attention_length, context) if context else config.attention_length
    return attention.evaluate, attention.AttentionConfig(
        model=[spec], output=str(directory), samples=config.attention_samples, length=length, **quiet
    )


def _synthetic_mdqa(directory: Path, config: SuiteConfig, make_config) -> list[str]:
    """The synthetic set with hard distractors, gold first, in the middle and last (the same for every model)."""
    from meap.eval.mdqa_data import make_mdqa

    positions = sorted({0, config.mdqa_num_docs // 2, config.mdqa_num_docs - 1})
    files = []
    for position in positions:
        path = directory / f"synthetic_gold_at_{position}.jsonl.gz"
        if not path.is_file():
            make_mdqa(make_config(output=str(path), num_docs=config.mdqa_num_docs, gold_position=position,
                                  examples=config.mdqa_examples))  # fmt: skip
        files.append(str(path))
    return files


def run_suite(config: SuiteConfig, overwrite: bool = False, progress: bool = True) -> dict:
    """Every stage of ``config`` for every model; returns {model: {stage: "done"|"skipped: ..."|"failed: ..."}}."""
    from meap.eval.results import KINDS, headline

    checked(config)
    roots = {spec: model_root(spec, config.output) for spec in config.model}
    outcome: dict[str, dict[str, str]] = {}
    total = len(config.model) * len(config.stages)
    step = 0
    for spec, root in roots.items():
        outcome[spec] = {}
        for stage in config.stages:
            step += 1
            directory = RunDir(root).evaluation(STAGE_DIR.get(stage, stage))
            kind = KINDS[STAGE_KIND.get(stage, stage)]
            where = f"suite [{step}/{total}] {spec}: {stage}"
            if kind.has_summary(directory) and not overwrite:
                print(f"{where}: done before ({directory})", flush=True)
                outcome[spec][stage] = "done"
                continue
            planned = stage_config(stage, spec, directory, config, progress)
            if isinstance(planned, str):
                print(f"{where}: skipped, {planned}", flush=True)
                outcome[spec][stage] = f"skipped: {planned}"
                continue
            entry, stage_config_ = planned
            print(f"{where} ...", flush=True)
            started = time.perf_counter()
            try:
                summary = entry(stage_config_)
            except UserError as error:
                print(f"{where}: failed, {error}", flush=True)
                outcome[spec][stage] = f"failed: {error}"
                continue
            print(f"{headline(summary, directory)} ({time.perf_counter() - started:.1f} s)", flush=True)
            outcome[spec][stage] = "done"
    failed = [
        f"{spec} {stage}"
        for spec, stages in outcome.items()
        for stage, state in stages.items()
        if state.startswith("failed")
    ]
    if failed:
        raise UserError(f"suite: {len(failed)} of {total} stages failed ({', '.join(failed)}); the others are written")
    return outcome
