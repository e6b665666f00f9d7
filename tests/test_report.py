"""`meap compare`: a report of several runs built only from their files, with absent evaluations listed."""

import json
import shutil

import pytest
import yaml

from meap.config import PretrainConfig, load_config
from meap.errors import UserError
from meap.eval.attention import AttentionConfig
from meap.eval.mdqa import MDQAConfig
from meap.eval.niah import NIAHConfig
from meap.plots import (
    draw_accuracy_by_position,
    draw_attention_layers,
    draw_niah_heatmap,
    draw_segment_mass,
    short_name,
    wrap_title,
)
from meap.report import compare_runs, find_evaluations
from meap.train import pretrain


@pytest.fixture(scope="module")
def three_runs(prepared, tmp_path_factory, request):
    from meap.config.commands import MakeMDQAConfig
    from meap.eval import attention, mdqa, niah
    from meap.eval.mdqa_data import make_mdqa

    root = tmp_path_factory.mktemp("runs")
    runs = []
    for objective, seed in (("ntp", 1), ("meap", 1), ("meap", 2)):
        config = load_config(
            PretrainConfig,
            overrides=dict(
                data=str(prepared),
                output=str(root / f"{objective}-{seed}"),
                objective=objective,
                seed=seed,
                seq_len=32,
                micro_batch_size=4,
                max_steps=4,
                warmup_steps=1,
                log_every=1,
                eval_every=2,
                eval_batches=1,
            ),
        )
        runs.append(pretrain(config, progress=False))
    haystack = root / "hay.txt"
    haystack.write_text("The river ran past the old mill. " * 200)
    for run in runs[:2]:
        niah.evaluate(
            NIAHConfig(
                model=str(run),
                output=str(run / "eval" / "niah"),
                haystack=[str(haystack)],
                lengths=[160, 200],
                depths=[0, 100],
                max_new_tokens=4,
                no_progress=True,
            )
        )
    attention.evaluate(
        AttentionConfig(
            model=[str(runs[1])],
            output=str(runs[1] / "eval" / "attention"),
            samples=1,
            length=160,
            haystack=[str(haystack)],
            no_progress=True,
        )
    )
    data = make_mdqa(MakeMDQAConfig(output=str(root / "mdqa.jsonl"), num_docs=3, examples=4))
    mdqa.evaluate(
        MDQAConfig(
            model=str(runs[2]),
            data=[str(data)],
            output=str(runs[2] / "eval" / "mdqa"),
            max_new_tokens=4,
            no_progress=True,
        )
    )
    return runs


def test_report_compares_three_runs_from_their_files(three_runs, tmp_path):
    report = compare_runs(three_runs, tmp_path / "report")
    text = report.read_text()
    names = [run.name for run in three_runs]
    assert text.startswith("# NTP vs MEAP\n\nRuns: " + ", ".join(f"{run.name} ({run})" for run in three_runs))
    for png in ("loss_by_step.png", "loss_by_time.png", "niah_0.png", "niah_1.png", "niah_diff_1.png", "mdqa.png"):
        assert (tmp_path / "report" / png).stat().st_size > 0, png
        assert f"]({png})" in text
    # Absent evaluations are listed, never filled in.
    assert f"{names[2]}: absent." in text.split("## Needle in a haystack")[1].split("##")[0]
    assert f"{names[0]}: absent." in text.split("## Multi-document QA")[1].split("##")[0]
    # A kind no run has gets no section; the table of runs names it absent.
    assert "## lm-evaluation-harness" not in text
    runs_table = text.split("## Runs")[1].split("\n## ")[0]
    assert all("harness" in line.split("|")[-2] for line in runs_table.splitlines() if line.startswith(f"| {names[0]}"))
    # Numbers come from the files: the last losses and the NIAH overall score.
    for run in three_runs:
        last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
        assert f"{last['loss']:.4f}" in text
    overall = json.loads((three_runs[0] / "eval" / "niah" / "summary.json").read_text())["overall"]
    assert f"| {names[0]} | {overall['substring']:.4f} | {overall['rouge1_f']:.4f} | 4 | 4 |" in text
    # The configs differ in objective and seed (and output), and say so.
    differences = text.split("## Configuration differences")[1]
    assert "| objective | ntp | meap | meap |" in differences and "| seed | 1 | 1 | 2 |" in differences
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == text.count("](") and "<table>" in html


