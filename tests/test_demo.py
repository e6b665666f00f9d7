"""`meap demo`: the demo corpus holds no evaluation value, and a reduced demo runs every stage end to end."""

import gzip
import json
import re

import pytest

from meap.cli import main
from meap.config import DemoConfig, load_config
from meap.demo import QUICK, demo_documents, warmup_documents


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
    # A retrieval document answers by quoting the needle of the asked key, which it states once; the other
    # needles in it are under other keys.
    for retrieval in (d for d in documents if "Read the document below" in d):
        document, question = retrieval.split("</document>")
        key = re.search(r"magic number for (\w+) mentioned", question).group(1)
        answer = re.fullmatch(rf"\s+Question: .*\nAnswer: (The special magic number for {key} is: \d{{7}}\.)", question)
        assert answer and document.count(answer.group(1)) == 1
        keys = re.findall(r"magic number for (\w+) is", document)
        assert len(keys) == len(set(keys)) and config.needles_per_document[0] <= len(keys) <= config.needles_per_document[1]
    # With bare answers, the value alone.
    bare = next(d for d in demo_documents(quick_config(quote_answers=False), set()) if "Read the document below" in d)
    value = bare.rsplit(" ", 1)[1]
    assert re.fullmatch(r"\d{7}", value) and f"is: {value}." in bare
    # An MDQA document quotes the gold document's fact, which holds the answer.
    mdqa = next(d for d in documents if d.startswith("Write a high-quality answer"))
    fact = mdqa.rsplit("Answer: ", 1)[1]
    assert fact.endswith(".") and fact in mdqa.rsplit("Answer: ", 1)[0]


def test_held_out_values_never_reach_the_corpus():
    config = quick_config(quote_answers=False)
    unrestricted = demo_documents(config, held_out=set())
    values = {v for d in unrestricted for v in re.findall(r"\b\d{7}\b", d)}
    answers = {d.rsplit("Answer: ", 1)[1] for d in unrestricted if d.startswith("Write a high-quality answer")}
    held_out = set(sorted(values)[::3]) | set(sorted(answers)[::2])
    restricted = "\n".join(demo_documents(config, held_out=held_out))
    assert held_out and not [value for value in held_out if re.search(rf"\b{re.escape(value)}\b", restricted)]
    drills = warmup_documents(config, held_out=set())
    drilled = {v for d in drills for v in re.findall(r"\b\d{7}\b", d)}
    held_out = set(sorted(drilled)[::2])
    assert held_out and not held_out & {v for d in warmup_documents(config, held_out) for v in re.findall(r"\b\d{7}\b", d)}


def test_warmup_documents_are_short_copy_drills():
    config = quick_config()
    drills = warmup_documents(config, held_out=set())
    assert len(drills) == config.copy_warmup_documents and drills == warmup_documents(config, set())
    for drill in drills:
        listed = re.fullmatch(r"Numbers: ([\d, ]+)\. Again: ([\d, ]+)\.", drill)
        assert listed and listed.group(1) == listed.group(2)
        assert config.copy_warmup_numbers[0] <= len(listed.group(1).split(", ")) <= config.copy_warmup_numbers[1]


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
        assert (output / f"{objective}-warmup" / "final" / "model.safetensors").is_file()
        assert (run / "config.yaml").read_text().count(f"model: {output / f'{objective}-warmup' / 'final'}") == 1
        for path in ("eval/niah/summary.json", "eval/mdqa/summary.json", "eval/attention/attention.json"):
            assert (run / path).is_file(), path
    ntp_config = (output / "ntp" / "config.yaml").read_text()
    assert ntp_config.replace("objective: ntp", "objective: meap").replace(str(output / "ntp"), str(output / "meap")) \
        == (output / "meap" / "config.yaml").read_text()

    # The evaluation values are not in the training corpus.
    corpus = (output / "corpus.jsonl").read_text()
    niah_answers = [json.loads(line)["answer"] for line in (output / "ntp/eval/niah/results.jsonl").open()]
    for variant in ("multikey", "absent"):
        records = [json.loads(line) for line in (output / "key-check/ntp" / variant / "results.jsonl").open()]
        niah_answers += [value for record in records for value in (record["answer"], *record["distractor_values"])]
    corpus += (output / "warmup-corpus.jsonl").read_text()
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
    ntp_row = next(line for line in report.splitlines() if line.startswith("| ntp |"))
    assert "attention" not in ntp_row.split("|")[-2]  # the absent column: the shared analysis counts for both
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


def test_evidence_pipeline_pairs_seeds_and_reproduces(tmp_path, capsys):
    """`make evidence` at a reduced size: two seeds x two objectives, the summary JSON and its tables."""

    def evidence(name: str) -> dict:
        output, summary = tmp_path / name, tmp_path / name / "results" / "evidence.json"
        with pytest.raises(SystemExit) as exit_info:
            main(["demo", "--quick", "--no-progress", "--output", str(output), "--seeds", "3", "5",
                  "--summary", str(summary), "--mdqa-examples", "3"])
        assert exit_info.value.code == 0
        return output, json.loads(summary.read_text())

    output, result = evidence("a")
    printed = capsys.readouterr().out
    assert "NIAH MEAP - NTP" in printed and "2 seed(s)" in printed
    assert result["seeds"] == [3, 5] and set(result["niah_by_seed"]) == {"ntp", "meap"}
    for objective in ("ntp", "meap"):
        for index, seed in enumerate((3, 5)):
            run = output / f"seed-{seed}" / objective
            records = [json.loads(line) for line in (run / "eval/niah/results.jsonl").open()]
            assert result["niah_by_seed"][objective][index] == sum(r["substring"] for r in records) / len(records)
            assert (run / "config.yaml").read_text().count(f"seed: {seed}\n") == 1
    # The two seeds are different runs; both objectives of one seed start from the same init.
    assert (output / "seed-3/ntp/metrics.jsonl").read_text() != (output / "seed-5/ntp/metrics.jsonl").read_text()
    low, high = result["difference_ci95"]
    assert low <= result["niah"]["paired"]["difference"] <= high
    assert result["niah"]["paired"]["seeds"] == 2 and result["niah"]["paired"]["prompts"] == 6
    assert set(result["mdqa"]["by_gold_position"]["ntp"]) == {"0", "1", "2"}
    assert set(result["key_check"]) == {"multikey", "absent_distractor_copied"}
    assert result["machine"]["cpu"] and result["wall_seconds"] > 0
    tables = (output / "results" / "evidence.md").read_text()
    for heading in ("Per seed", "Paired differences", "NIAH by context length", "MDQA by gold position",
                    "Attention from the query", "Key check"):
        assert heading in tables, heading
    assert (output / "results" / "evidence.png").is_file() and "evidence.png" in tables
    for seed in (3, 5):
        assert (output / f"seed-{seed}" / "report" / "report.md").is_file()

    # Same seeds, same numbers.
    _, again = evidence("b")
    for key in ("niah", "mdqa", "val_loss", "key_check"):
        assert json.dumps(again[key], sort_keys=True) == json.dumps(result[key], sort_keys=True), key
