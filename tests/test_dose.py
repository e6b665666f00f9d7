"""`meap demo` with `mask_ratios`: the dose-response over mask ratios, its trend test, and the recipe end to end
at toy size, recomputable from the records it writes."""

import json

import numpy as np
import pytest

from meap.cli import main
from meap.experiments.dose import decide_trend, dose_response
from meap.experiments.paired import read_records
from meap.stats import trend

from conftest import read_metrics

RATIOS = [0.0, 0.05, 0.1, 0.15, 0.25]


def test_the_trend_test_holds_its_level_and_finds_a_planted_trend():
    rng = np.random.default_rng(7)
    flat = [trend(rng.normal(size=(3, 5)).tolist(), RATIOS)["page_p"] < 0.05 for _ in range(1000)]
    planted = [
        trend((rng.normal(size=(3, 5)) + 12 * np.array(RATIOS)).tolist(), RATIOS)["page_p"] < 0.05 for _ in range(300)
    ]
    assert np.mean(flat) <= 0.06  # two-sided at 5%: no trend is found more often than the level allows
    assert np.mean(planted) >= 0.8
    falling = trend([[5, 4, 3, 2, 1], [4, 4, 2, 1, 0], [6, 5, 4, 2, 2]], RATIOS)
    assert falling["direction"] == "falling" and decide_trend(falling) == "falls-with-ratio"
    assert falling["slope"]["mean"] < 0 and len(falling["slope_by_seed"]) == 3
    assert decide_trend(trend([[1, 2, 3, 4, 5], [0, 1, 2, 3, 3], [1, 1, 2, 4, 6]], RATIOS)) == "rises-with-ratio"
    assert decide_trend(trend([[1, 5, 2, 4, 3], [3, 1, 2, 5, 4], [2, 4, 1, 3, 5]], RATIOS)) == "no-trend-detected"
    with pytest.raises(ValueError, match="levels >= 3"):
        trend([[1, 2], [3, 4]], [0, 0.1])


def _loaded(levels_by_seed):
    """Runs whose probe accuracy holds each branch's level at every probe; NTP first, then MEAP by ratio."""
    arms = ["ntp", "meap-0.05", "meap-0.1", "meap-0.15", "meap-0.25"]

    def run(level):
        metrics = [{"step": s, "tokens": 100 * s, "probe_accuracy": level} for s in range(5)]
        metrics[-1]["val_loss"] = 2.0 - level
        retrieval = [{"absent": False, "correct": float(level > 0.3), "distractor": 0.0}]
        return {"metrics": metrics, "retrieval": retrieval, "summary": {"distractors": 3}}

    # the arms are read in ratio order whatever order the records hold them in
    return {
        seed: {arm: run(level) for arm, level in reversed(list(zip(arms, levels)))}
        for seed, levels in enumerate(levels_by_seed)
    }


def test_the_dose_response_reads_every_measure_by_ratio():
    result = dose_response(_loaded([[0.1, 0.2, 0.4, 0.6, 0.8], [0.0, 0.3, 0.2, 0.5, 0.9]]), threshold=0.5, window=1)
    assert result["arms"] == ["ntp", "meap-0.05", "meap-0.1", "meap-0.15", "meap-0.25"]
    assert result["mask_ratios"] == RATIOS and result["primary"] == "probe_mean"
    assert result["measures"]["probe_mean"]["by_seed"][1] == pytest.approx([0.0, 0.3, 0.2, 0.5, 0.9])
    assert result["measures"]["strict"]["by_seed"][0] == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert result["measures"]["val_loss"]["direction"] == "falling"
    assert result["censored"] == {"ntp": 2, "meap-0.05": 2, "meap-0.1": 2, "meap-0.15": 0, "meap-0.25": 0}
    assert result["decision"] == decide_trend(result["measures"]["probe_mean"]) and result["distractors"] == 3
    with pytest.raises(Exception, match="at the same >= 2 mask ratios"):
        loaded = _loaded([[0.1] * 5, [0.2] * 5])
        del loaded[1]["meap-0.1"]
        dose_response(loaded, threshold=0.5, window=1)


def test_quick_dose_response_end_to_end_recomputes_from_its_records(tmp_path, capsys):
    output = tmp_path / "dose"
    summary, records = tmp_path / "results" / "dose.json", tmp_path / "results" / "dose.records.json.gz"
    argv = ["demo", "--quick", "--no-progress", "--output", str(output), "--summary", str(summary)]
    argv += ["--records", str(records), "--seeds", "3", "5", "--mask-ratios", "0.1", "0.25"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "NTP, MEAP-0.1, MEAP-0.25" in printed and "Dose-response" in printed
    result = json.loads(summary.read_text())
    assert result["arms"] == ["ntp", "meap-0.1", "meap-0.25"]
    # the decision is the primary measure's trend as the rule reads it: its direction when Page's p < 0.05
    primary = result["measures"][result["primary"]]
    read = {"rising": "rises-with-ratio", "falling": "falls-with-ratio"}
    assert result["decision"] == (read[primary["direction"]] if primary["page_p"] < 0.05 else "no-trend-detected")
    means = [sum(seed[j] for seed in primary["by_seed"]) / 2 for j in range(3)]
    window_mean = {arm: [] for arm in result["arms"]}
    for seed in (3, 5):
        for arm in result["arms"]:
            probes = [r["probe_accuracy"] for r in read_metrics(output / f"seed-{seed}" / arm) if "probe_accuracy" in r]
            window_mean[arm].append(sum(probes) / len(probes))
    assert [sum(v) / 2 for v in window_mean.values()] == pytest.approx(means)  # probe_mean: each branch's own curve
    for seed in (3, 5):
        shared = output / f"seed-{seed}" / "shared" / "final"
        # each run records the ratio it trained at: NTP is MEAP at ratio 0
        for arm, ratio in (("ntp", 0.0), ("meap-0.1", 0.1), ("meap-0.25", 0.25)):
            config = (output / f"seed-{seed}" / arm / "config.yaml").read_text()
            assert f"model: {shared}\n" in config and f"mask_ratio: {ratio}\n" in config
            assert ("objective: ntp\n" in config) == (arm == "ntp")
    # masking at another ratio trains another run from the same start
    first, last = (read_metrics(output / "seed-3" / arm) for arm in ("meap-0.1", "meap-0.25"))
    assert [r["loss"] for r in first if "loss" in r] != [r["loss"] for r in last if "loss" in r]
    recomputed = dose_response(read_records(records), threshold=0.5, window=3)
    for key in ("measures", "decision", "onset_tokens_by_seed", "censored"):
        assert json.dumps(recomputed[key], sort_keys=True) == json.dumps(result[key], sort_keys=True), key
    assert "Page p" in summary.with_suffix(".md").read_text() and summary.with_suffix(".png").is_file()


@pytest.mark.parametrize(
    "ratios, message", [(["0.25", "0.1"], "ascending"), (["0.1"], "at least 2"), (["0.1", "1.0"], "in (0, 1)")]
)
def test_bad_mask_ratios_are_one_line_errors(tmp_path, capsys, ratios, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--quick", "--output", str(tmp_path / "x"), "--mask-ratios", *ratios])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "mask_ratios:" in error and message in error and error.count("\n") == 1
    assert not (tmp_path / "x").exists()
