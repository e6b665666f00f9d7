"""`meap demo`: the paired learning-speed experiment end to end at toy size, its verdict recomputable from the
records it writes, and the decision rule as written down before the evidence ran."""

import copy
import json
import math
from pathlib import Path

import pytest

from meap.cli import main
from meap.experiments.corpus import stated_needles
from meap.experiments.paired import differences, onset_comparison, probe_curve, read_records
from meap.fsutil import write_json_gz
from meap.stats import compare_onsets, onset

from conftest import read_metrics


def _loaded(onsets_ntp, onsets_meap, steps=10, tokens_per_step=1000):
    """Runs whose probe accuracy jumps from 0 to 1 at the given step (None: never)."""

    def run(onset_step):
        metrics = [
            {
                "step": s,
                "tokens": s * tokens_per_step,
                "probe_accuracy": float(onset_step is not None and s >= onset_step),
            }
            for s in range(steps + 1)
        ]
        metrics[-1]["val_loss"] = 2.0
        retrieval = [
            {"absent": False, "correct": 1.0, "distractor": 0.0},
            {"absent": True, "correct": 0.0, "distractor": 0.0},
        ]
        return {"metrics": metrics, "retrieval": retrieval, "summary": {"distractors": 3}}

    return {seed: {"ntp": run(n), "meap": run(m)} for seed, (n, m) in enumerate(zip(onsets_ntp, onsets_meap))}


def test_onsets_and_their_paired_ratio():
    comparison = onset_comparison(_loaded([4, 6, 8, None], [2, 3, 4, 5]), threshold=0.5, window=1)
    # the curve is read linearly between probes: a jump from 0 at step s - 1 to 1 at s crosses 0.5 half-way
    assert comparison["onset_tokens_by_seed"]["meap"] == [1500, 2500, 3500, 4500]
    assert comparison["onset_tokens_by_seed"]["ntp"][:3] == [3500, 5500, 7500]
    assert comparison["onset_tokens_by_seed"]["ntp"][3] is None and comparison["censored"] == {"ntp": 1, "meap": 0}
    # the censored NTP run is censored, never equal: MEAP crossed first in all four, while NTP was watched
    assert comparison["first_by_seed"] == ["meap"] * 4 and comparison["decided_pairs"] == 4
    assert comparison["sign_p"] == pytest.approx(2 / 16) and comparison["distractors"] == 3
    assert comparison["decision"].startswith("inconclusive: too few onsets")  # 4 pairs cannot reach p < 0.05
    # the ratio only from the pairs in which both crossed
    expected = [math.log(m / n) for m, n in ((1.5, 3.5), (2.5, 5.5), (3.5, 7.5))]
    assert comparison["ratio"] == pytest.approx(math.exp(sum(expected) / 3)) and comparison["ratio_pairs"] == 3
    assert comparison["paper_gain_excluded"] is None  # an onset censored: no exclusion claimed
    six = onset_comparison(_loaded([4, 6, 8, 9, 7, None], [2, 3, 4, 5, 3, 5]), threshold=0.5, window=1)
    assert six["decision"] == "meap-faster" and six["sign_p"] == pytest.approx(2 / 64)
    # a three-probe moving average moves the onset to where the average crosses the threshold
    late = onset_comparison(_loaded([4, 6], [4, 6]), threshold=0.5, window=3)
    assert late["onset_tokens_by_seed"]["ntp"] == pytest.approx([4500, 6500])  # 1/3 at step 4, 2/3 at step 5


RESULTS = Path(__file__).parent.parent / "results"


def recompute(arguments: list[str], status: int | None = None) -> None:
    """``meap experiment recompute ARGUMENTS``; with ``status``, it must exit with it."""
    if status is None:
        main(["experiment", "recompute", *arguments])
        return
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "recompute", *arguments])
    assert exit_info.value.code == status


