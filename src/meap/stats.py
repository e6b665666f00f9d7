"""Paired comparisons of two objectives over seeds and prompts: means, differences, bootstrap intervals.

A paired experiment scores every prompt p under both objectives for every seed s (the same prompts for
all seeds and both objectives), so the difference ``d[s, p] = b[s, p] - a[s, p]`` is defined per cell.
The 95% interval resamples both sources of variation, as a two-level (hierarchical) bootstrap: seeds
with replacement, then prompts with replacement within each drawn seed, and takes the mean difference
of each replicate. With one seed only the prompt level varies, so the interval says nothing about
seed-to-seed variation; :func:`paired_difference` reports how many seeds it rests on.
"""

from __future__ import annotations

import numpy as np


def paired_difference(baseline: list[list[float]], treatment: list[list[float]], *, replicates: int = 10_000,
                      seed: int = 0) -> dict:
    """Mean of ``treatment - baseline`` over seeds and prompts, with a 95% two-level bootstrap interval.

    ``baseline[s][p]`` and ``treatment[s][p]``: the score of prompt p under seed s (rows: seeds, all of
    one length). Returns ``{"difference", "ci95": [low, high], "seeds", "prompts", "replicates"}``.
    """
    a, b = np.asarray(baseline, dtype=np.float64), np.asarray(treatment, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.size == 0:
        raise ValueError(f"expected two equal (seeds, prompts) score tables, got shapes {a.shape} and {b.shape}")
    difference = b - a
    seeds, prompts = difference.shape
    rng = np.random.default_rng(seed)
    drawn_seeds = rng.integers(0, seeds, size=(replicates, seeds))
    drawn_prompts = rng.integers(0, prompts, size=(replicates, seeds, prompts))
    # replicate r: mean over its drawn seeds of the mean over that seed's drawn prompts
    means = difference[drawn_seeds[:, :, None], drawn_prompts].mean(axis=(1, 2))
    low, high = np.percentile(means, [2.5, 97.5])
    return {"difference": float(difference.mean()), "ci95": [float(low), float(high)], "seeds": seeds,
            "prompts": prompts, "replicates": replicates}


def mean_and_spread(values: list[float]) -> dict:
    """``{"mean", "min", "max"}`` of per-seed values (None entries are left out; all None -> None)."""
    present = [value for value in values if value is not None]
    if not present:
        return {"mean": None, "min": None, "max": None}
    return {"mean": float(np.mean(present)), "min": float(min(present)), "max": float(max(present))}
