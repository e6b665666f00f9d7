"""`meap eval suite` on two tiny runs (NTP and MEAP of one seed), then `meap compare`: the paper's table with every
evaluation kind, on the real data files of ../shared/data."""

import shutil
from pathlib import Path

import pytest

from meap.cli import main
from meap.config import PretrainConfig, load_config
from meap.eval.suite import STAGES
from meap.report import compare_runs
from meap.train import pretrain

COMMONSENSE = Path(__file__).parent / "fixtures" / "commonsense"
SHORT_JUDGE_PROMPT = (
    "Document:\n{document}\n\nSummary:\n{summary}\n\nIs the summary supported by the document? "
    "Reply with one word: Verdict: supported, or Verdict: unsupported."
)


@pytest.fixture(scope="module")
def two_runs(prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    runs = []
    for objective in ("ntp", "meap"):
        overrides = dict(
            data=str(prepared), output=str(root / objective), objective=objective, seed=0, seq_len=32,
            micro_batch_size=4, max_steps=2, warmup_steps=1, log_every=1, eval_every=2, eval_batches=1,
        )  # fmt: skip
        runs.append(pretrain(load_config(PretrainConfig, overrides=overrides), progress=False))
    return runs


def suite(runs, shared_data, judge_url, judge_model, prompt, *extra) -> list[str]:
    return [
        "eval", "suite", "--model", *map(str, runs), "--no-progress",
        "--niah-lengths", "320", "--niah-depths", "0", "100", "--niah-samples", "1", "--reasoning-lengths", "320",
        "--mdqa-num-docs", "3", "--mdqa-examples", "1",
        "--kv-data", str(shared_data / "lost-in-the-middle" / "kv-retrieval-75_keys.jsonl.gz"),
        "--kv-num-pairs", "3", "--kv-gold-index", "0", "2", "--kv-limit", "1",
        "--commonsense-data-dir", str(COMMONSENSE),
        "--hallucination-data", str(shared_data / "xsum" / "xsum-1000.jsonl.gz"), "--hallucination-limit", "2",
        "--judge-url", judge_url, "--judge-model", judge_model, "--judge-prompt", str(prompt),
        "--judge-max-tokens", "8", "--commonsense-limit", "2",
        "--attention-samples", "1", "--attention-length", "128", *extra,
    ]  # fmt: skip


def test_the_suite_then_compare_gives_the_papers_table_with_every_kind(
    two_runs, shared_data, judge_server, tmp_path, capsys
):
    url, served, _ = judge_server
    prompt = tmp_path / "judge.txt"
    prompt.write_text(SHORT_JUDGE_PROMPT)
    argv = suite(two_runs, shared_data, url, served, prompt)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for run in two_runs:
        for stage, directory in zip(STAGES, ("niah", "mdqa", "niah-reasoning", "kv-retrieval", "commonsense",
                                            "hallucination", "attention")):  # fmt: skip
            assert (run / "eval" / directory).is_dir(), (run, stage)
            assert f"{run}: {stage} ..." in out
    assert f"suite [14/14] {two_runs[1]}: attention ..." in out

    report = compare_runs(two_runs, tmp_path / "report").read_text()
    table = report.split("## The paper's table")[1].split("\n## ")[0]
    assert (
        "| measure | NTP (mean of 1 seeds) | MEAP (mean of 1) | MEAP - NTP [95% CI] | the paper (reported) |" in table
    )
    for measure in (
        "needle in a haystack (substring)",
        "multi-needle reasoning (NIAH reasoning)",
        "multi-document QA (best-subspan EM)",
        "key-value retrieval (lost in the middle)",
        "commonsense: average acc",
        "faithful summaries (LLM judge)",
        "attention mass on the answer (from the query)",
    ):
        assert f"| {measure} |" in table, measure
    assert "NTP 87.1 vs MEAP 98.2" in table and "(1 seed: no interval)" in table
    for section in ("Key-value retrieval", "Contextual hallucination", "Commonsense"):
        assert f"## {section}" in report

    # again: every stage is done; one summary removed: that stage alone runs again
    (two_runs[0] / "eval" / "kv-retrieval" / "summary.json").unlink()
    with pytest.raises(SystemExit):
        main(argv)
    out = capsys.readouterr().out
    assert out.count("done before") == 13 and f"{two_runs[0]}: kv-retrieval ..." in out


def test_a_stage_that_cannot_run_is_skipped_with_its_reason_and_a_failed_one_is_named(two_runs, tmp_path, capsys):
    model = str(shutil.copytree(two_runs[0], tmp_path / "run", ignore=shutil.ignore_patterns("eval")))
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "suite", "--model", model, "--stages", "kv-retrieval", "hallucination", "commonsense",
              "--commonsense-data-dir", str(tmp_path / "nope"), "--no-progress"])  # fmt: skip
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "kv-retrieval: skipped, no --kv-data" in captured.out
    assert "hallucination: skipped, no --hallucination-data" in captured.out
    assert "commonsense: failed, " in captured.out and "no such directory of local task data" in captured.out
    assert captured.err.strip() == (
        f"meap: error: suite: 1 of 3 stages failed ({model} commonsense); the others are written"
    )