def test_a_rerun_is_compared_with_the_records_run_by_run_timings_aside(tmp_path, capsys):
    committed = read_records(RESULTS / "evidence-cpu.records.json.gz")
    rerun = copy.deepcopy({seed: committed[seed] for seed in (0, 1)})  # a partial rerun, elsewhere, slower
    for run in rerun[0].values():
        run["summary"]["model"] = "elsewhere"
        for record in run["metrics"]:
            record.update({key: record[key] * 2 for key in ("elapsed_s", "tokens_per_s") if key in record})
    assert differences(rerun, committed, {}) == (["seed 0 ntp", "seed 0 meap", "seed 1 ntp", "seed 1 meap"], [])
    rerun[1]["meap"]["metrics"][7]["loss"] += 1e-6
    rerun[1]["ntp"]["retrieval"][3]["correct"] = 1 - rerun[1]["ntp"]["retrieval"][3]["correct"]
    assert differences(rerun, committed, {})[1] == [
        "seed 1 ntp: per-prompt retrieval records differ",
        "seed 1 meap: metrics differ from record 7",
    ]
    write_json_gz(tmp_path / "rerun.json.gz", {str(seed): runs for seed, runs in rerun.items()})
    with pytest.raises(SystemExit) as exit_info:
        recompute([str(tmp_path / "rerun.json.gz"), "--same", str(RESULTS / "evidence-cpu.records.json.gz")])
    printed = capsys.readouterr().out
    assert exit_info.value.code == 1 and "4 runs compared" in printed and ": 2 differences" in printed
    # the committed dose-response's NTP and 15% branches of seeds 0-2 are the evidence run's, record for record
    recompute(
        [
            str(RESULTS / "evidence-dose-cpu.records.json.gz"),
            *("--same", str(RESULTS / "evidence-cpu.records.json.gz"), "--arm", "meap-0.15=meap"),
        ],
        status=0,
    )
    printed = capsys.readouterr().out
    assert "6 runs compared" in printed and ": 0 differences" in printed
    # portable numerics: the run repeated on an AVX-512 CPU (Zen 4) is the AVX2 (Zen 2) run, record for record
    recompute(
        [str(RESULTS / "evidence-cpu-zen4.records.json.gz"), "--same", str(RESULTS / "evidence-cpu.records.json.gz")],
        status=0,
    )
    printed = capsys.readouterr().out
    assert "16 runs compared" in printed and ": 0 differences" in printed
    # a name in neither file is refused, not silently compared less
    for arm in ("meap-.15=meap", "meap-0.15=mepa"):
        with pytest.raises(SystemExit) as exit_info:
            recompute(
                [
                    str(RESULTS / "evidence-dose-cpu.records.json.gz"),
                    "--same",
                    str(tmp_path / "rerun.json.gz"),
                    "--arm",
                    arm,
                ]
            )
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and f"--arm {arm}: expected" in error and error.count("\n") == 1


def _demo(tmp_path, name, *extra):
    output = tmp_path / name
    summary, records = output / "results" / "evidence.json", output / "results" / "evidence.records.json.gz"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "demo",
                "--quick",
                "--no-progress",
                "--output",
                str(output),
                "--summary",
                str(summary),
                "--records",
                str(records),
                *extra,
            ]
        )
    assert exit_info.value.code == 0
    return output, json.loads(summary.read_text()), records