def test_evaluations_are_recognised_by_content(three_runs):
    assert set(find_evaluations(three_runs[1])) == {"niah", "attention"}
    assert set(find_evaluations(three_runs[2])) == {"mdqa"}
    assert find_evaluations(three_runs[0] / "checkpoints") == {}


def test_every_evaluation_of_a_kind_is_reported_by_its_directory(three_runs, tmp_path):
    """Two MDQA evaluations in one run (another file, another length) are two sections, each labelled by its
    directory and matched across runs by it; neither hides the other."""
    from meap.config.commands import MakeMDQAConfig
    from meap.eval import mdqa
    from meap.eval.mdqa_data import make_mdqa

    runs = [tmp_path / "a", tmp_path / "b"]
    for source, run in zip(three_runs[1:], runs):
        shutil.copytree(source, run, ignore=shutil.ignore_patterns("checkpoints", "eval"))
    files = {
        "mdqa": make_mdqa(MakeMDQAConfig(output=str(tmp_path / "three.jsonl"), num_docs=3, examples=2)),
        "mdqa-two-docs": make_mdqa(MakeMDQAConfig(output=str(tmp_path / "two.jsonl"), num_docs=2, examples=3)),
    }
    for directory, data in files.items():
        mdqa.evaluate(
            MDQAConfig(
                model=str(runs[0]),
                data=[str(data)],
                output=str(runs[0] / "eval" / directory),
                max_new_tokens=2,
                no_progress=True,
            )
        )
    mdqa.evaluate(
        MDQAConfig(
            model=str(runs[1]),
            data=[str(files["mdqa-two-docs"])],
            output=str(runs[1] / "eval" / "mdqa-two-docs"),
            max_new_tokens=2,
            no_progress=True,
        )
    )
    text = compare_runs(runs, tmp_path / "report").read_text()
    first = text.split("## Multi-document QA (best-subspan EM by gold position) [eval/mdqa]\n")[1].split("##")[0]
    second = text.split("## Multi-document QA (best-subspan EM by gold position) [eval/mdqa-two-docs]\n")[1]
    second = second.split("##")[0]
    assert "b: absent." in first and "| a | " in first and "| 2 |" in first
    assert "absent." not in second and "| a | " in second and "| b | " in second and "| 3 |" in second
    assert "mdqa (eval/mdqa, eval/mdqa-two-docs)" in text
    assert (tmp_path / "report" / "mdqa.png").is_file() and (tmp_path / "report" / "mdqa_1.png").is_file()


def test_the_report_says_when_runs_are_not_like_with_like(three_runs, tmp_path):
    """Another tokenizer, other data, another starting model: each is said; a MEAP fine-tune in which few
    conversations got the masked copy says so beside its objective; the title says what the runs are."""
    runs = [tmp_path / "a", tmp_path / "b"]
    for source, run in zip(three_runs[1:], runs):
        shutil.copytree(source, run, ignore=shutil.ignore_patterns("checkpoints", "eval"))
    text = compare_runs(runs, tmp_path / "same").read_text()
    assert text.startswith("# MEAP runs compared") and "Not like with like" not in text
    facts = json.loads((runs[1] / "run.json").read_text())
    (runs[1] / "run.json").write_text(json.dumps({**facts, "tokenizer_sha256": "f" * 64, "meap_share": 0.25}))
    config = (runs[1] / "config.yaml").read_text()
    assert "\ndata: " in config and "\nmodel: tiny\n" in config
    (runs[1] / "config.yaml").write_text(
        config.replace("\ndata: ", "\ndata: other-").replace("\nmodel: tiny\n", "\nmodel: tiny-2l\n")
    )
    text = compare_runs(runs, tmp_path / "differ").read_text()
    assert "different tokenizers (vocabulary hashes a: " in text and "b: ffffffffffff)" in text
    assert (
        "trained and validated on different data" in text
        and "start from different models (a: tiny; b: tiny-2l)" in text
    )
    assert "| b | meap (25% of conversations with the masked copy) |" in text


def test_bad_runs_are_user_errors(three_runs, tmp_path):
    with pytest.raises(UserError, match="at least two"):
        compare_runs(three_runs[:1], tmp_path / "r")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a meap run directory"):
        compare_runs([three_runs[0], tmp_path / "empty"], tmp_path / "r")
    with pytest.raises(UserError, match="no such run directory"):
        compare_runs([three_runs[0], tmp_path / "nope"], tmp_path / "r")


