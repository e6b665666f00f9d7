"""`meap demo-sft`: NTP-SFT vs MEAP-SFT at equal tokens, MDQA before and after, paired comparison."""

import gzip
import json

import pytest

from meap.cli import main


def test_demo_sft_end_to_end_at_a_reduced_size(tiny_model_dir, tmp_path, capsys):
    output, summary = tmp_path / "sft", tmp_path / "results" / "sft.json"
    arguments = [
        "demo-sft",
        "--no-progress",
        "--train.model",
        str(tiny_model_dir),
        "--output",
        str(output),
        "--train.data",
        "builtin:8",
        "--train.val-fraction",
        "0",
        "--train.max-length",
        "448",
        "--train.layout",
        "separate",
        "--train.micro-batch-size",
        "2",
        "--seeds",
        "0",
        "1",
        "--objectives",
        "ntp",
        "ntp-equal-steps",
        "meap",
        "--ntp-epochs",
        "2",
        "--meap-epochs",
        "1",
        "--mdqa-num-docs",
        "3",
        "--mdqa-gold-positions",
        "0",
        "2",
        "--mdqa-examples",
        "2",
        "--mdqa-passage-words",
        "20",
        "--max-new-tokens",
        "4",
        "--train.eval-every",
        "0",
        "--train.save-every",
        "0",
        "--summary",
        str(summary),
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 0
    assert "MEAP-SFT - NTP-SFT" in capsys.readouterr().out
    result = json.loads(summary.read_text())
    assert result["seeds"] == [0, 1] and result["questions"] == 2 and result["items"] == 4
    assert result["objectives"] == ["ntp", "ntp-equal-steps", "meap"]
    assert result["scores"] == ["best_subspan_em", "teacher_forced_em", "answer_logprob"]
    greedy = result["best_subspan_em"]
    assert set(greedy["by_gold_position"]["meap"]) == {"0", "2"} == set(greedy["base"]["by_gold_position"])
    for key in result["scores"]:
        assert set(result[key]["paired"]) == {"ntp", "ntp-equal-steps"}  # MEAP-SFT minus each NTP arm
        for difference in result[key]["paired"].values():
            low, high = difference["ci95"]
            assert low <= difference["difference"] <= high and difference["prompts"] == 2
    validity = result["validity"]
    assert validity["failing"] == [a for a, drop in validity["below_base"].items() if drop > 0.1]
    assert set(validity["below_base"]) == set(result["objectives"])
    for seed in (0, 1):
        for objective, epochs in (("ntp", 2), ("ntp-equal-steps", 1), ("meap", 1)):
            run = output / f"seed-{seed}" / objective
            assert (run / "final" / "model.safetensors").is_file()
            assert f"epochs: {epochs}\n" in (run / "config.yaml").read_text()
            records = [json.loads(line) for line in (run / "eval/mdqa/results.jsonl").open()]
            index = result["seeds"].index(seed)
            for key in result["scores"]:
                mean = sum(r[key] for r in records) / len(records)
                assert result[key]["by_seed"][objective][index] == pytest.approx(mean, abs=1e-12)
            assert all(r["answer_logprob"] < 0 and r["teacher_forced_em"] in (0.0, 1.0) for r in records)

    # Equal training tokens: MEAP-SFT's rows (original + masked copy; `separate`, as concat rows would not fit
    # this model's 512 positions) at half the epochs.
    def tokens(run):
        return [json.loads(line) for line in (run / "metrics.jsonl").open()][-1]["tokens"]

    ratio = tokens(output / "seed-0/meap") / tokens(output / "seed-0/ntp")
    assert 0.9 < ratio < 1.1, ratio

    # The equal-steps arm: MEAP-SFT's optimizer steps on NTP rows (half the tokens), NTP-SFT's first epoch.
    def steps(run):
        return [json.loads(line) for line in (run / "metrics.jsonl").open()][-1]["step"]

    assert (
        steps(output / "seed-0/ntp-equal-steps") == steps(output / "seed-0/meap") == steps(output / "seed-0/ntp") // 2
    )
    assert "NTP-SFT (equal steps)" in (tmp_path / "results" / "sft.md").read_text()
    assert (tmp_path / "results" / "sft.md").read_text().startswith("# NTP-SFT vs NTP-SFT (equal steps) vs MEAP-SFT")
    # Finished: a second call retrains nothing.
    before = (output / "seed-0/ntp/metrics.jsonl").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 0 and (output / "seed-0/ntp/metrics.jsonl").read_text() == before


def test_demo_sft_on_generated_mdqa_conversations(tiny_model_dir, tmp_path):
    """The fair test's data: generated MDQA conversations from another stream than the evaluation (no
    evaluation answer in them), every MEAP row with its masked copy (no fall-back), the rows counted."""
    output = tmp_path / "sft"
    arguments = [
        "demo-sft",
        "--no-progress",
        "--train.model",
        str(tiny_model_dir),
        "--output",
        str(output),
        "--train-conversations",
        "6",
        "--train.val-fraction",
        "0",
        "--train.max-length",
        "512",
        "--train.min-answer-tokens",
        "8",
        "--train.micro-batch-size",
        "2",
        "--ntp-epochs",
        "2",
        "--meap-epochs",
        "1",
        "--mdqa-num-docs",
        "2",
        "--mdqa-gold-positions",
        "0",
        "1",
        "--mdqa-examples",
        "2",
        "--mdqa-passage-words",
        "12",
        "--max-new-tokens",
        "4",
        "--train.eval-every",
        "0",
        "--train.save-every",
        "0",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 0
    result = json.loads((output / "demo-sft.json").read_text())
    conversations = [json.loads(line) for line in (output / "mdqa" / "train.jsonl").open()]
    assert len(conversations) == 6 and result["config"]["train"]["data"] == [str(output / "mdqa" / "train.jsonl")]
    assert all(c["messages"][1]["content"].startswith(c["answers"][0]) for c in conversations)
    evaluation = {
        e["answers"][0] for path in (output / "mdqa").glob("*.jsonl.gz") for e in map(json.loads, gzip.open(path, "rt"))
    }
    assert evaluation and not evaluation & {c["answers"][0] for c in conversations}
    assert result["training_rows"] == {"ntp": {"ntp": 6}, "meap": {"concat": 6}}
    assert json.loads((output / "meap" / "run.json").read_text())["meap_share"] == 1.0


def _records(scores: list[list[float]]) -> list[dict]:
    """MDQA records of ``scores[q][p]``: question q at gold position p, ordered file by file (position)."""
    return [
        {"question": f"q{q}", "gold_position": p, "best_subspan_em": row[p], "teacher_forced_em": row[p]}
        for p in range(len(scores[0]))
        for q, row in enumerate(scores)
    ]


def test_the_comparison_counts_questions_and_gates_every_arm():
    from meap.eval.results import prompt_scores
    from meap.experiments.demo_sft import sft_comparison

    base = _records([[1, 1, 1], [1, 0, 1], [0, 0, 1], [1, 1, 0]])
    assert prompt_scores(base, "best_subspan_em", unit="question") == [1.0, 2 / 3, 1 / 3, 2 / 3]
    ntp = [_records([[1, 1, 1], [1, 1, 1], [0, 1, 1], [1, 1, 0]]) for _ in range(2)]
    meap = [_records([[1, 0, 1], [0, 0, 1], [0, 0, 0], [1, 0, 0]]) for _ in range(2)]  # 33 points below base
    runs = {seed: {"ntp": ntp[seed], "ntp-equal-steps": ntp[seed], "meap": meap[seed]} for seed in (0, 1)}
    result = sft_comparison(base, runs, gate=0.10)
    assert result["questions"] == 4 and result["items"] == 12
    paired = result["best_subspan_em"]["paired"]["ntp"]
    assert paired["prompts"] == 4 and paired["difference"] == pytest.approx(-0.5)
    # NTP-SFT passes; MEAP-SFT is more than 10 points below the base model, so the run measures forgetting.
    assert result["validity"]["failing"] == ["meap"] and result["validity"]["measures"] == "forgetting"
    assert result["validity"]["below_base"]["meap"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="a different number of times"):
        prompt_scores(base[:-1], "best_subspan_em", unit="question")
