"""The machinery of a paired experiment (``meap demo``, ``meap demo-sft``): its directory, its clock, and
its training runs as jobs.

Each training run is a job: ``meap pretrain`` (or ``sft``) in its own process with one thread, its config
written to ``<run>.job.yaml`` and its output to ``<run>.log``. A job may wait for others (a branch
for the shared start it continues from). :func:`run_jobs` keeps up to ``parallel`` jobs running; on a
2-core CPU two one-thread processes of a tiny model train faster together than one two-thread process
(BENCHMARKS.md), and since every job runs alone in a one-thread process, ``parallel`` changes the wall
time only, not a single number. A job whose run has its final model is skipped, and one with a checkpoint
resumes from it, so an interrupted experiment continues where it stopped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from meap.config import config_to_dict, save_config, saved_config
from meap.config.loading import dotted
from meap.errors import UserError
from meap.fsutil import atomic_write_json, atomic_write_lines
from meap.rundir import EVAL_DIR, RunDir, last_value

JOB_CONFIG = ".job.yaml"  # beside the run directory (<run>.job.yaml), which the training command creates itself
JOB_LOG = ".log"
_POLL_SECONDS = 1.0
# numerics: portable. PyTorch's own kernels capped at AVX2 and MKL in its conditional-numerical-reproducibility
# mode for AVX2: an AVX-512 CPU then rounds as an AVX2-only one does. Both are read once, before the first
# computation, so they are set before torch computes anything and passed on to every job.
PORTABLE_NUMERICS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"}


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


class Clock:
    """Seconds since the experiment started, as the stage lines print them."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def seconds(self) -> float:
        return round(time.monotonic() - self.started, 1)

    def __str__(self) -> str:
        return f"{time.monotonic() - self.started:5.0f} s"


def provenance(previous_summary: Path, computed: bool, clock: Clock) -> dict:
    """``wall_seconds``, ``code`` and ``machine`` of the invocation that computed the results: this one, or,
    when this one found every stage done (``computed`` false), the one recorded in ``previous_summary``."""
    import json

    from meap.monitor import code_version, machine

    if not computed and previous_summary.is_file():
        previous = json.loads(previous_summary.read_text(encoding="utf-8"))
        if "wall_seconds" in previous:
            return {key: previous[key] for key in ("wall_seconds", "code", "machine") if key in previous}
    return {"wall_seconds": clock.seconds(), "code": code_version(), "machine": machine()}


def pin_numerics(config) -> None:
    """Make this process and the jobs it starts compute as ``config.numerics`` asks: for ``portable``, set
    :data:`PORTABLE_NUMERICS` and check PyTorch took them (it cannot once it has computed, nor on a CPU
    without AVX2)."""
    if config.numerics != "portable":
        return
    os.environ.update(PORTABLE_NUMERICS)
    import torch

    found = torch.backends.cpu.get_cpu_capability()
    if found != "AVX2":
        raise UserError(
            f"numerics: portable needs PyTorch's AVX2 kernels, but this process uses {found} "
            "(a CPU without AVX2, or torch computed before the experiment started: set "
            + " ".join(f"{key}={value}" for key, value in PORTABLE_NUMERICS.items())
            + " in the environment); or pass --numerics native"
        )


def check_output(config, output: Path, overwrite: bool) -> list[str]:
    """An existing experiment directory of the same configuration is continued; anything else needs --overwrite,
    except a change of evaluation settings alone (``config.EVALUATION_KEYS``): those keys are returned, and the
    demo evaluates again without training again; ``config.FREE_KEYS`` may change freely."""
    if not output.exists():
        return []
    if not output.is_dir():
        raise UserError(f"{output}: output path exists and is not a directory")
    saved = RunDir(output).config_file
    if overwrite:
        if any(output.iterdir()) and not saved.is_file():
            raise UserError(f"{output}: not a meap demo directory; refusing to delete it (choose another --output)")
        shutil.rmtree(output)
        return []
    if not saved.is_file():
        if any(output.iterdir()):
            raise UserError(f"{output}: directory is not empty and holds no demo; choose another --output")
        return []
    before, now = dotted(saved_config(type(config), saved)), dotted(config_to_dict(config))
    changed = sorted(key for key in now if before.get(key) != now[key] and key not in config.FREE_KEYS)
    if set(changed) - set(config.EVALUATION_KEYS):
        raise UserError(
            f"{output}: holds a demo with another configuration ({', '.join(changed)}); pass --overwrite to start over"
        )
    return changed


def forget_evaluations(output: Path, names: tuple[str, ...], changed: list[str]) -> None:
    """Remove the evaluations ``<run>/eval/<name>/`` under ``output`` after evaluation settings ``changed``."""
    say(f"evaluation settings changed ({', '.join(changed)}): the trained runs are kept and evaluated again")
    for name in names:
        for path in sorted(output.rglob(name)):
            if path.is_dir() and path.parent.name == EVAL_DIR:
                shutil.rmtree(path)