def test_the_report_leads_with_clean_validation_loss_and_says_why(three_runs, tmp_path):
    text = compare_runs(three_runs, tmp_path / "report").read_text()
    runs_table = text.split("## Runs")[1].split("##")[0]
    header = runs_table.strip().splitlines()[0]
    assert header.index("validation loss (clean inputs)") < header.index("training loss (inputs as trained)")
    assert (
        "MEAP replaces a share of its inputs with [MASK], so its training loss is higher by construction" in runs_table
    )
    for run in three_runs:
        val = [
            json.loads(line)["val_loss"]
            for line in (run / "metrics.jsonl").read_text().splitlines()
            if "val_loss" in line
        ][-1]
        held_out = json.loads((run / "run.json").read_text())["sequences"]["val"]
        seq_len = yaml.safe_load((run / "config.yaml").read_text())["seq_len"]
        # the loss names the validation split it was measured on
        assert (
            f"| {run.name} | {run.name.split('-')[0]} | 4 | {val:.4f} ({held_out:,} x {seq_len} tokens) |" in runs_table
        )


def test_one_attention_analysis_of_two_runs_counts_for_both(three_runs, tmp_path):
    from meap.eval import attention

    ntp, meap = (shutil.copytree(run, tmp_path / run.name) for run in three_runs[:2])
    shutil.rmtree(meap / "eval" / "attention")
    haystack = tmp_path / "hay.txt"
    haystack.write_text("The river ran past the old mill. " * 200)
    # As the README does it: both models, one output inside one of the runs.
    attention.evaluate(
        AttentionConfig(
            model=[str(ntp), str(meap)],
            output=str(meap / "eval" / "attention"),
            samples=1,
            length=160,
            haystack=[str(haystack)],
            no_progress=True,
        )
    )

    text = compare_runs([ntp, meap], tmp_path / "report").read_text()

    section = text.split("## Attention")[1].split("\n## ")[0]
    assert "absent." not in section
    rows = [
        line
        for line in section.splitlines()
        if line.startswith(f"| {ntp.name} |") or line.startswith(f"| {meap.name} |")
    ]
    assert [row.split(" | ")[0] for row in rows] == [f"| {ntp.name}", f"| {meap.name}"]
    assert "](segment_mass.png)" in section and "](layers.png)" in section
    assert (tmp_path / "report" / "layers.png").stat().st_size > 0


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_figures_read_like_figures(three_runs, tmp_path):
    compare_runs(three_runs, tmp_path / "report")
    for png in sorted((tmp_path / "report").glob("*.png")):
        assert png_size(png)[0] >= 900, png  # readable at 100%, not 360 px
    # Integer ticks on discrete positions and layers, labelled axes, the sample count shown.
    figure = draw_accuracy_by_position(
        {"runs/ntp": {0: 0.0, 4: 0.0, 9: 0.0}, "runs/meap": {0: 0.0, 4: 0.0, 9: 0.5}},
        examples={"runs/ntp": {0: 30, 4: 30, 9: 30}, "runs/meap": {0: 30, 4: 30, 9: 30}},
    )
    axes = figure.axes[0]
    assert list(axes.get_xticks()) == [1, 5, 10] and axes.get_ylabel()
    legend = [t.get_text() for t in axes.get_legend().get_texts()]
    assert legend == ["ntp (n = 30 per position)", "meap (n = 30 per position)"]
    assert "95% Wilson intervals" in axes.get_title()
    ntp_bars, meap_bars = axes.containers  # error bars: 15/30 right spans about [0.33, 0.67] (Wilson)
    low, high = meap_bars.lines[2][0].get_segments()[2][:, 1]
    assert low == pytest.approx(0.332, abs=1e-3) and high == pytest.approx(0.668, abs=1e-3)
    assert ntp_bars.lines[2][0].get_segments()[0][1, 1] == pytest.approx(0.114, abs=1e-3)  # 0 of 30: [0, 0.114]
    ntp_line, meap_line = ntp_bars.lines[0], meap_bars.lines[0]
    # Two lines of zeros: the second is drawn so the first shows through it.
    assert (ntp_line.get_marker(), ntp_line.get_linestyle()) != (meap_line.get_marker(), meap_line.get_linestyle())
    assert meap_line.get_markerfacecolor() == "none" and meap_line.get_markersize() > ntp_line.get_markersize()
    layers = [{"layer": i, "segment_mass": {"answer": 0.1 * i}, "entropy": 1.0, "score_decay": 0.0} for i in range(4)]
    figure = draw_attention_layers({"a": {"layers": layers, "samples": 8, "has_mask_token": True}})
    for axis in figure.axes:
        assert list(axis.get_xticks()) == [0, 1, 2, 3] and axis.get_ylabel() and axis.get_xlabel()
    figure = draw_segment_mass(
        {
            name: {
                "samples": 8,
                "average": {
                    "segment_mass": {"before": 0.5, "answer": 0.2},
                    "segment_mass_half_width": {"before": 0.1, "answer": 0.05},
                },
            }
            for name in ("runs/ntp", "runs/meap")
        }
    )
    assert (
        len(figure.axes[0].containers) == 4 and "95% t-intervals" in figure.axes[0].get_title()
    )  # 2 bars, 2 error bars
    figure = draw_niah_heatmap(
        [{"length": 256, "depth": 0.0, "score": 0.5, "samples": 4}],
        title="NIAH: smollm2-135m run with a long name (substring match, overall 0.500)",
    )
    width, _ = figure.get_size_inches()
    assert width >= 6 and "n = 4 per cell" in figure.axes[0].get_title()
    assert "(substring match, overall 0.500)" in figure.axes[0].get_title().splitlines()  # not cut inside parentheses
    assert wrap_title("a (b c) d", 5) == ["a", "(b c)", "d"] and wrap_title("a (b c) d", 7) == ["a (b c)", "d"]
    assert {text.get_fontsize() for text in figure.axes[0].texts} == {
        figure.axes[0].xaxis.get_ticklabels()[0].get_fontsize()
    }
    figure.tight_layout()
    figure.canvas.draw()
    title, ylabel = figure.axes[0].title.get_window_extent(), figure.axes[0].yaxis.label.get_window_extent()
    assert 0 <= title.x0 and title.x1 <= figure.bbox.width and not title.overlaps(ylabel)  # not clipped or on the label
    assert short_name("runs/meap/final") == "meap"


