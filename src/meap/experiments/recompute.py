"""``meap experiment recompute``: an experiment's verdict recomputed from the records file it published, as
JSON, by the experiment that wrote the file; with ``--same OTHER``, whether the runs two records files hold
computed the same (exit status 1 when they did not), e.g. a rerun on another CPU.

Which experiment wrote a records file is read from its content: the fine-tuning experiment's holds the base
model's records, the validity gate and the runs (``base``, ``gate``, ``runs``); the pretraining experiment's
holds runs by seed and arm, a dose-response's arms named by their mask ratio (``meap-0.05``;
:func:`meap.experiments.config.dose_arm`).
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

SFT_KEYS = ("base", "gate", "runs")


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


def experiment_of(records: dict) -> str:
    """``demo-sft``, ``dose`` or ``demo``: the experiment whose records file holds ``records``."""
    if all(key in records for key in SFT_KEYS):
        return "demo-sft"
    arms = {arm for runs in records.values() if isinstance(runs, dict) for arm in runs}
    return "dose" if any(arm != "ntp" and arm.startswith("meap-") for arm in arms) else "demo"


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
    kind = experiment_of(records)
    if kind == "demo-sft":
        from meap.experiments.demo_sft import recompute

        return recompute(records)
    from meap.experiments.dose import dose_response
    from meap.experiments.paired import by_seed, onset_comparison

    compare = dose_response if kind == "dose" else onset_comparison
    result = compare(by_seed(records, path), threshold=config.threshold, window=config.window)
    result.pop("curves")
    return result


def recompute(config: RecomputeConfig) -> None:
    """Print the verdict recomputed from ``config.records`` (or, with ``same``, the runs' differences)."""
    records = Path(config.records)
    if not config.same:
        print(json.dumps(_verdict(records, config), indent=2))
        return
    from meap.experiments.paired import by_seed, differences

    arms = dict(arm.split("=", 1) for arm in config.arm)
    loaded = []
    for path in (records, Path(config.same)):
        content = read(path)
        if experiment_of(content) == "demo-sft":
            raise UserError(f"{path}: --same compares the pretraining experiment's runs; this is demo-sft's records")
        loaded.append(by_seed(content, path))
    compared, found = differences(*loaded, arms)
    print("\n".join(found + [f"{len(compared)} runs compared ({', '.join(compared)}): {len(found)} differences"]))
    if found:
        sys.exit(1)
