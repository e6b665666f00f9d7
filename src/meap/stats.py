"""Paired comparisons of two objectives where the training seed is the unit of replication, and the onset
of a learning curve.

A paired experiment trains both objectives once per seed s and scores each run on the same prompts p, so
``d[s, p] = treatment[s, p] - baseline[s, p]`` is defined per cell. Prompts are not replications of the
training randomness: whether a 2-layer model forms a circuit at all varies from seed to seed far more than
its score varies between prompts, and a bootstrap that resamples a handful of seeds under-covers (about
81% for a nominal 95% at 5 seeds, simulated on bimodal runs: tests/test_stats.py).

:func:`seed_statistics` works on one value per seed (a per-seed mean difference, or a log ratio): the mean
with a t-interval on n - 1 degrees of freedom, the exact two-sided sign-flip permutation p-value (all 2^n
sign patterns, through ``scipy.stats.permutation_test``) and the Hodges-Lehmann estimate (the median of
the Walsh averages).

:func:`paired_difference` works on (seeds, prompts) tables. Seeds and prompts are crossed factors (every
seed sees every prompt), so the variance of the grand mean has a seed part and a prompt part; the interval
uses ``var(seed means) / n + var(prompt means) / m``, the variance a crossed bootstrap estimates (slightly
conservative: the interaction is counted in both), with t quantiles on the seeds' n - 1 degrees of
freedom. With one seed only the prompt part exists: the interval then covers prompt sampling alone and
says so (``covers``).
"""

from __future__ import annotations

import numpy as np
from scipy import stats as scipy_stats

MAX_EXACT_SIGN_FLIPS = 16  # 2^16 patterns; above this the sign-flip p is estimated from random patterns
_RANDOM_SIGN_FLIPS = 100_000


def hodges_lehmann(values) -> float:
    """The median of the Walsh averages (x_i + x_j) / 2, i <= j: the one-sample Hodges-Lehmann estimate."""
    x = np.asarray(values, dtype=np.float64)
    i, j = np.triu_indices(len(x))
    return float(np.median((x[i] + x[j]) / 2))


def sign_flip_p(values, seed: int = 0) -> float:
    """Two-sided p-value of "the values are symmetric around 0" (exact for n <= 16: every sign pattern)."""
    x = np.asarray(values, dtype=np.float64)
    if np.all(x == 0):
        return 1.0
    exact = len(x) <= MAX_EXACT_SIGN_FLIPS
    result = scipy_stats.permutation_test(
        (x,),
        np.mean,
        permutation_type="samples",
        alternative="two-sided",
        n_resamples=np.inf if exact else _RANDOM_SIGN_FLIPS,
        rng=np.random.default_rng(seed),
    )
    return float(min(1.0, result.pvalue))


