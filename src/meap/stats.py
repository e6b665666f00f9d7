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

from meap.constants import ONSET_THRESHOLD, ONSET_WINDOW

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


def onset(
    tokens: list[float], values: list[float], threshold: float = ONSET_THRESHOLD, window: int = ONSET_WINDOW
) -> float | None:
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


# The onset rule, written down before the runs it decides (RESULTS.md); onsets are training tokens to a skill,
# None where a run never reached it before its horizon (right-censored).
ONSET_ALPHA = 0.05
FASTER_AT_MOST = 0.8  # "MEAP faster" also needs the onset ratio, where estimable, at most this
EQUIVALENCE = (0.8, 1.25)  # "no relevant difference": the ratio's whole interval inside, with nothing censored
PAPER_GAIN = 0.5  # the paper's direction, 2x fewer tokens: excluded when the interval's lower end is above it
MIN_DECIDED_PAIRS = 6  # fewer decided pairs cannot reach a two-sided exact sign-test p below 0.05


def compare_onsets(ntp: list[float | None], meap: list[float | None], horizon) -> dict:
    """Which objective reaches a skill first, paired by seed, with censored onsets read as censored, never
    as equal. ``ntp[i]``, ``meap[i]``: seed i's onsets in tokens (None: censored at ``horizon``, one number or
    one per seed).

    A pair is decided when one branch crosses before the other does (or before the other's horizon); a pair
    in which both are censored, or both cross at the same probe, is undecided and enters no test. Primary: the
    exact two-sided sign test on the decided pairs. Beside it: the log-rank test stratified by seed
    (statsmodels' ``survdiff``; with one branch of each objective per seed it is the sign test's normal
    approximation, slightly liberal at few pairs, so it supports and does not decide). The ratio onset MEAP /
    onset NTP (geometric mean, 95% t-interval over seeds) only from pairs in which both crossed, else None and
    why. Decision: with fewer than ``MIN_DECIDED_PAIRS`` decided pairs "inconclusive: too few onsets"; a sign
    test at ``ONSET_ALPHA`` gives the direction ("meap-faster" also needs the ratio, where estimable, at most
    ``FASTER_AT_MOST``); "no-relevant-difference" and the paper's 2x gain excluded only when no onset is
    censored and the interval says so; otherwise "inconclusive".
    """
    if len(ntp) != len(meap) or not ntp:
        raise ValueError("compare_onsets: expected one NTP and one MEAP onset per seed")
    horizons = list(horizon) if np.iterable(horizon) else [horizon] * len(ntp)
    first = []  # per seed: "ntp", "meap", "tie" (both crossed at once) or None (both censored)
    for n, m, end in zip(ntp, meap, horizons):
        if n is None and m is None:
            first.append(None)
        elif n is None or m is None:  # the one that crossed is first if it did so while the other was watched
            crossed, at = ("ntp", n) if m is None else ("meap", m)
            first.append(crossed if at <= end else None)
        else:
            first.append("tie" if n == m else "ntp" if n < m else "meap")
    meap_first, ntp_first = first.count("meap"), first.count("ntp")
    decided = meap_first + ntp_first
    sign_p = float(scipy_stats.binomtest(meap_first, decided).pvalue) if decided else None
    result = {
        "decided_pairs": decided,
        "meap_first": meap_first,
        "ntp_first": ntp_first,
        "ties": first.count("tie"),
        "both_censored": first.count(None),
        "first_by_seed": first,
        "sign_p": sign_p,
        "logrank_p": _stratified_logrank_p(ntp, meap, horizons),
        **_onset_ratio(ntp, meap),
    }
    censored = sum(x is None for x in (*ntp, *meap))
    interval = result["ratio_ci95"]
    result["paper_gain_excluded"] = interval[0] > PAPER_GAIN if interval and not censored else None
    if decided < MIN_DECIDED_PAIRS:
        result["decision"] = f"inconclusive: too few onsets ({decided} decided pair(s); {MIN_DECIDED_PAIRS} needed)"
    elif sign_p < ONSET_ALPHA and meap_first > ntp_first:
        ratio = result["ratio"]
        result["decision"] = "meap-faster" if ratio is None or ratio <= FASTER_AT_MOST else "inconclusive"
    elif sign_p < ONSET_ALPHA:
        result["decision"] = "meap-slower"
    elif interval and not censored and EQUIVALENCE[0] <= interval[0] and interval[1] <= EQUIVALENCE[1]:
        result["decision"] = "no-relevant-difference"
    else:
        result["decision"] = "inconclusive"
    return result


def _stratified_logrank_p(ntp: list, meap: list, horizons: list) -> float | None:
    """The log-rank p of NTP vs MEAP, stratified by seed; None when no branch crossed."""
    from statsmodels.duration.survfunc import survdiff

    if all(x is None for x in (*ntp, *meap)):
        return None
    times = [end if x is None else x for n, m, end in zip(ntp, meap, horizons) for x in (n, m)]
    events = [x is not None for n, m in zip(ntp, meap) for x in (n, m)]
    try:
        _, p = survdiff(
            np.asarray(times, dtype=np.float64),
            np.asarray(events, dtype=np.float64),
            np.tile([0, 1], len(ntp)),
            strata=np.repeat(np.arange(len(ntp)), 2),
        )
    except np.linalg.LinAlgError:  # no information in any stratum (every crossing a tie)
        return None
    return float(p)


def _onset_ratio(ntp: list, meap: list) -> dict:
    """The ratio onset MEAP / onset NTP from the pairs in which both crossed (geometric mean, t-interval)."""
    both = [(n, m) for n, m in zip(ntp, meap) if n is not None and m is not None]
    if len(both) < 2:
        return {"ratio": None, "ratio_ci95": None, "ratio_pairs": len(both),
                "ratio_reason": f"not estimable: both objectives crossed in {len(both)} pair(s), 2 needed"}  # fmt: skip
    statistics = seed_statistics([float(np.log(m / n)) for n, m in both])
    return {
        "ratio": float(np.exp(statistics["mean"])),
        "ratio_ci95": [float(np.exp(x)) for x in statistics["ci95"]],
        "ratio_pairs": len(both),
        "ratio_reason": None
        if len(both) == len(ntp)
        else f"from the {len(both)} of {len(ntp)} pairs in which both crossed",
    }
