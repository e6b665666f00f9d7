"""``meap experiment recompute``: an experiment's verdict recomputed from the records file it published, as
JSON, by the experiment that wrote the file; with ``--same OTHER``, whether the runs two records files hold
computed the same (exit status 1 when they did not), e.g. a rerun on another CPU.

Which experiment wrote a records file is read from its content, by each experiment's ``holds``
(:mod:`meap.experiments.protocol`): the fine-tuning experiment's holds the base model's records, the validity
gate and the runs; the pretraining experiment's holds runs by seed and arm, a dose-response's arms named by
their mask ratio (``meap-0.05``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from meap.config.commands import CommandConfig, option
from meap.constants import ONSET_THRESHOLD, ONSET_WINDOW
from meap.errors import UserError
from meap.fsutil import read_json_gz


@dataclass
class RecomputeConfig(CommandConfig):
    """``meap experiment recompute``: the verdict from a records file (:mod:`meap.experiments.recompute`)."""

    records: str = option(
        "the gzipped records file an experiment published (`records:`, e.g. results/evidence-cpu.records.json.gz)",
        "",
        positional=True,
        metavar="RECORDS",
    )
    same: str = option("another records file: whether the runs both hold computed the same", "", metavar="OTHER")
    arm: list[str] = option(
        "with --same: a run named otherwise in OTHER (e.g. meap-0.15=meap); given again for more",
        factory=list,
        metavar="MINE=OTHERS",
        extend=True,
    )
    threshold: float = option("the verdict's onset threshold (pretraining)", ONSET_THRESHOLD)
    window: int = option("the verdict's moving-average window in probes (pretraining)", ONSET_WINDOW)

    def problems(self) -> list[str]:
        found = []
        if any("=" not in arm for arm in self.arm) or (self.arm and not self.same):
            found.append("--arm: expected MINE=OTHERS (e.g. meap-0.15=meap), with --same")
        if not 0 < self.threshold <= 1:
            found.append(f"--threshold: expected a share in (0, 1], got {self.threshold}")
        if self.window < 1:
            found.append(f"--window: expected a positive integer, got {self.window}")
        return found


def experiments() -> tuple:
    """Every experiment (:class:`meap.experiments.protocol.Experiment`), in the order a records file is matched
    against them (the first that holds it); imported when asked, so that ``meap --help`` loads none."""
    from meap.experiments import demo_sft, dose, paired

    return demo_sft.EXPERIMENT, dose.EXPERIMENT, paired.EXPERIMENT


def experiment_of(records: dict):
    """The experiment whose records file holds ``records``."""
    return next(experiment for experiment in experiments() if experiment.holds(records))


def read(path: Path) -> dict:
    """A records file's content (a one-line :class:`UserError` naming the file when it is none)."""
    try:
        records = read_json_gz(path)
    except (OSError, EOFError, ValueError) as error:
        records = error
    if not isinstance(records, dict):
        reason = f" ({records})" if isinstance(records, Exception) else ""
        raise UserError(f"{path}: expected a gzipped JSON records file written by meap demo or meap demo-sft{reason}")
    return records


def _verdict(path: Path, config: RecomputeConfig) -> dict:
    records = read(path)
    experiment = experiment_of(records)
    result = experiment.verdict(experiment.load(records, path), threshold=config.threshold, window=config.window)
    result.pop("curves", None)  # the figure's data, not the verdict's
    return result


def recompute(config: RecomputeConfig) -> None:
    """Print the verdict recomputed from ``config.records`` (or, with ``same``, the runs' differences)."""
    records = Path(config.records)
    if not config.same:
        print(json.dumps(_verdict(records, config), indent=2))
        return
    from meap.experiments.paired import differences

    arms = dict(arm.split("=", 1) for arm in config.arm)
    loaded = []
    for path in (records, Path(config.same)):
        content = read(path)
        experiment = experiment_of(content)
        if not experiment.runs_compare:
            raise UserError(
                f"{path}: --same compares the pretraining experiment's runs; this is {experiment.name}'s records"
            )
        loaded.append(experiment.load(content, path))
    compared, found = differences(*loaded, arms)
    print("\n".join(found + [f"{len(compared)} runs compared ({', '.join(compared)}): {len(found)} differences"]))
    if found:
        sys.exit(1)
