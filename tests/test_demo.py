"""`meap demo`: the demo corpus holds no evaluation value, and a reduced demo runs every stage end to end."""

import gzip
import json
import re

import pytest

from meap.cli import main
from meap.config import DemoConfig, load_config
from meap.demo import QUICK, demo_documents


def quick_config(**overrides) -> DemoConfig:
    return load_config(DemoConfig, overrides={**QUICK, **overrides})


def test_demo_documents_are_seeded_and_mix_every_kind():
    config = quick_config()
    documents = demo_documents(config, held_out=set())
    assert documents == demo_documents(config, held_out=set())
    assert documents != demo_documents(quick_config(seed=7), held_out=set())
    kinds = [("Read the document below" in d, d.startswith("Write a high-quality answer"), d.startswith("Numbers:"))
             for d in documents]
    assert sum(k[0] for k in kinds) == config.retrieval_documents
    assert sum(k[1] for k in kinds) == config.mdqa_documents
    assert sum(k[2] for k in kinds) == config.drill_documents
    assert len(documents) == (config.retrieval_documents + config.mdqa_documents + config.drill_documents
                              + config.prose_documents)
    # A retrieval document ends with the value its needle states.
    retrieval = next(d for d in documents if "Read the document below" in d)
    value = retrieval.rsplit(" ", 1)[1]
    assert re.fullmatch(r"\d{7}", value) and f"is: {value}." in retrieval


def test_held_out_values_never_reach_the_corpus():
    config = quick_config()
    unrestricted = demo_documents(config, held_out=set())
    values = {v for d in unrestricted for v in re.findall(r"\b\d{7}\b", d)}
    answers = {d.rsplit("Answer: ", 1)[1] for d in unrestricted if d.startswith("Write a high-quality answer")}
    held_out = set(sorted(values)[::3]) | set(sorted(answers)[::2])
    restricted = "\n".join(demo_documents(config, held_out=held_out))
    assert held_out and not [value for value in held_out if re.search(rf"\b{re.escape(value)}\b", restricted)]


def test_quick_demo_end_to_end(tmp_path, capsys):
    output = tmp_path / "demo"
    main_args = ["demo", "--quick", "--no-progress", "--output", str(output)]
    with pytest.raises(SystemExit) as exit_info:
        main(main_args)
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert all(f"{stage}/4" in printed for stage in range(1, 5)) and "report:" in printed

    # Both runs trained from the same seed on the same data, and were evaluated.
    for objective in ("ntp", "meap"):
        run = output / objective
        assert (run / "final" / "model.safetensors").is_file()
        for path in ("eval/niah/summary.json", "eval/mdqa/summary.json", "eval/attention/attention.json"):
            assert (run / path).is_file(), path
    ntp_config = (output / "ntp" / "config.yaml").read_text()
    assert ntp_config.replace("objective: ntp", "objective: meap").replace(str(output / "ntp"), str(output / "meap")) \
        == (output / "meap" / "config.yaml").read_text()

    # The evaluation values are not in the training corpus.
    corpus = (output / "corpus.jsonl").read_text()
    niah_answers = [json.loads(line)["answer"] for line in (output / "ntp/eval/niah/results.jsonl").open()]
    mdqa_answers = [a for path in (output / "mdqa").glob("*.jsonl.gz")
                    for line in gzip.open(path, "rt") for a in json.loads(line)["answers"]]
    assert niah_answers and mdqa_answers
    assert not [a for a in niah_answers + mdqa_answers if re.search(rf"\b{re.escape(a)}\b", corpus)]

    # demo.json repeats numbers found in the run files; the report shows curves, heatmaps, MDQA and attention.
    summary = json.loads((output / "demo.json").read_text())
    niah_summary = json.loads((output / "meap/eval/niah/summary.json").read_text())
    assert summary["runs"]["meap"]["niah_substring"] == niah_summary["overall"]["substring"]
    report = (output / "report" / "report.md").read_text()
    for expected in ("loss_by_step.png", "niah_0.png", "niah_1.png", "niah_diff_1.png", "mdqa.png", "Attention"):
        assert expected in report, expected
    assert "absent" not in report.split("## Training curves")[0].split("| ntp")[1].split("\n")[0].split("|")[-2]
    assert (output / "attention" / "segment_mass.png").is_file()

    # A second call continues (everything is done: nothing retrains); another configuration needs --overwrite.
    before = (output / "ntp" / "metrics.jsonl").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(main_args)
    assert exit_info.value.code == 0 and (output / "ntp" / "metrics.jsonl").read_text() == before
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*main_args, "--max-steps", "3"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--overwrite" in error and error.count("\n") == 1
