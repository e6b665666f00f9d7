"""Seed-level paired statistics: exact where the answer is known, and intervals that cover at their nominal rate."""

import numpy as np
import pytest

from meap.stats import hodges_lehmann, mean_and_spread, paired_difference, seed_statistics, sign_flip_p


def test_seed_statistics_of_the_audited_differences():
    # the 5 per-seed NIAH differences of the superseded evidence run: t-interval [-25.3, +48.5] on 4 df
    result = seed_statistics([55.4, -5.0, 28.4, -3.8, -17.1])
    assert result["mean"] == pytest.approx(11.58)
    assert result["ci95"] == pytest.approx([-25.343, 48.503], abs=1e-3)
    assert result["sign_flip_p"] == pytest.approx(0.5)  # 16 of the 32 sign patterns have |mean| >= 11.58
    assert result["hodges_lehmann"] == pytest.approx(11.7)
    assert seed_statistics([0.3])["ci95"] is None and seed_statistics([0.3])["sign_flip_p"] is None


def test_sign_flip_p_is_exact_and_two_sided():
    assert sign_flip_p([1, 1, 1, 1, 1]) == pytest.approx(2 / 32)  # no 5-seed result can reach p < 0.0625
    assert sign_flip_p([-1, -2, -3, -4, -5, -6]) == pytest.approx(2 / 64)
    assert sign_flip_p([0, 0, 0]) == 1.0
    assert hodges_lehmann([1, 2, 3, 100]) == pytest.approx(2.75)  # robust to the one wild seed


def test_constant_difference_has_a_point_interval():
    baseline = [[0, 1, 0, 1], [1, 1, 0, 0]]
    treatment = [[0.5, 1.5, 0.5, 1.5], [1.5, 1.5, 0.5, 0.5]]
    result = paired_difference(baseline, treatment)
    assert result["difference"] == pytest.approx(0.5)
    assert result["ci95"] == pytest.approx([0.5, 0.5])
    assert (result["seeds"], result["prompts"], result["by_seed"]) == (2, 4, [0.5, 0.5])


def test_seed_spread_and_prompt_spread_both_widen_the_interval():
    rng = np.random.default_rng(0)
    prompts = rng.normal(0, 0.2, 40)
    same_seeds = paired_difference(np.zeros((4, 40)), np.tile(0.1 + prompts, (4, 1)))
    spread_seeds = paired_difference(np.zeros((4, 40)), 0.1 + prompts + rng.normal(0, 0.3, (4, 1)))
    width = lambda r: r["ci95"][1] - r["ci95"][0]  # noqa: E731
    assert width(same_seeds) > 0.05  # prompts are a sample too: their spread counts with identical seeds
    assert width(spread_seeds) > 2 * width(same_seeds)


def test_one_seed_says_its_interval_covers_prompts_only():
    result = paired_difference([[0, 1, 1, 0]], [[1, 1, 1, 0]])
    assert result["covers"] == "prompts only (one training seed)" and result["sign_flip_p"] is None
    assert result["ci95"][0] < 0.25 < result["ci95"][1]
    with pytest.raises(ValueError, match="equal"):
        paired_difference([[0, 1]], [[0, 1, 1]])
    assert mean_and_spread([0.2, None, 0.4]) == pytest.approx({"mean": 0.3, "min": 0.2, "max": 0.4})


def _simulated(rng, seeds: int, prompts: int, effect: float):
    """Paired scores with a known mean effect: each run either formed the circuit (level 0.5) or not (0),
    by chance per seed and objective (bimodal seeds); prompts have a difficulty and their own effect."""
    difficulty, prompt_effect = rng.normal(0, 0.1, prompts), rng.normal(0, 0.05, prompts)
    baseline = 0.5 * rng.integers(0, 2, (seeds, 1)) + difficulty + rng.normal(0, 0.2, (seeds, prompts))
    treatment = (
        0.5 * rng.integers(0, 2, (seeds, 1))
        + effect
        + difficulty
        + prompt_effect
        + rng.normal(0, 0.2, (seeds, prompts))
    )
    return baseline, treatment


def _two_level_percentile_bootstrap(baseline, treatment, rng, replicates=1000):
    """The interval meap used before (seeds, then prompts within seeds, percentile): kept to show it fails."""
    difference = np.asarray(treatment) - np.asarray(baseline)
    seeds, prompts = difference.shape
    drawn_seeds = rng.integers(0, seeds, (replicates, seeds))
    means = difference[drawn_seeds[:, :, None], rng.integers(0, prompts, (replicates, seeds, prompts))].mean(
        axis=(1, 2)
    )
    return np.percentile(means, [2.5, 97.5])


@pytest.mark.parametrize("seeds", [5, 8])
def test_the_95_interval_covers_a_known_effect_at_its_nominal_rate(seeds):
    rng, effect, simulations = np.random.default_rng(seeds), 0.1, 1000
    covered = 0
    for _ in range(simulations):
        low, high = paired_difference(*_simulated(rng, seeds, 30, effect))["ci95"]
        covered += low <= effect <= high
    # near its nominal rate from both sides (an interval 1.5x too wide covers 99.7% at 5 seeds): measured 97.4%
    # at 5 seeds, 94.9% at 8 over 3,000 simulations (these 1,000: 98.0%, 95.1%), slightly conservative at 5
    assert 0.93 <= covered / simulations <= 0.985


def test_the_old_two_level_bootstrap_under_covers():
    rng, effect, simulations = np.random.default_rng(5), 0.1, 300
    covered = sum(
        low <= effect <= high
        for low, high in (
            _two_level_percentile_bootstrap(*_simulated(rng, 5, 30, effect), rng) for _ in range(simulations)
        )
    )
    assert covered / simulations < 0.9  # measured: 81.5%
