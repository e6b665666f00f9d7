"""The censoring-aware onset rule (meap.stats.compare_onsets): censored onsets are never read as equal, the
tests hold their level under the null with censoring, and the power against a 1.5x slowdown is measured."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from meap.stats import compare_onsets


def test_eight_doubly_censored_pairs_are_inconclusive_never_equivalent():
    result = compare_onsets([None] * 8, [None] * 8, 4_096_000)
    assert result["decision"].startswith("inconclusive: too few onsets")
    assert result["decided_pairs"] == 0 and result["both_censored"] == 8
    assert result["ratio"] is None and "not estimable" in result["ratio_reason"]
    assert result["sign_p"] is None and result["logrank_p"] is None and result["paper_gain_excluded"] is None


def test_the_old_evidence_is_one_ntp_onset_and_seven_undecided_pairs():
    ntp = [None, None, None, 3_232_913.0, None, None, None, None]
    result = compare_onsets(ntp, [None] * 8, 4_096_000)
    assert (result["ntp_first"], result["meap_first"], result["both_censored"]) == (1, 0, 7)
    assert result["sign_p"] == pytest.approx(1.0) and result["decision"].startswith("inconclusive")


def test_a_censored_branch_is_decided_only_against_a_crossing_within_its_window():
    # NTP crossed at 5 after MEAP was last watched at 4: nothing is known of who was first
    early = compare_onsets([5.0], [None], [4.0])
    assert early["first_by_seed"] == [None] and early["decided_pairs"] == 0
    assert compare_onsets([3.0], [None], [4.0])["first_by_seed"] == ["ntp"]
    assert compare_onsets([3.0], [3.0], [4.0])["first_by_seed"] == ["tie"]


def test_consistent_slowdowns_with_events_are_meap_slower_and_the_ratio_is_estimated():
    ntp = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    result = compare_onsets(ntp, [1.5 * x for x in ntp[:7]] + [None], 10.0)
    assert result["decision"] == "meap-slower" and result["sign_p"] == pytest.approx(2 / 2**8)
    assert result["ratio"] == pytest.approx(1.5) and result["ratio_pairs"] == 7
    assert result["paper_gain_excluded"] is None  # one onset censored: no exclusion claimed
    assert result["logrank_p"] < 0.01


def test_equivalence_needs_every_onset_observed():
    ntp = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0]
    meap = [10.5, 19.0, 31.0, 41.0, 49.0, 61.0, 69.0, 81.0]
    assert compare_onsets(ntp, meap, 100.0)["decision"] == "no-relevant-difference"
    censored = compare_onsets([*ntp[:7], None], [*meap[:7], None], 100.0)
    assert censored["decision"] == "inconclusive" and censored["ratio"] == pytest.approx(1.0, abs=0.05)


def test_the_logrank_test_agrees_with_lifelines_on_one_stratum():
    """statsmodels' stratified log-rank, reduced to one seed with several branches, against lifelines."""
    from lifelines.statistics import logrank_test
    from statsmodels.duration.survfunc import survdiff

    times, events = np.array([5, 8, 3, 10, 10, 7, 9, 4.0]), np.array([1, 1, 1, 0, 0, 1, 1, 1])
    groups = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    _, p = survdiff(times, events, groups, strata=np.zeros(8))
    reference = logrank_test(times[groups == 0], times[groups == 1], events[groups == 0], events[groups == 1])
    assert p == pytest.approx(reference.p_value)


def _onset_rule_benchmark():
    """benchmarks/onset_rule.py: its simulator is the one these tests use, so its table is what they hold."""
    spec = importlib.util.spec_from_file_location(
        "onset_rule", Path(__file__).parent.parent / "benchmarks" / "onset_rule.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seeds,horizon_quantile", [(8, 0.5), (8, 0.9), (16, 0.7)])
def test_under_the_null_with_censoring_the_rule_holds_its_level(seeds, horizon_quantile):
    benchmark = _onset_rule_benchmark()
    found = benchmark.simulate(seeds, 1.0, 0.25, horizon_quantile, 600, seed=seeds)
    rates = benchmark.rates(found)
    assert rates["directional"] <= 0.05 and rates["sign_rejects"] <= 0.05  # measured: BENCHMARKS.md, "The onset rule"
    # equivalence only where every onset was observed
    assert all(r["decision"] != "no-relevant-difference" or r["ratio_pairs"] == seeds for r in found)


@pytest.mark.parametrize("seeds,least", [(8, 0.5), (16, 0.9)])
def test_power_against_a_planted_1_5x_slowdown(seeds, least):
    benchmark = _onset_rule_benchmark()
    power = benchmark.rates(benchmark.simulate(seeds, 1.5, 0.2, 0.9, 400, seed=100 + seeds))["meap_slower"]
    assert power > least  # measured: BENCHMARKS.md, "The onset rule"