def start_experiment(config, overwrite: bool) -> tuple[Path, Clock]:
    """Claim the experiment's directory (:func:`check_output`) and write its config.yaml."""
    output = config.resolved_output()
    check_output(config, output, overwrite)
    output.mkdir(parents=True, exist_ok=True)
    save_config(config, RunDir(output).config_file)
    return output, Clock()


def continue_training(train, config, progress: bool) -> Path:
    """Train the run of ``config`` with ``train`` (``meap.train.pretrain`` or ``sft``) in this process as far as it
    still needs: nothing once it has its final model, resumed when it has a checkpoint, else started afresh."""
    run = RunDir(config.resolved_output())
    if run.has_final_model():
        return run.root
    resume = run.can_resume()
    return train(config, resume=resume, overwrite=not resume, progress=progress)


def publish_summary(path: Path, summary: dict, tables: str, figure: Path | None = None) -> None:
    """A summary JSON outside the experiment directory (e.g. ``results/``), its tables beside it (``.md``) and
    the figure they show (``.png``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, summary)
    if figure is not None:
        shutil.copyfile(figure, path.with_suffix(".png"))
        tables = tables.replace(figure.name, path.with_suffix(".png").name)
    atomic_write_lines(path.with_suffix(".md"), [tables])


@dataclass
class Job:
    """One training run: ``command`` (``pretrain`` or ``sft``) with ``config``, after the jobs named in ``after``."""

    name: str
    command: str
    config: object
    after: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> RunDir:
        return RunDir(self.config.resolved_output())

    def beside(self, suffix: str) -> Path:
        return self.run_dir.root.with_name(self.run_dir.root.name + suffix)

    def argv(self) -> list[str]:
        """The command line that continues this run as far as it still needs (resume when it has a checkpoint)."""
        base = [sys.executable, "-m", "meap.cli", self.command, "--no-progress"]
        if self.run_dir.can_resume():
            return [*base, "--output", str(self.run_dir.root), "--resume"]
        return [*base, "--config", str(self.beside(JOB_CONFIG)), "--overwrite"]


def job_seconds(jobs: list[Job]) -> float:
    """Training time of ``jobs`` summed over them (each run's last ``elapsed_s``): what an experiment that was
    interrupted and continued cost, which its own clock, restarted at the continue, does not show."""
    return round(sum(last_value(job.run_dir.read_metrics(), "elapsed_s") or 0.0 for job in jobs), 1)


def _environment() -> dict[str, str]:
    # one thread per job: the same arithmetic whatever the number of parallel jobs
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _failure(job: Job) -> str:
    log = job.beside(JOB_LOG)
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []
    errors = [line for line in lines if line.startswith("meap: error:")]
    last = errors[-1] if errors else next((line for line in reversed(lines) if line.strip()), "no output")
    return f"training job {job.name} failed ({last.strip()}); its log: {log}"


def run_jobs(jobs: list[Job], parallel: int, progress: bool = True) -> None:
    """Run ``jobs`` (in dependency order, up to ``parallel`` at once); raise :class:`UserError` naming the
    first that fails (the others still running are stopped; their checkpoints stay for a continue)."""
    from tqdm.auto import tqdm

    names = {job.name for job in jobs}
    if any(dependency not in names for job in jobs for dependency in job.after):
        raise ValueError("a job waits for one that is not in the list")
    done = {job.name for job in jobs if job.run_dir.has_final_model()}
    pending = [job for job in jobs if job.name not in done]
    running: dict[str, tuple[Job, subprocess.Popen]] = {}

    def steps() -> int:
        return sum(job.config.max_steps if job.name in done else job.run_dir.last_logged_step() for job in jobs)

    # initial: a continued run's rate and ETA count only the steps trained now
    bar = tqdm(
        total=sum(job.config.max_steps for job in jobs),
        initial=steps(),
        desc="training",
        unit="step",
        disable=not progress,
    )
    try:
        while pending or running:
            for name, (job, process) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                if process.returncode != 0 or not job.run_dir.has_final_model():
                    raise UserError(_failure(job))
                done.add(name)
            for job in [job for job in pending if set(job.after) <= done][: max(0, parallel - len(running))]:
                pending.remove(job)
                job.run_dir.root.parent.mkdir(parents=True, exist_ok=True)
                save_config(job.config, job.beside(JOB_CONFIG))
                with job.beside(JOB_LOG).open("a", encoding="utf-8") as log:
                    process = subprocess.Popen(job.argv(), stdout=log, stderr=subprocess.STDOUT, env=_environment())
                running[job.name] = (job, process)
            if pending and not running:
                raise ValueError("jobs wait for each other in a cycle")
            bar.n = steps()
            bar.refresh()
            if running:
                time.sleep(_POLL_SECONDS)
    finally:
        for _, process in running.values():
            process.terminate()
        for _, process in running.values():
            process.wait()
        bar.close()