def wilson_interval(successes: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a share ``successes / total`` of right-or-wrong answers (``level``: 95%)."""
    interval = scipy_stats.binomtest(int(successes), int(total)).proportion_ci(level, method="wilson")
    return float(interval.low), float(interval.high)


def seed_statistics(values) -> dict:
    """Mean, 95% t-interval, sign-flip p and Hodges-Lehmann estimate of one value per seed.

    With one seed there is no spread to estimate: the interval and p are None.
    """
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    n = len(x)
    if n == 0:
        raise ValueError("no per-seed values")
    result = {
        "mean": float(x.mean()),
        "ci95": None,
        "sign_flip_p": None,
        "hodges_lehmann": hodges_lehmann(x),
        "seeds": n,
    }
    if n >= 2:
        half = float(scipy_stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / np.sqrt(n))
        result.update(ci95=[result["mean"] - half, result["mean"] + half], sign_flip_p=sign_flip_p(x))
    return result


def paired_difference(baseline: list[list[float]], treatment: list[list[float]]) -> dict:
    """Mean of ``treatment - baseline`` over seeds and prompts with its 95% interval (module docstring).

    ``baseline[s][p]`` and ``treatment[s][p]``: the score of prompt p under seed s (rows: seeds, all of one
    length). Returns ``{"difference", "ci95", "by_seed", "sign_flip_p", "hodges_lehmann", "seeds", "prompts",
    "covers"}``; ``by_seed`` are the per-seed mean differences the seed-level statistics are computed on.
    """
    a, b = np.asarray(baseline, dtype=np.float64), np.asarray(treatment, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.size == 0:
        raise ValueError(f"expected two equal (seeds, prompts) score tables, got shapes {a.shape} and {b.shape}")
    difference = b - a
    seeds, prompts = difference.shape
    seed_means, prompt_means = difference.mean(axis=1), difference.mean(axis=0)
    result = {
        "difference": float(difference.mean()),
        "ci95": None,
        "by_seed": seed_means.tolist(),
        "sign_flip_p": None,
        "hodges_lehmann": hodges_lehmann(seed_means),
        "seeds": seeds,
        "prompts": prompts,
        "covers": "seeds and prompts" if seeds > 1 else "prompts only (one training seed)",
    }
    prompt_part = prompt_means.var(ddof=1) / prompts if prompts > 1 else 0.0
    if seeds > 1:
        se = np.sqrt(seed_means.var(ddof=1) / seeds + prompt_part)
        df = seeds - 1
        result["sign_flip_p"] = sign_flip_p(seed_means)
    elif prompts > 1:
        se, df = np.sqrt(prompt_part), prompts - 1
    else:
        return result
    half = float(scipy_stats.t.ppf(0.975, df) * se)
    result["ci95"] = [result["difference"] - half, result["difference"] + half]
    return result


def mean_and_spread(values: list[float]) -> dict:
    """``{"mean", "min", "max"}`` of per-seed values (None entries are left out; all None -> None)."""
    present = [value for value in values if value is not None]
    if not present:
        return {"mean": None, "min": None, "max": None}
    return {"mean": float(np.mean(present)), "min": float(min(present)), "max": float(max(present))}


def onset(tokens: list[float], values: list[float], threshold: float = 0.5, window: int = 3) -> float | None:
    """Training tokens at which the trailing moving average (``window`` probes) of ``values`` first reaches
    ``threshold``, interpolated linearly between the two probes around the crossing; None if it never does
    (the run is censored at its last probe)."""
    if len(tokens) != len(values) or window < 1:
        raise ValueError("onset: expected as many tokens as values and a window >= 1")
    averages = [float(np.mean(values[max(0, i - window + 1) : i + 1])) for i in range(len(values))]
    for i, average in enumerate(averages):
        if average >= threshold:
            if i == 0 or averages[i - 1] >= average:
                return float(tokens[i])
            share = (threshold - averages[i - 1]) / (average - averages[i - 1])
            return float(tokens[i - 1] + share * (tokens[i] - tokens[i - 1]))
    return None


def trend(values: list[list[float]], levels: list[float]) -> dict:
    """Does a per-seed measure move with an ordered treatment? ``values[s][j]``: seed s at ``levels[j]``
    (ascending, at least 3 levels, at least 2 seeds).

    Page's L test (seeds as blocks, ranks within each seed) for a monotone trend, two-sided: twice the
    smaller of the one-sided p-values for rising and for falling, at most 1. The size of the trend: each
    seed's least-squares slope against the level, with :func:`seed_statistics` over seeds.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 3 or x.shape[1] != len(levels):
        raise ValueError(f"trend: expected (seeds >= 2, levels >= 3) values for {len(levels)} levels, got {x.shape}")
    rising = scipy_stats.page_trend_test(x).pvalue
    falling = scipy_stats.page_trend_test(x[:, ::-1]).pvalue
    slopes = [float(np.polyfit(levels, row, 1)[0]) for row in x]
    return {
        "page_p": float(min(1.0, 2 * min(rising, falling))),
        "direction": "rising" if rising < falling else "falling" if falling < rising else "none",
        "slope": seed_statistics(slopes),
        "slope_by_seed": slopes,
        "mean_by_level": x.mean(axis=0).tolist(),
    }
