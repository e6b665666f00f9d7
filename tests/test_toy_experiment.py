"""A new experiment is its declaration and its runner, nothing more: a toy experiment, defined whole in this
file, trains its arms as the experiments' jobs, evaluates every run with the evaluation kind it names, reaches
a verdict from what it loaded, and is reported, summarised and published by the one protocol
(meap.experiments.protocol); `meap compare` then reads its runs like any others."""

import json
from dataclasses import dataclass, field
from pathlib import Path

from meap import cli
from meap.constants import OBJECTIVES
from meap.eval.results import KINDS
from meap.experiments.protocol import Experiment, conclude
from meap.experiments.runner import Clock, Job, run_jobs
from meap.rundir import RunDir, last_value
from meap.stats import seed_statistics

from conftest import tiny_config


@dataclass
class ToyExperimentConfig:
    output: str
    seeds: list[int] = field(default_factory=lambda: [1, 2])
    summary: str = ""  # where the summary is published besides the experiment's directory


def verdict(loaded: dict, **onset) -> dict:
    """MEAP - NTP clean validation loss per seed (``loaded``: seed -> arm -> metrics), and the pre-stated rule:
    an interval on the lower side of 0 reads "MEAP lower", on the upper side "NTP lower", else "no difference"."""
    seeds = sorted(loaded)
    losses = {arm: [last_value(loaded[seed][arm], "val_loss") for seed in seeds] for arm in OBJECTIVES}
    statistics = seed_statistics([m - n for n, m in zip(*losses.values())])
    low, high = statistics["ci95"]
    decision = "MEAP lower" if high < 0 else "NTP lower" if low > 0 else "no difference"
    return {"seeds": seeds, "val_loss": losses, "difference": statistics, "decision": decision}


def blocks(comparison: dict, config: ToyExperimentConfig) -> list[tuple]:
    rows = [
        [str(seed), *(f"{comparison['val_loss'][arm][i]:.4f}" for arm in OBJECTIVES)]
        for i, seed in enumerate(comparison["seeds"])
    ]
    return [
        ("h1", f"Toy: validation loss, {len(comparison['seeds'])} seeds"),
        ("table", ["seed", *(arm.upper() for arm in OBJECTIVES)], rows),
        ("p", f"Decision: **{comparison['decision']}**."),
    ]


TOY = Experiment(
    "toy",
    "toy.json",
    evaluations=("niah",),
    holds=lambda records: "toy" in records,
    load=lambda content, path: content,
    verdict=verdict,
    blocks=blocks,
)


def run_toy(config: ToyExperimentConfig, data: Path) -> tuple[dict, dict[str, Path]]:
    """Train both arms per seed (two jobs at once), evaluate every run with the kinds TOY names, conclude."""
    output, clock = Path(config.output), Clock()
    jobs = [
        Job(
            f"seed {seed} {arm}",
            "pretrain",
            tiny_config(data, output / f"seed-{seed}" / arm, objective=arm, seed=seed, max_steps=4, eval_every=2),
        )
        for seed in config.seeds
        for arm in OBJECTIVES
    ]
    run_jobs(jobs, parallel=2, progress=False)
    runs = {job.name: job.run_dir.root for job in jobs}
    for run in runs.values():
        for name in TOY.evaluations:
            kind, evaluation = KINDS[name], RunDir(run).evaluation(name)
            settings = dict(lengths=[200], depths=[0.0, 100.0], max_new_tokens=4, no_progress=True)
            kind.evaluate(kind.config(model=str(run), output=str(evaluation), **settings))
    loaded = {
        seed: {arm: RunDir(output / f"seed-{seed}" / arm).read_metrics() for arm in OBJECTIVES} for seed in config.seeds
    }
    return conclude(TOY, TOY.verdict(loaded), config, output, clock, computed=True), runs


def test_a_new_experiment_trains_evaluates_concludes_and_is_compared_through_the_protocol(prepared, tmp_path, capsys):
    config = ToyExperimentConfig(output=str(tmp_path / "toy"), summary=str(tmp_path / "results" / "toy.json"))
    summary, runs = run_toy(config, prepared)

    written = json.loads((tmp_path / "toy" / "toy.json").read_text())
    assert written == summary and written["config"]["seeds"] == [1, 2] and "wall_seconds" in written
    assert written["decision"] in ("MEAP lower", "NTP lower", "no difference")
    report = (tmp_path / "toy" / "comparison.md").read_text()
    assert report.startswith("# Toy: validation loss, 2 seeds") and f"**{summary['decision']}**" in report
    ntp, meap = summary["val_loss"]["ntp"][0], summary["val_loss"]["meap"][0]
    assert f"| 1 | {ntp:.4f} | {meap:.4f} |" in report
    assert (tmp_path / "results" / "toy.md").read_text().strip() == report.strip()  # published beside the JSON
    assert report.strip() in capsys.readouterr().out  # and printed
    for run in runs.values():
        assert KINDS["niah"].has_summary(RunDir(run).evaluation("niah"))

    assert cli.execute(["compare", *map(str, runs.values()), "-o", str(tmp_path / "compare")]) == 0
    compared = (tmp_path / "compare" / "report.md").read_text()
    assert "# NTP vs MEAP" in compared and "paired by seed (2 seed(s): 1, 2)" in compared
    assert "| NIAH, substring |" in compared  # the kind the experiment named, paired by seed
