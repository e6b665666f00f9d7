"""``meap demo``: does MEAP learn in-context copying (``task: copy``) or lookup by key (``task: retrieval``)
from fewer tokens than NTP? A paired experiment on a laptop CPU, from corpus to verdict.

Stages (each prints where it is; finished work is skipped, so an interrupted demo continues):

1. **corpus**: a byte-level BPE, the key and value words (:mod:`meap.experiments.corpus`), the retrieval
   documents (``data/``), the copy drills of the shared starts (``drills/``), the probes scored during
   training (``probes.jsonl``) and the final evaluation's prompts (``evaluation.jsonl``), all from ``seed``;
   every probe and prompt is checked to fit the trained length before anything trains;
2. **train**: per training seed, a shared start (``seed-<s>/shared/``: NTP on copy drills, which forms
   copying but not lookup by key), then one branch per objective continued from that same model
   (``seed-<s>/<objective>/``) at a constant learning rate, with the probes scored every ``probe_every``
   steps into its ``metrics.jsonl``. Runs are jobs of :mod:`meap.experiments.runner` (``jobs`` at once);
3. **evaluate**: each branch's greedy, strictly scored retrieval with the asked needle present and absent,
   teacher-forced scores and attention onto the values (``<run>/eval/retrieval/``);
4. **verdict**: :func:`meap.experiments.paired.onset_comparison` (onsets, censored ones read as censored, the rule of
   :func:`meap.stats.compare_onsets`, the secondary measures), ``comparison.md`` and ``comparison.png`` (the
   curves), ``demo.json``.

The design, and the decision rule fixed before any run, are in RESULTS.md.
"""

from __future__ import annotations

from pathlib import Path

from meap.constants import OBJECTIVES
from meap.eval.results import has_summary
from meap.experiments.config import DemoConfig
from meap.experiments.corpus import DATA_DIRS, EVALUATION_FILE, PROBES_FILE, materials, trained_length, write_materials
from meap.experiments.protocol import conclude
from meap.experiments.runner import (
    Clock,
    Job,
    check_output,
    forget_evaluations,
    job_seconds,
    pin_numerics,
    run_jobs,
    say,
    start_experiment,
)
from meap.fsutil import atomic_write_jsonl

# `meap demo --quick`: every stage on a few documents and steps (a smoke test, not an experiment).
QUICK = {
    "documents": 300,
    "drill_documents": 200,
    "shared_steps": 4,
    "shared_batch_size": 4,
    "probe_every": 4,
    "probes": 8,
    "eval_probes": 8,
    "absent_probes": 4,
    "train.max_steps": 8,
    "train.micro_batch_size": 4,
    "train.log_every": 2,
    "train.eval_every": 4,
    "train.save_every": 0,
}


def check_prompts(config: DemoConfig, found: dict, where: Path) -> None:
    """Every probe and evaluation prompt within the trained length (:class:`UserError` before anything trains)."""
    from meap.probes import tokenize_probes

    texts = found["drills"] if config.task == "copy" else found["documents"]
    limit = trained_length(config, found["tokenizer"], texts)
    for name, records in ((PROBES_FILE, found["probes"]), (EVALUATION_FILE, found["evaluation"])):
        tokenize_probes(records, found["tokenizer"], limit, source=str(where / name))


def training_jobs(config: DemoConfig, output: Path, data: Path, drills: Path, probes: Path) -> tuple[list[Job], dict]:
    """The jobs (shared starts, then branches) and the branch runs, seed -> branch name -> directory."""
    from meap.rundir import RunDir

    jobs, runs = [], {}
    for seed in config.training_seeds():
        root = output / f"seed-{seed}"
        after, model = [], config.train.model
        if config.shared_steps:
            shared = config.pretrain_config(
                "ntp",
                str(drills),
                root / "shared",
                seed,
                seq_len=config.shared_seq_len,
                micro_batch_size=config.shared_batch_size,
                grad_accum_steps=1,
                max_steps=config.shared_steps,
                min_lr=config.train.lr,
                eval_every=0,
                save_every=0,
                probe_file="",
                probe_every=0,
            )
            jobs.append(Job(f"seed {seed} shared start", "pretrain", shared))
            after, model = [jobs[-1].name], str(RunDir(shared.resolved_output()).final_dir)
        runs[seed] = {}
        for arm, objective, overrides in config.arms():
            trained_on = drills if config.task == "copy" else data
            branch = config.pretrain_config(
                objective,
                str(trained_on),
                root / arm,
                seed,
                model=model,
                warmup_steps=0 if config.shared_steps else config.train.warmup_steps,
                probe_file=str(probes.absolute()),
                probe_every=config.probe_every,
                **overrides,
            )
            jobs.append(Job(f"seed {seed} {arm}", "pretrain", branch, after=list(after)))
            runs[seed][arm] = branch.resolved_output()
    return jobs, runs