def test_each_niah_variant_has_its_own_section(three_runs, tmp_path):
    from meap.eval import niah

    runs = [shutil.copytree(run, tmp_path / run.name) for run in three_runs[:2]]
    haystack = tmp_path / "hay.txt"
    haystack.write_text("The river ran past the old mill. " * 200)
    for run in runs:
        niah.evaluate(
            NIAHConfig(
                model=str(run),
                output=str(run / "eval" / "niah-multiquery"),
                haystack=[str(haystack)],
                lengths=[400],
                depths=[0, 100],
                max_new_tokens=4,
                variant="multiquery",
                no_progress=True,
            )
        )
    assert set(find_evaluations(runs[0])) >= {"niah", "niah-multiquery"}

    text = compare_runs(runs, tmp_path / "report").read_text()

    section = text.split("## Needle in a haystack, multiquery (share of required values recalled)")[1].split("\n## ")[0]
    summary = json.loads((runs[0] / "eval" / "niah-multiquery" / "summary.json").read_text())
    assert f"| {runs[0].name} | {summary['overall']['substring']:.4f} |" in section
    assert "](niah_multiquery_0.png)" in section and "](niah_multiquery_diff_1.png)" in section
    assert "## Needle in a haystack (share of required values recalled)" in text  # the single variant stays


def _run_with_retrieval(root, seed: int, objective: str, scores: list[float], val_loss: float, ratio=None):
    """A run directory as `meap pretrain` and `meap eval retrieval` leave it (the files alone)."""
    import yaml

    from meap.eval.results import write_records, write_summary

    run = root / f"seed-{seed}" / (objective if ratio is None else f"{objective}-{ratio}")
    (run / "eval" / "retrieval").mkdir(parents=True)
    ratios = {} if ratio is None else {"mask_ratio": ratio}
    (run / "config.yaml").write_text(yaml.safe_dump({"objective": objective, "seed": seed, **ratios}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 4, "tokens": 64, "loss": 3.0, "val_loss": val_loss}) + "\n")
    write_records(
        run / "eval" / "retrieval",
        [{"index": i, "absent": False, "correct": s, "distractor": 0.0} for i, s in enumerate(scores)],
    )
    write_summary(
        run / "eval" / "retrieval",
        "retrieval",
        {"probes": len(scores), "absent_probes": 0, "strict": sum(scores) / len(scores), "distractor_given": 0.0},
    )
    return run


