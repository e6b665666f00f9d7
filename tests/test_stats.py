"""The paired two-level bootstrap: exact where the answer is known, and sensitive to both sources of spread."""

import numpy as np
import pytest

from meap.stats import mean_and_spread, paired_difference


def test_constant_difference_has_a_point_interval():
    baseline = [[0, 1, 0, 1], [1, 1, 0, 0]]
    treatment = [[0.5, 1.5, 0.5, 1.5], [1.5, 1.5, 0.5, 0.5]]
    result = paired_difference(baseline, treatment, replicates=500)
    assert result["difference"] == pytest.approx(0.5)
    assert result["ci95"] == pytest.approx([0.5, 0.5])
    assert (result["seeds"], result["prompts"]) == (2, 4)


def test_interval_covers_the_mean_and_narrows_with_more_prompts():
    rng = np.random.default_rng(0)
    def tables(prompts):
        baseline = rng.integers(0, 2, size=(3, prompts)).astype(float)
        treatment = np.clip(baseline + rng.integers(-1, 2, size=(3, prompts)), 0, 1)
        return baseline.tolist(), treatment.tolist()
    small = paired_difference(*tables(20), seed=1)
    large = paired_difference(*tables(2000), seed=1)
    for result in (small, large):
        assert result["ci95"][0] <= result["difference"] <= result["ci95"][1]
    assert large["ci95"][1] - large["ci95"][0] < (small["ci95"][1] - small["ci95"][0]) / 3


def test_seed_to_seed_spread_widens_the_interval():
    # Per-seed effects of +0.6 and -0.4: resampling seeds must show that the sign is not settled.
    baseline = [[0.0] * 50, [0.0] * 50]
    treatment = [[0.6] * 50, [-0.4] * 50]
    result = paired_difference(baseline, treatment, seed=2)
    assert result["difference"] == pytest.approx(0.1)
    assert result["ci95"][0] == pytest.approx(-0.4) and result["ci95"][1] == pytest.approx(0.6)


def test_reproducible_and_checked():
    baseline, treatment = [[0, 1, 1]], [[1, 1, 0]]
    assert paired_difference(baseline, treatment, seed=3) == paired_difference(baseline, treatment, seed=3)
    with pytest.raises(ValueError, match="equal"):
        paired_difference([[0, 1]], [[0, 1, 1]])
    assert mean_and_spread([0.2, None, 0.4]) == pytest.approx({"mean": 0.3, "min": 0.2, "max": 0.4})
    assert mean_and_spread([None]) == {"mean": None, "min": None, "max": None}
