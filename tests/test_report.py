"""`meap compare`: a report of several runs built only from their files, with absent evaluations listed."""

import json

import pytest

from meap.config import PretrainConfig, load_config
from meap.errors import UserError
from meap.report import compare_runs, find_evaluations
from meap.train import pretrain


@pytest.fixture(scope="module")
def three_runs(prepared, tmp_path_factory, request):
    from meap.data.mdqa import make_mdqa
    from meap.eval import attention, mdqa, niah

    root = tmp_path_factory.mktemp("runs")
    runs = []
    for objective, seed in (("ntp", 1), ("meap", 1), ("meap", 2)):
        config = load_config(PretrainConfig, overrides=dict(
            data=str(prepared), output=str(root / f"{objective}-{seed}"), objective=objective, seed=seed,
            seq_len=32, micro_batch_size=4, max_steps=4, warmup_steps=1, log_every=1, eval_every=2, eval_batches=1))
        runs.append(pretrain(config, progress=False))
    haystack = root / "hay.txt"
    haystack.write_text("The river ran past the old mill. " * 200)
    for run in runs[:2]:
        niah.run(str(run), run / "eval" / "niah", haystack=[str(haystack)], lengths=[160, 200], depths=[0, 100],
                 max_new_tokens=4, progress=False)
    attention.run([str(runs[1])], runs[1] / "eval" / "attention", samples=1, length=160, haystack=[str(haystack)],
                  progress=False)
    data = make_mdqa(root / "mdqa.jsonl", num_docs=3, examples=4)
    mdqa.run(str(runs[2]), [str(data)], runs[2] / "eval" / "mdqa", max_new_tokens=4, progress=False)
    return runs


def test_report_compares_three_runs_from_their_files(three_runs, tmp_path):
    report = compare_runs(three_runs, tmp_path / "report")
    text = report.read_text()
    names = [run.name for run in three_runs]
    assert text.startswith("# NTP vs MEAP: " + " vs ".join(names))
    for png in ("loss_by_step.png", "loss_by_time.png", "niah_0.png", "niah_1.png", "niah_diff_1.png", "mdqa.png"):
        assert (tmp_path / "report" / png).stat().st_size > 0, png
        assert f"]({png})" in text
    # Absent evaluations are listed, never filled in.
    assert f"{names[2]}: absent." in text.split("## Needle in a haystack")[1].split("##")[0]
    assert f"{names[0]}: absent." in text.split("## Multi-document QA")[1].split("##")[0]
    assert text.split("## lm-evaluation-harness")[1].split("##")[0].count("absent.") == 3
    # Numbers come from the files: the last losses and the NIAH overall score.
    for run in three_runs:
        last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
        assert f"{last['loss']:.4f}" in text
    overall = json.loads((three_runs[0] / "eval" / "niah" / "summary.json").read_text())["overall"]
    assert f"| {names[0]} | {overall['substring']:.4f} | {overall['rouge1_f']:.4f} | 4 |" in text
    # The configs differ in objective and seed (and output), and say so.
    differences = text.split("## Configuration differences")[1]
    assert "| objective | ntp | meap | meap |" in differences and "| seed | 1 | 1 | 2 |" in differences
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == text.count("](") and "<table>" in html


def test_evaluations_are_recognised_by_content(three_runs):
    assert set(find_evaluations(three_runs[1])) == {"niah", "attention"}
    assert set(find_evaluations(three_runs[2])) == {"mdqa"}
    assert find_evaluations(three_runs[0] / "checkpoints") == {}


def test_bad_runs_are_user_errors(three_runs, tmp_path):
    with pytest.raises(UserError, match="at least two"):
        compare_runs(three_runs[:1], tmp_path / "r")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a meap run directory"):
        compare_runs([three_runs[0], tmp_path / "empty"], tmp_path / "r")
    with pytest.raises(UserError, match="no such run directory"):
        compare_runs([three_runs[0], tmp_path / "nope"], tmp_path / "r")