def test_compare_pairs_runs_by_seed_with_seed_level_statistics(tmp_path):
    from meap.stats import paired_difference, seed_statistics

    scores = {0: ([0, 0, 1, 0], [1, 1, 1, 0]), 1: ([1, 0, 0, 0], [1, 0, 1, 1]), 2: ([0, 0, 0, 0], [0, 1, 0, 0])}
    val = {0: (2.5, 2.4), 1: (2.6, 2.55), 2: (2.4, 2.42)}
    runs = [
        _run_with_retrieval(tmp_path, seed, objective, scores[seed][i], val[seed][i])
        for seed in scores
        for i, objective in enumerate(("ntp", "meap"))
    ]
    report = compare_runs(runs, tmp_path / "report").read_text()
    section = report.split("## MEAP - NTP, paired by seed (3 seed(s): 0, 1, 2)")[1].split("\n## ")[0]
    paired = paired_difference([scores[s][0] for s in scores], [scores[s][1] for s in scores])
    low, high = paired["ci95"]
    assert f"| key-based retrieval, strict | {paired['difference']:+.3f} [{low:+.3f}, {high:+.3f}] |" in section
    assert "| 3 x 4 | no detectable difference |" in section and low < 0 < high
    assert "With 3 seeds the exact sign-flip p cannot go below 0.25: it cannot reach 0.05" in section
    loss = seed_statistics([m - n for n, m in val.values()])
    assert f"| validation loss | {loss['mean']:+.4f} [{loss['ci95'][0]:+.4f}, {loss['ci95'][1]:+.4f}] |" in section


def test_compare_pairs_every_arm_the_runs_hold_with_the_baseline(tmp_path):
    """A 5% MEAP arm beside the 15% one: each is paired with NTP by seed, named by its ratio, with no edit."""
    from meap.stats import paired_difference

    scores = {0: ([0, 0, 1, 0], [1, 0, 1, 0], [1, 1, 1, 0]), 1: ([1, 0, 0, 0], [1, 0, 0, 1], [1, 0, 1, 1])}
    arms = (("ntp", 0.0), ("meap", 0.05), ("meap", 0.15))
    runs = [
        _run_with_retrieval(tmp_path, seed, objective, scores[seed][i], 2.0, ratio)
        for seed in scores
        for i, (objective, ratio) in enumerate(arms)
    ]
    report = compare_runs(runs, tmp_path / "report").read_text()
    assert report.startswith("# NTP vs MEAP-0.05 vs MEAP-0.15\n")
    for i, arm in ((1, "MEAP-0.05"), (2, "MEAP-0.15")):
        section = report.split(f"## {arm} - NTP, paired by seed (2 seed(s): 0, 1)")[1].split("\n## ")[0]
        paired = paired_difference([scores[s][0] for s in scores], [scores[s][i] for s in scores])
        assert f"| key-based retrieval, strict | {paired['difference']:+.3f} [" in section
        assert f"| measure | {arm} - NTP [95% CI] |" in section
    assert "## MEAP - NTP" not in report


def test_compare_says_when_both_arms_sit_at_the_floor(tmp_path):
    runs = [
        _run_with_retrieval(tmp_path, seed, objective, [0, 0, 0], 2.0 + seed)
        for seed in (0, 1)
        for objective in ("ntp", "meap")
    ]
    section = compare_runs(runs, tmp_path / "report").read_text().split("paired by seed")[1]
    # not "+0.000 [+0.000, +0.000], p = 1.0", which reads as a precise null
    assert "| key-based retrieval, strict | both arms at the floor on every prompt |" in section
    assert "nothing to conclude" in section and "+0.000 [" not in section
    assert "cannot go below 0.5" in section