def test_quick_demo_end_to_end_with_two_seeds_reproduces_and_recomputes(tmp_path, capsys):
    output, result, records = _demo(tmp_path, "a", "--seeds", "3", "5", "--jobs", "2")
    printed = capsys.readouterr().out
    assert all(f"{stage}/4" in printed for stage in range(1, 5)) and "Decision:" in printed
    # the verdict from each run's own metrics.jsonl, by the library's onset and rule (not from the records)
    onsets = {
        o: [onset(*probe_curve(read_metrics(output / f"seed-{s}" / o)), 0.5, 3) for s in (3, 5)]
        for o in ("ntp", "meap")
    }
    assert result["onset_tokens_by_seed"] == onsets and result["distractors"] == 3
    window = [probe_curve(read_metrics(output / f"seed-{s}" / "ntp"))[0][-1] for s in (3, 5)]
    verdict = compare_onsets(onsets["ntp"], onsets["meap"], window)
    assert {k: result[k] for k in ("decision", "sign_p", "logrank_p", "ratio", "decided_pairs")} == {
        k: verdict[k] for k in ("decision", "sign_p", "logrank_p", "ratio", "decided_pairs")
    }
    assert result["decision"].startswith("inconclusive: too few onsets")  # 2 seeds never decide
    assert result["seeds"] == [3, 5] and result["machine"]["cpu"] and result["wall_seconds"] > 0
    assert 0 < result["training_job_seconds"]  # six jobs, summed from their metrics

    # per seed: a shared start, and both branches continue from its final model with a probe curve from step 0
    for seed in (3, 5):
        shared = output / f"seed-{seed}" / "shared" / "final"
        assert (shared / "model.safetensors").is_file()
        for objective in ("ntp", "meap"):
            run = output / f"seed-{seed}" / objective
            assert f"model: {shared}\n" in (run / "config.yaml").read_text()
            steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").open()) if "probe_accuracy" in r]
            assert steps == [0, 4, 8]
            scored = [json.loads(line) for line in (run / "eval/retrieval/results.jsonl").open()]
            strict = [r["correct"] for r in scored if not r["absent"]]
            assert result["niah_by_seed"][objective][(3, 5).index(seed)] == sum(strict) / len(strict)

    # copy probes ask for words of the drills (the skill is copying, not recalling held-out words)
    vocabulary = json.loads((output / "vocabulary.json").read_text())
    words = set(vocabulary["train_keys"]) | set(vocabulary["train_values"])
    asked = {json.loads(line)["answer"].strip() for line in (output / "evaluation.jsonl").open()}
    assert asked <= words and result["task"] == "copy"

    # the committed records recompute the summary
    recomputed = onset_comparison(read_records(records), threshold=0.5, window=3)
    for key in (
        "onset_tokens_by_seed",
        "first_by_seed",
        "sign_p",
        "logrank_p",
        "ratio",
        "decision",
        "niah_by_seed",
        "strict",
        "val_loss",
    ):
        assert json.dumps(recomputed[key], sort_keys=True) == json.dumps(result[key], sort_keys=True), key
    tables = (output / "results" / "evidence.md").read_text()
    assert "Onset per seed" in tables and "evidence.png" in tables and (output / "results" / "evidence.png").is_file()

    # a second call continues (nothing retrains); another configuration needs --overwrite
    before = (output / "seed-3" / "ntp" / "metrics.jsonl").read_text()
    _, again, _ = _demo(tmp_path, "a", "--seeds", "3", "5", "--jobs", "2")
    assert (output / "seed-3" / "ntp" / "metrics.jsonl").read_text() == before
    # ...and keeps the provenance of the call that computed: its wall time, code and machine
    assert result["code"]["version"] and result["code"]["commit"]  # a checkout: the commit is known
    assert {k: again[k] for k in ("wall_seconds", "code", "machine")} == {
        k: result[k] for k in ("wall_seconds", "code", "machine")
    }
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--quick", "--no-progress", "--output", str(output), "--train.max-steps", "3"])
    error = capsys.readouterr().err
    assert (
        exit_info.value.code == 2
        and "--overwrite" in error
        and "(seeds, train.max_steps)" in error
        and error.count("\n") == 1
    )
    # evaluation settings alone: the runs are evaluated again, not trained again; the verdict's own settings
    # and where it is published change nothing else
    _, evaluated, _ = _demo(
        tmp_path, "a", "--seeds", "3", "5", "--jobs", "2", "--eval-probes", "5", "--onset-threshold", "0.4"
    )
    assert "evaluation settings changed (eval_probes)" in capsys.readouterr().out
    assert (output / "seed-3" / "ntp" / "metrics.jsonl").read_text() == before
    assert len((output / "evaluation.jsonl").read_text().splitlines()) == 5
    assert len((output / "seed-3" / "meap" / "eval/retrieval/results.jsonl").read_text().splitlines()) == 5
    assert evaluated["strict"]["paired"]["prompts"] == 5 and evaluated["threshold"] == 0.4


