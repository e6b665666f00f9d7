"""The arms of a comparison of runs and the runs paired by training seed, read from the runs' configs alone:
an arm is whatever the runs are (each one's objective, and its mask ratio where MEAP runs differ in it), the
baseline first. What the report, the paper's table and the evaluation kinds' sections pair. Torch-free."""

from __future__ import annotations

from meap.constants import OBJECTIVES


def arms(loaded: dict[str, dict]) -> dict[str, str | None]:
    """Each run's arm, from its config: its objective, and for MEAP its mask ratio too (``meap-0.05``) where
    the runs hold MEAP at more than one ratio. The arms are whatever the runs are: no arm is named here."""

    def ratio(run: dict):
        return run["config"].get("mask_ratio")

    meap = {ratio(run) for run in loaded.values() if run["config"].get("objective") == OBJECTIVES[1]}
    return {
        name: f"{OBJECTIVES[1]}-{ratio(run):g}"
        if len(meap) > 1 and run["config"].get("objective") == OBJECTIVES[1]
        else run["config"].get("objective")
        for name, run in loaded.items()
    }


def arm_order(names) -> list[str]:
    """Arms in the order comparisons read them: the baseline (NTP) first, then by name."""
    return sorted(names, key=lambda arm: (arm != OBJECTIVES[0], str(arm)))


def arm_title(arm: str) -> str:
    return arm.upper()


def seed_pair_names(loaded: dict[str, dict]) -> dict:
    """seed -> {arm: name}, the baseline arm first: the seeds (from the runs' configs) with exactly one run of
    every arm the runs hold (at least two arms)."""
    by_seed: dict = {}
    arm_by_name = arms(loaded)
    order = arm_order({arm for arm in arm_by_name.values() if arm is not None})
    if len(order) < 2:
        return {}
    for name, run in loaded.items():
        by_seed.setdefault(run["config"].get("seed"), {}).setdefault(arm_by_name[name], []).append(name)
    return {
        seed: {arm: names[arm][0] for arm in order}
        for seed, names in sorted(by_seed.items(), key=str)
        if all(len(names.get(arm, [])) == 1 for arm in order)
    }


def seed_pairs(loaded: dict[str, dict]) -> dict:
    """seed -> {arm: run}, as :func:`seed_pair_names`."""
    return {seed: {o: loaded[name] for o, name in pair.items()} for seed, pair in seed_pair_names(loaded).items()}