def _run_with_niah_and_mdqa(root, seed: int, objective: str, niah: float, mdqa: list[list[float]]):
    """A run with a NIAH summary (two cells) and MDQA records (``mdqa[q][p]``: question q, gold position p)."""
    import yaml

    from meap.eval.results import write_records, write_summary

    run = root / f"seed-{seed}" / objective
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"objective": objective, "seed": seed}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 4, "tokens": 64, "loss": 3.0}) + "\n")
    cells = [{"length": 256, "depth": d, "substring": niah, "rouge1_f": niah, "samples": 1} for d in (0.0, 1.0)]
    for kind in ("niah", "mdqa"):
        (run / "eval" / kind).mkdir(parents=True)
    write_records(run / "eval" / "niah", [{"substring": niah} for _ in cells])
    write_summary(run / "eval" / "niah", "niah", {"cells": cells, "overall": {"substring": niah, "rouge1_f": niah}})
    records = [
        {"question": f"q{q}", "gold_position": p, "best_subspan_em": row[p]}
        for p in range(len(mdqa[0]))
        for q, row in enumerate(mdqa)
    ]
    write_records(run / "eval" / "mdqa", records)
    by_position = {str(p): sum(row[p] for row in mdqa) / len(mdqa) for p in range(len(mdqa[0]))}
    write_summary(
        run / "eval" / "mdqa",
        "mdqa",
        {
            "accuracy": sum(r["best_subspan_em"] for r in records) / len(records),
            "accuracy_by_gold_position": by_position,
            "examples_by_gold_position": {p: len(mdqa) for p in by_position},
            "num_examples": len(records),
        },
    )
    return run


def test_compare_pairs_niah_and_mdqa_within_seeds_and_labels_runs_by_seed(tmp_path):
    from meap.eval.results import prompt_scores
    from meap.plots import draw_accuracy_by_position, legend_names
    from meap.stats import paired_difference

    mdqa = {
        (0, "ntp"): [[1, 0], [0, 0], [1, 1]],
        (0, "meap"): [[1, 1], [0, 1], [1, 1]],
        (1, "ntp"): [[0, 0], [1, 0], [0, 1]],
        (1, "meap"): [[1, 0], [1, 1], [0, 1]],
    }
    niah = {(0, "ntp"): 0.2, (0, "meap"): 0.5, (1, "ntp"): 0.4, (1, "meap"): 0.3}
    runs = [_run_with_niah_and_mdqa(tmp_path, s, o, niah[(s, o)], mdqa[(s, o)]) for s, o in mdqa]
    report = compare_runs(runs, tmp_path / "report").read_text()
    # the NIAH differences are MEAP - NTP within each seed, never against the first run given
    assert (
        "Difference, seed-0/meap minus seed-0/ntp:" in report and "Difference, seed-1/meap minus seed-1/ntp:" in report
    )
    assert "minus seed-0/ntp" not in report.replace("seed-0/meap minus seed-0/ntp", "")
    # MDQA is paired by seed, its unit the question (gold positions averaged)
    tables = {
        o: [
            prompt_scores(
                [{"question": f"q{q}", "best_subspan_em": sum(r) / 2} for q, r in enumerate(mdqa[(s, o)])],
                "best_subspan_em",
            )
            for s in (0, 1)
        ]
        for o in ("ntp", "meap")
    }
    paired = paired_difference(tables["ntp"], tables["meap"])
    low, high = paired["ci95"]
    row = (
        f"| multi-document QA, best-subspan EM (per question) | {paired['difference']:+.3f} [{low:+.3f}, {high:+.3f}] |"
    )
    assert row in report and "| 2 x 3 |" in report
    # the legend keeps the seeds where the objective alone would repeat
    assert legend_names(["seed-0/ntp", "seed-1/ntp"]) == {"seed-0/ntp": "seed-0/ntp", "seed-1/ntp": "seed-1/ntp"}
    assert legend_names(["runs/ntp/final", "runs/meap/final"]) == {"runs/ntp/final": "ntp", "runs/meap/final": "meap"}
    figure = draw_accuracy_by_position({"seed-0/ntp": {0: 0.5}, "seed-1/ntp": {0: 0.4}})
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["seed-0/ntp", "seed-1/ntp"]


def test_a_summary_whose_kind_is_not_registered_is_not_an_evaluation(tmp_path):
    """Kinds are read from a summary's `kind` alone (a new kind end to end: tests/eval/test_toy_kind.py)."""
    run = _run_with_retrieval(tmp_path, 0, "ntp", [0, 1], 2.0)
    (run / "eval" / "other").mkdir()
    (run / "eval" / "other" / "summary.json").write_text(json.dumps({"cells": [], "overall": {}}))
    (run / "eval" / "unknown").mkdir()
    (run / "eval" / "unknown" / "summary.json").write_text(json.dumps({"kind": "unknown", "score": 1.0}))
    assert set(find_evaluations(run)) == {"retrieval"}