def _evaluate(config: DemoConfig, run: Path, evaluation_file: Path, progress: bool) -> bool:
    """Evaluate ``run`` unless it was evaluated before; whether it ran."""
    from meap.eval import retrieval

    evaluation = config.retrieval_config(run, evaluation_file, progress)
    if has_summary(Path(evaluation.output), "retrieval"):
        return False
    retrieval.evaluate(evaluation)
    return True


def run_demo(config: DemoConfig, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Run every stage for ``config`` and return the summary (also in ``demo.json``)."""
    pin_numerics(config)  # before anything computes here (the evaluations) or in the jobs, which inherit it
    from meap.data.shards import META_FILE
    from meap.experiments import dose, paired
    from meap.experiments.paired import load_runs, write_records

    seeds, objectives = config.training_seeds(), config.objectives
    output = config.resolved_output()
    # before the materials are drawn (--overwrite deletes only once they are checked)
    changed = [] if overwrite else check_output(config, output, overwrite)
    clock = Clock()
    say(f"{clock}  1/4 corpus, probes and evaluation prompts")
    done = (output / DATA_DIRS["drills"] / META_FILE).is_file() and not overwrite
    found = None if done and not changed else materials(config)
    if found is not None:
        check_prompts(config, found, output)
    start_experiment(config, overwrite)
    if not done:
        write_materials(found, output, progress)
    elif changed:
        forget_evaluations(output, paired.EXPERIMENT.evaluations, changed)
        atomic_write_jsonl(output / EVALUATION_FILE, found["evaluation"])
    data, drills = output / DATA_DIRS["corpus"], output / DATA_DIRS["drills"]
    probes, evaluation = output / PROBES_FILE, output / EVALUATION_FILE
    jobs, runs = training_jobs(config, output, data, drills, probes)
    say(
        f"{clock}  2/4 training {len(jobs)} runs, {config.jobs} at a time: per seed "
        + (f"a shared start ({config.shared_steps} steps of copy drills), then " if config.shared_steps else "")
        + f"{', '.join(arm.upper() for arm, _, _ in config.arms())} for {config.train.max_steps} steps each; "
        + f"seeds {seeds}"
    )
    computed = not done or any(not job.run_dir.has_final_model() for job in jobs)
    run_jobs(jobs, config.jobs, progress)
    for seed_runs in runs.values():
        for run in seed_runs.values():
            say(f"{clock}  3/4 evaluating {run.relative_to(output)}")
            computed |= _evaluate(config, run, evaluation, progress)
    loaded = load_runs(runs)
    if config.records:
        write_records(loaded, Path(config.records))
    if set(objectives) != set(OBJECTIVES):
        say(f"{clock}  done: one objective, nothing to pair; the runs and their evaluations are in {output}")
        return {"runs": {str(seed): {o: str(run) for o, run in by.items()} for seed, by in runs.items()}}
    say(f"{clock}  4/4 verdict")
    # a dose-response reads a trend over the mask ratios; otherwise the onsets of the pair
    experiment = dose.EXPERIMENT if config.mask_ratios else paired.EXPERIMENT
    onset = dict(threshold=config.onset_threshold, window=config.onset_window)
    comparison = {**experiment.verdict(loaded, **onset), "task": config.task}
    # wall_seconds: the last invocation that trained or evaluated; training_job_seconds: every training job,
    # continues included
    return conclude(experiment, comparison, config, output, clock, computed, training_job_seconds=job_seconds(jobs))