def test_prompts_longer_than_the_trained_length_are_refused_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "demo",
                "--quick",
                "--no-progress",
                "--output",
                str(tmp_path / "d"),
                "--task",
                "retrieval",
                "--train.seq-len",
                "64",
            ]
        )
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "more than the 64 the model is trained on" in error
    assert not (tmp_path / "d" / "seed-1337").exists()


def test_the_retrieval_task_holds_its_probe_keys_out_of_training(tmp_path, capsys):
    output = tmp_path / "retrieval"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "demo",
                "--quick",
                "--no-progress",
                "--task",
                "retrieval",
                "--train.seq-len",
                "256",
                "--absent-probes",
                "4",
                "--output",
                str(output),
            ]
        )
    assert exit_info.value.code == 0
    vocabulary = json.loads((output / "vocabulary.json").read_text())
    trained_keys = {key for key, _ in stated_needles((output / "corpus.jsonl").read_text())}
    assert trained_keys and not trained_keys & set(vocabulary["held_out_keys"])
    probe_keys = {
        json.loads(line)["key"] for name in ("probes.jsonl", "evaluation.jsonl") for line in (output / name).open()
    }
    assert probe_keys <= set(vocabulary["held_out_keys"])
    summary = json.loads((output / "seed-1337" / "meap" / "eval" / "retrieval" / "summary.json").read_text())
    assert summary["absent_probes"] == 4 and summary["distractors"] == 3
    assert "tokens to retrieve by key" in (output / "comparison.md").read_text()


COMMITTED_SUMMARIES = [
    ("evidence-cpu.json", "evidence-cpu.records.json.gz", "demo"),
    ("evidence-cpu-zen4.json", "evidence-cpu-zen4.records.json.gz", "demo"),
    ("superseded/evidence-cpu-2026-12-04-zen4.json", "superseded/evidence-cpu-2026-12-04-zen4.records.json.gz", "demo"),
    ("evidence-dose-cpu.json", "evidence-dose-cpu.records.json.gz", "dose"),
    ("superseded/evidence-sft-2026-12-04.json", "superseded/evidence-sft-2026-12-04.records.json.gz", "demo-sft"),
    ("evidence-sft.json", "evidence-sft.records.json.gz", "demo-sft"),
    ("evidence-cpu-long.json", "evidence-cpu-long.records.json.gz", "demo"),
]


@pytest.mark.parametrize("summary,records,kind", COMMITTED_SUMMARIES, ids=[s for s, _, _ in COMMITTED_SUMMARIES])
def test_every_committed_summary_recomputes_from_its_records(summary, records, kind, capsys):
    """Every key `meap experiment recompute` computes is in the committed summary, equal: RESULTS.md's numbers
    are held here, each by the experiment that wrote its records (read from the file)."""
    from meap.experiments.recompute import experiment_of, read

    committed = json.loads((RESULTS / summary).read_text())
    assert committed["code"]["commit"] or committed["code"]["published_in"]
    assert (committed["wall_seconds"] or 0) > 1 or committed.get("wall_note")
    assert experiment_of(read(RESULTS / records)).name == kind
    verdict = (
        [] if kind == "demo-sft" else ["--threshold", str(committed["threshold"]), "--window", str(committed["window"])]
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "recompute", str(RESULTS / records), *verdict])
    assert exit_info.value.code == 0
    recomputed = json.loads(capsys.readouterr().out)
    assert len(recomputed) > 5
    for key, value in recomputed.items():
        assert key in committed, key
        # to 10 significant digits: least squares on another CPU's LAPACK differs in the last bits
        assert _rounded(value) == _rounded(committed[key]), key


def _rounded(value):
    if isinstance(value, float):
        return float(f"{value:.10g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    return value
