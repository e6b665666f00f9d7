"""A new evaluation kind is its module and nothing more: a toy kind, defined whole in this file (its config,
its entry point, its headline, its report section and its record), registered, then trained for, run as
`meap eval toy`, and read back by `meap compare`, with no other file touched."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from meap import cli
from meap.config.commands import CommandConfig, model_option, no_progress_option, option, output_option
from meap.eval.kind import EvaluationKind, by_label, format_value, read_records, section, write_records
from meap.eval.results import KINDS, register
from meap.stats import paired_difference
from meap.train import pretrain

from conftest import tiny_config

TEXTS = ("The river ran past the old mill.", "A lamp burned in the window.", "The road went on to the hills.")


@dataclass
class ToyConfig(CommandConfig):
    model: str = model_option()
    output: str = output_option("directory for results.jsonl and toy.json")
    texts: int = option("how many of the toy texts to score", len(TEXTS))
    no_progress: bool = no_progress_option()

    def problems(self) -> list[str]:
        return [] if 1 <= self.texts <= len(TEXTS) else [f"--texts: expected 1 to {len(TEXTS)}, got {self.texts}"]


def evaluate(config: ToyConfig) -> dict:
    """Each text's mean log-probability per token under the model, teacher-forced."""
    import torch

    from meap.config import checked
    from meap.models import load_causal_lm

    checked(config)
    model, tokenizer = load_causal_lm(config.model)
    records = []
    with torch.no_grad():
        for index, text in enumerate(TEXTS[: config.texts]):
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            loss = model(input_ids=ids, labels=ids).loss
            records.append({"text": index, "logprob": -float(loss)})
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    write_records(output, records)
    mean = sum(record["logprob"] for record in records) / len(records)
    return KIND.write_summary(output, {"model": config.model, "logprob": mean, "texts": len(records)})


def headline(summary: dict, output) -> str:
    return f"toy: log-probability {summary['logprob']:.3f} over {summary['texts']} texts -> {output}"


def report_section(blocks: list[tuple], loaded: dict[str, dict], output: Path) -> None:
    for _, heading, view in by_label(loaded, KIND.name, "Toy log-probability"):
        found = section(blocks, view, KIND.name, heading)
        rows = [[name, format_value(summary["logprob"])] for name, summary in found.items()]
        blocks.append(("table", ["run", "log-probability"], rows))


KIND = EvaluationKind(
    "toy",
    "toy.json",
    headline,
    report_section,
    paired_score=("logprob", "toy, log-probability"),
    paper_rows=lambda summary: {"toy log-probability": summary["logprob"]},
    command=("eval", "toy"),
    help="a toy evaluation kind: mean log-probability of three sentences",
    config=ToyConfig,
    evaluate=evaluate,
)


@pytest.fixture
def toy_kind():
    register(KIND)  # the one line a new kind adds to meap.eval.results
    yield KIND
    del KINDS[KIND.name]


def test_a_new_kind_trains_evaluates_and_reaches_the_report_through_its_module_alone(
    toy_kind, prepared, tmp_path, capsys
):
    runs = []
    for seed in (1, 2):
        for objective in ("ntp", "meap"):
            output = tmp_path / f"seed-{seed}" / objective
            runs.append(pretrain(tiny_config(prepared, output, objective=objective, seed=seed, max_steps=2)))
    capsys.readouterr()
    for run in runs:
        assert cli.execute(["eval", "toy", "--model", str(run), "-o", str(run / "eval" / "toy")]) == 0
        line = capsys.readouterr().out.strip()
        summary = json.loads((run / "eval" / "toy" / "toy.json").read_text())
        assert summary["kind"] == "toy" and line == headline(summary, run / "eval" / "toy")
    with pytest.raises(SystemExit) as exit_code:  # the kind's config checks its flags, as every command's does
        cli.main(["eval", "toy", "--model", str(runs[0]), "-o", str(tmp_path / "bad"), "--texts", "9"])
    assert exit_code.value.code == 2 and "--texts: expected 1 to 3, got 9" in capsys.readouterr().err

    assert cli.execute(["compare", *map(str, runs), "-o", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Toy log-probability" in report
    assert "toy (eval/toy)" in report  # the runs table lists it among each run's evaluations
    assert "| toy log-probability |" in report  # the paper's table
    scores = {
        run: [r["logprob"] for r in read_records(run / "eval" / "toy" / "results.jsonl")] for run in runs
    }  # seed-1/ntp, seed-1/meap, seed-2/ntp, seed-2/meap
    paired = paired_difference([scores[runs[0]], scores[runs[2]]], [scores[runs[1]], scores[runs[3]]])
    assert f"| toy, log-probability | {paired['difference']:+.3f} [" in report
